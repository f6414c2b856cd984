//! Results: every sample, their medians and spread, and the Markdown and JSON files
//! written under loadtests/results/.

use std::collections::BTreeMap;

use serde::Serialize;

/// One measured value.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// What was measured, e.g. `cpu_us_per_request`.
    pub metric: String,
    /// The target, e.g. `nginx`.
    pub target: String,
    /// The point, e.g. `1000 rps`.
    pub point: String,
    /// The value.
    pub value: f64,
}

/// Median and spread of a set of samples.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many.
    pub n: usize,
}

/// Median and range of `values`; `None` when empty.
pub fn stats(values: &[f64]) -> Option<Stats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some(Stats {
        median,
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    })
}

/// A metric's table: its title, unit, and the points (columns) in order.
pub struct Table<'a> {
    /// Metric key in the samples.
    pub metric: &'a str,
    /// Title.
    pub title: &'a str,
    /// Unit shown after values.
    pub unit: &'a str,
    /// Points, in column order.
    pub points: Vec<String>,
}

/// All samples of a run, grouped.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// Remarks (skipped targets, invalid saturation runs, errors).
    pub notes: Vec<String>,
}

impl Results {
    /// Records a sample.
    pub fn add(&mut self, metric: &str, target: &str, point: &str, value: f64) {
        self.samples.push(Sample {
            metric: metric.into(),
            target: target.into(),
            point: point.into(),
            value,
        });
    }

    /// Median and spread per (metric, target, point).
    pub fn summary(&self) -> BTreeMap<String, BTreeMap<String, BTreeMap<String, Stats>>> {
        let mut grouped: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
        for s in &self.samples {
            grouped
                .entry((s.metric.clone(), s.target.clone(), s.point.clone()))
                .or_default()
                .push(s.value);
        }
        let mut out: BTreeMap<String, BTreeMap<String, BTreeMap<String, Stats>>> = BTreeMap::new();
        for ((m, t, p), v) in grouped {
            if let Some(st) = stats(&v) {
                out.entry(m).or_default().entry(t).or_default().insert(p, st);
            }
        }
        out
    }

    /// A Markdown table per metric; each cell shows the median, the range, and the
    /// ratio to nginx and to bare Pingora at the same point.
    pub fn markdown(&self, tables: &[Table<'_>], targets: &[String]) -> String {
        let summary = self.summary();
        let mut md = String::new();
        for t in tables {
            let Some(by_target) = summary.get(t.metric) else {
                continue;
            };
            md.push_str(&format!(
                "### {} ({})\n\n| target | {} |\n|---|{}\n",
                t.title,
                t.unit,
                t.points.join(" | "),
                "---|".repeat(t.points.len())
            ));
            for target in targets.iter().filter(|x| by_target.contains_key(*x)) {
                let mut row = format!("| {target} |");
                for p in &t.points {
                    let cell = by_target.get(target).and_then(|m| m.get(p));
                    let reference = |r: &str| {
                        summary
                            .get(t.metric)
                            .and_then(|m| m.get(r))
                            .and_then(|m| m.get(p))
                            .map(|s| s.median)
                    };
                    row.push_str(&match cell {
                        None => " - |".to_string(),
                        Some(s) => {
                            let mut c = format!(" {} [{}-{}]", fmt(s.median), fmt(s.min), fmt(s.max));
                            let ratios: Vec<String> = [("nginx", "nginx"), ("pingora-bare", "bare")]
                                .iter()
                                .filter(|(r, _)| *r != target.as_str())
                                .filter_map(|(r, label)| {
                                    reference(r)
                                        .filter(|v| *v > 0.0)
                                        .map(|v| format!("{:.2}x {label}", s.median / v))
                                })
                                .collect();
                            if !ratios.is_empty() {
                                c.push_str(&format!(" ({})", ratios.join(", ")));
                            }
                            c.push_str(" |");
                            c
                        }
                    });
                }
                md.push_str(&row);
                md.push('\n');
            }
            md.push('\n');
        }
        if !self.notes.is_empty() {
            md.push_str("Notes:\n");
            for n in &self.notes {
                md.push_str(&format!("- {n}\n"));
            }
        }
        md
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_ratios() {
        assert_eq!(
            stats(&[3.0, 1.0, 2.0]).map(|s| (s.median, s.min, s.max)),
            Some((2.0, 1.0, 3.0))
        );
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]).map(|s| s.median), Some(2.5));
        let mut r = Results::default();
        for (t, v) in [("nginx", 50.0), ("pingora-bare", 100.0), ("strait", 110.0)] {
            r.add("cpu", t, "1000 rps", v);
        }
        let md = r.markdown(
            &[Table {
                metric: "cpu",
                title: "CPU",
                unit: "us",
                points: vec!["1000 rps".into()],
            }],
            &["nginx".into(), "pingora-bare".into(), "strait".into()],
        );
        assert!(
            md.contains("| strait | 110 [110-110] (2.20x nginx, 1.10x bare) |"),
            "{md}"
        );
        assert!(md.contains("| nginx | 50.0 [50.0-50.0] (0.50x bare) |"), "{md}");
    }
}

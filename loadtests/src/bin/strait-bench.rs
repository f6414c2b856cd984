//! `strait-bench`: measures Strait against direct, bare Pingora, nginx and haproxy
//! in one run on one machine. Proxies run on core 0, one worker each; the client and
//! the backend share core 1. Points are measured in interleaved repetitions
//! (every target once, then again), and medians with their range are reported.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use strait_loadtests::client::{run, LoadSpec};
use strait_loadtests::procstat::{cpu_ns, idle_activity, rss_kib, settled_rss_kib};
use strait_loadtests::report::{Results, Table};
use strait_loadtests::targets::{self, Env, Target};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    /// About 4 minutes: fewer rates and targets, 3 repetitions of 1.5 s.
    Quick,
    /// About 15 minutes: every rate and target, 3 repetitions of 4 s.
    Full,
}

/// Benchmark harness.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// How long to run.
    #[arg(long, value_enum, default_value = "quick")]
    mode: Mode,
    /// Where to write latest.json and latest.md.
    #[arg(long, default_value = "loadtests/results")]
    out: PathBuf,
    /// The examples folder (for Strait's routing table).
    #[arg(long, default_value = "examples/app-example-com")]
    examples: PathBuf,
}

/// How long idle proxies are watched.
const IDLE_SPAN: Duration = Duration::from_secs(5);

struct Plan {
    duration: Duration,
    warmup: Duration,
    reps: usize,
    rates: Vec<f64>,
    route_counts: Vec<usize>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    pin_to_core_1()?;
    let plan = match cli.mode {
        Mode::Quick => Plan {
            duration: Duration::from_millis(1500),
            warmup: Duration::from_millis(500),
            reps: 3,
            rates: vec![1000.0, 4000.0],
            route_counts: vec![10_000],
        },
        Mode::Full => Plan {
            duration: Duration::from_secs(4),
            warmup: Duration::from_secs(1),
            reps: 3,
            rates: vec![1000.0, 2000.0, 4000.0],
            route_counts: vec![100, 1000, 10_000],
        },
    };
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("binary folder")?
        .to_path_buf();
    for bin in ["strait-gateway", "pingora-bare", "bench-backend"] {
        if !bin_dir.join(bin).exists() {
            bail!(
                "{bin} is not built in {}: run loadtests/bench/run.sh",
                bin_dir.display()
            );
        }
    }
    let work = tempfile::tempdir()?;
    let (mut backend, backend_addr) = targets::backend(&bin_dir, work.path())?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["app.example.com".to_string()])?.self_signed(&key)?;
    let env = Env {
        dir: work.path().to_path_buf(),
        backend: backend_addr,
        bin_dir,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let mut results = Results::default();

    let mut all: Vec<Target> = vec![
        targets::direct(&env),
        targets::pingora_bare(&env)?,
        targets::strait(&env, &cli.examples, None)?,
    ];
    for n in &plan.route_counts {
        all.push(targets::strait(&env, &cli.examples, Some(*n))?);
    }
    for (name, start) in [
        (
            "nginx",
            targets::nginx as fn(&Env) -> Result<Target, targets::TargetError>,
        ),
        ("haproxy", targets::haproxy),
    ] {
        match start(&env) {
            Ok(t) => all.push(t),
            Err(e) => results.notes.push(format!(
                "{name} skipped: {e} (install it: apt-get install nginx-light haproxy)"
            )),
        }
    }
    let names: Vec<String> = all.iter().map(|t| t.name.clone()).collect();
    for t in all.iter().filter(|t| t.is_proxy()) {
        let rss = settled_rss_kib(&t.pids(), Duration::from_secs(30));
        results.add("rss_mib", &t.name, "idle", rss as f64 / 1024.0);
    }

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();

    for rep in 0..plan.reps {
        eprintln!(
            "repetition {} of {} ({:.0} s so far)",
            rep + 1,
            plan.reps,
            started.elapsed().as_secs_f64()
        );
        for rate in &plan.rates {
            let point = format!("{rate:.0} rps");
            for t in &all {
                let spec = spec(t, false, None, 16, Some(*rate), plan.duration);
                let (cpu, res) = rt.block_on(measure(t, &spec, plan.warmup));
                check_errors(&mut results, t, &point, res.ok, res.errors);
                if t.is_proxy() && res.ok > 0 {
                    results.add("cpu_us_per_request", &t.name, &point, cpu / 1000.0 / res.ok as f64);
                }
            }
        }
        for t in &all {
            let spec = spec(t, false, None, 32, None, plan.duration);
            let (cpu, res) = rt.block_on(measure(t, &spec, plan.warmup));
            let busy = cpu / res.elapsed.as_nanos() as f64;
            if !t.is_proxy() || busy >= 0.95 {
                results.add("saturation_rps", &t.name, "32 connections", res.rps());
            } else {
                results.notes.push(format!(
                    "{}: saturation run {} not counted, proxy at {:.1}% CPU (< 95%)",
                    t.name,
                    rep + 1,
                    busy * 100.0
                ));
            }
        }
        for conns in [4usize, 16] {
            let mut direct = None;
            for t in &all {
                let spec = spec(t, false, Some(1024), conns, Some(1000.0), plan.duration);
                let (_, res) = rt.block_on(measure(t, &spec, plan.warmup));
                let p = |q: f64| res.latency_us.value_at_quantile(q) as f64;
                let ps = [p(0.5), p(0.9), p(0.99)];
                if !t.is_proxy() {
                    direct = Some(ps);
                }
                for (i, label) in ["p50", "p90", "p99"].iter().enumerate() {
                    results.add(
                        &format!("latency_{label}_us"),
                        &t.name,
                        &format!("{conns} connections"),
                        ps[i],
                    );
                    if let (true, Some(d)) = (t.is_proxy(), direct) {
                        results.add(
                            &format!("added_{label}_us"),
                            &t.name,
                            &format!("{conns} connections"),
                            ps[i] - d[i],
                        );
                    }
                }
            }
        }
        for t in all.iter().filter(|t| t.https.is_some()) {
            for (point, per_request, rate, conns) in [
                ("full handshake", true, 200.0, 8usize),
                ("keep-alive", false, 1000.0, 16),
            ] {
                let spec = spec(t, true, None, conns, Some(rate), plan.duration);
                let spec = LoadSpec {
                    tls: Some(tls.clone()),
                    new_connection_per_request: per_request,
                    ..spec
                };
                let (cpu, res) = rt.block_on(measure(t, &spec, plan.warmup));
                check_errors(&mut results, t, point, res.ok, res.errors);
                if res.ok > 0 {
                    results.add("tls_cpu_us_per_request", &t.name, point, cpu / 1000.0 / res.ok as f64);
                }
            }
        }
    }
    for t in all.iter().filter(|t| t.is_proxy()) {
        results.add("rss_mib", &t.name, "after load", rss_kib(&t.pids()) as f64 / 1024.0);
    }
    // Every proxy idle at once, after serving: what a proxy costs while nothing happens.
    let proxies: Vec<&Target> = all.iter().filter(|t| t.is_proxy()).collect();
    let pids: Vec<Vec<u32>> = proxies.iter().map(|t| t.pids()).collect();
    for (t, (cpu, runs)) in proxies.iter().zip(idle_activity(&pids, IDLE_SPAN)) {
        results.add("idle_cpu_us_per_s", &t.name, "after load", cpu);
        results.add("idle_runs_per_s", &t.name, "after load", runs);
    }
    let elapsed = started.elapsed();
    drop(all);
    let _ = backend.kill();
    let _ = backend.wait();

    let rate_points: Vec<String> = plan.rates.iter().map(|r| format!("{r:.0} rps")).collect();
    let lat = vec!["4 connections".to_string(), "16 connections".to_string()];
    let tables = [
        Table {
            metric: "cpu_us_per_request",
            title: "Proxy CPU per request, tiny responses, 16 connections, open loop",
            unit: "us",
            points: rate_points,
        },
        Table {
            metric: "saturation_rps",
            title: "Requests/s at saturation (proxy >= 95% CPU)",
            unit: "req/s",
            points: vec!["32 connections".into()],
        },
        Table {
            metric: "added_p50_us",
            title: "Added latency p50 over direct, 1,000 rps, 1 KiB",
            unit: "us",
            points: lat.clone(),
        },
        Table {
            metric: "added_p90_us",
            title: "Added latency p90 over direct, 1,000 rps, 1 KiB",
            unit: "us",
            points: lat.clone(),
        },
        Table {
            metric: "added_p99_us",
            title: "Added latency p99 over direct, 1,000 rps, 1 KiB",
            unit: "us",
            points: lat.clone(),
        },
        Table {
            metric: "latency_p99_us",
            title: "Latency p99, 1,000 rps, 1 KiB",
            unit: "us",
            points: lat,
        },
        Table {
            metric: "tls_cpu_us_per_request",
            title: "TLS: proxy CPU per request (200 rps new connections / 1,000 rps keep-alive)",
            unit: "us",
            points: vec!["full handshake".into(), "keep-alive".into()],
        },
        Table {
            metric: "rss_mib",
            title: "Resident memory",
            unit: "MiB",
            points: vec!["idle".into(), "after load".into()],
        },
        Table {
            metric: "idle_cpu_us_per_s",
            title: "Idle: CPU used per second with no traffic, every thread (over 5 s)",
            unit: "us/s",
            points: vec!["after load".into()],
        },
        Table {
            metric: "idle_runs_per_s",
            title: "Idle: wake-ups per second with no traffic, every thread (times scheduled, over 5 s)",
            unit: "per s",
            points: vec!["after load".into()],
        },
    ];
    let machine = machine();
    let mode = format!("{:?}", cli.mode).to_lowercase();
    let mut md = format!(
        "## Benchmark ({mode} mode, {})\n\n{}\nProxies pinned to core 0 with one worker each; client and backend on core 1. {} interleaved repetitions of {:.1} s after {:.1} s warm-up; median [min-max]; ratios are of medians. Idle RSS is read once it has settled (under 1% change over 1 s). Took {:.0} s.\n\n",
        machine["date"].as_str().unwrap_or(""),
        machine["summary"].as_str().unwrap_or(""),
        plan.reps,
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    md.push_str(&results.markdown(&tables, &names));
    std::fs::create_dir_all(&cli.out)?;
    let json = serde_json::json!({ "mode": mode, "machine": machine, "summary": results.summary(), "samples": results.samples, "notes": results.notes });
    std::fs::write(cli.out.join("latest.json"), serde_json::to_vec_pretty(&json)?)?;
    std::fs::write(cli.out.join("latest.md"), &md)?;
    println!("{md}");
    eprintln!("wrote {} and latest.json", cli.out.join("latest.md").display());
    Ok(())
}

fn spec(
    t: &Target,
    tls: bool,
    body: Option<usize>,
    connections: usize,
    rate: Option<f64>,
    duration: Duration,
) -> LoadSpec {
    let path = match body {
        Some(n) if t.path.contains('?') => format!("{}&bytes={n}", t.path),
        Some(n) => format!("{}?bytes={n}", t.path),
        None => t.path.clone(),
    };
    let addr = if tls { t.https.unwrap_or(t.http) } else { t.http };
    LoadSpec {
        addr,
        host: t.host.clone(),
        path,
        headers: t.headers.clone(),
        tls: None,
        connections,
        rate,
        duration,
        new_connection_per_request: false,
    }
}

/// Warms up, then runs `spec` and returns the proxy's CPU nanoseconds over the run.
async fn measure(t: &Target, spec: &LoadSpec, warmup: Duration) -> (f64, strait_loadtests::client::LoadResult) {
    let _ = run(&LoadSpec {
        duration: warmup,
        ..spec.clone()
    })
    .await;
    let pids = t.pids();
    let before = cpu_ns(&pids);
    let res = run(spec).await;
    let after = cpu_ns(&pids);
    (after.saturating_sub(before) as f64, res)
}

fn check_errors(results: &mut Results, t: &Target, point: &str, ok: u64, errors: u64) {
    if errors * 100 > ok.max(1) {
        results
            .notes
            .push(format!("{} at {point}: {errors} errors for {ok} successes", t.name));
    }
}

/// Re-runs this process under `taskset -c 1` unless it already runs on core 1 only.
fn pin_to_core_1() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let allowed = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
        .unwrap_or("");
    if allowed == "1" {
        return Ok(());
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("the harness needs 2 cores: the proxy on core 0, client and backend on core 1");
    }
    let exe = std::env::current_exe()?;
    let status = Command::new("taskset")
        .arg("-c")
        .arg("1")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .status()?;
    std::process::exit(status.code().unwrap_or(1));
}

fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cmd = |c: &str, args: &[&str]| {
        Command::new(c)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let lock = cmd("sha256sum", &["Cargo.lock"])
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string();
    // Counted from cpuinfo: this process is pinned to one core.
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let kernel = cmd("uname", &["-r"]);
    let nginx = Command::new("nginx")
        .arg("-v")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    let haproxy = cmd("haproxy", &["-v"]).lines().next().unwrap_or("").to_string();
    let date = cmd("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let summary = format!(
        "Machine: {model}, {cores} cores, Linux {kernel}. {nginx}; {haproxy}; Cargo.lock sha256 {}.\n",
        lock.get(..12).unwrap_or(&lock)
    );
    serde_json::json!({ "cpu": model, "cores": cores, "kernel": kernel, "nginx": nginx, "haproxy": haproxy, "cargo_lock_sha256": lock, "date": date, "summary": summary, "commit": cmd("git", &["rev-parse", "--short", "HEAD"]) })
}

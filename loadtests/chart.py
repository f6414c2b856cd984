#!/usr/bin/env python3
"""Draws the benchmark's headline figures as an SVG chart (no dependencies).

Reads loadtests/results/latest.json (written by strait-bench) and writes
loadtests/results/latest.svg: CPU per request at each rate, and requests/s at
saturation, for Strait, bare Pingora, nginx and haproxy (medians, with the min-max
range as a whisker). Run by loadtests/bench/run.sh after the bench.
"""
import json
import sys
from pathlib import Path

TARGETS = [("strait", "Strait", "#2b6cb0"), ("pingora-bare", "bare Pingora", "#8a94a6"),
           ("nginx", "nginx", "#2f855a"), ("haproxy", "haproxy", "#c05621")]


def panel(title, groups, series, unit, x0, width, height):
    """One grouped bar chart: groups (x labels), series {target: [(median, lo, hi)]}."""
    out = []
    top = max((hi for values in series.values() for (_, _, hi) in values), default=1) * 1.15
    plot_h, base_y = height - 70, 40 + height - 70
    out.append(f'<text x="{x0 + width / 2}" y="24" text-anchor="middle" font-weight="bold">{title}</text>')
    out.append(f'<line x1="{x0 + 40}" y1="{base_y}" x2="{x0 + width}" y2="{base_y}" stroke="#333"/>')
    group_w = (width - 50) / max(len(groups), 1)
    bar_w = group_w / (len(TARGETS) + 1)
    for gi, group in enumerate(groups):
        gx = x0 + 45 + gi * group_w
        out.append(f'<text x="{gx + group_w / 2 - bar_w / 2}" y="{base_y + 16}" text-anchor="middle" font-size="11">{group}</text>')
        for ti, (key, _, color) in enumerate(TARGETS):
            values = series.get(key)
            if not values or gi >= len(values) or values[gi] is None:
                continue
            median, lo, hi = values[gi]
            h = plot_h * median / top
            x = gx + ti * bar_w
            out.append(f'<rect x="{x:.1f}" y="{base_y - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" fill="{color}"/>')
            ylo, yhi = base_y - plot_h * lo / top, base_y - plot_h * hi / top
            cx = x + (bar_w - 2) / 2
            out.append(f'<line x1="{cx:.1f}" y1="{ylo:.1f}" x2="{cx:.1f}" y2="{yhi:.1f}" stroke="#111"/>')
            label = f"{median / 1000:.1f}k" if median >= 1000 else f"{median:.0f}"
            out.append(f'<text x="{cx:.1f}" y="{yhi - 4:.1f}" text-anchor="middle" font-size="9">{label}</text>')
    out.append(f'<text x="{x0 + 8}" y="{40 + plot_h / 2}" font-size="11" transform="rotate(-90 {x0 + 8} {40 + plot_h / 2})" text-anchor="middle">{unit}</text>')
    return out


def stats(summary, metric, target, point):
    s = summary.get(metric, {}).get(target, {}).get(point)
    return (s["median"], s["min"], s["max"]) if s else None


def main():
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "loadtests/results")
    summary = json.loads((results / "latest.json").read_text())["summary"]
    rates = sorted(summary["cpu_us_per_request"]["strait"].keys(), key=lambda r: int(r.split()[0]))
    cpu = {key: [stats(summary, "cpu_us_per_request", key, r) for r in rates] for key, _, _ in TARGETS}
    sat_point = next(iter(summary["saturation_rps"]["strait"].keys()))
    sat = {key: [stats(summary, "saturation_rps", key, sat_point)] for key, _, _ in TARGETS}
    width, height = 900, 330
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    parts += panel("Proxy CPU per request (us, lower is better)", rates, cpu, "us", 0, 560, height - 40)
    parts += panel(f"Requests/s at saturation ({sat_point})", ["saturation"], sat, "req/s", 590, 300, height - 40)
    for i, (_, name, color) in enumerate(TARGETS):
        x = 60 + i * 150
        parts.append(f'<rect x="{x}" y="{height - 22}" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{x + 18}" y="{height - 12}">{name}</text>')
    parts.append("</svg>")
    (results / "latest.svg").write_text("\n".join(parts) + "\n")
    print(f"wrote {results / 'latest.svg'}")


if __name__ == "__main__":
    main()

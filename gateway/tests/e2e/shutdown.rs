//! SIGTERM: in-flight requests finish, then the process exits well before the drain limit.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits() {
    let backend = echo("backend", "v1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = http_gateway(&["*"]) + &virtual_service("app", &["*"], &["gw"], &route_to("backend"));
    std::fs::write(dir.path().join("app.yaml"), config).expect("write");
    std::fs::write(
        dir.path().join("backend.yaml"),
        backend_entry(&[("v1", backend.addr.port())]),
    )
    .expect("write");
    let mut gw = Gateway::start(dir.path(), &["--drain-seconds", "20"]);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let url = format!("http://app.example.com:{}/slow", gw.http);
    let slow = tokio::spawn(async move {
        c.get(&url)
            .header("x-echo-delay-ms", "1500")
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    let pid = i32::try_from(gw.pid()).expect("pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert_eq!(slow.await.expect("task").expect("in-flight request completes"), 200);
    let status = gw.wait_exit(Duration::from_secs(10)).expect("exited after draining");
    assert!(status.success(), "{status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exited once idle, before the 20 s drain limit"
    );
}

//! `/logging`: GET shows the level, POST `?level=` changes what the running gateway
//! logs; GET never changes it and a bad level is refused.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_the_level_and_never_changes_it_and_bad_levels_are_refused() {
    let s = Setup::start().await;
    let admin = s.gw.admin;
    let (status, body) = request(admin, "GET", "/logging");
    assert_eq!((status, body.as_str()), (200, "level: info\nsource: RUST_LOG=info\n"));
    // Envoy's rule: GET never changes state.
    assert_eq!(request(admin, "GET", "/logging?level=debug").0, 405);
    assert_eq!(request(admin, "POST", "/logging?level=loud").0, 400);
    assert_eq!(request(admin, "POST", "/logging").0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_level_changes_what_the_running_gateway_logs() {
    let s = Setup::start().await;
    let gw = &s.gw;
    request(gw.admin, "GET", "/ready");
    assert!(!gw.log().contains("admin GET /ready"), "debug line logged at info");

    let (status, body) = request(gw.admin, "POST", "/logging?level=debug");
    assert_eq!((status, body.as_str()), (200, "level: debug\nsource: /logging\n"));
    request(gw.admin, "GET", "/ready");
    wait_for("a debug line", Duration::from_secs(5), || {
        gw.log().contains("DEBUG strait_gateway::admin] admin GET /ready")
    });

    let (status, _) = request(gw.admin, "POST", "/logging?level=warn");
    assert_eq!(status, 200);
    let mark = gw.log().len();
    // A reload logs at info: at warn, nothing of it shows, though it happens.
    std::fs::write(
        s.dir.path().join("extra.yaml"),
        service_entry("extra.example.com", "HTTP", &[9]),
    )
    .expect("write");
    assert!(gw.wait_version_above(1, Duration::from_secs(10)), "no reload");
    request(gw.admin, "GET", "/ready");
    std::thread::sleep(Duration::from_millis(200));
    let log = gw.log();
    let since = &log[mark..];
    assert!(!since.contains(" INFO "), "info lines at warn:\n{since}");
    assert!(!since.contains(" DEBUG "), "debug lines at warn:\n{since}");
    assert_eq!(
        request(gw.admin, "GET", "/logging").1,
        "level: warn\nsource: /logging\n"
    );
}

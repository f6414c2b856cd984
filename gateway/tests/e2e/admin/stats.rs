//! `/stats`: exact counters after known traffic, and a rejected reload counted.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_known_traffic() {
    let s = Setup::start().await;
    let gw = &s.gw;
    let before = stats(gw.admin);
    assert_eq!(before["server.config_version"], 1);
    assert_eq!(before["server.config_update_rejected"], 0);
    assert_eq!(before["server.config_last_update_accepted"], 1);
    assert_eq!(before["server.certificates"], 1);
    assert_eq!(before[&format!("cluster.{CLUSTER}.membership_total")], 1);
    assert_eq!(before[&format!("cluster.{CLUSTER}.upstream_rq_total")], 0);

    let client = client(&[("app.example.com", gw.http)], &[]);
    for _ in 0..5 {
        let (status, _) = get_json(&client, &format!("http://app.example.com:{}/", gw.http), &[]).await;
        assert_eq!(status, 200);
    }
    // A request's last step (its logging) may still run when its client has the
    // answer: the active count returns to 0 right after.
    wait_for("the requests to end", Duration::from_secs(5), || {
        stats(gw.admin)[&format!("cluster.{CLUSTER}.upstream_rq_active")] == 0
    });
    let after = stats(gw.admin);
    let stat = |name: &str| after[&format!("cluster.{CLUSTER}.{name}")];
    assert_eq!(stat("upstream_rq_total"), 5);
    assert_eq!(stat("upstream_rq_failed"), 0);
    assert_eq!(stat("upstream_rq_active"), 0);
    assert_eq!(stat("upstream_rq_pending_overflow"), 0);
    assert_eq!(stat("membership_healthy"), 1);
    assert_eq!(stat("outlier_detection.ejections_total"), 0);
    assert_eq!(after["server.downstream_rq_active"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_reload_is_counted_and_the_old_config_stays() {
    let s = Setup::start().await;
    let gw = &s.gw;
    // A broken file is rejected: the counters say so and the old config keeps serving.
    std::fs::write(s.dir.path().join("broken.yaml"), "kind: VirtualService\nspec: [").expect("write");
    // The watcher may see the write as more than one change: each attempt is counted.
    wait_for("the rejection to be counted", Duration::from_secs(10), || {
        stats(gw.admin)["server.config_update_rejected"] >= 1
    });
    let rejected = stats(gw.admin);
    assert_eq!(rejected["server.config_last_update_accepted"], 0);
    assert_eq!(rejected["server.config_version"], 1);
}

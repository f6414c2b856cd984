//! DestinationRule traffic policies: consistent hashing (header, query parameter,
//! cookie), outlier ejection, connection recycling and connection-pool overflow;
//! one scenario each, over one configuration.

use std::time::{Duration, Instant};

use strait_gateway::echo::EchoServer;
use strait_gateway::testing::Harness;

use crate::common::*;

const ROUTES: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [hash.example.com, cookie.example.com, outlier.example.com, limited.example.com, recycled.example.com, query.example.com]
  gateways: [gw]
  http:
  - match: [{authority: {prefix: hash.example.com}}]
    route: [{destination: {host: hash.internal}}]
  - match: [{authority: {prefix: cookie.example.com}}]
    route: [{destination: {host: cookie.internal}}]
  - match: [{authority: {prefix: outlier.example.com}}]
    route: [{destination: {host: outlier.internal}}]
  - match: [{authority: {prefix: query.example.com}}]
    route: [{destination: {host: query.internal}}]
  - match: [{authority: {prefix: recycled.example.com}}]
    route: [{destination: {host: recycled.internal}}]
  - match: [{authority: {prefix: limited.example.com}}]
    retries: {attempts: 0}
    route: [{destination: {host: limited.internal}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hash, namespace: default}
spec:
  host: hash.internal
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cookie, namespace: default}
spec:
  host: cookie.internal
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: affinity, ttl: 3600s}, maglev: {tableSize: 1031}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: outlier, namespace: default}
spec:
  host: outlier.internal
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 50}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: query, namespace: default}
spec:
  host: query.internal
  trafficPolicy:
    loadBalancer: {consistentHash: {httpQueryParameterName: tenant}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: recycled, namespace: default}
spec:
  host: recycled.internal
  trafficPolicy:
    connectionPool: {http: {maxRequestsPerConnection: 2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: limited, namespace: default}
spec:
  host: limited.internal
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
"#;

async fn name_of(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let (status, body) = get_json(c, url, headers).await;
    (status, body["name"].as_str().unwrap_or("").to_string())
}

/// Three echo backends behind every policy of `ROUTES`, a dead endpoint beside
/// two of them for outlier detection, and a client for `{name}.example.com`.
struct Setup {
    _backends: [EchoServer; 3],
    dead: u16,
    gw: Harness,
    c: reqwest::Client,
}

impl Setup {
    async fn start() -> Setup {
        let backends = [echo("b0", "v1").await, echo("b1", "v1").await, echo("b2", "v1").await];
        let ports: Vec<u16> = backends.iter().map(|b| b.addr.port()).collect();
        let [dead] = free_ports::<1>();
        let mut config = http_gateway(&["*.example.com"]) + ROUTES;
        config.push_str(&service_entry("hash.internal", "HTTP", &ports));
        config.push_str(&service_entry("cookie.internal", "HTTP", &ports));
        config.push_str(&service_entry("outlier.internal", "HTTP", &[ports[0], ports[1], dead]));
        config.push_str(&service_entry("limited.internal", "HTTP", &ports[..1]));
        config.push_str(&service_entry("recycled.internal", "HTTP", &ports[..1]));
        config.push_str(&service_entry("query.internal", "HTTP", &ports));
        let gw = Harness::start(&[("app.yaml", &config)]);
        let hosts: Vec<(&str, u16)> = [
            "hash.example.com",
            "cookie.example.com",
            "outlier.example.com",
            "limited.example.com",
            "recycled.example.com",
            "query.example.com",
        ]
        .into_iter()
        .map(|h| (h, gw.http()))
        .collect();
        let c = client(&hosts, &[]);
        Setup {
            _backends: backends,
            dead,
            gw,
            c,
        }
    }

    fn url(&self, host: &str) -> String {
        format!("http://{host}.example.com:{}/", self.gw.http())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_key_sticks_to_one_endpoint_and_keys_spread() {
    let s = Setup::start().await;
    let (c, url) = (&s.c, |h: &str| s.url(h));

    // A header key stays on one endpoint for 1,000 requests; keys spread over all three.
    let (_, alice) = name_of(c, &url("hash"), &[("x-user", "alice")]).await;
    for _ in 0..1000 {
        assert_eq!(name_of(c, &url("hash"), &[("x-user", "alice")]).await.1, alice);
    }
    let mut seen = std::collections::BTreeSet::new();
    for u in 0..30 {
        seen.insert(name_of(c, &url("hash"), &[("x-user", &format!("user{u}"))]).await.1);
    }
    assert_eq!(seen.len(), 3, "30 keys over 3 endpoints: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_parameter_key_sticks_to_one_endpoint_and_keys_spread() {
    let s = Setup::start().await;
    let (c, url) = (&s.c, |h: &str| s.url(h));

    // A query parameter key: each tenant sticks to one endpoint, tenants spread.
    let mut owners = std::collections::BTreeMap::new();
    for round in 0..5 {
        for t in 0..20 {
            let (_, name) = name_of(c, &format!("{}?tenant=t{t}&round={round}", url("query")), &[]).await;
            assert_eq!(
                owners.entry(t).or_insert_with(|| name.clone()),
                &name,
                "tenant t{t} moved"
            );
        }
    }
    let spread: std::collections::BTreeSet<&String> = owners.values().collect();
    assert!(spread.len() >= 2, "20 tenants on one endpoint: {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_sets_an_affinity_cookie_and_requests_carrying_it_stick() {
    let s = Setup::start().await;
    let (c, url) = (&s.c, |h: &str| s.url(h));

    // No cookie: the gateway sets one, and requests carrying it stick (maglev table).
    let resp = c.get(url("cookie")).send().await.expect("request");
    let set = resp.headers()["set-cookie"].to_str().expect("ascii").to_string();
    assert!(set.starts_with("affinity=\"") && set.contains("Max-Age=3600"), "{set}");
    let first: serde_json::Value = resp.json().await.expect("json");
    let cookie = set.split(';').next().expect("pair").to_string();
    for _ in 0..50 {
        let (_, name) = name_of(c, &url("cookie"), &[("cookie", &cookie)]).await;
        assert_eq!(name, first["name"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_ejected_then_tried_again_and_ejected_longer() {
    let s = Setup::start().await;
    let (c, url, dead) = (&s.c, |h: &str| s.url(h), s.dead);

    // A dead endpoint: 2 connect failures eject it (retries hide them from clients).
    for i in 0..30 {
        assert_eq!(name_of(c, &url("outlier"), &[]).await.0, 200, "request {i}");
    }
    let dead_state = |gw: &Harness| {
        let cluster = cluster(gw.admin, "outbound|80||outlier.internal");
        cluster["endpoints"]
            .as_array()
            .and_then(|e| e.iter().find(|e| e["address"] == format!("127.0.0.1:{dead}")).cloned())
            .expect("dead endpoint listed")
    };
    let d = dead_state(&s.gw);
    assert_eq!(
        (d["health"].as_str(), d["requests"].as_u64(), d["ejections"].as_u64()),
        (Some("ejected"), Some(2), Some(1)),
        "{d}"
    );
    // After its ejection (1 s) it is tried again, fails twice more and is ejected for 2 s.
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..30 {
        assert_eq!(name_of(c, &url("outlier"), &[]).await.0, 200);
    }
    let d = dead_state(&s.gw);
    assert_eq!(
        (d["requests"].as_u64(), d["ejections"].as_u64()),
        (Some(4), Some(2)),
        "{d}"
    );
    assert!(
        d["ejected_for_ms"].as_u64().is_some_and(|ms| ms > 1000),
        "second ejection is longer: {d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_recycles_upstream_connections() {
    let s = Setup::start().await;
    let (c, url) = (&s.c, |h: &str| s.url(h));

    // maxRequestsPerConnection 2: six requests in a row use three upstream connections.
    let mut peers = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, body) = get_json(c, &url("recycled"), &[]).await;
        assert_eq!(status, 200);
        peers.insert(body["peer"].as_str().expect("peer").to_string());
    }
    assert_eq!(peers.len(), 3, "{peers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_max_connections_and_pending_overflows_at_once() {
    let s = Setup::start().await;
    let (c, url) = (&s.c, |h: &str| s.url(h));

    // maxConnections 1 + 1 pending: a third concurrent request overflows at once.
    let slow = |c: reqwest::Client| {
        let u = format!("{}?delay_ms=1000", url("limited"));
        tokio::spawn(async move { c.get(u).send().await.map(|r| r.status().as_u16()) })
    };
    let first = slow(c.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = slow(c.clone());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let resp = c.get(url("limited")).send().await.expect("request");
    assert_eq!(resp.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "overflow is answered at once"
    );
    assert!(resp.text().await.expect("body").contains("overflow"));
    assert_eq!(first.await.expect("task").expect("first"), 200);
    assert_eq!(
        second.await.expect("task").expect("second"),
        200,
        "the pending request got the connection"
    );
    assert_eq!(cluster(s.gw.admin, "outbound|80||limited.internal")["overflows"], 1);
}

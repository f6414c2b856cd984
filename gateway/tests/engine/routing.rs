//! The app.example.com example, in-process: path, header and weighted routing,
//! what the backend sees, HTTPS with HTTP/2, and 404s.

use std::collections::HashMap;

use strait_gateway::testing::Harness;

use crate::common::*;

/// The example's files with its ServiceEntry pointed at live echo backends and a
/// certificate for app.example.com, served in-process.
pub struct Demo {
    _backends: Vec<strait_gateway::echo::EchoServer>,
    pub gw: Harness,
    cert: TestCert,
}

impl Demo {
    pub async fn start() -> Demo {
        let stable = echo("stable", "v1").await;
        let canary = echo("canary", "v1-canary").await;
        let v2 = echo("v2", "v2").await;
        let example =
            |f: &str| std::fs::read_to_string(examples().join("app-example-com").join(f)).expect("read example");
        // Through placeholders: replaced one after the other, a backend's port that
        // contains a later example port (stable on 39002) would be rewritten again.
        let se = example("serviceentry.yaml")
            .replace("9001", "{stable}")
            .replace("9002", "{canary}")
            .replace("9003", "{v2}")
            .replace("{stable}", &stable.addr.port().to_string())
            .replace("{canary}", &canary.addr.port().to_string())
            .replace("{v2}", &v2.addr.port().to_string());
        let cert = TestCert::new(&["app.example.com"]);
        let files = [
            ("gateway.yaml", example("gateway.yaml")),
            ("virtualservice.yaml", example("virtualservice.yaml")),
            ("destinationrule.yaml", example("destinationrule.yaml")),
            ("serviceentry.yaml", se),
            ("secret.yaml", cert.secret_yaml("app-example-com-tls", "default")),
        ];
        let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
        let gw = Harness::start(&files);
        Demo {
            _backends: vec![stable, canary, v2],
            gw,
            cert,
        }
    }

    fn client(&self) -> reqwest::Client {
        client(
            &[
                ("app.example.com", self.gw.http()),
                ("app.example.com", self.gw.https()),
            ],
            &[&self.cert],
        )
    }

    fn url(&self, path: &str) -> String {
        format!("http://app.example.com:{}{path}", self.gw.http())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_routes_by_path_and_header() {
    let demo = Demo::start().await;
    let c = demo.client();
    let (status, body) = get_json(&c, &demo.url("/api/v2/users?id=7"), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "v2");
    assert_eq!(body["path"], "/api/v2/users?id=7");
    // uri.prefix is a plain string prefix, as in Istio.
    assert_eq!(get_json(&c, &demo.url("/api/v2beta"), &[]).await.1["name"], "v2");
    for _ in 0..20 {
        let (status, body) = get_json(&c, &demo.url("/"), &[("x-canary", "true")]).await;
        assert_eq!((status, body["name"].as_str()), (200, Some("canary")));
    }
    // A header value that is not exactly "true" falls through to the split.
    let (_, body) = get_json(&c, &demo.url("/api/v1"), &[("x-canary", "TRUE")]).await;
    assert!(matches!(body["name"].as_str(), Some("stable" | "canary")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_90_10() {
    let demo = Demo::start().await;
    let c = demo.client();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        let url = demo.url("/");
        tasks.push(tokio::spawn(async move {
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..250 {
                let (status, body) = get_json(&c, &url, &[]).await;
                assert_eq!(status, 200);
                *counts
                    .entry(body["name"].as_str().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
            counts
        }));
    }
    let mut total: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("task") {
            *total.entry(k).or_default() += v;
        }
    }
    let stable = total.get("stable").copied().unwrap_or(0);
    let canary = total.get("canary").copied().unwrap_or(0);
    assert_eq!(stable + canary, 2000, "{total:?}");
    // 90% +- 3 points of 2000 requests.
    assert!(
        (1740..=1860).contains(&stable),
        "stable got {stable} of 2000: {total:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_sees_forwarding_headers() {
    let demo = Demo::start().await;
    let c = demo.client();
    let (_, body) = get_json(&c, &demo.url("/api/v2/h"), &[("x-forwarded-for", "203.0.113.9")]).await;
    let h = &body["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["host"], format!("app.example.com:{}", demo.gw.http()));
    let id = h["x-request-id"].as_str().expect("x-request-id generated");
    assert_eq!(id.len(), 36);
    let (_, body) = get_json(&c, &demo.url("/api/v2/h"), &[("x-request-id", "abc-123")]).await;
    assert_eq!(
        body["headers"]["x-request-id"], "abc-123",
        "an existing request id is kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let demo = Demo::start().await;
    let c = demo.client();
    let mut peers = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = get_json(&c, &demo.url("/api/v2/keepalive"), &[]).await;
        assert_eq!(status, 200);
        peers.insert(body["peer"].as_str().unwrap_or("?").to_string());
    }
    // Sequential requests reuse pooled connections: a fresh one each time would
    // show 20 source ports.
    assert!(
        peers.len() <= 2,
        "20 requests used {} upstream connections: {peers:?}",
        peers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_http2_and_http1() {
    let demo = Demo::start().await;
    let url = format!("https://app.example.com:{}/api/v2/secure", demo.gw.https());
    let resp = demo.client().get(&url).send().await.expect("https request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "h2 negotiated by ALPN");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["name"], "v2");
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    // The header limits hold over HTTP/2 as well.
    let mut req = demo.client().get(&url);
    for i in 0..101 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let resp = req.send().await.expect("h2 request");
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (reqwest::Version::HTTP_2, 431)
    );
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .resolve("app.example.com", ([127, 0, 0, 1], demo.gw.https()).into())
        .add_root_certificate(reqwest::Certificate::from_pem(demo.cert.cert_pem.as_bytes()).expect("pem"))
        .build()
        .expect("client");
    let resp = h1.get(&url).send().await.expect("https/1.1 request");
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (reqwest::Version::HTTP_11, 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_404_and_admin_reports_the_config() {
    let demo = Demo::start().await;
    assert_eq!(
        raw_get(demo.gw.health, "/healthz/ready"),
        Some((200, "LIVE\n".to_string()))
    );
    assert_eq!(raw_get(demo.gw.admin, "/ready").map(|r| r.0), Some(200));
    assert_eq!(
        raw_get(demo.gw.health, "/config_dump").map(|r| r.0),
        Some(404),
        "health port serves readiness only"
    );
    let dump = config_dump(demo.gw.admin);
    assert_eq!(dump["version"], 1);
    assert_eq!(dump["sources"].as_array().map(Vec::len), Some(5));
    let listeners = dump["snapshot"]["listeners"].as_array().expect("listeners");
    assert_eq!(
        listeners.iter().map(|l| l["port"].as_u64()).collect::<Vec<_>>(),
        [Some(80), Some(443)]
    );
    let dumped = dump.to_string();
    assert!(!dumped.contains("PRIVATE KEY"), "config_dump never shows private keys");
    assert!(
        dumped.contains("outbound|80|v2|backend.default.svc.cluster.local"),
        "clusters named as in Istio"
    );
    let c = client(&[("other.example.com", demo.gw.http())], &[]);
    let resp = c
        .get(format!("http://other.example.com:{}/", demo.gw.http()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);
}

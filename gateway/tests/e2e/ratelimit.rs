//! Strait's RateLimit: exactly the allowance passes per period and key, the rest
//! gets 429 with the rate-limit headers; other routes are not limited.

use crate::support::*;

const CONFIG: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: [app.example.com]
  gateways: [gw]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    directResponse: {status: 200, body: {string: api}}
  - name: per-user
    match: [{uri: {prefix: /user}}]
    directResponse: {status: 200, body: {string: user}}
  - name: free
    directResponse: {status: 200, body: {string: free}}
---
apiVersion: strait.io/v1alpha1
kind: RateLimit
metadata: {name: api-by-client, namespace: default}
spec:
  virtualService: app
  routes: [api]
  requests: 5
  per: 60s
---
apiVersion: strait.io/v1alpha1
kind: RateLimit
metadata: {name: by-user, namespace: default}
spec:
  virtualService: app
  routes: [per-user]
  requests: 3
  per: 60s
  key: {header: x-user}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_allowance_passes() {
    let (gw, _dir) = start_with(&[("app.yaml", &(http_gateway(&["app.example.com"]) + CONFIG))]);
    let c = client(&[("app.example.com", gw.http)], &[]);
    let url = |p: &str| format!("http://app.example.com:{}{p}", gw.http);

    let mut statuses = Vec::new();
    for i in 0..8 {
        let resp = c.get(url("/api")).send().await.expect("request");
        let status = resp.status().as_u16();
        if i == 0 {
            assert_eq!(resp.headers()["x-ratelimit-limit"], "5");
            assert_eq!(resp.headers()["x-ratelimit-remaining"], "4");
        }
        if status == 429 {
            assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
            let reset: u64 = resp.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&reset), "{reset}");
            assert_eq!(resp.text().await.expect("body"), "local_rate_limited");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);

    // Per header value: each user has an allowance of 3.
    for user in ["alice", "bob"] {
        let mut passed = 0;
        for _ in 0..5 {
            let resp = c
                .get(url("/user"))
                .header("x-user", user)
                .send()
                .await
                .expect("request");
            passed += u32::from(resp.status() == 200);
        }
        assert_eq!(passed, 3, "{user}");
    }
    // A route without a RateLimit is not limited.
    for _ in 0..20 {
        assert_eq!(c.get(url("/free")).send().await.expect("request").status(), 200);
    }
}

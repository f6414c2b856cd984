//! Routing a request allocates nothing: host lookup, matching, the weighted pick
//! and finding the chosen cluster's endpoints work on borrowed data only.

use http::HeaderMap;
use strait_config::router::{RequestView, Routed};
use strait_config::snapshot::Action;

#[test]
fn routing_does_not_allocate() {
    let built = strait_config::testing::large_build(100, 10, 8080);
    let (snapshot, endpoints) = (&built.snapshot, &built.endpoints);
    let listener = snapshot.listener(80).expect("listener");
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", http::HeaderValue::from_static("t42"));
    let requests = [
        RequestView {
            method: "GET",
            path: "/r9/items?id=1",
            authority: "SVC99.Example.com:80",
            scheme: "http",
            headers: &headers,
            claims: None,
        },
        RequestView {
            method: "GET",
            path: "/exact5",
            authority: "svc3.example.com",
            scheme: "http",
            headers: &headers,
            claims: None,
        },
        RequestView {
            method: "GET",
            path: "/none",
            authority: "svc7.example.com",
            scheme: "http",
            headers: &headers,
            claims: None,
        },
    ];
    let mut matched = 0;
    let mut route_all = || {
        for req in &requests {
            if let Routed::Matched(m) = listener.route(req) {
                if let Action::Forward(f) = &m.route.action {
                    let d = f.pick().expect("destination");
                    let _ = (
                        &snapshot.clusters[d.cluster],
                        endpoints.clusters[d.cluster].endpoints.first(),
                    );
                    matched += 1;
                }
            }
        }
    };
    // The first use on a thread builds lazy per-thread state (the regex engine's
    // scratch space, the random generator); after that, requests allocate nothing.
    route_all();
    let counts = allocation_counter::measure(|| {
        for _ in 0..100 {
            route_all();
        }
    });
    assert_eq!(matched, 202);
    assert_eq!(counts.count_total, 0, "routing allocated: {counts:?}");
}

//! Router benchmark: 1,000 virtual hosts x 10 routes, worst-case lookups.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use strait_config::router::RequestView;

fn bench(c: &mut Criterion) {
    let snapshot = strait_config::testing::large_snapshot(1000, 10, 8080);
    let listener = snapshot.listener(80).expect("listener");
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", http::HeaderValue::from_static("t42"));
    headers.insert("user-agent", http::HeaderValue::from_static("bench"));
    let cases = [
        // The last rule of the last host: 9 rules (18 match blocks) tried first.
        ("route 1000x10 last rule", "/r9/items?id=1", "svc999.example.com"),
        ("route 1000x10 first rule", "/r0/x", "svc500.example.com"),
        (
            "route 1000x10 uppercase host, last exact",
            "/exact9",
            "SVC999.EXAMPLE.COM:8080",
        ),
        ("route 1000x10 no route", "/nothing", "svc999.example.com"),
    ];
    for (name, path, authority) in cases {
        let req = RequestView {
            method: "GET",
            path,
            authority,
            scheme: "http",
            headers: &headers,
            claims: None,
        };
        c.bench_function(name, |b| b.iter(|| black_box(listener.route(black_box(&req)))));
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

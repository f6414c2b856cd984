//! Router benchmark: 1,000 virtual hosts x 10 routes, worst-case lookups.

use std::collections::BTreeMap;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::HeaderMap;
use strait_config::bundle::{load_text, Loaded};
use strait_config::router::RequestView;
use strait_config::{translate, Role, Scope};

fn bench(c: &mut Criterion) {
    let mut loaded = Loaded::default();
    load_text(
        &mut loaded,
        "big.yaml",
        &strait_config::testing::large_config(1000, 10, 8080),
    );
    let scope = Scope {
        role: Role::Gateway,
        labels: BTreeMap::from([("istio".into(), "ingressgateway".into())]),
        namespace: "default".into(),
    };
    let (snapshot, _) = translate(&loaded.bundle, &scope, 1).expect("translates");
    let listener = snapshot.listener(80).expect("listener");
    let mut headers = HeaderMap::new();
    headers.insert("x-tenant", http::HeaderValue::from_static("t42"));
    headers.insert("user-agent", http::HeaderValue::from_static("bench"));

    // The last rule of the last host: 9 rules (18 match blocks) tried first.
    let last = RequestView {
        method: "GET",
        path: "/r9/items?id=1",
        authority: "svc999.example.com",
        scheme: "http",
        headers: &headers,
    };
    c.bench_function("route 1000x10 last rule", |b| {
        b.iter(|| black_box(listener.route(black_box(&last))))
    });
    let first = RequestView {
        method: "GET",
        path: "/r0/x",
        authority: "svc500.example.com",
        scheme: "http",
        headers: &headers,
    };
    c.bench_function("route 1000x10 first rule", |b| {
        b.iter(|| black_box(listener.route(black_box(&first))))
    });
    let upper = RequestView {
        method: "GET",
        path: "/exact9",
        authority: "SVC999.EXAMPLE.COM:8080",
        scheme: "http",
        headers: &headers,
    };
    c.bench_function("route 1000x10 uppercase host, last exact", |b| {
        b.iter(|| black_box(listener.route(black_box(&upper))))
    });
    let miss = RequestView {
        method: "GET",
        path: "/nothing",
        authority: "svc999.example.com",
        scheme: "http",
        headers: &headers,
    };
    c.bench_function("route 1000x10 no route", |b| {
        b.iter(|| black_box(listener.route(black_box(&miss))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

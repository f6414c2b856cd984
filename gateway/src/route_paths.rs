//! Which path serves each route's HTTP/1 requests, decided when the snapshot is
//! compiled: the lean path (`lean_path`) for a route that answers locally or
//! forwards only to HTTP/1 clusters, Pingora's proxy for the others.

use strait_config::snapshot::{Action, Listener, Snapshot};

/// Which path serves the requests of one listener, compiled with the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerPath {
    /// Every route is lean: requests are not matched twice.
    Lean,
    /// Every route needs the full path.
    Full,
    /// Lean routes, by virtual host and route index, beside others: the route is
    /// found before the request's steps run, without a JWT's claims.
    Mixed(Vec<Vec<bool>>),
}

/// The paths of `snapshot`'s listeners, index-aligned with them.
pub fn compile(snapshot: &Snapshot) -> Vec<ListenerPath> {
    snapshot.listeners.iter().map(|l| listener_path(snapshot, l)).collect()
}

fn listener_path(snapshot: &Snapshot, listener: &Listener) -> ListenerPath {
    let routes: Vec<Vec<bool>> = listener
        .virtual_hosts
        .iter()
        .map(|v| v.routes.iter().map(|r| route_is_lean(snapshot, &r.action)).collect())
        .collect();
    let flat = || routes.iter().flatten().copied();
    if flat().all(|lean| lean) {
        return ListenerPath::Lean;
    }
    // A JWT can change the route (claims, headers made from claims) after the
    // choice: such a listener's requests all take the path that has every feature.
    let jwt = listener
        .policy
        .and_then(|p| snapshot.policies.get(p))
        .is_some_and(|p| !p.jwt.is_empty());
    if jwt || !flat().any(|lean| lean) {
        return ListenerPath::Full;
    }
    ListenerPath::Mixed(routes)
}

/// A route the lean path serves: a local answer, or HTTP/1 clusters only.
fn route_is_lean(snapshot: &Snapshot, action: &Action) -> bool {
    match action {
        Action::Forward(f) => f
            .destinations
            .iter()
            .all(|d| snapshot.clusters.get(d.cluster).is_some_and(|c| !c.policy.h2_upstream)),
        Action::Redirect(_) | Action::DirectResponse(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_clusters_take_the_full_path_others_the_lean_one() {
        let mut loaded = strait_config::Loaded::default();
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: app, namespace: default}
spec:
  hosts: ["app.example.com"]
  gateways: [gw]
  http:
  - match: [{uri: {prefix: /grpc}}]
    route: [{destination: {host: grpc.default.svc.cluster.local, port: {number: 9000}}}]
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: grpc, namespace: default}
spec:
  host: grpc.default.svc.cluster.local
  trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}
"#;
        strait_config::bundle::load_text(&mut loaded, "mixed.yaml", yaml);
        let scope = strait_config::testing::ingress_scope("default");
        let built = strait_config::build(&loaded, &scope, 1).expect("valid");
        let paths = compile(&built.snapshot);
        assert_eq!(paths, [ListenerPath::Mixed(vec![vec![false, true]])]);
    }

    #[test]
    fn a_table_of_http1_routes_is_lean_without_a_second_match() {
        let snapshot = strait_config::testing::large_snapshot(3, 4, 8080);
        assert_eq!(compile(&snapshot), [ListenerPath::Lean]);
    }
}

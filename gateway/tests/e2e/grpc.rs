//! gRPC through the gateway: a real tonic server (the standard health service)
//! and client, HTTP/2 both ways, trailers passed through, and the gateway's own
//! answers (faults, no upstream, timeouts) given as gRPC statuses.

use std::time::Duration;

use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::support::*;

const CONFIG: &str = r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: grpc, namespace: default}
spec:
  hosts: [grpc.example.com]
  gateways: [gw]
  http:
  - match: [{headers: {x-case: {exact: fault}}}]
    fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED}}
    route: [{destination: {host: health.internal}}]
  - match: [{headers: {x-case: {exact: nowhere}}}]
    route: [{destination: {host: nowhere.internal}}]
  - match: [{headers: {x-case: {exact: stuck}}}]
    timeout: 300ms
    route: [{destination: {host: stuck.internal}}]
  - route: [{destination: {host: health.internal}}]
"#;

async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    case: &str,
    service: &str,
) -> Result<i32, tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    request.metadata_mut().insert("x-case", case.parse().expect("ascii"));
    client.check(request).await.map(|r| r.into_inner().status)
}

/// A gRPC server on loopback with the standard health service, `strait.Test`
/// serving; returns its port.
pub(crate) async fn health_server() -> u16 {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("strait.Test", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tokio_stream_from(listener)),
    );
    port
}

/// A health client over h2c to the gateway on `port`, for grpc.example.com.
pub(crate) async fn health_client(port: u16) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("endpoint")
        .origin("http://grpc.example.com".parse().expect("origin"))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("h2c connection to the gateway");
    HealthClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_and_grpc_statuses() {
    let port = health_server().await;
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let config = http_gateway(&["grpc.example.com"])
        + CONFIG
        + &service_entry("health.internal", "GRPC", &[port])
        + &service_entry("stuck.internal", "GRPC", &[stuck.local_addr().expect("addr").port()]);
    let (gw, _dir) = start_with(&[("grpc.yaml", &config)]);

    let mut client = health_client(gw.http).await;

    // A unary call end to end; the status arrives in trailers.
    assert_eq!(check(&mut client, "ok", "strait.Test").await.expect("serving"), 1);
    // An error status from the server passes through as it is.
    let err = check(&mut client, "ok", "no.such.Service")
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The gateway's own answers are gRPC statuses too.
    let err = check(&mut client, "fault", "strait.Test")
        .await
        .expect_err("fault abort");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let err = check(&mut client, "nowhere", "strait.Test")
        .await
        .expect_err("no upstream");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let err = check(&mut client, "stuck", "strait.Test").await.expect_err("timeout");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "upstream request timeout");
}

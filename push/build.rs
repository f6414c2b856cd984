//! Generates the push protocol's and the CA protocol's messages and gRPC clients and
//! servers from their .proto files with protox (a protobuf compiler in Rust), so
//! building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/strait/push/v1/push.proto", "proto/istio/v1/auth/ca.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    // protox brings the well-known types (google/protobuf/struct.proto) itself.
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Shared between streams, not copied per proxy.
        .bytes(".strait.push.v1.Document.text")
        .bytes(".strait.push.v1.Endpoints.table")
        .compile_fds(descriptors)?;
    Ok(())
}

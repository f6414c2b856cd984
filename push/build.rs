//! Generates the push protocol's messages and gRPC client and server from the .proto
//! with protox (a protobuf compiler in Rust), so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/strait/push/v1/push.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Shared between streams, not copied per proxy.
        .bytes(".strait.push.v1.Document.text")
        .bytes(".strait.push.v1.Endpoints.table")
        .compile_fds(descriptors)?;
    Ok(())
}

//! Generates the gRPC service and messages from `proto/messaging.proto` with a
//! protobuf compiler written in Rust (protox), so no `protoc` has to be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/messaging.proto");
    let descriptors = protox::compile(["messaging.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}

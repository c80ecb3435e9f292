//! Compiles `proto/procflow/v1/procflow.proto` with protox (pure Rust), so no system
//! `protoc` is needed on a fresh machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/procflow/v1/procflow.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::SliceCodec")
        .compile_fds(descriptors)?;
    Ok(())
}

//! Compiles the cluster's control protocol (`proto/cluster.proto`) into Rust
//! with tonic's code generator. The `.proto` is parsed by protox (pure Rust),
//! so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cluster.proto");
    let descriptors = protox::compile(["proto/cluster.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}

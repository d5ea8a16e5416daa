//! Compiles `strata/v1/*.proto` (history, subscription) with protox (a protobuf compiler in Rust,
//! so building needs no `protoc` on the machine) and generates the tonic
//! server and client; also keeps the encoded descriptor set for server
//! reflection.

use std::path::PathBuf;

use protox::prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=strata/v1/history.proto");
    println!("cargo:rerun-if-changed=strata/v1/subscription.proto");
    let descriptors = protox::compile(
        ["strata/v1/history.proto", "strata/v1/subscription.proto"],
        ["."],
    )?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("strata_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}

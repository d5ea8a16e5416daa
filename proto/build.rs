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
    subscription_server();
    Ok(())
}

/// The server side of `SubscriptionService` as the API serves it: the
/// same routes and messages, except that `Subscribe` sends
/// `wire::EncodedSubscribeResponse`, whose events were encoded once for
/// every subscriber of a live feed (see `src/wire.rs`). Written to
/// `strata.v1.SubscriptionService.rs`.
fn subscription_server() {
    use tonic_build::manual::{Builder, Method, Service};
    const CODEC: &str = "tonic_prost::ProstCodec";
    let subscribe = Method::builder()
        .name("subscribe")
        .route_name("Subscribe")
        .input_type("crate::v1::SubscribeRequest")
        .output_type("crate::wire::EncodedSubscribeResponse")
        .codec_path(CODEC)
        .server_streaming()
        .build();
    let join_group = Method::builder()
        .name("join_group")
        .route_name("JoinGroup")
        .input_type("crate::v1::JoinGroupRequest")
        .output_type("crate::v1::JoinGroupResponse")
        .codec_path(CODEC)
        .client_streaming()
        .server_streaming()
        .build();
    let service = Service::builder()
        .name("SubscriptionService")
        .package("strata.v1")
        .comment("Live streams of stored events (see subscription.proto).")
        .method(subscribe)
        .method(join_group)
        .build();
    Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[service]);
}

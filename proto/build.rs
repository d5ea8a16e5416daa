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
    subscription_server(&descriptors)?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}

/// The server side of `SubscriptionService` as the API serves it: the
/// methods of `subscription.proto`, except that `Subscribe` sends
/// `wire::EncodedSubscribeResponse`, whose events were encoded once for
/// every subscriber of a live feed (see `src/wire.rs`). Written to
/// `strata.v1.SubscriptionService.rs`.
fn subscription_server(
    descriptors: &protox::prost_reflect::prost_types::FileDescriptorSet,
) -> Result<(), Box<dyn std::error::Error>> {
    use tonic_build::manual::{Builder, Method, Service};
    const CODEC: &str = "tonic_prost::ProstCodec";
    const PACKAGE: &str = "strata.v1";
    let proto = descriptors
        .file
        .iter()
        .filter(|file| file.package() == PACKAGE)
        .flat_map(|file| &file.service)
        .find(|service| service.name() == "SubscriptionService")
        .ok_or("subscription.proto has no SubscriptionService")?;
    // ".strata.v1.SubscribeRequest" -> "crate::v1::SubscribeRequest"
    let rust_type = |proto_type: &str| -> Result<String, String> {
        proto_type
            .strip_prefix(".strata.v1.")
            .map(|name| format!("crate::v1::{name}"))
            .ok_or_else(|| format!("{proto_type} is not a strata.v1 message"))
    };
    let mut service = Service::builder()
        .name("SubscriptionService")
        .package(PACKAGE)
        .comment("Live streams of stored events (see subscription.proto).");
    for method in &proto.method {
        let output = match method.name() {
            "Subscribe" => "crate::wire::EncodedSubscribeResponse".to_string(),
            _ => rust_type(method.output_type())?,
        };
        let mut built = Method::builder()
            .name(snake_case(method.name()))
            .route_name(method.name())
            .input_type(rust_type(method.input_type())?)
            .output_type(output)
            .codec_path(CODEC);
        if method.client_streaming() {
            built = built.client_streaming();
        }
        if method.server_streaming() {
            built = built.server_streaming();
        }
        service = service.method(built.build());
    }
    Builder::new()
        .build_client(false)
        .build_transport(false)
        .compile(&[service.build()]);
    Ok(())
}

/// "JoinGroup" -> "join_group".
fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for (index, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if index > 0 {
                snake.push('_');
            }
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

//! The API's contract (`proto/strata/v1/history.proto`,
//! `subscription.proto`) as Rust:
//! messages, the tonic server trait and client, and the encoded descriptor
//! set that server reflection serves.

/// `strata.v1`: generated from `strata/v1/history.proto` and
/// `strata/v1/subscription.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("strata.v1");
}

/// The encoded `FileDescriptorSet` of every proto file (for reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/strata_descriptor.bin"));

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_describes_the_history_service() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("valid descriptor set");
        let file = set
            .file
            .iter()
            .find(|f| f.name() == "strata/v1/history.proto")
            .expect("history.proto");
        let service = file
            .service
            .iter()
            .find(|s| s.name() == "HistoryService")
            .expect("HistoryService service");
        let methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
        assert_eq!(
            methods,
            [
                "ListActivity",
                "GetEvent",
                "ExportActivity",
                "StartExport",
                "GetExport",
                "ListExports",
                "CancelExport"
            ]
        );
    }

    #[test]
    fn page_size_is_the_documented_field() {
        let request = super::v1::ListActivityRequest {
            page_size: 1000,
            ..Default::default()
        };
        let bytes = request.encode_to_vec();
        let back = super::v1::ListActivityRequest::decode(bytes.as_slice()).expect("decode");
        assert_eq!(back.page_size, 1000);
    }
}

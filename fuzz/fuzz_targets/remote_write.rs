#![no_main]
//! Remote write and Loki push bodies (snappy block + protobuf), with a decompression limit.

use libfuzzer_sys::fuzz_target;
use vigil_core::{loki, remote_write};

const LIMIT: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = remote_write::decode(data, LIMIT) {
        let body = remote_write::encode(&request).expect("encode");
        let again = remote_write::decode(&body, usize::MAX).expect("decode what we encoded");
        assert_eq!(
            prost::Message::encode_to_vec(&again),
            prost::Message::encode_to_vec(&request)
        );
    }
    if let Ok(request) = loki::decode(data, LIMIT) {
        let body = loki::encode(&request).expect("encode");
        let again = loki::decode(&body, usize::MAX).expect("decode what we encoded");
        assert_eq!(again, request);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = loki::parse_labels(text);
    }
});

#![no_main]
//! Decompression with limits: the collector's gzip body reader and the snappy block
//! decoder; neither may return more than its limit, whatever the input claims.

use libfuzzer_sys::fuzz_target;
use vigil_collector::receiver::http::gunzip;
use vigil_core::snappy::{self, SnappyError};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, body)) = data.split_first() else {
        return;
    };
    let limit = 1usize << (8 + knob % 12);
    if let Ok(out) = gunzip(body, limit) {
        assert!(out.len() <= limit);
    }
    match snappy::decode_message::<vigil_core::loki::PushRequest>(body, limit) {
        Ok(_) | Err(SnappyError::Protobuf(_)) => {
            assert!(snap::raw::decompress_len(body).unwrap() <= limit);
        }
        Err(_) => {}
    }
});

#![no_main]
//! OTLP/JSON export requests (first byte picks the signal) through the receiver's decode
//! path, the splitter, and the remote write and Loki conversions.

mod otlp_common;

use libfuzzer_sys::fuzz_target;
use vigil_core::otlp::Encoding;

fuzz_target!(|data: &[u8]| otlp_common::run(Encoding::Json, data));

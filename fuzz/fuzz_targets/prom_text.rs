#![no_main]
//! The agent's Prometheus text / OpenMetrics parser.

use libfuzzer_sys::fuzz_target;
use vigil_agent::scrape::parse::{Format, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    for format in [Format::Text, Format::OpenMetrics] {
        if let Ok(families) = parse(body, format) {
            for family in &families {
                for sample in &family.samples {
                    assert!(body.contains(sample.name));
                }
            }
        }
    }
});

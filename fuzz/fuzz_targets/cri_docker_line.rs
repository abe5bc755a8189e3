#![no_main]
//! The agent's line splitter and CRI / Docker json-file / raw decoders, fed a file in two
//! chunks with a small line limit (first byte) so cut lines and merges happen.

use libfuzzer_sys::fuzz_target;
use vigil_agent::config::LogFormat;
use vigil_agent::tail::format::Decoder;
use vigil_agent::tail::line::LineSplitter;

fuzz_target!(|data: &[u8]| {
    let Some((&knob, file)) = data.split_first() else {
        return;
    };
    let max = 1 + usize::from(knob & 0x7f);
    let cut = file.len() / 2;
    let mut lines = Vec::new();
    let mut splitter = LineSplitter::new(max, 0);
    splitter.feed(&file[..cut], &mut lines);
    splitter.feed(&file[cut..], &mut lines);
    splitter.finish(&mut lines);
    assert!(lines.iter().all(|l| l.bytes.len() <= max), "a piece over the line limit");
    for format in [LogFormat::Cri, LogFormat::Docker, LogFormat::Raw] {
        let mut decoder = Decoder::new(format, max);
        let mut entries = Vec::new();
        for line in lines.iter().cloned() {
            decoder.push(line, &mut entries);
            if knob & 0x80 != 0 {
                decoder.flush_partial(&mut entries);
            }
        }
        decoder.finish(file.len() as u64, &mut entries);
        let out: usize = entries.iter().map(|e| e.body.len()).sum();
        assert!(out <= file.len(), "{out} bytes of entries from {} bytes", file.len());
    }
});

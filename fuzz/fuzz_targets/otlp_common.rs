// Shared by otlp_proto and otlp_json: everything a collector does with a request body it
// accepted, from the receiver's check to the exporters' conversions.

use bytes::Bytes;
use vigil_core::Signal;
use vigil_core::otlp::{self, Encoding, Request};
use vigil_core::{loki, remote_write};

pub fn run(encoding: Encoding, data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let signal = match selector % 3 {
        0 => Signal::Metrics,
        1 => Signal::Logs,
        _ => Signal::Traces,
    };
    let Ok(inspected) = otlp::inspect(signal, encoding, Bytes::copy_from_slice(body)) else {
        return;
    };
    // The stored protobuf always decodes again, to the same items.
    let request = Request::decode(signal, Encoding::Protobuf, &inspected.protobuf)
        .expect("what inspect accepted decodes again");
    let limit = 64 + usize::from(selector) * 8;
    if let Ok(pieces) = otlp::split(signal, inspected.protobuf.clone(), limit) {
        assert_eq!(
            pieces.iter().map(|p| p.items).sum::<u64>(),
            inspected.items,
            "split loses or invents items"
        );
    }
    match request {
        Request::Metrics(r) => {
            let converted =
                remote_write::convert(&[r], &remote_write::ConvertOptions::default());
            converted.body().expect("encode");
        }
        Request::Logs(r) => {
            let converted = loki::convert(&[r], &loki::LokiOptions::default(), 1);
            loki::encode(&converted.request).expect("encode");
        }
        Request::Traces(_) => {}
    }
}

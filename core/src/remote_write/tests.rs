//! Wire tests: encode and decode.

use prost::Message;

use super::*;

#[test]
fn encode_decode_round_trip() {
    let request = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("__name__", "g_seconds"), Label::new("a", "b")],
            samples: vec![Sample {
                value: 0.5,
                timestamp: 1000,
            }],
        }],
        metadata: vec![MetricMetadata {
            r#type: MetricType::Gauge as i32,
            metric_family_name: "g_seconds".into(),
            help: "about g".into(),
            unit: "seconds".into(),
        }],
    };
    let body = encode(&request).expect("small request encodes");
    // Snappy block format, not framed: the body starts with the varint length.
    assert_eq!(
        snap::raw::decompress_len(&body).ok(),
        Some(request.encoded_len())
    );
    let decoded = decode(&body, 1 << 20).expect("own encoding decodes");
    assert_eq!(decoded, request);
    assert_eq!(HEADERS[2], ("X-Prometheus-Remote-Write-Version", "0.1.0"));
}

#[test]
fn decode_refuses_oversized_and_garbage_bodies() {
    let big = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label::new("__name__", "x".repeat(4096))],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 1,
            }],
        }],
        metadata: vec![],
    };
    let body = encode(&big).expect("encodes");
    assert!(matches!(
        decode(&body, 1024),
        Err(DecodeError::TooLarge { limit: 1024, .. })
    ));
    // A header that claims 2 GiB in five bytes is refused before any allocation.
    let liar = [0x80, 0x80, 0x80, 0x80, 0x08];
    assert!(matches!(
        decode(&liar, 1 << 20),
        Err(DecodeError::TooLarge { .. })
    ));
    assert!(matches!(
        decode(&[0xff; 16], 1 << 20),
        Err(DecodeError::Snappy(_))
    ));
    assert!(matches!(
        decode(&body[..body.len() / 2], 1 << 20),
        Err(DecodeError::Snappy(_))
    ));
    let not_protobuf = snap::raw::Encoder::new()
        .compress_vec(&[0xff; 32])
        .expect("compresses");
    assert!(matches!(
        decode(&not_protobuf, 1 << 20),
        Err(DecodeError::Protobuf(_))
    ));
    // Even an empty request compresses to one byte; an empty body is not snappy.
    assert!(decode(&[], 1 << 20).is_err());
}

//! A protobuf message in snappy's *block* format (not the framed stream format), both ways:
//! the body of a Prometheus remote write request and of a Loki push.
//!
//! Decoding reads the decompressed size the block's header declares and refuses a body that
//! declares more than a limit before allocating anything for it, so a few hostile bytes
//! cannot make a receiver allocate gigabytes.

use prost::Message;

/// Why a message could not be compressed, or a body could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum SnappyError {
    /// Snappy's block format holds at most about 4 GiB; a batcher that lets a message grow
    /// that large has a bug, but it gets this error, not a panic.
    #[error("message of {len} bytes cannot be snappy-compressed: {source}")]
    Compress { len: usize, source: snap::Error },
    #[error("snappy body declares {declared} decompressed bytes, over the limit of {limit}")]
    TooLarge { declared: usize, limit: usize },
    #[error("invalid snappy body: {0}")]
    Snappy(#[from] snap::Error),
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

/// The message as protobuf, compressed as one snappy block.
pub fn encode_message<M: Message>(message: &M) -> Result<Vec<u8>, SnappyError> {
    compress(&message.encode_to_vec())
}

/// Bytes (an encoded message) compressed as one snappy block.
pub fn compress(raw: &[u8]) -> Result<Vec<u8>, SnappyError> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .map_err(|source| SnappyError::Compress {
            len: raw.len(),
            source,
        })
}

/// Reads back what [`encode_message`] wrote. A body whose header declares more than
/// `max_decompressed` bytes is refused before anything is allocated for it.
pub fn decode_message<M: Message + Default>(
    body: &[u8],
    max_decompressed: usize,
) -> Result<M, SnappyError> {
    let declared = snap::raw::decompress_len(body)?;
    if declared > max_decompressed {
        return Err(SnappyError::TooLarge {
            declared,
            limit: max_decompressed,
        });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    Ok(M::decode(raw.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Note {
        #[prost(string, tag = "1")]
        text: String,
        #[prost(uint64, tag = "2")]
        n: u64,
    }

    fn note(len: usize) -> Note {
        Note {
            text: "x".repeat(len),
            n: 1_700_000_000_123_456_789,
        }
    }

    #[test]
    fn round_trip_is_one_snappy_block() {
        let sent = note(300);
        let body = encode_message(&sent).unwrap();
        // A snappy block starts with the varint length, not the framed format's 0xff "sNaPpY".
        assert_ne!(body.first(), Some(&0xff));
        assert_eq!(
            snap::raw::decompress_len(&body).ok(),
            Some(sent.encoded_len())
        );
        // Repetitive text compresses.
        assert!(body.len() < sent.encoded_len() / 2, "{} bytes", body.len());
        let back: Note = decode_message(&body, 1 << 20).unwrap();
        assert_eq!(back, sent);
        // An empty message still compresses to one byte (the zero length) and reads back.
        let empty = encode_message(&Note::default()).unwrap();
        assert_eq!(empty, [0]);
        assert_eq!(decode_message::<Note>(&empty, 0).unwrap(), Note::default());
    }

    #[test]
    fn limit_is_checked_against_the_declared_size_before_allocating() {
        let sent = note(4096);
        let raw_len = sent.encoded_len();
        let body = encode_message(&sent).unwrap();
        // Exactly at the limit is allowed; one byte under is not.
        assert_eq!(decode_message::<Note>(&body, raw_len).unwrap(), sent);
        match decode_message::<Note>(&body, raw_len - 1) {
            Err(SnappyError::TooLarge { declared, limit }) => {
                assert_eq!((declared, limit), (raw_len, raw_len - 1));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Headers alone declaring 2 GiB (varint 80 80 80 80 08) and 4 GiB - 1 (ff ff ff ff 0f),
        // with no data behind them: refused on the header, nothing allocated.
        for liar in [
            [0x80, 0x80, 0x80, 0x80, 0x08],
            [0xff, 0xff, 0xff, 0xff, 0x0f],
        ] {
            let err = decode_message::<Note>(&liar, 16 << 20).unwrap_err();
            assert!(matches!(err, SnappyError::TooLarge { .. }), "{err}");
            assert!(
                err.to_string().contains("over the limit of 16777216"),
                "{err}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let body = encode_message(&note(4096)).unwrap();
        for bad in [
            &[][..],
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80],
            &[0xff; 16],
            b"definitely not snappy",
            &body[..body.len() / 2],
        ] {
            let err = decode_message::<Note>(bad, 1 << 20).unwrap_err();
            assert!(matches!(err, SnappyError::Snappy(_)), "{bad:?}: {err}");
            assert!(
                err.to_string().starts_with("invalid snappy body: "),
                "{err}"
            );
        }
        // Valid snappy around bytes that are no protobuf (0xff is no valid tag).
        let not_protobuf = snap::raw::Encoder::new().compress_vec(&[0xff; 32]).unwrap();
        let err = decode_message::<Note>(&not_protobuf, 1 << 20).unwrap_err();
        assert!(matches!(err, SnappyError::Protobuf(_)), "{err}");
        assert!(err.to_string().starts_with("invalid protobuf: "), "{err}");
    }
}

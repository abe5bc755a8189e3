//! Reading a gzip body with a bound on what it inflates to.
//!
//! A few kilobytes of gzip can inflate to gigabytes, so the decompressed size is checked as
//! it grows and the output buffer never holds more than the limit: the buffer is grown by
//! hand, capped at the limit, rather than left to `Vec`'s doubling (which could reserve up to
//! twice what the limit allows).

use std::io::Read;

use flate2::read::MultiGzDecoder;

#[derive(Debug, thiserror::Error)]
pub enum GzipError {
    #[error("body exceeds {limit} bytes once decompressed")]
    TooLarge { limit: usize },
    #[error("invalid gzip body: {0}")]
    Invalid(#[from] std::io::Error),
}

/// Inflates `compressed` (one or more gzip members, as RFC 1952 allows) into at most `limit`
/// bytes; one byte more is [`GzipError::TooLarge`]. The returned buffer's capacity never
/// exceeds `limit`.
pub fn decompress(compressed: &[u8], limit: usize) -> Result<Vec<u8>, GzipError> {
    let mut decoder = MultiGzDecoder::new(compressed);
    // A first guess from the input size; gzip rarely compresses text below a quarter.
    let mut out: Vec<u8> = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(GzipError::Invalid(e)),
        };
        if n > limit - out.len() {
            return Err(GzipError::TooLarge { limit });
        }
        if out.capacity() - out.len() < n {
            // Double, as `Vec` would, but never past the limit.
            let target = out
                .capacity()
                .saturating_mul(2)
                .max(out.len() + n)
                .min(limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use proptest::prelude::*;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn inflates_up_to_the_limit_and_refuses_one_byte_more() {
        let body = gzip(&[b'a'; 10_000]);
        let out = decompress(&body, 10_000).unwrap();
        assert_eq!(out, [b'a'; 10_000]);
        assert!(out.capacity() <= 10_000, "capacity {}", out.capacity());
        let err = decompress(&body, 9_999).unwrap_err();
        assert!(matches!(err, GzipError::TooLarge { limit: 9_999 }), "{err}");
        // Members are concatenated and the limit covers them all.
        let two = [gzip(&[1; 600]), gzip(&[2; 600])].concat();
        assert_eq!(decompress(&two, 1200).unwrap().len(), 1200);
        assert!(matches!(
            decompress(&two, 1199),
            Err(GzipError::TooLarge { .. })
        ));
        // No member at all is not a gzip body.
        assert!(matches!(decompress(&[], 10), Err(GzipError::Invalid(_))));
        let err = decompress(b"not gzip", 10).unwrap_err();
        assert!(err.to_string().starts_with("invalid gzip body: "), "{err}");
    }

    #[test]
    fn a_bomb_is_refused_without_allocating_past_the_limit() {
        // 16 MiB of zeros is about 16 KiB of gzip.
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..16 {
            encoder.write_all(&zeros).unwrap();
        }
        let bomb = encoder.finish().unwrap();
        assert!(bomb.len() < 1 << 15, "{} bytes", bomb.len());
        let err = decompress(&bomb, 1 << 20).unwrap_err();
        assert!(
            matches!(err, GzipError::TooLarge { limit } if limit == 1 << 20),
            "{err}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..Default::default() })]

        #[test]
        fn inflated_size_is_checked_exactly(
            byte in any::<u8>(),
            len in 0usize..200_000,
            limit in 0usize..200_000,
        ) {
            // A run of one byte: a tiny body that may inflate past the limit.
            let body = gzip(&vec![byte; len]);
            match decompress(&body, limit) {
                Ok(out) => {
                    prop_assert!(len <= limit);
                    prop_assert_eq!(out.len(), len);
                    prop_assert!(out.capacity() <= limit);
                }
                Err(GzipError::TooLarge { .. }) => prop_assert!(len > limit),
                Err(e) => prop_assert!(false, "{}", e),
            }
        }

        #[test]
        fn arbitrary_bytes_are_an_error_or_within_the_limit(
            body in prop::collection::vec(any::<u8>(), 0..512),
            limit in 0usize..4096,
        ) {
            if let Ok(out) = decompress(&body, limit) {
                prop_assert!(out.len() <= limit && out.capacity() <= limit);
            }
        }
    }
}

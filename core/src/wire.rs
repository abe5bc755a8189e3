//! Protobuf fields written straight from borrowed values, for the hot paths that encode
//! without first building messages: remote write series from OTLP, and the agent's scraped
//! points. Each function writes the bytes prost writes for the same field (property tests
//! of both users compare them with prost's encoding). Every tag used with these is below
//! 16, so a key is one byte.
//!
//! Varints are pushed onto the `Vec` directly: prost's `encode_varint` goes through the
//! generic `BufMut` per byte, and was a sixth of the histogram conversion's instructions.

use prost::encoding::{WireType, encoded_len_varint};

/// A field key: one byte, as every tag here is below 16.
fn key(buf: &mut Vec<u8>, tag: u32, wire_type: WireType) {
    debug_assert!((1..16).contains(&tag), "tag {tag} needs a longer key");
    buf.push(((tag << 3) | wire_type as u32) as u8);
}

/// A base-128 varint, low groups first.
fn push_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Bytes of a length-delimited field whose body is `len` bytes.
pub fn delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// Bytes of a proto3 `string` field: none when it is empty (the default is left out).
pub fn string_len(s: &str) -> usize {
    match s.len() {
        0 => 0,
        len => delimited_len(len),
    }
}

/// A proto3 `string` field, left out when empty.
pub fn string(buf: &mut Vec<u8>, tag: u32, s: &str) {
    if !s.is_empty() {
        bytes(buf, tag, s.as_bytes());
    }
}

/// A length-delimited field written even when empty (a `oneof` member, a message).
pub fn bytes(buf: &mut Vec<u8>, tag: u32, body: &[u8]) {
    delimited_header(buf, tag, body.len());
    buf.extend_from_slice(body);
}

/// The key and length of a length-delimited field whose `len` bytes come next.
pub fn delimited_header(buf: &mut Vec<u8>, tag: u32, len: usize) {
    key(buf, tag, WireType::LengthDelimited);
    push_varint(buf, len as u64);
}

/// A `double` or `fixed64` field (nine bytes), written whatever its value.
pub fn fixed64(buf: &mut Vec<u8>, tag: u32, bits: u64) {
    key(buf, tag, WireType::SixtyFourBit);
    buf.extend_from_slice(&bits.to_le_bytes());
}

/// Bytes of a varint field.
pub fn varint_len(value: u64) -> usize {
    1 + encoded_len_varint(value)
}

/// A varint field (`int64`, `uint32`, `bool`, enum), written whatever its value.
pub fn varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    key(buf, tag, WireType::Varint);
    push_varint(buf, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_keys_are_the_bytes_prost_writes() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            for tag in 1..16 {
                let mut ours = Vec::new();
                varint(&mut ours, tag, value);
                let mut theirs = Vec::new();
                prost::encoding::encode_key(tag, WireType::Varint, &mut theirs);
                prost::encoding::encode_varint(value, &mut theirs);
                assert_eq!(ours, theirs, "tag {tag}, value {value}");
                assert_eq!(ours.len(), varint_len(value));
            }
        }
    }
}

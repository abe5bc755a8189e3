//! Protobuf fields written straight from borrowed values, for the hot paths that encode
//! without first building messages: remote write series from OTLP, and the agent's scraped
//! points. Keys and varints are prost's; each function writes the bytes prost writes for
//! the same field. Every tag used with these is below 16, so a key is one byte.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

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
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// A `double` or `fixed64` field (nine bytes), written whatever its value.
pub fn fixed64(buf: &mut Vec<u8>, tag: u32, bits: u64) {
    encode_key(tag, WireType::SixtyFourBit, buf);
    buf.extend_from_slice(&bits.to_le_bytes());
}

/// Bytes of a varint field.
pub fn varint_len(value: u64) -> usize {
    1 + encoded_len_varint(value)
}

/// A varint field (`int64`, `uint32`, `bool`, enum), written whatever its value.
pub fn varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, buf);
    encode_varint(value, buf);
}

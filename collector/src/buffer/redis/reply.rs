//! Reading Redis replies without trusting them: every accessor returns `Option`, so a reply
//! of an unexpected shape becomes an error or a skipped entry, never a panic.

use bytes::Bytes;
use redis::Value;

/// One stream entry as XREADGROUP, XRANGE and XAUTOCLAIM return it.
pub(super) struct StreamEntry {
    pub id: String,
    /// The `record` field; `None` when the entry was deleted but is still in the PEL
    /// (Redis answers such entries with a nil body).
    pub record: Option<Bytes>,
}

pub(super) fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        _ => None,
    }
}

pub(super) fn string(value: &Value) -> Option<String> {
    bytes(value).map(|b| String::from_utf8_lossy(b).into_owned())
}

pub(super) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(*i),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

pub(super) fn array(value: &Value) -> Option<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

/// Field/value pairs of a RESP2 flat array or a RESP3 map.
pub(super) fn pairs(value: &Value) -> Option<Vec<(&Value, &Value)>> {
    match value {
        Value::Map(pairs) => Some(pairs.iter().map(|(k, v)| (k, v)).collect()),
        other => {
            let items = array(other)?;
            Some(items.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect())
        }
    }
}

/// The value of `field` in a field/value reply.
pub(super) fn field<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    pairs(value)?
        .into_iter()
        .find(|(k, _)| bytes(k) == Some(name.as_bytes()))
        .map(|(_, v)| v)
}

/// `[id, [field, value, ...]]`, or `[id, nil]` for an entry deleted while pending.
pub(super) fn entry(value: &Value) -> Option<StreamEntry> {
    let parts = array(value)?;
    let id = string(parts.first()?)?;
    let record = match parts.get(1) {
        None | Some(Value::Nil) => None,
        // A body without a `record` field is not ours; an empty record fails to decode and
        // is dead-lettered rather than silently dropped.
        Some(body) => Some(Bytes::copy_from_slice(
            field(body, "record").and_then(bytes).unwrap_or_default(),
        )),
    };
    Some(StreamEntry { id, record })
}

/// A list of entries; entries of an unexpected shape are left out.
pub(super) fn entries(value: &Value) -> Vec<StreamEntry> {
    array(value)
        .map(|items| items.iter().filter_map(entry).collect())
        .unwrap_or_default()
}

/// XREADGROUP's answer for one stream: `[[key, entries]]` (RESP2) or `{key: entries}`
/// (RESP3); nil when the block timed out.
pub(super) fn read_group(value: &Value) -> Vec<StreamEntry> {
    match value {
        Value::Map(streams) => streams.first().map(|(_, e)| entries(e)),
        other => array(other)
            .and_then(|streams| streams.first())
            .and_then(array)
            .and_then(|stream| stream.get(1))
            .map(entries),
    }
    .unwrap_or_default()
}

/// XPENDING's extended form: `[[id, consumer, idle_ms, deliveries], ...]` as (id, deliveries).
pub(super) fn pending_counts(value: &Value) -> Vec<(String, u64)> {
    array(value)
        .map(|rows| {
            rows.iter()
                .filter_map(|row| {
                    let row = array(row)?;
                    let id = string(row.first()?)?;
                    let deliveries = int(row.get(3)?)?;
                    Some((id, deliveries.max(0) as u64))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The milliseconds part of a stream id (`<ms>-<seq>`).
pub(super) fn id_ms(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn read_group_reply_is_parsed_and_odd_entries_skipped() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("vigil:logs"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![
                        bulk("signal"),
                        bulk("logs"),
                        bulk("record"),
                        bulk("xy"),
                    ]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                Value::Int(7),
            ]),
        ])]);
        let entries = read_group(&reply);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].record.as_deref(), Some(&b"xy"[..]));
        assert!(entries[1].record.is_none());
        assert!(read_group(&Value::Nil).is_empty());
    }

    #[test]
    fn pending_counts_and_ids() {
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("5-1"), bulk("c"), Value::Int(10), Value::Int(3)]),
            Value::Array(vec![bulk("bad")]),
        ]);
        assert_eq!(pending_counts(&reply), vec![("5-1".to_string(), 3)]);
        assert_eq!(id_ms("1700000000123-4"), Some(1_700_000_000_123));
        assert_eq!(id_ms("x"), None);
    }
}

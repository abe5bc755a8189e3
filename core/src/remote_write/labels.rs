//! The labels of a series: who sent it (`job`, `instance`), which scope, which attributes,
//! and which of them wins when two share a name.
//!
//! Per data point the labels are gathered into one reusable scratch vector of borrowed
//! strings, sorted and merged there, and each series then writes them out in order
//! ([`each_series_label`]) straight into the encoded request: no label string is copied
//! into an owned value anywhere.

use std::borrow::Cow;

use super::input::{Attribute, KeyValue, text, value_text};
use super::naming::label_name;

// Precedence of labels with the same name, lowest first (see the module doc of the parent).
pub(super) const PROMOTED: u8 = 0;
pub(super) const ATTRIBUTE: u8 = 1;
pub(super) const IDENTITY: u8 = 2;

/// `job` and `instance` of a resource, from `service.namespace`/`service.name` and
/// `service.instance.id`; empty when the resource lacks them.
pub(super) struct Identity {
    pub(super) job: String,
    pub(super) instance: String,
}

impl Identity {
    pub(super) fn of(attributes: &[KeyValue]) -> Self {
        let (mut name, mut namespace, mut instance) = (None, None, None);
        for kv in attributes {
            let slot = match text(&kv.key) {
                "service.name" => &mut name,
                "service.namespace" => &mut namespace,
                "service.instance.id" => &mut instance,
                _ => continue,
            };
            *slot = Some(value_text(kv.value.as_ref()));
        }
        let job = match (namespace, name) {
            (Some(ns), Some(name)) if !ns.is_empty() => format!("{ns}/{name}"),
            (_, Some(name)) => name.into_owned(),
            (_, None) => String::new(),
        };
        Identity {
            job,
            instance: instance.map(Cow::into_owned).unwrap_or_default(),
        }
    }

    pub(super) fn labels(&self) -> Vec<FixedLabel> {
        let mut fixed = Vec::with_capacity(4);
        push_fixed(&mut fixed, "job", Cow::Borrowed(&self.job), IDENTITY);
        push_fixed(
            &mut fixed,
            "instance",
            Cow::Borrowed(&self.instance),
            IDENTITY,
        );
        fixed
    }

    pub(super) fn is_identifying(key: &str) -> bool {
        matches!(
            key,
            "service.name" | "service.namespace" | "service.instance.id"
        )
    }
}

/// A label shared by every series of a resource or scope.
#[derive(Clone)]
pub(super) struct FixedLabel {
    name: String,
    value: String,
    priority: u8,
}

pub(super) fn push_fixed(
    fixed: &mut Vec<FixedLabel>,
    key: &str,
    value: Cow<'_, str>,
    priority: u8,
) {
    if let (Some(name), false) = (label_name(key), value.is_empty()) {
        fixed.push(FixedLabel {
            name: name.into_owned(),
            value: value.into_owned(),
            priority,
        });
    }
}

/// One label of a data point before it is owned by a series.
pub(super) struct Entry<'a> {
    name: Cow<'a, str>,
    /// The original key: the spec orders values joined by `;` by it.
    key: &'a str,
    value: Cow<'a, str>,
    priority: u8,
}

/// Fills `scratch` with the labels of one data point, sorted by name, one per name.
pub(super) fn gather<'a, 'b: 'a>(
    scratch: &mut Vec<Entry<'a>>,
    fixed: &'a [FixedLabel],
    attributes: impl IntoIterator<Item = Attribute<'b>>,
) {
    scratch.clear();
    scratch.extend(fixed.iter().map(|f| Entry {
        name: Cow::Borrowed(&f.name),
        key: &f.name,
        value: Cow::Borrowed(&f.value),
        priority: f.priority,
    }));
    for (key, value) in attributes {
        let Some(name) = label_name(key) else {
            continue;
        };
        if !value.is_empty() {
            scratch.push(Entry {
                name,
                key,
                value,
                priority: ATTRIBUTE,
            });
        }
    }
    scratch.sort_unstable_by(|a, b| {
        by_name(&a.name, &b.name)
            .then(b.priority.cmp(&a.priority))
            .then_with(|| a.key.cmp(b.key))
    });
    // The first of each name has the highest priority; equals of the same priority (two
    // attributes sanitised to one name) are joined, the rest give way.
    scratch.dedup_by(|next, kept| {
        if next.name != kept.name {
            return false;
        }
        if next.priority == kept.priority && next.priority != IDENTITY {
            let joined = kept.value.to_mut();
            joined.push(';');
            joined.push_str(&next.value);
        }
        true
    });
}

/// Names in byte order. Most names of a point differ in their first byte, which decides
/// without a call to `memcmp`.
fn by_name(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

/// The attributes of a message as label text.
pub(super) fn attributes(kvs: &[KeyValue]) -> impl Iterator<Item = Attribute<'_>> {
    kvs.iter()
        .map(|kv| (text(&kv.key), value_text(kv.value.as_ref())))
}

/// Calls `label` with each label of one series, sorted by name: the gathered ones plus
/// `__name__` and, for buckets and quantiles, one more. Those two win over a gathered label
/// of the same name.
pub(super) fn each_series_label(
    entries: &[Entry<'_>],
    name: &str,
    extra: Option<(&'static str, &str)>,
    mut label: impl FnMut(&str, &str),
) {
    let own = [Some(("__name__", name)), extra];
    let mut own_iter = own.iter().flatten().peekable();
    for e in entries {
        while let Some((n, v)) = own_iter.next_if(|(n, _)| *n <= e.name.as_ref()) {
            label(n, v);
        }
        if own.iter().flatten().any(|(n, _)| *n == e.name) {
            continue;
        }
        label(e.name.as_ref(), e.value.as_ref());
    }
    for (n, v) in own_iter {
        label(n, v);
    }
}

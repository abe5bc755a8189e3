//! Merging the lines of one message (a stack trace) into one entry: a line matching the
//! start pattern begins an entry, other lines join the entry before them. An entry leaves
//! when the next one starts, when nothing joined it for `timeout`, or at `max_bytes`.

use std::time::{Duration, Instant};

use regex::bytes::Regex;

use crate::tail::format::Entry;

#[derive(Debug)]
pub struct Multiline {
    start: Regex,
    timeout: Duration,
    max_bytes: usize,
    pending: Option<(Entry, Instant)>,
}

impl Multiline {
    pub fn new(start: Regex, timeout: Duration, max_bytes: usize) -> Multiline {
        Multiline {
            start,
            timeout,
            max_bytes: max_bytes.max(1),
            pending: None,
        }
    }

    /// Takes the next entry of the file, pushing whatever it completes.
    pub fn push(&mut self, entry: Entry, now: Instant, out: &mut Vec<Entry>) {
        let starts = self.start.is_match(&entry.body);
        let merged = match self.pending.take() {
            Some((pending, _))
                if !starts && pending.body.len() + 1 + entry.body.len() > self.max_bytes =>
            {
                // Joining would pass the limit: the message leaves cut, the rest goes on.
                out.push(Entry {
                    split: true,
                    ..pending
                });
                entry
            }
            Some((mut pending, _)) if !starts => {
                pending.body.push(b'\n');
                pending.body.extend_from_slice(&entry.body);
                pending.split |= entry.split;
                pending.resume_offset = entry.resume_offset;
                pending
            }
            Some((pending, _)) => {
                out.push(pending);
                entry
            }
            None => entry,
        };
        match merged.body.len() >= self.max_bytes {
            true => out.push(Entry {
                split: true,
                ..merged
            }),
            false => self.pending = Some((merged, now)),
        }
    }

    /// Pushes the pending entry if nothing joined it for the timeout.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<Entry>) {
        if let Some((_, since)) = &self.pending
            && now.saturating_duration_since(*since) >= self.timeout
        {
            out.extend(self.pending.take().map(|(entry, _)| entry));
        }
    }

    /// Pushes the pending entry, whatever its age.
    pub fn finish(&mut self, out: &mut Vec<Entry>) {
        out.extend(self.pending.take().map(|(entry, _)| entry));
    }

    /// When the pending entry, if any, must leave.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|(_, since)| *since + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &str, offset: u64) -> Entry {
        Entry {
            time_unix_nano: offset,
            stream: None,
            body: body.as_bytes().to_vec(),
            split: false,
            resume_offset: offset,
        }
    }

    fn bodies(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.body).into_owned())
            .collect()
    }

    #[test]
    fn stack_traces_merge_and_leave_on_next_start_or_timeout() {
        let mut m = Multiline::new(Regex::new(r"^\S").unwrap(), Duration::from_secs(1), 1024);
        let t0 = Instant::now();
        let mut out = Vec::new();
        for (i, line) in [
            "Exception in main",
            "  at a()",
            "  at b()",
            "next message",
            "  at c()",
        ]
        .iter()
        .enumerate()
        {
            m.push(entry(line, i as u64 + 1), t0, &mut out);
        }
        assert_eq!(bodies(&out), vec!["Exception in main\n  at a()\n  at b()"]);
        assert_eq!(
            out[0].resume_offset, 3,
            "resumes after the last merged line"
        );
        assert_eq!(out[0].time_unix_nano, 1, "keeps the first line's time");

        m.flush_expired(t0 + Duration::from_millis(999), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(1)));
        m.flush_expired(t0 + Duration::from_secs(1), &mut out);
        assert_eq!(bodies(&out)[1], "next message\n  at c()");
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn merged_entries_are_bounded() {
        let mut m = Multiline::new(Regex::new("^START").unwrap(), Duration::from_secs(1), 10);
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, line) in ["START", "  abc", "  def", "  g"].iter().enumerate() {
            m.push(entry(line, i as u64), now, &mut out);
        }
        m.finish(&mut out);
        assert_eq!(bodies(&out), vec!["START", "  abc", "  def\n  g"]);
        assert!(out[0].split, "cut before it went over the limit");
        assert!(!out[2].split);
        assert!(out.iter().all(|e| e.body.len() <= 10));
    }
}

//! Cutting a file's bytes into lines on `\n`, never holding more than `max_line_bytes` of
//! one: a longer line leaves in pieces, each marked as such, and nothing is dropped.

/// A line, or a piece of a line longer than the limit, with where it sits in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawLine {
    /// The bytes, without the `\n` (and without a `\r` before it).
    pub bytes: Vec<u8>,
    /// Offset of the first byte of the line this piece belongs to.
    pub line_start: u64,
    /// Offset just past this piece (past the `\n` for the last piece).
    pub end: u64,
    /// This piece starts the line (it carries the line's header, if the format has one).
    pub first: bool,
    /// This piece ends the line.
    pub last: bool,
}

impl RawLine {
    /// Whether the line was cut into pieces.
    pub fn is_piece(&self) -> bool {
        !(self.first && self.last)
    }

    /// The offset a reader may resume from once this piece is delivered: past the line
    /// when it is complete, else its start, so a crash replays the whole line rather than
    /// resuming in its middle.
    pub fn resume_offset(&self) -> u64 {
        match self.last {
            true => self.end,
            false => self.line_start,
        }
    }
}

/// Splits a stream of bytes into [`RawLine`]s.
#[derive(Debug)]
pub struct LineSplitter {
    max: usize,
    pending: Vec<u8>,
    line_start: u64,
    /// Offset just past the last byte fed.
    position: u64,
    /// Part of the pending line already left as a piece.
    continued: bool,
}

impl LineSplitter {
    /// A splitter whose next byte is at `offset`. `max` is at least 1.
    pub fn new(max: usize, offset: u64) -> LineSplitter {
        LineSplitter {
            max: max.max(1),
            pending: Vec::new(),
            line_start: offset,
            position: offset,
            continued: false,
        }
    }

    /// Feeds the next bytes of the file, pushing every line (or piece) they complete.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<RawLine>) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.append(&data[..i], out);
                    self.position += 1;
                    if self.pending.last() == Some(&b'\r') {
                        self.pending.pop();
                    }
                    self.emit(true, out);
                    data = &data[i + 1..];
                }
                None => {
                    self.append(data, out);
                    data = &[];
                }
            }
        }
    }

    /// Leaves the unterminated last line, if any, as a complete line: for a file that will
    /// not grow any more.
    pub fn finish(&mut self, out: &mut Vec<RawLine>) {
        if !self.pending.is_empty() || self.continued {
            self.emit(true, out);
        }
    }

    /// Bytes held for a line not yet terminated.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    fn append(&mut self, mut chunk: &[u8], out: &mut Vec<RawLine>) {
        while self.pending.len() + chunk.len() > self.max {
            let take = self.max - self.pending.len();
            self.pending.extend_from_slice(&chunk[..take]);
            self.position += take as u64;
            chunk = &chunk[take..];
            self.emit(false, out);
        }
        self.pending.extend_from_slice(chunk);
        self.position += chunk.len() as u64;
    }

    fn emit(&mut self, last: bool, out: &mut Vec<RawLine>) {
        out.push(RawLine {
            bytes: std::mem::take(&mut self.pending),
            line_start: self.line_start,
            end: self.position,
            first: !self.continued,
            last,
        });
        self.continued = !last;
        if last {
            self.line_start = self.position;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<RawLine>, LineSplitter) {
        let mut splitter = LineSplitter::new(max, 100);
        let mut out = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, &mut out);
        }
        (out, splitter)
    }

    #[test]
    fn lines_across_chunks_with_offsets() {
        let (lines, splitter) = split(64, &[b"ab", b"c\nde\r\n\nf", b"g"]);
        let shown: Vec<(&[u8], u64, u64)> = lines
            .iter()
            .map(|l| (l.bytes.as_slice(), l.line_start, l.end))
            .collect();
        assert_eq!(
            shown,
            vec![
                (&b"abc"[..], 100, 104),
                (&b"de"[..], 104, 108),
                (&b""[..], 108, 109)
            ]
        );
        assert!(lines.iter().all(|l| !l.is_piece()));
        assert_eq!(splitter.pending_bytes(), 2);
    }

    #[test]
    fn long_lines_leave_in_flagged_pieces_and_none_is_lost() {
        let (lines, _) = split(4, &[b"0123456789\nabcd\nxy", b"z\n"]);
        let shown: Vec<(&[u8], bool, bool, u64)> = lines
            .iter()
            .map(|l| (l.bytes.as_slice(), l.first, l.last, l.resume_offset()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (&b"0123"[..], true, false, 100),
                (&b"4567"[..], false, false, 100),
                (&b"89"[..], false, true, 111),
                // Exactly the limit is not cut.
                (&b"abcd"[..], true, true, 116),
                (&b"xyz"[..], true, true, 120),
            ]
        );
    }

    #[test]
    fn finish_leaves_the_unterminated_tail() {
        let (_, mut splitter) = split(8, &[b"a\nlast"]);
        let mut out = Vec::new();
        splitter.finish(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, b"last");
        assert_eq!(out[0].end, 106);
        splitter.finish(&mut out);
        assert_eq!(out.len(), 1, "nothing left to finish");
    }
}

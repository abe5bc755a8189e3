//! The three OTLP signals.

use std::fmt;

/// One of the three kinds of telemetry OTLP carries. Buffers keep one queue per signal so a
/// backend that is down for one signal never holds up the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    Metrics,
    Logs,
    Traces,
}

impl Signal {
    pub const ALL: [Signal; 3] = [Signal::Metrics, Signal::Logs, Signal::Traces];

    /// The lowercase name used in paths, metric labels, stream and subject names.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
            Signal::Traces => "traces",
        }
    }

    /// The name of the items this signal carries, for messages: data points, log records, spans.
    pub fn item_name(self) -> &'static str {
        match self {
            Signal::Metrics => "data points",
            Signal::Logs => "log records",
            Signal::Traces => "spans",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_u8(v: u8) -> Option<Signal> {
        Signal::ALL.get(v as usize).copied()
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

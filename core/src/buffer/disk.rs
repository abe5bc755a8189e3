//! The disk buffer: filled in by its own change.

//! Helpers for the whole-pipeline tests.

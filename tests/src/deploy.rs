//! The deployment checks' tools and files: the repository's paths, and the tools that
//! `scripts/install-test-deps` puts under `.tools/` (helm, a Python venv with
//! kubernetes-validate, jsonschema and aiosmtpd, the Compose specification's schema).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file or directory `.tools/<path>`, or a panic that says how to install it.
pub fn tool(path: &str) -> PathBuf {
    let p = repo().join(".tools").join(path);
    assert!(
        p.exists(),
        "{} is missing: run `scripts/install-test-deps` (scripts/test does), which installs \
         helm, kubernetes-validate, jsonschema, aiosmtpd and the Compose schema under .tools/",
        p.display()
    );
    p
}

/// The `helm` binary.
pub fn helm() -> PathBuf {
    tool("bin/helm")
}

/// The Python of the tools' venv.
pub fn python() -> PathBuf {
    tool("venv/bin/python")
}

/// Runs `command` to its end: `(success, stdout, stderr)`.
pub fn output(command: &mut Command) -> (bool, String, String) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `text` with each `(from, to)` replaced, asserting that `from` occurs exactly once, so a
/// change to the shipped file breaks the test loudly instead of silently testing less.
pub fn replace_once(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (from, to) in replacements {
        assert_eq!(
            text.matches(from).count(),
            1,
            "expected `{from}` exactly once in the shipped file"
        );
        text = text.replace(from, to);
    }
    text
}

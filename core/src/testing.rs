//! Helpers for the property tests and benchmarks of every crate (feature `testing`, a
//! dev-dependency feature: nothing here is in the binaries).

use proptest::prelude::*;

/// `default` cases, unless `PROPTEST_CASES` says otherwise (`ProptestConfig::default()`
/// reads it); no failure files are written.
pub fn cases(default: u32) -> ProptestConfig {
    let from_env = std::env::var("PROPTEST_CASES").is_ok();
    ProptestConfig {
        cases: if from_env {
            ProptestConfig::default().cases
        } else {
            default
        },
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The shipped example config with random lines deleted, duplicated, re-indented, or given
/// another value: text that is mostly a config, to reach validation as well as parsing.
pub fn mutated_example(example: &'static str) -> impl Strategy<Value = String> {
    let lines: Vec<&'static str> = example.lines().collect();
    let n = lines.len();
    let value = prop_oneof![
        Just(String::new()),
        Just("~".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e400".to_owned()),
        Just("\"\"".to_owned()),
        Just("0s".to_owned()),
        Just("99999999999999h".to_owned()),
        Just("1TiB".to_owned()),
        Just("${UNSET}".to_owned()),
        Just("&a [*a]".to_owned()),
        "\\PC{0,12}",
    ];
    let edit = (0..n.max(1), 0u8..5, value);
    prop::collection::vec(edit, 0..6).prop_map(move |edits| {
        let mut lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        for (i, op, value) in edits {
            if lines.is_empty() {
                break;
            }
            let i = i % lines.len();
            match op {
                0 => {
                    lines.remove(i);
                }
                1 => {
                    let line = lines[i].clone();
                    lines.insert(i, line);
                }
                2 => lines[i] = format!("  {}", lines[i]),
                3 => lines[i] = lines[i].trim_start().to_owned(),
                _ => {
                    let key = lines[i].split(':').next().unwrap_or("").to_owned();
                    lines[i] = format!("{key}: {value}");
                }
            }
        }
        lines.join("\n")
    })
}

/// An environment for `${VAR}` substitution: every variable set, except `UNSET*`.
pub fn env(name: &str) -> Option<String> {
    (!name.starts_with("UNSET")).then(|| format!("value-of-{name}"))
}

/// CPU seconds (user + system) this process has used so far, to the nanosecond, for
/// benchmarks: a quick run uses a few tenths of a second, where /proc's 10 ms ticks alone
/// would be ±5%. 0 where the clock is not available.
pub fn cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is handed, which outlives the call.
    match unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } {
        0 => now.tv_sec as f64 + now.tv_nsec as f64 / 1e9,
        _ => 0.0,
    }
}

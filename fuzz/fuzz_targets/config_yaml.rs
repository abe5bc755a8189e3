#![no_main]
//! The three binaries' config loaders (env substitution, YAML, validation) on any text.

use libfuzzer_sys::fuzz_target;

fn env(name: &str) -> Option<String> {
    (!name.starts_with('U')).then(|| format!("v-{name}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = vigil_agent::config::Config::from_yaml(text, env);
    let _ = vigil_collector::config::Config::from_yaml(text, env);
    let _ = vigil_anomaly::config::Config::from_yaml(text, env);
});

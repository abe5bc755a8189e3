//! `vigil-agent --config FILE [--check-config] [--log-format text|json]`

use std::process::ExitCode;

use clap::Parser;
use vigil_agent::config::Config;
use vigil_core::process::RunArgs;

#[derive(Parser)]
#[command(
    version,
    about = "Tails log files and ships them as OTLP to the Vigil collector"
)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
}

fn main() -> ExitCode {
    vigil_core::process::main(
        "vigil-agent",
        Args::parse().run,
        |text| Config::from_yaml(text, |name| std::env::var(name).ok()),
        vigil_agent::run,
    )
}

//! `vigil-agent --config FILE [--check-config] [--log-format text|json]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use vigil_agent::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Tails log files and ships them as OTLP to the Vigil collector"
)]
struct Args {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration, print every problem, and exit.
    #[arg(long)]
    check_config: bool,
    /// Format of the agent's own logs.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let log_format = match args.log_format {
        LogFormat::Text => vigil_core::process::LogFormat::Text,
        LogFormat::Json => vigil_core::process::LogFormat::Json,
    };
    vigil_core::process::main(
        "vigil-agent",
        &args.config,
        args.check_config,
        log_format,
        |text| Config::from_yaml(text, |name| std::env::var(name).ok()),
        vigil_agent::run,
    )
}

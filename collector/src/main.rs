//! `vigil-collector --config FILE [--check-config] [--log-format json]`
//! `vigil-collector buffer verify|repair --config FILE | --path DIR`
//! `vigil-collector dlq list|show|replay --config FILE | --path DIR ...`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vigil_collector::config::Config;
use vigil_collector::tools;

#[derive(Parser)]
#[command(
    version,
    about = "Receives OTLP, buffers it durably, exports to VictoriaMetrics, Loki and Tempo",
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// Validate the configuration, print every problem, and exit.
    #[arg(long)]
    check_config: bool,
    /// Format of the collector's own logs.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Integrity of the disk buffer: verify (read-only), repair (collector stopped).
    #[command(subcommand)]
    Buffer(tools::buffer::BufferCommand),
    /// Dead letters of the disk buffer: list, show, replay (collector stopped).
    #[command(subcommand)]
    Dlq(tools::dlq::DlqCommand),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Buffer(command)) => return tools::buffer::main(command),
        Some(Command::Dlq(command)) => return tools::dlq::main(command),
        None => {}
    }
    let Some(config) = args.config else {
        eprintln!("--config FILE is required");
        return ExitCode::from(2);
    };
    let log_format = match args.log_format {
        LogFormat::Text => vigil_core::process::LogFormat::Text,
        LogFormat::Json => vigil_core::process::LogFormat::Json,
    };
    vigil_core::process::main(
        "vigil-collector",
        &config,
        args.check_config,
        log_format,
        |text| Config::from_yaml(text, |name| std::env::var(name).ok()),
        vigil_collector::run,
    )
}

//! `vigil-anomaly --config FILE [--check-config] [--log-format json]`
//! `vigil-anomaly backtest --input series.csv [--labels windows.json]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vigil_anomaly::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Scores metric series from VictoriaMetrics, writes scores back, alerts Alertmanager, annotates Grafana",
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// Validate the configuration, print every problem, and exit.
    #[arg(long)]
    check_config: bool,
    /// Format of the service's own logs.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the streaming detector over a CSV series, as in production, and evaluate it.
    Backtest(vigil_anomaly::backtest::Args),
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Backtest(backtest)) = args.command {
        return vigil_anomaly::backtest::main(backtest);
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
        "vigil-anomaly",
        &config,
        args.check_config,
        log_format,
        |text| Config::from_yaml(text, |name| std::env::var(name).ok()),
        vigil_anomaly::run,
    )
}

//! `vigil-collector --config FILE [--check-config] [--log-format json]`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use vigil_collector::config::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Receives OTLP, buffers it durably, exports to VictoriaMetrics, Loki and Tempo"
)]
struct Args {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Validate the configuration, print every problem, and exit.
    #[arg(long)]
    check_config: bool,
    /// Format of the collector's own logs.
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
    vigil_core::process::init_logging(match args.log_format {
        LogFormat::Text => vigil_core::process::LogFormat::Text,
        LogFormat::Json => vigil_core::process::LogFormat::Json,
    });
    let text = match std::fs::read_to_string(&args.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_yaml(&text, |name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "{}: invalid configuration:\n{errors}",
                args.config.display()
            );
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("{}: configuration is valid", args.config.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vigil_collector::run(
        config,
        vigil_core::process::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "collector failed to start");
            ExitCode::FAILURE
        }
    }
}

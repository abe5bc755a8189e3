//! `vigil-anomaly --config FILE [--check-config] [--log-format json]`
//! `vigil-anomaly backtest --input series.csv [--labels windows.json]`

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_anomaly::config::Config;
use vigil_core::process::RunArgs;

#[derive(Parser)]
#[command(
    version,
    about = "Scores metric series from VictoriaMetrics, writes scores back, alerts Alertmanager, annotates Grafana",
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(flatten)]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the streaming detector over a CSV series, as in production, and evaluate it.
    Backtest(vigil_anomaly::backtest::Args),
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Backtest(backtest)) = args.command {
        return vigil_anomaly::backtest::main(backtest);
    }
    vigil_core::process::main(
        "vigil-anomaly",
        args.run,
        |text| Config::from_yaml(text, |name| std::env::var(name).ok()),
        vigil_anomaly::run,
    )
}

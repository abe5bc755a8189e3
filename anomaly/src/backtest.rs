//! `vigil-anomaly backtest`: runs the streaming detector over a CSV exactly as in
//! production and evaluates it against labelled windows.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `vigil-anomaly backtest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `timestamp,value` CSV (timestamp in seconds or milliseconds since the epoch).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// JSON list of labelled anomaly windows, for the evaluation.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Where `timestamp,value,anomaly_score` CSV goes (stdout when absent).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn main(_args: Args) -> ExitCode {
    eprintln!("vigil-anomaly backtest is not built yet");
    ExitCode::from(2)
}

//! `vigil-collector --config FILE [--check-config] [--log-format json]`
//! `vigil-collector buffer verify|repair --config FILE | --path DIR`
//! `vigil-collector dlq list|show|replay --config FILE | --path DIR ...`

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vigil_collector::config::Config;
use vigil_collector::tools;
use vigil_core::process::RunArgs;

#[derive(Parser)]
#[command(
    version,
    about = "Receives OTLP, buffers it durably, exports to VictoriaMetrics, Loki and Tempo",
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
    /// Integrity of the disk buffer: verify (read-only), repair (collector stopped).
    #[command(subcommand)]
    Buffer(tools::buffer::BufferCommand),
    /// Dead letters of the disk, Redis or NATS buffer: list, show, replay (on the disk
    /// buffer with the collector stopped).
    #[command(subcommand)]
    Dlq(tools::dlq::DlqCommand),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Buffer(command)) => return tools::buffer::main(command),
        Some(Command::Dlq(command)) => return tools::dlq::main(command),
        None => {}
    }
    vigil_core::process::main(
        "vigil-collector",
        args.run,
        |text| Config::from_yaml(text, |name| std::env::var(name).ok()),
        vigil_collector::run,
    )
}

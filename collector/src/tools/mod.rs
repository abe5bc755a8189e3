//! Operator commands of the collector binary, run instead of the collector:
//!
//! - `buffer verify|repair` ([`buffer`]): integrity of the disk buffer.
//! - `dlq list|show|replay` ([`dlq`]): the dead letters of the disk, Redis or NATS buffer.
//!
//! Exit codes: 0 done (verify: clean), 1 damage found or the work could not be done (the
//! buffer is held by a running collector, an I/O error, a broker that cannot be reached),
//! 2 usage or configuration errors. `buffer verify|repair` are for the disk buffer only:
//! they say so for the others and exit 2.

pub mod buffer;
pub mod dlq;

use std::path::PathBuf;
use std::process::ExitCode;

use vigil_core::Signal;
use vigil_core::buffer::disk::DiskOptions;

use crate::config::{BufferKind, Config, DiskConfig};

/// Where the disk buffer is: the collector's config, or the directory itself.
#[derive(Debug, Clone, clap::Args)]
pub struct BufferLocation {
    /// The collector's configuration file; its `buffer` section says where the buffer is.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "path",
        conflicts_with = "path"
    )]
    pub config: Option<PathBuf>,
    /// A disk buffer directory, directly (its size bound is then the default, 1GiB).
    #[arg(long, value_name = "DIR")]
    pub path: Option<PathBuf>,
}

/// Exit codes of the tools.
pub(crate) const DAMAGED: u8 = 1;
pub(crate) const USAGE: u8 = 2;

/// The disk buffer a command works on, and the config it came from, if any.
pub(crate) struct Located {
    pub options: DiskOptions,
    pub config: Option<Config>,
}

impl BufferLocation {
    /// The collector's configuration, when given with `--config`; on failure prints why
    /// and returns the exit code.
    pub(crate) fn load_config(&self) -> Result<Option<Config>, ExitCode> {
        let Some(config_path) = &self.config else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(config_path).map_err(|e| {
            eprintln!("cannot read {}: {e}", config_path.display());
            ExitCode::from(USAGE)
        })?;
        Config::from_yaml(&text, |name| std::env::var(name).ok())
            .map(Some)
            .map_err(|e| {
                eprintln!("{}: invalid configuration:\n{e}", config_path.display());
                ExitCode::from(USAGE)
            })
    }

    /// Resolves the disk buffer; on failure prints why and returns the exit code.
    pub(crate) fn locate(&self, command: &str) -> Result<Located, ExitCode> {
        self.locate_in(self.load_config()?, command)
    }

    /// [`BufferLocation::locate`] with the configuration already loaded.
    pub(crate) fn locate_in(
        &self,
        config: Option<Config>,
        command: &str,
    ) -> Result<Located, ExitCode> {
        let Some(config) = config else {
            let disk = DiskConfig {
                path: self.path.clone().unwrap_or_default(),
                ..DiskConfig::default()
            };
            return Ok(Located {
                options: disk.options(),
                config: None,
            });
        };
        let kind = match config.buffer.kind {
            BufferKind::Disk => {
                return Ok(Located {
                    options: config.buffer.disk.options(),
                    config: Some(config),
                });
            }
            BufferKind::Memory => {
                eprintln!(
                    "`{command}`: this configuration uses the memory buffer, which keeps nothing on disk"
                );
                return Err(ExitCode::from(USAGE));
            }
            BufferKind::Redis => "redis",
            BufferKind::Nats => "nats",
        };
        eprintln!(
            "`{command}` works on the disk buffer only: a {kind} buffer's storage is the broker's to check (`dlq` commands work on it)"
        );
        Err(ExitCode::from(USAGE))
    }
}

pub(crate) fn parse_signal(text: &str) -> Result<Signal, String> {
    Signal::ALL
        .into_iter()
        .find(|s| s.as_str() == text)
        .ok_or_else(|| format!("unknown signal `{text}`: one of metrics, logs, traces"))
}

/// A small runtime for the commands that open the buffer.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("cannot start the async runtime: {e}");
            ExitCode::from(DAMAGED)
        })
}

/// Whether an error from opening the disk buffer means another process has it open.
pub(crate) fn is_locked(e: &vigil_core::buffer::BufferError) -> bool {
    matches!(e, vigil_core::buffer::BufferError::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock)
}

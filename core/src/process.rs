//! What every binary's `main` does the same way: its own logs and its shutdown signal.

/// Format of a binary's own logs (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human text (the default).
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr, filtered by `VIGIL_LOG` (`info` when unset or invalid).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The shutdown signal as [`main`] hands it to a binary's `run`.
pub type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// What every binary's `main` does after parsing its arguments: set up its logs, read and
/// validate the config file (every problem printed, exit 2), stop there with
/// `check_config`, else run on a multi-threaded runtime until SIGTERM or Ctrl-C.
pub fn main<C, E, Fut>(
    binary: &str,
    config_path: &std::path::Path,
    check_config: bool,
    log_format: LogFormat,
    load: impl FnOnce(&str) -> Result<C, crate::config::ConfigErrors>,
    run: impl FnOnce(C, Shutdown) -> Fut,
) -> std::process::ExitCode
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    use std::process::ExitCode;
    init_logging(log_format);
    let text = match std::fs::read_to_string(config_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", config_path.display());
            return ExitCode::from(2);
        }
    };
    let config = match load(&text) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!(
                "{}: invalid configuration:\n{errors}",
                config_path.display()
            );
            return ExitCode::from(2);
        }
    };
    if check_config {
        println!("{}: configuration is valid", config_path.display());
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
    match runtime.block_on(run(config, Box::pin(shutdown_signal()))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "{binary} failed to start");
            ExitCode::FAILURE
        }
    }
}

//! What every binary's `main` does the same way: its own logs and its shutdown signal.

/// Format of a binary's own logs (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human text (the default).
    Text,
    /// One JSON object per line.
    Json,
}

/// What every binary takes to run: `--config FILE [--check-config] [--log-format json]`.
/// `config` is required unless a binary's subcommand runs instead.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The YAML configuration file.
    #[arg(long, value_name = "FILE", required = true)]
    pub config: Option<std::path::PathBuf>,
    /// Validate the configuration, print every problem, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Format of the binary's own logs.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// glibc malloc arenas a Vigil process uses unless `MALLOC_ARENA_MAX` is set.
///
/// glibc gives threads up to eight arenas per core, and memory freed in one stays with it:
/// the tokio workers, the tailer and the encoders each kept their own few MiB. Measured by
/// `scripts/bench` on two cores: one arena took the scrape scenario's agent + collector from
/// 53 to 42 MiB and the tailing agent from 22 to 18–19 MiB, at no measurable CPU cost (most
/// small allocations never reach the arena lock, they are served by each thread's cache).
/// Two arenas saved nothing. A collector on many busy cores may prefer more: set
/// `MALLOC_ARENA_MAX` and glibc's own reading of it is left alone.
pub const MALLOC_ARENAS: i32 = 1;

/// Limits glibc's malloc arenas to [`MALLOC_ARENAS`] unless `MALLOC_ARENA_MAX` is set.
/// Call it first thing in `main`, before any thread starts.
pub fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter, which glibc guards with its own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// How often, by default, a Vigil process hands the heap memory it freed back to the kernel
/// (see [`trim_malloc_periodically`]); `VIGIL_MALLOC_TRIM_SECONDS` sets it, 0 turns it off.
pub const MALLOC_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a thread that calls glibc's `malloc_trim(0)` every [`MALLOC_TRIM_INTERVAL`]: the
/// pages of the heap that are free go back to the kernel, so that the process' RSS (what a
/// container's memory limit counts) follows what it uses rather than the most it ever
/// used. glibc only gives back the top of its heap, and only past a threshold that grows
/// with the largest buffer freed, so a collector that once decoded a large batch would hold
/// that memory for good. Go's runtime does the same in the background (its scavenger),
/// which is part of why vmagent stays small.
///
/// Measured by `scripts/bench` (50 targets × 1,000 series every 5 s, agent + collector,
/// two runs each way): steady RSS 62–64 → 43 MiB (agent 36 → 27 MiB, collector 26–28 → 15.5
/// MiB). The price is CPU: the collector spent 0.65 CPU s per minute instead of 0.58–0.61,
/// faulting given-back pages in again as its next batches reuse them; the agent's CPU did
/// not move beyond noise.
pub fn trim_malloc_periodically() {
    let interval = match std::env::var("VIGIL_MALLOC_TRIM_SECONDS") {
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(0) => return,
            Ok(seconds) => std::time::Duration::from_secs(seconds),
            Err(_) => {
                tracing::warn!(value = %text, "VIGIL_MALLOC_TRIM_SECONDS is not a number of seconds; using the default");
                MALLOC_TRIM_INTERVAL
            }
        },
        Err(_) => MALLOC_TRIM_INTERVAL,
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            // The thread only sleeps and calls malloc_trim: a small stack is plenty.
            .stack_size(64 * 1024)
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    // SAFETY: malloc_trim takes malloc's own locks; it only releases pages
                    // that no allocation holds.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the malloc trim thread; freed memory stays with the process");
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = interval;
}

/// TLS for every outgoing and incoming connection uses rustls with the ring provider;
/// installing it once per process is enough. Call it before building any TLS client or
/// server.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another part of the process installed one first: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
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
    args: RunArgs,
    load: impl FnOnce(&str) -> Result<C, crate::config::ConfigErrors>,
    run: impl FnOnce(C, Shutdown) -> Fut,
) -> std::process::ExitCode
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<(), E>>,
{
    use std::process::ExitCode;
    limit_malloc_arenas();
    let Some(config_path) = args.config else {
        eprintln!("--config FILE is required");
        return ExitCode::from(2);
    };
    let (config_path, check_config, log_format) =
        (config_path.as_path(), args.check_config, args.log_format);
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
    trim_malloc_periodically();
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

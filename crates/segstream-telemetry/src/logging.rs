use segstream_config::{LogConfig, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber: human lines or JSON, to stderr,
/// filtered by `RUST_LOG` when set, else by the configured level.
pub fn init_logging(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // A second initialisation (tests) keeps the first subscriber: say so, go on.
    if let Err(e) = result {
        tracing::debug!(error = %e, "logging was already initialised");
    }
}

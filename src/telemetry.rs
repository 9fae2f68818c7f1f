//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text for people or
//! as one JSON object per line for collectors (`LOG_FORMAT`).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `default_level` applies when `RUST_LOG` is unset.
pub fn init(default_level: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber.
    let _ = match format {
        // Colour for a person at a terminal; plain text for log files and collectors.
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // The event's fields at the top level, beside the request span's (request id, route,
        // client address), so that every line of a request names it.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

//! Logging to stderr (journald takes it from there), text or JSON, with a
//! filter a reload can change; RUST_LOG wins over the config.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, Settings};

/// The handle a reload changes the log filter through.
pub(super) type LogFilter =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Starts logging as `settings` say.
pub(super) fn init(settings: &Settings) -> LogFilter {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log_level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // Colours only for a person at a terminal, never into journald.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let format = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let format = match settings.log_format {
        LogFormat::Text => format.boxed(),
        LogFormat::Json => format.json().boxed(),
    };
    tracing_subscriber::registry().with(filter).with(format).init();
    handle
}

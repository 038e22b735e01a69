//! Logging with `tracing`: human lines on stderr (`-v`/`-q`, `NO_COLOR`) and JSON lines in
//! `$PHOENIX_LOG_DIR/phoenix.log`.
//!
//! Nothing here ever sees a secret value: secrets never enter argv or messages, and the
//! runner redacts what it logs. The JSON file is created 0600.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Install the global subscriber. `verbosity`: -1 quiet, 0 normal, 1 debug, 2+ trace.
/// When `log_dir` is given and writable, JSON lines go to `phoenix.log` there too.
pub fn init(verbosity: i8, log_dir: Option<&Path>) {
    let level = match verbosity {
        i8::MIN..=-1 => "error",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let human = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr.with_max_level(tracing::Level::TRACE))
        .with_ansi(color)
        .with_target(false)
        .without_time()
        .with_filter(EnvFilter::new(level));
    let json = log_dir.and_then(|dir| {
        std::fs::create_dir_all(dir).ok()?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("phoenix.log"))
            .ok()?;
        Some(
            tracing_subscriber::fmt::layer()
                .json()
                .with_writer(std::sync::Mutex::new(file))
                .with_filter(EnvFilter::new("debug")),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(human)
        .with(json)
        .try_init();
}

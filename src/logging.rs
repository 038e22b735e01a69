//! Logging with `tracing`: human lines on stderr (`-v`/`-q`, `NO_COLOR`) and JSON lines in
//! `$PHOENIX_LOG_DIR/phoenix.log`.
//!
//! Secrets never enter argv or messages by construction; as a last line of defence every
//! line, on stderr and in the file, passes through the run's [`Redactor`] (which knows
//! every value of the secret store during a recipe run, also base64/hex-encoded: DESIGN.md
//! §12), so text a recipe read back from a container cannot show a secret either. The
//! JSON file is created 0600.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::exec::Redactor;

/// A writer that redacts each formatted event before it reaches `inner`. The fmt layer
/// writes one event with one `write_all`, so a secret never straddles two writes.
pub struct Redacting<W> {
    inner: W,
    redactor: Redactor,
}

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(self.redactor.redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// [`Redacting`] writers made from `inner`'s.
pub struct RedactingMakeWriter<M> {
    inner: M,
    redactor: Redactor,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = Redacting<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting {
            inner: self.inner.make_writer(),
            redactor: self.redactor.clone(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Redacting {
            inner: self.inner.make_writer_for(meta),
            redactor: self.redactor.clone(),
        }
    }
}

/// Install the global subscriber. `verbosity`: -1 quiet, 0 normal, 1 debug, 2+ trace.
/// When `log_dir` is given and writable, JSON lines go to `phoenix.log` there too. Every
/// line passes through `redactor`.
pub fn init(verbosity: i8, log_dir: Option<&Path>, redactor: &Redactor) {
    let level = match verbosity {
        i8::MIN..=-1 => "error",
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let human = tracing_subscriber::fmt::layer()
        .with_writer(RedactingMakeWriter {
            inner: std::io::stderr.with_max_level(tracing::Level::TRACE),
            redactor: redactor.clone(),
        })
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
                .with_writer(RedactingMakeWriter {
                    inner: std::sync::Mutex::new(file),
                    redactor: redactor.clone(),
                })
                .with_filter(EnvFilter::new("debug")),
        )
    });
    let _ = tracing_subscriber::registry()
        .with(human)
        .with(json)
        .try_init();
}

//! Logging with `tracing`: human lines on stderr (`-v`/`-q`, `RUST_LOG`, `NO_COLOR`) and JSON
//! lines in `$PHOENIX_LOG_DIR/phoenix.log`.
//!
//! Which lines show:
//! - by default phoenix's info lines (and everyone's warnings and errors);
//! - `-v` adds phoenix's debug lines (each host command's argv, redacted), `-vv` its trace
//!   lines, `-vvv` every crate's debug lines (the HTTP client's included);
//! - `-q` only errors. The final result on stdout and a failing command's error (printed by
//!   [`crate::main_entry`], not through here) are never hidden;
//! - `RUST_LOG`, when set, replaces all of the above with its own directives
//!   (`RUST_LOG=phoenix=debug,reqwest=trace`), like any `tracing` program.
//!
//! The log file always gets phoenix's debug lines and other crates' warnings.
//!
//! Progress lines ([`crate::progress`]) are events of target `phoenix::progress`; on a
//! terminal, every line is printed above the live spinner lines, not through them.
//!
//! Secrets never enter argv or messages by construction; as a last line of defence every
//! line, on stderr and in the file, passes through the run's [`Redactor`] (which knows
//! every value of the secret store during a recipe run, also base64/hex-encoded: DESIGN.md
//! §12), so text a recipe read back from a container cannot show a secret either. The
//! JSON file is created 0600, its directory 0700.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

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
    /// `inner` is the terminal that shows progress lines ([`crate::progress::suspend`]).
    live: bool,
}

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let text = self.redactor.redact(&text);
        if self.live {
            // Above the terminal's live progress lines, not through them.
            crate::progress::suspend(|| self.inner.write_all(text.as_bytes()))?;
        } else {
            self.inner.write_all(text.as_bytes())?;
        }
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
    /// Writes to stderr, where progress lines live.
    live: bool,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for RedactingMakeWriter<M> {
    type Writer = Redacting<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Redacting {
            inner: self.inner.make_writer(),
            redactor: self.redactor.clone(),
            live: self.live,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Redacting {
            inner: self.inner.make_writer_for(meta),
            redactor: self.redactor.clone(),
            live: self.live,
        }
    }
}

/// The filter directives for `verbosity`: -1 quiet, 0 normal, 1 debug, 2 trace, 3+ every
/// crate's debug lines.
pub fn directives(verbosity: i8) -> &'static str {
    match verbosity {
        i8::MIN..=-1 => "error",
        0 => "warn,phoenix=info",
        1 => "warn,phoenix=debug",
        2 => "warn,phoenix=trace",
        _ => "debug,phoenix=trace",
    }
}

/// The stderr filter: `RUST_LOG` when set and valid, else [`directives`]`(verbosity)`.
fn stderr_filter(verbosity: i8) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v).unwrap_or_else(|e| {
            eprintln!("phoenix: warning: ignoring RUST_LOG={v:?}: {e}");
            EnvFilter::new(directives(verbosity))
        }),
        _ => EnvFilter::new(directives(verbosity)),
    }
}

/// Install the global subscriber. `verbosity`: -1 quiet, 0 normal, 1 debug, 2 trace, 3+ all.
/// When `log_dir` is given, JSON lines go to `phoenix.log` there too (created with the first
/// line). Every line passes through `redactor`.
pub fn init(verbosity: i8, log_dir: Option<&Path>, redactor: &Redactor) {
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    let human = tracing_subscriber::fmt::layer()
        .with_writer(RedactingMakeWriter {
            inner: std::io::stderr.with_max_level(tracing::Level::TRACE),
            redactor: redactor.clone(),
            live: true,
        })
        .with_ansi(color)
        .with_target(false)
        .without_time()
        .with_filter(stderr_filter(verbosity));
    let json = log_dir.map(|dir| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(RedactingMakeWriter {
                inner: LazyLog::new(dir),
                redactor: redactor.clone(),
                live: false,
            })
            .with_filter(EnvFilter::new("warn,phoenix=debug"))
    });
    let _ = tracing_subscriber::registry()
        .with(human)
        .with(json)
        .try_init();
}

/// `phoenix.log` in a directory, created on the first line written: a command that logs
/// nothing (a usage error, `paths`, `--help`) creates nothing. The directory is created
/// private (0700), like the missing parents it creates: with `--host emulated` the first
/// one is the per-user state directory, which also holds the secret key. A log that cannot
/// be opened is skipped (stderr still has every line).
struct LazyLog {
    dir: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    failed: AtomicBool,
}

impl LazyLog {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            file: Mutex::new(None),
            failed: AtomicBool::new(false),
        }
    }

    fn open(&self) -> std::io::Result<std::fs::File> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.dir.join("phoenix.log"))
    }
}

/// One write to a [`LazyLog`].
struct LazyLogWriter<'a>(&'a LazyLog);

impl std::io::Write for LazyLogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let log = self.0;
        let mut file = log.file.lock().unwrap_or_else(|e| e.into_inner());
        if file.is_none() && !log.failed.load(Ordering::Relaxed) {
            match log.open() {
                Ok(f) => *file = Some(f),
                Err(_) => log.failed.store(true, Ordering::Relaxed),
            }
        }
        if let Some(f) = file.as_mut() {
            // A full disk must not stop the run: the line is on stderr too.
            let _ = f.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LazyLog {
    type Writer = LazyLogWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LazyLogWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The lines an event of each `(target, level)` produces under `directives(verbosity)`.
    fn shown(verbosity: i8) -> String {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&buf);
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(move || Writer(Arc::clone(&sink)))
            .with_ansi(false)
            .without_time()
            .with_filter(EnvFilter::new(directives(verbosity)));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "phoenix::api", "phoenix-info");
            tracing::debug!(target: "phoenix::exec", "phoenix-debug");
            tracing::trace!(target: "phoenix::exec", "phoenix-trace");
            tracing::debug!(target: "reqwest::connect", "http-debug");
            tracing::warn!(target: "hyper_util::client", "http-warn");
            tracing::error!(target: "phoenix::cli", "phoenix-error");
        });
        String::from_utf8(buf.lock().unwrap().clone()).unwrap()
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Writer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn has(text: &str, words: &[&str]) -> Vec<bool> {
        words.iter().map(|w| text.contains(w)).collect()
    }

    #[test]
    fn verbose_shows_phoenix_debug_lines_not_the_http_clients() {
        let words = [
            "phoenix-info",
            "phoenix-debug",
            "phoenix-trace",
            "http-debug",
            "http-warn",
            "phoenix-error",
        ];
        assert_eq!(
            has(&shown(0), &words),
            [true, false, false, false, true, true]
        );
        assert_eq!(
            has(&shown(1), &words),
            [true, true, false, false, true, true]
        );
        assert_eq!(
            has(&shown(2), &words),
            [true, true, true, false, true, true]
        );
        assert_eq!(has(&shown(3), &words), [true, true, true, true, true, true]);
        assert_eq!(
            has(&shown(-1), &words),
            [false, false, false, false, false, true]
        );
    }

    #[test]
    fn the_log_file_appears_with_the_first_line_private() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state/log");
        let log = LazyLog::new(&dir);
        let _writer = log.make_writer();
        assert!(
            !tmp.path().join("state").exists(),
            "created before any line"
        );
        log.make_writer().write_all(b"{\"a\":1}\n").unwrap();
        log.make_writer().write_all(b"{\"b\":2}\n").unwrap();
        let text = std::fs::read_to_string(dir.join("phoenix.log")).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("phoenix.log")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("state")), 0o700);
    }
}

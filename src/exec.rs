//! The one door for processes (DESIGN.md §1).
//!
//! Every host command phoenix runs is a [`HostCommand`]: an absolute program path plus an
//! argv vector. There is deliberately no constructor from a string and no shell anywhere:
//! a value from a config file can only ever become *one* argument.
//!
//! This module owns:
//! - [`HostCommand`], the argv-only command type (with optional stdin bytes, a timeout and
//!   the exit codes that count as success);
//! - the [`Runner`] trait and its implementations: [`SystemRunner`] (real processes with a
//!   minimal explicit environment, stdin closed unless bytes are given, output captured, the
//!   child killed on timeout or on a signal) and [`RecordingRunner`] (records every command
//!   and answers from a script: tests and `--dry-run`);
//! - [`Redactor`], the hook that replaces secret values in anything logged.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

/// The environment every child gets: nothing inherited from phoenix's own environment.
const CHILD_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// One host command as an argv vector; there is no shell-string constructor.
#[derive(Clone)]
pub struct HostCommand {
    program: PathBuf,
    args: Vec<OsString>,
    stdin: Option<Arc<Zeroizing<Vec<u8>>>>,
    timeout: Option<Duration>,
    ok_codes: Vec<i32>,
    mutating: bool,
}

impl HostCommand {
    /// A command running `program` (an absolute path) with no arguments yet.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            stdin: None,
            timeout: None,
            ok_codes: vec![0],
            mutating: false,
        }
    }

    /// Append one argument. It is passed to the program as exactly one argv element.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Append several arguments, each as one argv element.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Bytes to write to the child's standard input (may hold a secret: never logged).
    pub fn stdin(mut self, bytes: Zeroizing<Vec<u8>>) -> Self {
        self.stdin = Some(Arc::new(bytes));
        self
    }

    /// Kill the child (and its process group) after this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Exit codes that count as success (default `[0]`).
    pub fn ok_codes(mut self, codes: impl Into<Vec<i32>>) -> Self {
        self.ok_codes = codes.into();
        self
    }

    /// Mark this command as changing host state: `--dry-run` records it instead of running it.
    pub fn mutating(mut self) -> Self {
        self.mutating = true;
        self
    }

    /// The program's path.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// The arguments after the program.
    pub fn arguments(&self) -> &[OsString] {
        &self.args
    }

    /// Program and arguments as lossy strings (for logs, plans and test assertions).
    pub fn argv(&self) -> Vec<String> {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    /// Number of stdin bytes (the bytes themselves are never shown).
    pub fn stdin_len(&self) -> usize {
        self.stdin.as_ref().map_or(0, |b| b.len())
    }

    /// The configured timeout.
    pub fn timeout_value(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the command changes host state.
    pub fn is_mutating(&self) -> bool {
        self.mutating
    }

    /// Whether `code` counts as success.
    pub fn accepts(&self, code: i32) -> bool {
        self.ok_codes.contains(&code)
    }
}

/// `word` as one shell word, for humans to read or paste (the one quoting rule of every
/// command phoenix shows: logs, plans, progress steps, the result block). Words of
/// characters that are literal in an argument (letters, digits, `-_./:=,@%+`) stay as they
/// are; anything else is quoted by `shlex` (single quotes, or double quotes around a `'`;
/// `''` for the empty word). `shlex` alone would also quote `=`, `,` and `%`, which only
/// matter inside brace expansion or as a command's first word, and would make every
/// `key=value,…` option noisy. Nothing ever parses this back, and nothing runs it: there
/// is no shell in phoenix.
pub fn shell_word(word: &str) -> std::borrow::Cow<'_, str> {
    let literal = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if literal {
        return word.into();
    }
    // A NUL cannot be in an argv element; allowing it here only keeps the display total.
    shlex::Quoter::new()
        .allow_nul(true)
        .quote(word)
        .unwrap_or_else(|_| word.into())
}

/// argv rendered for humans only, shell-like: each element through [`shell_word`].
pub fn display_argv<S: AsRef<str>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| shell_word(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for HostCommand {
    /// Shell-like rendering for humans only; each element is quoted when it needs it.
    /// Nothing ever parses this back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&display_argv(&self.argv()))?;
        if self.stdin_len() > 0 {
            write!(f, " <stdin: {} bytes>", self.stdin_len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for HostCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCommand")
            .field("argv", &self.argv())
            .field("stdin_bytes", &self.stdin_len())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code (128 + N when killed by signal N).
    pub code: i32,
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// Standard output as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy), trimmed.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }
}

/// Errors of the process runner.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The program could not be started at all.
    #[error("could not start `{command}`")]
    Spawn {
        /// The command (redacted rendering).
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program exited with a code that does not count as success.
    #[error("`{command}` failed (exit {code}): {stderr}")]
    Status {
        /// The command (redacted rendering).
        command: String,
        /// Its exit code.
        code: i32,
        /// Its standard error, trimmed (redacted).
        stderr: String,
        /// Its standard output (redacted), for callers that need it.
        stdout: String,
    },
    /// The program ran past its timeout and was killed.
    #[error("`{command}` timed out after {timeout:?} and was killed")]
    Timeout {
        /// The command (redacted rendering).
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// A signal asked phoenix to stop; the child was killed.
    #[error("`{command}` interrupted by a signal; the child was killed")]
    Interrupted {
        /// The command (redacted rendering).
        command: String,
    },
    /// Reading the child's output or writing its stdin failed.
    #[error("i/o with `{command}` failed")]
    Io {
        /// The command (redacted rendering).
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ExecError {
    /// The command's exit code, when it ran to completion.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Replaces known secret values in text before it reaches a log, a plan or an error.
///
/// The secret store registers every value it decrypts (a recipe run registers every value
/// in the store up front, so text read back from a container is covered too); the runner
/// redacts the rendering of each command and its output, the logger every line, the CLI
/// every error. Each value is also found in its base64 (standard and URL-safe, at any byte
/// offset of a larger encoded text) and hex (lower and upper case) forms, across line
/// breaks (`base64` wraps at 76 columns). Defence in depth: secrets never go into argv in
/// the first place.
#[derive(Clone, Default)]
pub struct Redactor {
    values: Arc<Mutex<Vec<Known>>>,
}

/// One form of a registered secret: its text, its name, and whether whitespace may
/// interrupt it (encoded forms wrap).
struct Known {
    text: Zeroizing<String>,
    name: String,
    loose: bool,
}

/// Encoded forms shorter than this are not redacted (they would match ordinary text).
const MIN_ENCODED: usize = 8;

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor")
    }
}

/// The forms `value` can take in text: itself, the part of its base64 encoding that does
/// not depend on the bytes around it (for each of the three offsets modulo 3, both
/// alphabets), and its hex.
fn forms(value: &str) -> Vec<(Zeroizing<String>, bool)> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut out = vec![(Zeroizing::new(value.to_owned()), false)];
    let bytes = value.as_bytes();
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for k in 0..3usize {
            let mut buf = Zeroizing::new(vec![0u8; k]);
            buf.extend_from_slice(bytes);
            let encoded = Zeroizing::new(engine.encode(buf.as_slice()));
            // The first group mixes in the k bytes before the value; the last partial
            // group depends on the bytes after it.
            let start = if k == 0 { 0 } else { 4 };
            let end = (buf.len() / 3) * 4;
            if end >= start + MIN_ENCODED {
                out.push((Zeroizing::new(encoded[start..end].to_owned()), true));
            }
        }
    }
    let mut lower = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for b in bytes {
        lower.push_str(&format!("{b:02x}"));
    }
    let upper = Zeroizing::new(lower.to_uppercase());
    out.push((lower, true));
    out.push((upper, true));
    let mut unique: Vec<(Zeroizing<String>, bool)> = Vec::new();
    for f in out {
        if !unique.iter().any(|(t, _)| t.as_str() == f.0.as_str()) {
            unique.push(f);
        }
    }
    unique
}

/// Byte ranges of `hay` where `needle` occurs, whitespace allowed between its characters
/// when `loose`.
fn find_all(hay: &str, needle: &str, loose: bool) -> Vec<(usize, usize)> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let mut out = Vec::new();
    let Some(&first) = n.first() else {
        return out;
    };
    let mut i = 0;
    while i < h.len() {
        if h[i] != first {
            i += 1;
            continue;
        }
        let (mut p, mut j) = (i, 0);
        while j < n.len() && p < h.len() {
            if h[p] == n[j] {
                p += 1;
                j += 1;
            } else if loose && j > 0 && h[p].is_ascii_whitespace() {
                p += 1;
            } else {
                break;
            }
        }
        if j == n.len() {
            out.push((i, p));
            i = p;
        } else {
            i += 1;
        }
    }
    out
}

impl Redactor {
    /// Remember `value` (known as `name`) so it and its encoded forms are replaced by
    /// `«secret:name»`.
    pub fn register(&self, name: &str, value: &str) {
        if value.len() < 4 {
            // Too short to redact safely without mangling ordinary text; such values are
            // still kept out of argv and logs by construction.
            return;
        }
        let mut v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        if v.iter().any(|k| k.text.as_str() == value) {
            return;
        }
        for (text, loose) in forms(value) {
            if !v.iter().any(|k| k.text.as_str() == text.as_str()) {
                v.push(Known {
                    text,
                    name: name.to_owned(),
                    loose,
                });
            }
        }
        // Longest first, so a value that contains another one is replaced whole.
        v.sort_by_key(|k| std::cmp::Reverse(k.text.len()));
    }

    /// `text` with every registered secret value (and its encoded forms) replaced.
    pub fn redact(&self, text: &str) -> String {
        let v = self.values.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_owned();
        for known in v.iter() {
            let ranges = find_all(&out, &known.text, known.loose);
            if ranges.is_empty() {
                continue;
            }
            let mark = format!("«secret:{}»", known.name);
            let mut next = String::with_capacity(out.len());
            let mut at = 0;
            for (a, b) in ranges {
                next.push_str(&out[at..a]);
                next.push_str(&mark);
                at = b;
            }
            next.push_str(&out[at..]);
            out = next;
        }
        out
    }
}

/// Everything that starts a process goes through this trait.
pub trait Runner: Send + Sync {
    /// Run `cmd` to completion. A non-accepted exit code is an [`ExecError::Status`].
    fn run(&self, cmd: &HostCommand) -> Result<CommandOutput, ExecError>;
}

/// A flag that asks running commands to stop: set by [`CancelFlag::cancel`], or by
/// SIGINT/SIGTERM unless the flag was made with [`CancelFlag::ignoring_signals`] (the
/// runner used to roll back *after* a signal must still be able to run commands).
#[derive(Debug, Clone)]
pub struct CancelFlag {
    flag: Arc<AtomicBool>,
    watch_signals: bool,
}

impl Default for CancelFlag {
    fn default() -> Self {
        Self {
            flag: Arc::default(),
            watch_signals: true,
        }
    }
}

impl CancelFlag {
    /// A flag that only [`CancelFlag::cancel`] sets (used for the rollback after a signal;
    /// a second signal still exits at once, see [`crate::signal`]).
    pub fn ignoring_signals() -> Self {
        Self {
            flag: Arc::default(),
            watch_signals: false,
        }
    }

    /// Ask everything that watches this flag to stop.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
            || (self.watch_signals && crate::signal::received().is_some())
    }
}

/// Runs real processes: explicit minimal environment, new process group, captured output.
#[derive(Debug, Clone, Default)]
pub struct SystemRunner {
    redactor: Redactor,
    cancel: CancelFlag,
    extra_env: Vec<(String, String)>,
}

impl SystemRunner {
    /// A runner that redacts with `redactor` and stops when `cancel` is set.
    pub fn new(redactor: Redactor, cancel: CancelFlag) -> Self {
        Self {
            redactor,
            cancel,
            extra_env: Vec::new(),
        }
    }

    /// Add a fixed variable to every child's environment (never a secret).
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.push((key.to_owned(), value.to_owned()));
        self
    }
}

impl Runner for SystemRunner {
    fn run(&self, cmd: &HostCommand) -> Result<CommandOutput, ExecError> {
        // A host command is a primitive's work, not the script's (its CPU budget).
        crate::boundary::limits::outside_script(|| self.run_inner(cmd))
    }
}

impl SystemRunner {
    fn run_inner(&self, cmd: &HostCommand) -> Result<CommandOutput, ExecError> {
        let shown = self.redactor.redact(&cmd.to_string());
        tracing::debug!(command = %shown, "run");
        if self.cancel.is_cancelled() {
            return Err(ExecError::Interrupted { command: shown });
        }
        let mut command = Command::new(&cmd.program);
        command
            .args(&cmd.args)
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("LC_ALL", "C")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            // Own process group, so a timeout or a signal kills the whole tree.
            .process_group(0);
        for (k, v) in &self.extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().map_err(|source| ExecError::Spawn {
            command: shown.clone(),
            source,
        })?;
        let pid = child.id() as i32;

        let writer = cmd.stdin.clone().and_then(|bytes| {
            child.stdin.take().map(|mut stdin| {
                std::thread::spawn(move || {
                    // A child that exits without reading gives EPIPE: not our error to report.
                    let _ = stdin.write_all(&bytes);
                })
            })
        });
        let mut out = child.stdout.take().map(reader_thread);
        let mut err = child.stderr.take().map(reader_thread);

        let started = Instant::now();
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(source) => {
                    break Err(ExecError::Io {
                        command: shown.clone(),
                        source,
                    });
                }
            }
            let timed_out = cmd.timeout.is_some_and(|t| started.elapsed() >= t);
            let cancelled = self.cancel.is_cancelled();
            if timed_out || cancelled {
                kill_group(pid);
                let _ = child.wait();
                break Err(if cancelled {
                    ExecError::Interrupted {
                        command: shown.clone(),
                    }
                } else {
                    ExecError::Timeout {
                        command: shown.clone(),
                        timeout: cmd.timeout.unwrap_or_default(),
                    }
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        if let Some(w) = writer {
            let _ = w.join();
        }
        let status = status?;
        // A grandchild that kept the pipe open must not block us after the child exited.
        let stdout = join_reader(out.take());
        let stderr = join_reader(err.take());
        let code = exit_code(status);
        let output = CommandOutput {
            code,
            stdout,
            stderr,
        };
        if cmd.accepts(code) {
            Ok(output)
        } else {
            Err(ExecError::Status {
                command: shown,
                code,
                stderr: self.redactor.redact(&output.stderr_text()),
                stdout: self.redactor.redact(&output.stdout_text()),
            })
        }
    }
}

/// The most bytes kept from one output stream of a command; the rest is read and dropped,
/// so a command that prints without end (`cat /dev/zero` inside a container, until its
/// timeout) cannot exhaust phoenix's memory.
pub const OUTPUT_CAP: u64 = 16 << 20;

fn reader_thread<R: Read + Send + 'static>(mut r: R) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut r).take(OUTPUT_CAP).read_to_end(&mut buf);
        // Keep draining, so the child never blocks on a full pipe.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
        let _ = tx.send(buf);
    });
    rx
}

fn join_reader(rx: Option<std::sync::mpsc::Receiver<Vec<u8>>>) -> Vec<u8> {
    rx.and_then(|rx| rx.recv_timeout(Duration::from_secs(2)).ok())
        .unwrap_or_default()
}

fn kill_group(pid: i32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A scripted answer of the [`RecordingRunner`].
pub type Responder = dyn Fn(&HostCommand) -> CommandOutput + Send + Sync;

/// Records every command; answers from a responder (default: exit 0, empty output).
///
/// With an inner runner it becomes the `--dry-run` runner: read-only commands run for
/// real, mutating ones are only recorded.
pub struct RecordingRunner {
    calls: Mutex<Vec<HostCommand>>,
    responder: Box<Responder>,
    inner: Option<Arc<dyn Runner>>,
    ran: Mutex<Vec<HostCommand>>,
}

impl Default for RecordingRunner {
    fn default() -> Self {
        Self::new(|_| CommandOutput::default())
    }
}

impl fmt::Debug for RecordingRunner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingRunner")
            .field("calls", &self.calls())
            .finish()
    }
}

impl RecordingRunner {
    /// A runner answering every command with `responder`.
    pub fn new(responder: impl Fn(&HostCommand) -> CommandOutput + Send + Sync + 'static) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            responder: Box::new(responder),
            inner: None,
            ran: Mutex::new(Vec::new()),
        }
    }

    /// The `--dry-run` runner: read-only commands go to `inner`, mutating ones are recorded
    /// and answered with success.
    pub fn dry_run(inner: Arc<dyn Runner>) -> Self {
        Self {
            calls: Mutex::new(Vec::new()),
            responder: Box::new(|_| CommandOutput::default()),
            inner: Some(inner),
            ran: Mutex::new(Vec::new()),
        }
    }

    /// Every command recorded so far (for dry-run: only the mutating ones).
    pub fn calls(&self) -> Vec<HostCommand> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many read-only commands the dry-run runner passed on to run for real.
    pub fn ran(&self) -> usize {
        self.ran.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The read-only commands the dry-run runner passed on to run for real, in order.
    pub fn ran_calls(&self) -> Vec<HostCommand> {
        self.ran.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many commands were recorded so far (where a plan note belongs).
    pub fn recorded(&self) -> usize {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Runner for RecordingRunner {
    fn run(&self, cmd: &HostCommand) -> Result<CommandOutput, ExecError> {
        if let Some(inner) = &self.inner {
            if !cmd.is_mutating() {
                self.ran
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(cmd.clone());
                return inner.run(cmd);
            }
        }
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cmd.clone());
        let out = (self.responder)(cmd);
        if cmd.accepts(out.code) {
            Ok(out)
        } else {
            Err(ExecError::Status {
                command: cmd.to_string(),
                code: out.code,
                stderr: out.stderr_text(),
                stdout: out.stdout_text(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runner() -> SystemRunner {
        SystemRunner::default()
    }

    #[test]
    fn hostile_argument_stays_one_argv_element() {
        let hostile = "; rm -rf / $(reboot) `id` | && \n x";
        let out = runner()
            .run(
                &HostCommand::new("/usr/bin/printf")
                    .arg("%s\\0")
                    .arg(hostile),
            )
            .unwrap();
        assert_eq!(out.stdout, format!("{hostile}\0").into_bytes());
    }

    #[test]
    fn environment_is_minimal() {
        // SAFETY-free: set_var is unsafe in edition 2024 and this crate forbids unsafe, so
        // rely on a variable every test process has.
        assert!(std::env::var_os("HOME").is_some() || std::env::var_os("PATH").is_some());
        let out = runner().run(&HostCommand::new("/usr/bin/env")).unwrap();
        let text = out.stdout_text();
        let mut keys: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["LC_ALL", "PATH"]);
    }

    #[test]
    fn stdin_is_closed_unless_given() {
        let out = runner().run(&HostCommand::new("/usr/bin/cat")).unwrap();
        assert!(out.stdout.is_empty());
        let out = runner()
            .run(&HostCommand::new("/usr/bin/cat").stdin(Zeroizing::new(b"abc".to_vec())))
            .unwrap();
        assert_eq!(out.stdout, b"abc");
    }

    #[test]
    fn failure_carries_code_and_stderr() {
        let err = runner()
            .run(&HostCommand::new("/usr/bin/ls").arg("/nonexistent-phoenix"))
            .unwrap_err();
        match &err {
            ExecError::Status { code, stderr, .. } => {
                assert_eq!(*code, 2);
                assert!(stderr.contains("nonexistent-phoenix"), "{stderr}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("/usr/bin/ls /nonexistent-phoenix"));
    }

    #[test]
    fn ok_codes_accept_other_exits() {
        let out = runner()
            .run(&HostCommand::new("/usr/bin/false").ok_codes([0, 1]))
            .unwrap();
        assert_eq!(out.code, 1);
    }

    /// Pids of running processes whose argv is exactly `argv` (a zombie has none).
    fn processes(argv: &[&str]) -> Vec<u32> {
        let want: Vec<u8> = argv
            .iter()
            .flat_map(|a| [a.as_bytes(), b"\0"].concat())
            .collect();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
            .collect()
    }

    #[test]
    fn timeout_kills_the_child_and_its_group() {
        // `timeout` runs `sleep` as its own child, in the group the runner made for it:
        // both must be gone after the runner's timeout (an argument unique to this test
        // finds them).
        let sleep = ["/usr/bin/sleep", "30.0417"];
        let err = runner()
            .run(
                &HostCommand::new("/usr/bin/timeout")
                    .arg("300")
                    .args(sleep)
                    .timeout(Duration::from_millis(200)),
            )
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
        crate::test_support::wait_until("the timed-out group to end", || {
            processes(&sleep).is_empty()
                && processes(&["/usr/bin/timeout", "300", sleep[0], sleep[1]]).is_empty()
        });
    }

    #[test]
    fn cancel_flag_interrupts() {
        let cancel = CancelFlag::default();
        let r = SystemRunner::new(Redactor::default(), cancel.clone());
        let c2 = cancel.clone();
        let sleep = ["/usr/bin/sleep", "30.0418"];
        // Cancel once the command runs.
        std::thread::spawn(move || {
            crate::test_support::wait_until("the command to start", || {
                !processes(&sleep).is_empty()
            });
            c2.cancel();
        });
        let err = r
            .run(&HostCommand::new(sleep[0]).arg(sleep[1]))
            .unwrap_err();
        assert!(matches!(err, ExecError::Interrupted { .. }), "{err:?}");
        crate::test_support::wait_until("the cancelled command to end", || {
            processes(&sleep).is_empty()
        });
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = runner()
            .run(&HostCommand::new("/nonexistent/pct"))
            .unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }));
    }

    #[test]
    fn redactor_hides_values_in_errors() {
        let red = Redactor::default();
        red.register("hf_token", "hf_abcdefSECRET");
        let r = SystemRunner::new(red, CancelFlag::default());
        let err = r
            .run(&HostCommand::new("/usr/bin/ls").arg("hf_abcdefSECRET"))
            .unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("hf_abcdefSECRET"), "{text}");
        assert!(text.contains("«secret:hf_token»"), "{text}");
    }

    #[test]
    fn redactor_finds_base64_and_hex_forms_at_any_offset_and_across_line_breaks() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let token = "hf_abcdefghijklmnopqrstuvwxyz0123456789";
        let red = Redactor::default();
        red.register("hf_token", token);
        for prefix in ["", "x", "xy", "token file: ", "HF_TOKEN="] {
            for suffix in ["", "\n", "z"] {
                let content = format!("{prefix}{token}{suffix}");
                let std = STANDARD.encode(&content);
                // `base64` wraps its output at 76 columns.
                let wrapped: String = std
                    .as_bytes()
                    .chunks(76)
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .collect::<Vec<_>>()
                    .join("\n");
                let url = URL_SAFE.encode(&content);
                let hex: String = content.bytes().map(|b| format!("{b:02x}")).collect();
                for shown in [
                    content.clone(),
                    std,
                    wrapped,
                    url,
                    hex.clone(),
                    hex.to_uppercase(),
                ] {
                    let out = red.redact(&format!("read back: {shown} (end)"));
                    assert!(out.contains("«secret:hf_token»"), "{shown:?} -> {out}");
                    // At most two bytes of the value show at either edge of an encoding.
                    assert!(!out.contains(&token[2..10]), "{out}");
                }
            }
        }
        assert_eq!(red.redact("nothing secret here"), "nothing secret here");
    }

    #[test]
    fn display_quotes_for_humans() {
        let c = HostCommand::new("/usr/sbin/pct")
            .args(["exec", "901", "--"])
            .arg("a b")
            .arg("it's")
            .arg("")
            .arg("--net0=name=eth0,ip=10.0.0.5/24")
            .arg("$HOME 'x'");
        assert_eq!(
            c.to_string(),
            "/usr/sbin/pct exec 901 -- 'a b' \"it's\" '' --net0=name=eth0,ip=10.0.0.5/24 '$HOME '\"'x'\""
        );
    }

    #[test]
    fn shell_words_are_literal_or_quoted() {
        let cases = [
            ("plain-1.0_a/b:c@d+e", "plain-1.0_a/b:c@d+e"),
            ("k=v,w=100%", "k=v,w=100%"),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", "\"it's\""),
            ("$(rm -rf /)", "'$(rm -rf /)'"),
            ("back\\slash", "\"back\\\\slash\""),
            ("grüße", "'grüße'"),
            ("nul\0byte", "'nul\0byte'"),
        ];
        for (word, shown) in cases {
            assert_eq!(shell_word(word), shown, "{word:?}");
        }
    }

    #[test]
    fn dry_run_records_only_mutating_commands() {
        let inner: Arc<dyn Runner> = Arc::new(SystemRunner::default());
        let r = RecordingRunner::dry_run(inner);
        let out = r.run(&HostCommand::new("/usr/bin/echo").arg("hi")).unwrap();
        assert_eq!(out.stdout, b"hi\n");
        r.run(&HostCommand::new("/usr/bin/rm").arg("/x").mutating())
            .unwrap();
        let calls = r.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].argv(), ["/usr/bin/rm", "/x"]);
    }
}

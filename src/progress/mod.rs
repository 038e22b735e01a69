//! Progress: what phoenix is waiting for right now, and for how long (issue 15 item 1).
//!
//! This module owns every progress line phoenix shows on stderr (stdout is for results).
//! One [`Progress`] per process, made by the CLI, picks how progress is shown:
//! - [`Mode::Spinners`] (stderr is a terminal): one live line per container with an active
//!   step — a spinner, the step, its stage and the elapsed time (`indicatif`); a finished
//!   step leaves a `done` line above the live ones. Log lines printed meanwhile go above
//!   the live lines ([`suspend`], used by [`crate::logging`]).
//! - [`Mode::Lines`] (stderr is a pipe or a file): a `start` (a change) or `wait` line when
//!   a step begins, a line when its stage changes, a heartbeat line every `interval` (default 15 s, setting
//!   `progress_interval`) while it runs, and a `done`/`failed` line with the time it took.
//!   These lines go through `tracing` (target `phoenix::progress`), so they reach the JSON
//!   log file too and pass the redactor.
//! - [`Mode::Hidden`] (`-q`): nothing. Results on stdout and errors are never progress.
//!
//! # The API for a caller that runs containers (`recipe run`, `phoenix up`)
//! ```no_run
//! use phoenix::progress::{Mode, Progress};
//! # let redactor = phoenix::exec::Redactor::default();
//! let progress = Progress::new(Mode::detect(false), Progress::DEFAULT_INTERVAL, redactor);
//! // One tracker per container, each passed to that container's run (`Runtime::progress`)
//! // and used from its thread; a tracker shows at most one live line.
//! let ct901 = progress.tracker(Some("901"));
//! let step = ct901.step("lxc.create:901");
//! step.stage("pct create");
//! step.done(); // a step dropped without `done` is reported as failed
//! ```
//! Steps nest: a tracker's live line (and heartbeat) shows its innermost running step.
//! Primitives never make lines of their own: [`crate::api::support::step`] reports every
//! journaled step, `lxc.exec` every command that changes a container, `vllm.wait_ready`
//! its readiness stage (downloading with bytes, loading, health, models) and the server's
//! last log line. A caller that waits on something else (`up` waiting for an `after:`
//! container) makes a step for it the same way ([`Tracker::wait`]).

use std::io::IsTerminal;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::Redactor;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live spinner line per container with an active step (stderr is a terminal).
    Spinners,
    /// Plain lines: start, stage changes, heartbeats, done (stderr is not a terminal).
    Lines,
    /// Nothing (`-q`).
    Hidden,
}

impl Mode {
    /// The mode for this process: hidden when `quiet`, spinners when stderr is a terminal
    /// that can redraw (`TERM` is not `dumb`), else lines.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Self::Hidden
        } else if std::io::stderr().is_terminal()
            && std::env::var("TERM").map_or(true, |t| t != "dumb")
        {
            Self::Spinners
        } else {
            Self::Lines
        }
    }
}

/// What kind of line an [`Event`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A step began.
    Start,
    /// A step's stage changed.
    Stage,
    /// A step still runs (every `interval`).
    Heartbeat,
    /// A step finished.
    Done,
    /// A step failed (or was abandoned).
    Failed,
}

/// One progress line, as [`Mode::Lines`] shows it (and a sink given to
/// [`Progress::with_sink`] receives it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What kind of line.
    pub kind: EventKind,
    /// The line, without a trailing newline, redacted.
    pub text: String,
}

type Sink = Box<dyn Fn(Event) + Send + Sync>;

/// The process-wide progress reporter; cheap to clone (clones share the live lines).
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("mode", &self.inner.mode)
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}

struct Inner {
    mode: Mode,
    interval: Duration,
    redactor: Redactor,
    multi: Option<MultiProgress>,
    sink: Option<Sink>,
    trackers: Mutex<Vec<Weak<TrackerInner>>>,
    ticker: Arc<Ticker>,
}

/// The ticking thread's stop flag; the thread holds only a weak reference to [`Inner`].
#[derive(Default)]
struct Ticker {
    started: std::sync::atomic::AtomicBool,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Drop for Inner {
    fn drop(&mut self) {
        *lock(&self.ticker.stop) = true;
        self.ticker.wake.notify_all();
    }
}

/// The terminal's live lines, for [`suspend`].
static LIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Run `f` (which writes to stderr) with the live lines cleared, redrawing them after, so
/// a log line printed during a step lands above the spinners instead of through them.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    let multi = lock(&LIVE).clone();
    match multi {
        Some(m) => m.suspend(f),
        None => f(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Progress {
    /// The heartbeat interval when the setting `progress_interval` is not given.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

    /// A reporter showing progress on stderr in `mode`, with a heartbeat every `interval`
    /// (lines mode); every text shown passes through `redactor`.
    pub fn new(mode: Mode, interval: Duration, redactor: Redactor) -> Self {
        let multi = (mode == Mode::Spinners).then(|| {
            let m = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            *lock(&LIVE) = Some(m.clone());
            m
        });
        Self::build(mode, interval, redactor, multi, None)
    }

    /// A reporter in lines mode whose lines go to `sink` instead of `tracing` (for
    /// embedding and tests).
    pub fn with_sink(
        interval: Duration,
        redactor: Redactor,
        sink: impl Fn(Event) + Send + Sync + 'static,
    ) -> Self {
        Self::build(Mode::Lines, interval, redactor, None, Some(Box::new(sink)))
    }

    /// A reporter that shows nothing.
    pub fn hidden() -> Self {
        Self::build(
            Mode::Hidden,
            Self::DEFAULT_INTERVAL,
            Redactor::default(),
            None,
            None,
        )
    }

    fn build(
        mode: Mode,
        interval: Duration,
        redactor: Redactor,
        multi: Option<MultiProgress>,
        sink: Option<Sink>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                mode,
                interval: interval.max(Duration::from_millis(1)),
                redactor,
                multi,
                sink,
                trackers: Mutex::new(Vec::new()),
                ticker: Arc::new(Ticker::default()),
            }),
        }
    }

    /// How progress is shown.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// A tracker for one container's steps; `label` (the vmid, or a name) prefixes its
    /// lines when several containers run at once, `None` for a run of one.
    pub fn tracker(&self, label: Option<&str>) -> Tracker {
        let t = Arc::new(TrackerInner {
            progress: Arc::clone(&self.inner),
            label: label.map(str::to_owned),
            stack: Mutex::new(Vec::new()),
            bar: Mutex::new(None),
        });
        let mut all = lock(&self.inner.trackers);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&t));
        Tracker { inner: t }
    }
}

impl Inner {
    /// Start the ticking thread (once, at the first step): heartbeats in lines mode,
    /// spinner frames and elapsed times in spinners mode.
    fn ensure_ticking(self: &Arc<Self>) {
        if self.mode == Mode::Hidden {
            return;
        }
        let ticker = Arc::clone(&self.ticker);
        let weak = Arc::downgrade(self);
        let every = match self.mode {
            Mode::Spinners => Duration::from_millis(100),
            // A heartbeat is due `interval` after a step's last line: checking four times
            // per interval keeps the gap between `interval` and 1.25 × `interval`.
            _ => (self.interval / 4).max(Duration::from_millis(1)),
        };
        if !self
            .ticker
            .started
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let spawned = std::thread::Builder::new()
                .name("phoenix-progress".into())
                .spawn(move || {
                    loop {
                        let stop = lock(&ticker.stop);
                        let (stop, _) = ticker
                            .wake
                            .wait_timeout_while(stop, every, |s| !*s)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        if *stop {
                            return;
                        }
                        drop(stop);
                        let Some(inner) = weak.upgrade() else {
                            return;
                        };
                        inner.tick();
                    }
                });
            if let Err(e) = spawned {
                tracing::debug!("no progress thread: {e}");
            }
        }
    }

    fn tick(&self) {
        let trackers: Vec<Arc<TrackerInner>> = lock(&self.trackers)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for t in trackers {
            match self.mode {
                Mode::Spinners => t.redraw(),
                Mode::Lines => t.heartbeat(self.interval),
                Mode::Hidden => {}
            }
        }
    }

    /// Show a line: to the sink, else through `tracing` (info in lines mode; debug in
    /// spinners mode, where the live line shows it and only the log file keeps it, except
    /// `done`/`failed` lines, which stay on screen).
    fn emit(&self, kind: EventKind, text: String) {
        let text = self.redactor.redact(&text);
        if let Some(sink) = &self.sink {
            sink(Event { kind, text });
            return;
        }
        let lasting = matches!(kind, EventKind::Done | EventKind::Failed);
        match self.mode {
            Mode::Hidden => {}
            Mode::Lines => tracing::info!(target: "phoenix::progress", "{text}"),
            Mode::Spinners if lasting => tracing::info!(target: "phoenix::progress", "{text}"),
            Mode::Spinners => tracing::debug!(target: "phoenix::progress", "{text}"),
        }
    }
}

/// One container's steps; cheap to clone, `Send + Sync`. [`Default`] shows nothing.
#[derive(Clone)]
pub struct Tracker {
    inner: Arc<TrackerInner>,
}

impl Default for Tracker {
    fn default() -> Self {
        Progress::hidden().tracker(None)
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("label", &self.inner.label)
            .field("mode", &self.inner.progress.mode)
            .finish_non_exhaustive()
    }
}

struct TrackerInner {
    progress: Arc<Inner>,
    label: Option<String>,
    /// The running steps, innermost last.
    stack: Mutex<Vec<Arc<StepState>>>,
    /// The live line (spinners mode), while a step runs.
    bar: Mutex<Option<ProgressBar>>,
}

/// What one running step shows.
struct StepState {
    what: String,
    started: Instant,
    view: Mutex<View>,
}

#[derive(Default, Clone)]
struct View {
    stage: Option<String>,
    note: Option<String>,
    log: Option<String>,
    /// When this step last printed a line (lines mode).
    last_line: Option<Instant>,
}

impl Tracker {
    /// Whether anything is shown (a caller may skip work done only for progress, such as
    /// reading a server's log, when not).
    pub fn visible(&self) -> bool {
        self.inner.progress.mode != Mode::Hidden
    }

    /// The label given to [`Progress::tracker`].
    pub fn label(&self) -> Option<&str> {
        self.inner.label.as_deref()
    }

    /// Begin a step that changes something, described by `what` (`lxc.create:901`,
    /// `lxc.exec:901 apt-get install -y docker.io`); it runs until [`Step::done`] or until
    /// dropped (failed). Lines mode shows `start WHAT`.
    pub fn step(&self, what: impl Into<String>) -> Step {
        self.begin("start", what.into())
    }

    /// Begin a step that only waits (`vllm.wait_ready:901 …`, another container):
    /// the same as [`Tracker::step`], shown as `wait  WHAT`.
    pub fn wait(&self, what: impl Into<String>) -> Step {
        self.begin("wait ", what.into())
    }

    fn begin(&self, verb: &str, what: String) -> Step {
        let state = Arc::new(StepState {
            what: self.inner.progress.redactor.redact(&what),
            started: Instant::now(),
            view: Mutex::new(View {
                last_line: Some(Instant::now()),
                ..View::default()
            }),
        });
        lock(&self.inner.stack).push(Arc::clone(&state));
        let p = &self.inner.progress;
        p.ensure_ticking();
        p.emit(
            EventKind::Start,
            format!("{}{verb} {}", self.inner.prefix(), state.what),
        );
        self.inner.redraw();
        Step {
            tracker: Arc::clone(&self.inner),
            state,
            finished: false,
        }
    }
}

impl TrackerInner {
    fn prefix(&self) -> String {
        self.label
            .as_ref()
            .map_or_else(String::new, |l| format!("{l}: "))
    }

    fn top(&self) -> Option<Arc<StepState>> {
        lock(&self.stack).last().cloned()
    }

    /// Update (or create, or remove) the live line from the innermost step.
    fn redraw(&self) {
        let Some(multi) = &self.progress.multi else {
            return;
        };
        let top = self.top();
        let mut bar = lock(&self.bar);
        match top {
            None => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                    multi.remove(&b);
                }
            }
            Some(step) => {
                let msg = self.progress.redactor.redact(&format!(
                    "{}{}",
                    self.label
                        .as_ref()
                        .map_or_else(String::new, |l| format!("{l}  ")),
                    step.live_text()
                ));
                let b = bar.get_or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(
                        ProgressStyle::with_template("{spinner:.cyan} {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b
                });
                b.set_message(msg);
                b.tick();
            }
        }
    }

    /// A heartbeat line for the innermost step, when its last line is `interval` old.
    fn heartbeat(&self, interval: Duration) {
        let Some(step) = self.top() else {
            return;
        };
        let due = {
            let mut v = lock(&step.view);
            let due = v.last_line.is_none_or(|l| l.elapsed() >= interval);
            if due {
                v.last_line = Some(Instant::now());
            }
            due
        };
        if due {
            self.progress.emit(
                EventKind::Heartbeat,
                format!("{}still waiting: {}", self.prefix(), step.heartbeat_text()),
            );
        }
    }
}

/// `12s`, `1m05s`, `2h03m`.
pub fn elapsed_text(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// At most `max` characters of `s`, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

impl StepState {
    /// `what · stage note`.
    fn head(&self, v: &View) -> String {
        let mut s = self.what.clone();
        if let Some(stage) = &v.stage {
            s.push_str(" · ");
            s.push_str(stage);
        }
        if let Some(note) = &v.note {
            s.push(' ');
            s.push_str(note);
        }
        s
    }

    /// The live line: `what · stage note [12s] · log line` (the log line last, where the
    /// terminal's width cuts it).
    fn live_text(&self) -> String {
        let v = lock(&self.view).clone();
        let mut s = format!(
            "{} [{}]",
            self.head(&v),
            elapsed_text(self.started.elapsed())
        );
        if let Some(log) = &v.log {
            s.push_str(" · ");
            s.push_str(log);
        }
        s
    }

    /// `what · stage note [30s elapsed]; last log line: …`.
    fn heartbeat_text(&self) -> String {
        let v = lock(&self.view).clone();
        let mut s = format!(
            "{} [{} elapsed]",
            self.head(&v),
            elapsed_text(self.started.elapsed())
        );
        if let Some(log) = &v.log {
            s.push_str("; last log line: ");
            s.push_str(&cut(log, 160));
        }
        s
    }
}

/// One running step; report its stage while it runs, then call [`Step::done`]. Dropped
/// without `done` (an error returned with `?`), it is reported as failed.
pub struct Step {
    tracker: Arc<TrackerInner>,
    state: Arc<StepState>,
    finished: bool,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("what", &self.state.what)
            .finish_non_exhaustive()
    }
}

impl Step {
    /// Set the stage (`downloading`, `loading`, `health`, `models`); a change is a line of
    /// its own in lines mode.
    pub fn stage(&self, stage: &str) {
        let changed = {
            let mut v = lock(&self.state.view);
            // A stage line does not put the heartbeat off: heartbeats keep their rhythm.
            if v.stage.as_deref() == Some(stage) {
                false
            } else {
                v.stage = Some(stage.to_owned());
                true
            }
        };
        if changed {
            let text = {
                let v = lock(&self.state.view).clone();
                format!(
                    "{}{} [{}]",
                    self.tracker.prefix(),
                    self.state.head(&v),
                    elapsed_text(self.state.started.elapsed())
                )
            };
            self.tracker.progress.emit(EventKind::Stage, text);
        }
        self.tracker.redraw();
    }

    /// Set the note after the stage (`12.4 GB`), shown on the live line and heartbeats.
    pub fn note(&self, note: Option<String>) {
        lock(&self.state.view).note = note;
        self.tracker.redraw();
    }

    /// Set the last line of what the step waits on (a server's log), redacted, shown on the
    /// live line and heartbeats.
    pub fn log_line(&self, line: Option<&str>) {
        let line = line
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| self.tracker.progress.redactor.redact(l));
        lock(&self.state.view).log = line;
        self.tracker.redraw();
    }

    /// How long the step has run.
    pub fn elapsed(&self) -> Duration {
        self.state.started.elapsed()
    }

    /// The step succeeded: a `done` line with the time it took.
    pub fn done(mut self) {
        self.finish(true);
    }

    fn finish(&mut self, ok: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        {
            let mut stack = lock(&self.tracker.stack);
            if let Some(i) = stack.iter().rposition(|s| Arc::ptr_eq(s, &self.state)) {
                stack.remove(i);
            }
        }
        // The live line goes (or shows the outer step) before the lasting line prints.
        self.tracker.redraw();
        let took = self.state.started.elapsed();
        let (kind, word) = if ok {
            (EventKind::Done, "done  ")
        } else {
            (EventKind::Failed, "failed")
        };
        self.tracker.progress.emit(
            kind,
            format!(
                "{}{word} {} ({:.1}s)",
                self.tracker.prefix(),
                self.state.what,
                took.as_secs_f64()
            ),
        );
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        self.finish(false);
    }
}

#[cfg(test)]
mod tests;

//! The readiness ladder of DESIGN.md §5: connection refused/reset/EOF = loading →
//! `GET /health` 200 → the configured model in `GET /v1/models` → (optional) a one-token
//! completion; failing fast on an exited container, a 503 or the wrong model.
//!
//! Downloading the weights is a stage of its own (DESIGN.md §11): a first start of a 24B
//! model fetches ≈ 47 GB before loading, which no load limit should count. While the port
//! is closed the ladder reads the size of the weights directory (the Hugging Face cache,
//! `du -sb` inside the container) every `progress_every` (5 s); while it grows the stage is
//! `downloading`, logged with the bytes so far, bounded by `download_timeout` (6 h). The
//! load limit `timeout` (15 min) counts from the last growth, so a healthy download of any
//! length never trips it, and a download that stalls fails `timeout` after its last byte.
//! HTTP polling keeps its fast start (interval = elapsed/16 from 25 ms), so a server that
//! comes up is noticed within one poll.
//!
//! The wrong model is caught twice: the served name must be listed, and each entry's
//! `root` (the model vLLM loaded, vllm-project/vllm `vllm/entrypoints/openai/serving_models.py`
//! `show_available_models`) must be the configured model: an image that ignored the model
//! argument and loaded its default (Qwen/Qwen3-0.6B) under the configured name is refused.

use std::fmt;
use std::time::{Duration, Instant};

use rhai::Map;

use super::start::{query, unit_state};
use super::{Server, VllmError};
use crate::api::ApiError;
use crate::api::http::{self, JsonBody, Seen};
use crate::api::support::{known_keys, opt_duration};
use crate::host::CtStatus;
use crate::runtime::Runtime;
use crate::secret::Secret;

/// Why `vllm.wait_ready` gave up, with everything an operator needs to see.
#[derive(Debug, thiserror::Error)]
#[error(
    "vLLM server {container} at {url} is not ready (stage: {stage}): {reason}; last seen: {last}\nlast log lines of {container}:\n{logs}"
)]
pub struct NotReadyError {
    /// The Docker container.
    pub container: String,
    /// The server's base URL.
    pub url: String,
    /// How far the ladder got.
    pub stage: Stage,
    /// Why it stopped.
    pub reason: NotReady,
    /// The last HTTP status/body or connection failure.
    pub last: SeenText,
    /// The container's last log lines (redacted).
    pub logs: String,
}
/// The last thing seen, or that nothing was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenText(pub Option<Seen>);

impl fmt::Display for SeenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("nothing (no request made)"),
        }
    }
}

/// How far the readiness ladder got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The port does not answer yet and the weights directory grows: downloading.
    Downloading,
    /// The port does not answer yet (refused, reset, EOF): the model is loading.
    Loading,
    /// The port answers but `/health` is not 200 yet.
    Health,
    /// `/health` is 200; waiting for the model in `/v1/models`.
    Models,
    /// The model is listed; waiting for a one-token completion.
    Completion,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Downloading => "downloading",
            Self::Loading => "loading",
            Self::Health => "health",
            Self::Models => "models",
            Self::Completion => "completion",
        })
    }
}

/// Why the ladder stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The load limit passed (counted from the weights' last growth, if any).
    Timeout {
        /// How long phoenix waited in all.
        waited: Duration,
        /// The weights' size and how long ago it last grew, when a download was seen.
        weights: Option<(u64, Duration)>,
    },
    /// The download stage's own limit passed while the weights still grew.
    DownloadTimeout {
        /// How long the download ran.
        waited: Duration,
        /// The weights' size so far.
        bytes: u64,
    },
    /// `/health` answered 503: the engine died.
    EngineDead,
    /// `/v1/models` lists other models.
    WrongModel {
        /// The configured served name.
        want: String,
        /// What the server lists.
        found: Vec<String>,
    },
    /// `/v1/models` lists the served name, but vLLM loaded another model under it.
    WrongRoot {
        /// The served name.
        name: String,
        /// The configured model.
        want: String,
        /// The model vLLM loaded (`root`).
        found: String,
    },
    /// The container is no longer running.
    Exited {
        /// What Docker or systemd said.
        state: String,
    },
    /// The container stopped because a disk filled up (its log says `No space left on
    /// device`), most likely with the weights.
    DiskFull {
        /// What Docker or systemd said.
        state: String,
        /// Where the weights go inside the LXC container.
        weights_dir: Option<String>,
    },
    /// The API key was refused.
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// The one-token completion was refused.
    CompletionRejected {
        /// The status.
        status: u16,
    },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout {
                waited,
                weights: None,
            } => write!(f, "timed out after {:.1}s", waited.as_secs_f64()),
            Self::Timeout {
                waited,
                weights: Some((bytes, idle)),
            } => write!(
                f,
                "timed out after {:.1}s: the weights ({}) stopped growing {:.1}s ago and the server did not answer since (a stalled download or a hung load)",
                waited.as_secs_f64(),
                human_bytes(*bytes),
                idle.as_secs_f64()
            ),
            Self::DownloadTimeout { waited, bytes } => write!(
                f,
                "the download of the weights still ran after {:.1}s ({} so far): raise `download_timeout`",
                waited.as_secs_f64(),
                human_bytes(*bytes)
            ),
            Self::WrongRoot { name, want, found } => write!(
                f,
                "the server loaded {found:?} under the name {name:?}, not the configured model {want:?} (an image that ignores its model argument serves its default)"
            ),
            Self::DiskFull { state, weights_dir } => write!(
                f,
                "the container is no longer running ({state}): a disk is full (\"No space left on device\" in its log){}",
                match weights_dir {
                    Some(d) => format!(
                        "; the weights download into {d}: put them on the model dataset (`models_dir`) or give it more space"
                    ),
                    None => String::new(),
                }
            ),
            Self::EngineDead => f.write_str("GET /health answered 503: the engine is dead"),
            Self::WrongModel { want, found } => write!(
                f,
                "the server serves {found:?}, not the configured model {want:?}"
            ),
            Self::Exited { state } => write!(f, "the container is no longer running ({state})"),
            Self::Unauthorized { status } => write!(
                f,
                "the API key was refused (HTTP {status}): the server was started with another key"
            ),
            Self::CompletionRejected { status } => {
                write!(f, "the one-token completion was refused (HTTP {status})")
            }
        }
    }
}

/// Bytes as `47.0 GB` (decimal units, as disk sizes and Hugging Face show them).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

/// What `vllm.wait_ready` accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitOptions {
    /// The load limit (default 15 min), counted from the weights' last growth.
    pub timeout: Duration,
    /// The download stage's own limit (default 6 h).
    pub download_timeout: Duration,
    /// How often the weights' size is read while the port is closed (default 5 s).
    pub progress_every: Duration,
    /// Also ask for a one-token completion.
    pub completion: bool,
    /// Shortest pause between polls.
    pub poll_min: Duration,
    /// Longest pause between polls.
    pub poll_max: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// How often the container's liveness is checked at first (then less often:
    /// [`WaitOptions::liveness_pause`]).
    pub liveness_every: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15 * 60),
            download_timeout: Duration::from_secs(6 * 3600),
            progress_every: Duration::from_secs(5),
            completion: false,
            poll_min: Duration::from_millis(25),
            poll_max: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            liveness_every: Duration::from_secs(2),
        }
    }
}

impl WaitOptions {
    /// From `vllm.wait_ready`'s options map.
    pub fn from_map(m: &Map) -> Result<Self, ApiError> {
        const CALL: &str = "vllm.wait_ready";
        known_keys(CALL, m, crate::api::options::WAIT_READY.keys)?;
        let mut o = Self::default();
        if let Some(d) = opt_duration(CALL, m, "timeout")? {
            o.timeout = d;
        }
        if let Some(d) = opt_duration(CALL, m, "download_timeout")? {
            o.download_timeout = d;
        }
        if let Some(d) = opt_duration(CALL, m, "progress_every")? {
            o.progress_every = d.max(Duration::from_millis(10));
        }
        if let Some(d) = opt_duration(CALL, m, "poll")? {
            o.poll_min = d.max(Duration::from_millis(5));
        }
        if let Some(d) = opt_duration(CALL, m, "max_poll")? {
            o.poll_max = d;
        }
        if let Some(d) = opt_duration(CALL, m, "request_timeout")? {
            o.request_timeout = d.max(Duration::from_millis(10));
        }
        if let Some(v) = m.get("completion") {
            o.completion = v.as_bool().map_err(|t| {
                ApiError::spec(CALL, format!("`completion` must be a bool, found {t}"))
            })?;
        }
        o.poll_max = o.poll_max.max(o.poll_min);
        Ok(o)
    }

    /// The pause after `elapsed` of waiting: a sixteenth of it, within the bounds.
    pub fn pause(&self, elapsed: Duration) -> Duration {
        (elapsed / 16).clamp(self.poll_min, self.poll_max)
    }

    /// How long after a liveness check the next one is due, `elapsed` into the wait: every
    /// `liveness_every` at first, then an eighth of the time waited, at most
    /// `progress_every` (or `liveness_every` where that is longer). Each check is a `pct
    /// exec` (a Perl interpreter on a real host) while the load may take many minutes; an
    /// exit is still caught within seconds of it.
    pub fn liveness_pause(&self, elapsed: Duration) -> Duration {
        (elapsed / 8).clamp(
            self.liveness_every,
            self.progress_every.max(self.liveness_every),
        )
    }
}

/// What the ladder needs to know about the container besides HTTP.
pub trait Liveness {
    /// `Some(state)` when the container is gone for good; `None` while it runs (or when
    /// that cannot be told).
    fn exited(&self) -> Option<String>;
    /// The container's last log lines.
    fn logs(&self) -> String;
    /// Whether a signal asked phoenix to stop.
    fn cancelled(&self) -> bool;
    /// The size in bytes of the directory the weights download to, `None` when it cannot
    /// be told (no such directory yet).
    fn weights_bytes(&self) -> Option<u64> {
        None
    }
    /// The ladder is at `stage` (each poll); `bytes`: the weights' size while downloading.
    /// Shown as progress (crate::progress), nothing else.
    fn report(&self, stage: Stage, bytes: Option<u64>) {
        let _ = (stage, bytes);
    }
}

/// What a successful wait saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// How long it took.
    pub waited: Duration,
    /// The model ids `/v1/models` listed.
    pub models: Vec<String>,
    /// How many bytes the weights directory grew by while waiting, and for how long, when
    /// a download was seen.
    pub downloaded: Option<(u64, Duration)>,
    /// The weights directory's size at the last reading (0 when never read).
    pub weights_bytes: u64,
}

/// The ids in a `/v1/models` answer.
pub fn model_ids(body: &str) -> Option<Vec<String>> {
    Some(model_entries(body)?.into_iter().map(|(id, _)| id).collect())
}

/// The `(id, root)` pairs of a `/v1/models` answer (`root`: the model vLLM loaded).
pub fn model_entries(body: &str) -> Option<Vec<(String, Option<String>)>> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("data")?
        .as_array()?
        .iter()
        .map(|m| {
            let id = m.get("id").and_then(|i| i.as_str())?.to_owned();
            let root = m.get("root").and_then(|r| r.as_str()).map(str::to_owned);
            Some((id, root))
        })
        .collect()
}

/// What the ladder knows about the download (the weights directory's growth).
#[derive(Debug, Default)]
struct Download {
    /// The size at the first reading.
    first: Option<u64>,
    /// The size at the last reading.
    bytes: u64,
    /// When the first growth was seen.
    began: Option<Instant>,
    /// When the last growth was seen.
    grew: Option<Instant>,
    /// Whether the last reading grew.
    growing: bool,
    /// When progress was last logged.
    logged: Option<Instant>,
}

impl Download {
    /// Take a reading (every `every`); logs progress at the first growth, then at most every
    /// 30 s. The download counts as going on while the last growth is at most two readings
    /// old, so one reading that falls between two writes does not end it.
    fn read(&mut self, bytes: Option<u64>, dir: &str, every: Duration) {
        let now = Instant::now();
        if let Some(b) = bytes {
            let grew = self.first.is_some() && b > self.bytes;
            self.first.get_or_insert(b);
            self.bytes = b;
            if grew {
                let began = *self.began.get_or_insert(now);
                self.grew = Some(now);
                if self
                    .logged
                    .is_none_or(|l| l.elapsed() >= Duration::from_secs(30))
                {
                    self.logged = Some(now);
                    tracing::info!(
                        weights = %dir,
                        bytes = b,
                        "downloading the weights: {} in {dir} ({:.0}s)",
                        human_bytes(b),
                        began.elapsed().as_secs_f64()
                    );
                }
            }
        }
        let growing = self
            .grew
            .is_some_and(|g| g.elapsed() <= every * 2 + Duration::from_millis(50));
        if self.growing && !growing {
            tracing::info!(
                weights = %dir,
                bytes = self.bytes,
                "the weights stopped growing at {}: loading",
                human_bytes(self.bytes)
            );
        }
        self.growing = growing;
    }

    /// Bytes grown and time taken, when a download was seen.
    fn summary(&self) -> Option<(u64, Duration)> {
        let (began, grew) = (self.began?, self.grew?);
        Some((
            self.bytes.saturating_sub(self.first.unwrap_or(0)),
            grew - began,
        ))
    }
}

/// Walk the readiness ladder for `server`.
pub fn wait_ladder(
    server: &Server,
    opts: &WaitOptions,
    live: &dyn Liveness,
) -> Result<Ready, VllmError> {
    if let Some(k) = &server.api_key {
        let mut v = b"Bearer ".to_vec();
        v.extend_from_slice(k.expose());
        let valid = reqwest::header::HeaderValue::from_bytes(&v).is_ok();
        zeroize::Zeroize::zeroize(&mut v);
        if !valid {
            return Err(VllmError::Spec {
                field: "api_key",
                message: format!("{k} cannot be sent in an HTTP header (control characters)"),
            });
        }
    }
    let client = http::client(opts.request_timeout)?;
    let health = server.url.with_path("/health");
    let models = server.url.with_path("/v1/models");
    let completions = server.url.with_path("/v1/completions");
    let bearer = server.api_key.as_ref().map(Secret::expose);
    let weights_dir = server
        .weights_dir
        .as_ref()
        .map_or_else(String::new, ToString::to_string);
    let started = Instant::now();
    let mut last_live = started;
    // The first reading of the weights' size is taken at once (the baseline).
    let mut last_progress: Option<Instant> = None;
    let mut download = Download::default();
    let mut stage = Stage::Loading;
    let mut last: Option<Seen>;
    let fail = |stage: Stage, reason: NotReady, last: Option<Seen>| {
        let logs = live.logs();
        let reason = match reason {
            NotReady::Exited { state }
                if logs
                    .to_ascii_lowercase()
                    .contains("no space left on device") =>
            {
                NotReady::DiskFull {
                    state,
                    weights_dir: server.weights_dir.as_ref().map(ToString::to_string),
                }
            }
            r => r,
        };
        VllmError::NotReady(Box::new(NotReadyError {
            container: server.container.clone(),
            url: server.url.to_string(),
            stage,
            reason,
            last: SeenText(last),
            logs,
        }))
    };
    let ready = |models: Vec<String>, download: &Download| Ready {
        waited: started.elapsed(),
        models,
        downloaded: download.summary(),
        weights_bytes: download.bytes,
    };
    loop {
        if live.cancelled() {
            return Err(VllmError::Interrupted);
        }
        live.report(
            stage,
            (stage == Stage::Downloading).then_some(download.bytes),
        );
        match stage {
            Stage::Downloading | Stage::Loading | Stage::Health => {
                match http::send(&client, &health, None, None) {
                    Err(c) => {
                        last = Some(Seen::Connection(c));
                        stage = Stage::Loading;
                    }
                    Ok(r) if r.status == 200 => {
                        stage = Stage::Models;
                        continue;
                    }
                    Ok(r) if r.status == 503 => {
                        return Err(fail(Stage::Health, NotReady::EngineDead, Some(r.seen())));
                    }
                    Ok(r) => {
                        last = Some(r.seen());
                        stage = Stage::Health;
                    }
                }
            }
            Stage::Models => match http::send(&client, &models, bearer, None) {
                Err(c) => {
                    // The server went away after /health: start over.
                    last = Some(Seen::Connection(c));
                    stage = Stage::Loading;
                }
                Ok(r) if r.status == 401 || r.status == 403 => {
                    return Err(fail(
                        Stage::Models,
                        NotReady::Unauthorized { status: r.status },
                        Some(r.seen()),
                    ));
                }
                Ok(r) if r.status == 200 => {
                    last = Some(r.seen());
                    let entries = model_entries(&r.body).unwrap_or_default();
                    let ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
                    let listed = entries.iter().find(|(id, _)| *id == server.model);
                    match (listed, &server.model_root) {
                        (Some((name, Some(root))), Some(want)) if root != want => {
                            return Err(fail(
                                Stage::Models,
                                NotReady::WrongRoot {
                                    name: name.clone(),
                                    want: want.clone(),
                                    found: root.clone(),
                                },
                                last,
                            ));
                        }
                        (Some(_), _) => {
                            if !opts.completion {
                                return Ok(ready(ids, &download));
                            }
                            stage = Stage::Completion;
                            continue;
                        }
                        (None, _) if !ids.is_empty() => {
                            return Err(fail(
                                Stage::Models,
                                NotReady::WrongModel {
                                    want: server.model.clone(),
                                    found: ids,
                                },
                                last,
                            ));
                        }
                        // An empty list or a body that is not the list yet: poll again.
                        (None, _) => {}
                    }
                }
                Ok(r) => last = Some(r.seen()),
            },
            Stage::Completion => {
                let body = serde_json::json!({
                    "model": server.model,
                    "prompt": "Hello",
                    "max_tokens": 1,
                    "temperature": 0,
                })
                .to_string();
                match http::send(&client, &completions, bearer, Some(JsonBody(&body))) {
                    Err(c) => last = Some(Seen::Connection(c)),
                    Ok(r) if r.status == 200 => {
                        return Ok(ready(vec![server.model.clone()], &download));
                    }
                    Ok(r) if r.status == 401 || r.status == 403 => {
                        return Err(fail(
                            Stage::Completion,
                            NotReady::Unauthorized { status: r.status },
                            Some(r.seen()),
                        ));
                    }
                    Ok(r) if (400..500).contains(&r.status) => {
                        return Err(fail(
                            Stage::Completion,
                            NotReady::CompletionRejected { status: r.status },
                            Some(r.seen()),
                        ));
                    }
                    Ok(r) => last = Some(r.seen()),
                }
            }
        }
        // While the port is closed, the weights' growth tells a download from a load.
        if stage == Stage::Loading
            && last_progress.is_none_or(|p| p.elapsed() >= opts.progress_every)
        {
            last_progress = Some(Instant::now());
            download.read(live.weights_bytes(), &weights_dir, opts.progress_every);
            if download.growing {
                stage = Stage::Downloading;
            }
        } else if stage == Stage::Loading && download.growing {
            stage = Stage::Downloading;
        }
        let elapsed = started.elapsed();
        if let (true, Some(began)) = (download.growing, download.began) {
            if began.elapsed() >= opts.download_timeout {
                return Err(fail(
                    Stage::Downloading,
                    NotReady::DownloadTimeout {
                        waited: began.elapsed(),
                        bytes: download.bytes,
                    },
                    last,
                ));
            }
        }
        // The load limit counts from the weights' last growth (or from the start).
        let since = download.grew.map_or(elapsed, |g| g.elapsed());
        if since >= opts.timeout {
            let weights = download.grew.map(|g| (download.bytes, g.elapsed()));
            return Err(fail(
                stage,
                NotReady::Timeout {
                    waited: elapsed,
                    weights,
                },
                last,
            ));
        }
        if last_live.elapsed() >= opts.liveness_pause(elapsed) {
            last_live = Instant::now();
            if let Some(state) = live.exited() {
                return Err(fail(stage, NotReady::Exited { state }, last));
            }
        }
        let pause = opts.pause(elapsed).min(opts.timeout.saturating_sub(since));
        http::sleep_unless(pause, &|| live.cancelled());
    }
}

/// Liveness from the container through the host, and the wait's progress step.
struct HostLiveness<'a> {
    rt: &'a Runtime,
    server: &'a Server,
    /// The wait as a progress step: its stage, the weights' bytes, the log's last line.
    step: crate::progress::Step,
    /// How often the server's last log line is read for the progress line.
    log_every: Duration,
    /// When it was last read (the start of the wait, before the first read).
    log_read: std::sync::Mutex<Instant>,
}

impl<'a> HostLiveness<'a> {
    /// The liveness of `server`, its wait shown as a progress step.
    fn new(rt: &'a Runtime, server: &'a Server, opts: &WaitOptions) -> Self {
        Self {
            rt,
            server,
            step: rt
                .progress
                .wait(format!("vllm.wait_ready:{} {}", server.vmid, server.url)),
            log_every: opts.progress_every,
            log_read: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// The last line of the server's log (`docker logs --tail 1`: its last line, on
    /// stdout or stderr as the server wrote it), redacted by the step.
    fn last_log_line(&self) -> Option<String> {
        let (rt, s) = (self.rt, self.server);
        let out = query(
            rt,
            s.vmid,
            &["docker", "logs", "--tail", "1", &s.container],
            vec![0],
        )
        .ok()?;
        let text = format!("{}{}", out.stdout_text(), out.stderr_text());
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(str::to_owned)
    }
}

impl Liveness for HostLiveness<'_> {
    fn exited(&self) -> Option<String> {
        let (rt, s) = (self.rt, self.server);
        // Docker first: `pct exec` refuses a container that is not running ("container
        // '<vmid>' not running!", pve-container `src/PVE/CLI/pct.pm` `exec`, 94f5585), so
        // only a failed query asks the host for the container's state (each `pct` call
        // starts a Perl interpreter on a real host).
        let out = match query(
            rt,
            s.vmid,
            &[
                "docker",
                "inspect",
                "--format",
                "{{.State.Status}}",
                &s.container,
            ],
            vec![0, 1],
        ) {
            Ok(out) => out,
            Err(e) => {
                tracing::debug!("liveness query failed: {e}");
                return match rt.host.ct_status(s.vmid) {
                    Ok(CtStatus::Running) => None,
                    Ok(other) => Some(format!("container {} is {other}", s.vmid)),
                    Err(e) => {
                        tracing::debug!("liveness query failed: {e}");
                        None
                    }
                };
            }
        };
        if out.code == 0 {
            let status = out.stdout_text().trim().to_owned();
            return matches!(status.as_str(), "exited" | "dead")
                .then(|| format!("docker reports the container {status}"));
        }
        // Docker no longer knows it (`--rm` removes an exited container): ask systemd.
        let st = unit_state(rt, s.vmid, &s.unit)
            .map_err(|e| tracing::debug!("liveness query failed: {e}"))
            .ok()?;
        let gone = st.active == "failed" || st.active == "inactive" || st.sub == "auto-restart";
        gone.then(|| {
            format!(
                "the Docker container is gone and {} is {}/{}",
                s.unit, st.active, st.sub
            )
        })
    }

    fn logs(&self) -> String {
        let (rt, s) = (self.rt, self.server);
        let lines = |out: crate::exec::CommandOutput| {
            let text = format!("{}{}", out.stdout_text(), out.stderr_text());
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(50)..].join("\n")
        };
        let docker = query(
            rt,
            s.vmid,
            &["docker", "logs", "--tail", "50", &s.container],
            vec![0],
        );
        let text = match docker {
            Ok(out) => lines(out),
            Err(_) => match query(
                rt,
                s.vmid,
                &[
                    "journalctl",
                    "-u",
                    &s.unit,
                    "-n",
                    "50",
                    "--no-pager",
                    "-o",
                    "cat",
                ],
                vec![0],
            ) {
                Ok(out) => lines(out),
                Err(e) => format!("(no logs: {e})"),
            },
        };
        rt.redactor.redact(&text)
    }

    fn cancelled(&self) -> bool {
        self.rt.cancel.is_cancelled()
    }

    fn report(&self, stage: Stage, bytes: Option<u64>) {
        self.step.note(bytes.map(human_bytes));
        self.step.stage(&stage.to_string());
        if !self.rt.progress.visible() {
            return;
        }
        let due = {
            let mut read = self.log_read.lock().unwrap_or_else(|e| e.into_inner());
            let due = read.elapsed() >= self.log_every;
            if due {
                *read = Instant::now();
            }
            due
        };
        if due {
            if let Some(line) = self.last_log_line() {
                self.step.log_line(Some(&line));
            }
        }
    }

    fn weights_bytes(&self) -> Option<u64> {
        let (rt, s) = (self.rt, self.server);
        let dir = s.weights_dir.as_ref()?;
        // GNU du: `-s` one total, `-b` apparent bytes (a growing `.incomplete` file counts as
        // written); exit 1 when the directory does not exist yet.
        let out = query(rt, s.vmid, &["du", "-s", "-b", dir.as_str()], vec![0, 1])
            .map_err(|e| tracing::debug!("weights size query failed: {e}"))
            .ok()?;
        if out.code != 0 {
            return None;
        }
        out.stdout_text().split_whitespace().next()?.parse().ok()
    }
}

/// `vllm.wait_ready(server, opts)`: the readiness ladder; skipped in a dry run.
pub fn wait_ready(
    rt: &Runtime,
    server: &Server,
    opts: &WaitOptions,
) -> Result<Option<Ready>, VllmError> {
    const CALL: &str = "vllm.wait_ready";
    // The boundary: the server map comes from the recipe, so its container must be one
    // phoenix owns and its URL that container's address (the API key goes with every
    // request), checked before a connection.
    let boundary = rt.boundary();
    boundary
        .container(CALL, server.vmid, crate::boundary::Access::Read)
        .map_err(ApiError::from)?;
    let (_, owner) = boundary
        .network(CALL, server.url.as_str())
        .map_err(ApiError::from)?;
    if owner != server.vmid && !(rt.dry_run && server.url.as_str().starts_with("http://0.0.0.0")) {
        return Err(ApiError::from(crate::boundary::Refusal::new(
            CALL,
            crate::boundary::Rule::Network,
            format!(
                "{} is the address of container {owner}, not of the server's container {}",
                server.url, server.vmid
            ),
        ))
        .into());
    }
    if rt.dry_run {
        tracing::info!(url = %server.url, "dry run: not waiting for the vLLM server");
        return Ok(None);
    }
    let live = HostLiveness::new(rt, server, opts);
    let ready = wait_ladder(server, opts, &live).map_err(|e| match e {
        // A server's body is shown in the error: hide any secret value it may echo.
        VllmError::NotReady(mut b) => {
            if let SeenText(Some(Seen::Status { body, .. })) = &mut b.last {
                *body = rt.redactor.redact(body);
            }
            VllmError::NotReady(b)
        }
        e => e,
    })?;
    live.step.done();
    if let Some((bytes, took)) = ready.downloaded {
        tracing::info!(
            bytes,
            "downloaded {} of weights in {:.1}s ({} in {})",
            human_bytes(bytes),
            took.as_secs_f64(),
            human_bytes(ready.weights_bytes),
            server.weights_dir.as_ref().map_or("?", |d| d.as_str())
        );
    }
    tracing::info!(url = %server.url, model = %server.model, waited_ms = ready.waited.as_millis() as u64, "vLLM server ready");
    Ok(Some(ready))
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;
    use crate::api::http::HttpUrl;
    use crate::api::http::tests::{closed_port, http, server};
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    // ----- the readiness ladder against loopback servers -----

    struct FakeLive {
        exited: Option<String>,
        checks: AtomicUsize,
        cancel: AtomicBool,
        /// The stages reported, each change once.
        stages: Mutex<Vec<Stage>>,
    }

    impl FakeLive {
        fn running() -> Self {
            Self {
                exited: None,
                checks: AtomicUsize::new(0),
                cancel: AtomicBool::new(false),
                stages: Mutex::new(Vec::new()),
            }
        }
    }

    impl Liveness for FakeLive {
        fn exited(&self) -> Option<String> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            self.exited.clone()
        }
        fn logs(&self) -> String {
            "INFO loading weights\nERROR CUDA out of memory".into()
        }
        fn cancelled(&self) -> bool {
            self.cancel.load(Ordering::SeqCst)
        }
        fn report(&self, stage: Stage, bytes: Option<u64>) {
            assert_eq!(bytes, None, "no download here");
            let mut s = self.stages.lock().unwrap();
            if s.last() != Some(&stage) {
                s.push(stage);
            }
        }
    }

    fn srv(addr: SocketAddr, key: Option<&str>) -> Server {
        Server {
            vmid: vmid(),
            url: HttpUrl::parse(&format!("http://{addr}/")).unwrap(),
            model: "mistralai/Devstral-Small-2507".into(),
            container: "phoenix-vllm-901".into(),
            unit: "phoenix-vllm-901.service".into(),
            api_key: key.map(|k| secret("vllm_api_key", k)),
            model_root: Some("mistralai/Devstral-Small-2507".into()),
            weights_dir: Some(AbsPath::new("/models/huggingface").unwrap()),
        }
    }

    fn quick() -> WaitOptions {
        WaitOptions {
            timeout: Duration::from_secs(5),
            liveness_every: Duration::from_millis(50),
            ..WaitOptions::default()
        }
    }

    const MODELS_OK: &str = r#"{"object":"list","data":[{"id":"mistralai/Devstral-Small-2507","object":"model","owned_by":"vllm","max_model_len":128000}]}"#;

    /// Connections are refused (nothing listens, like vLLM while it loads) until `live`
    /// has been checked twice — the ladder is then waiting in its loading stage — and then
    /// `answer` serves on the same port.
    fn late_server(
        live: &Arc<FakeLive>,
        answer: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> SocketAddr {
        let port = closed_port();
        let addr = port.addr();
        let live = Arc::clone(live);
        std::thread::spawn(move || {
            crate::test_support::wait_until("the ladder to check liveness while refused", || {
                live.checks.load(Ordering::SeqCst) >= 2
            });
            let l = port.listen();
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let req = crate::api::http::tests::read_request(&mut s);
                let _ = std::io::Write::write_all(&mut s, answer(&req).as_bytes());
            }
        });
        addr
    }

    fn route(req: &str) -> String {
        if req.starts_with("GET /health") {
            http(200, "")
        } else if req.starts_with("GET /v1/models") {
            http(200, MODELS_OK)
        } else if req.starts_with("POST /v1/completions") {
            http(200, r#"{"choices":[{"text":" Hi"}]}"#)
        } else {
            http(404, "{\"detail\":\"Not Found\"}")
        }
    }

    #[test]
    fn refused_then_health_then_models() {
        let live = Arc::new(FakeLive::running());
        let addr = late_server(&live, route);
        let r = wait_ladder(&srv(addr, None), &quick(), &*live).unwrap();
        assert_eq!(r.models, ["mistralai/Devstral-Small-2507"]);
        assert!(live.checks.load(Ordering::SeqCst) >= 2);
        // Progress saw each stage the ladder went through.
        assert_eq!(
            *live.stages.lock().unwrap(),
            [Stage::Loading, Stage::Models]
        );
    }

    #[test]
    fn eof_while_loading_then_ready() {
        // Accepts and closes (a published port before vLLM listens) for 5 connections.
        let (addr, count) = server(|n, req| if n < 5 { None } else { Some(route(req)) });
        let r = wait_ladder(&srv(addr, None), &quick(), &FakeLive::running()).unwrap();
        assert_eq!(r.models, ["mistralai/Devstral-Small-2507"]);
        // Five closed connections, then /health and /v1/models.
        assert_eq!(count.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn health_503_fails_fast() {
        let (addr, count) = server(|_, _| Some(http(503, "")));
        let e = wait_ladder(&srv(addr, None), &quick(), &FakeLive::running()).unwrap_err();
        // Fast: the first 503 ends the wait (one request, not a timeout).
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let t = e.to_string();
        assert!(
            t.contains("(stage: health): GET /health answered 503: the engine is dead"),
            "{t}"
        );
        assert!(t.contains("last seen: HTTP 503 with an empty body"), "{t}");
        assert!(t.contains("last log lines of phoenix-vllm-901:\nINFO loading weights\nERROR CUDA out of memory"), "{t}");
    }

    #[test]
    fn wrong_model_names_both_ids() {
        let (addr, _) = server(|_, req| {
            Some(if req.starts_with("GET /health") {
                http(200, "")
            } else {
                http(
                    200,
                    r#"{"object":"list","data":[{"id":"facebook/opt-125m","object":"model"}]}"#,
                )
            })
        });
        let e = wait_ladder(&srv(addr, None), &quick(), &FakeLive::running()).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("(stage: models): the server serves [\"facebook/opt-125m\"], not the configured model \"mistralai/Devstral-Small-2507\""),
            "{t}"
        );
    }

    #[test]
    fn timeout_names_stage_last_answer_and_logs() {
        let port = closed_port();
        let addr = port.addr();
        let mut o = quick();
        o.timeout = Duration::from_millis(300);
        let e = wait_ladder(&srv(addr, None), &o, &FakeLive::running()).unwrap_err();
        let t = e.to_string();
        assert!(t.contains(&format!("vLLM server phoenix-vllm-901 at http://{addr}/ is not ready (stage: loading): timed out after 0.")), "{t}");
        assert!(t.contains("last seen: connection refused"), "{t}");
        assert!(t.contains("ERROR CUDA out of memory"), "{t}");

        // Stuck at health (200 never comes): the stage says so, with the last status.
        let (addr, _) = server(|_, _| Some(http(500, "boom")));
        let e = wait_ladder(&srv(addr, None), &o, &FakeLive::running()).unwrap_err();
        let t = e.to_string();
        assert!(t.contains("(stage: health): timed out"), "{t}");
        assert!(t.contains("last seen: HTTP 500, body \"boom\""), "{t}");

        // Model list stays empty.
        let (addr, _) = server(|_, req| {
            Some(if req.starts_with("GET /health") {
                http(200, "")
            } else {
                http(200, r#"{"object":"list","data":[]}"#)
            })
        });
        let e = wait_ladder(&srv(addr, None), &o, &FakeLive::running()).unwrap_err();
        assert!(e.to_string().contains("(stage: models): timed out"), "{e}");
    }

    #[test]
    fn exited_container_fails_fast() {
        let port = closed_port();
        let live = FakeLive {
            exited: Some("docker reports the container exited".into()),
            ..FakeLive::running()
        };
        let e = wait_ladder(&srv(port.addr(), None), &quick(), &live).unwrap_err();
        // Fast: the first liveness check ends the wait (not the 5 s timeout).
        assert_eq!(live.checks.load(Ordering::SeqCst), 1);
        assert!(
            e.to_string().contains("(stage: loading): the container is no longer running (docker reports the container exited)"),
            "{e}"
        );
    }

    #[test]
    fn bearer_on_v1_only_and_completion() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = Arc::clone(&seen);
        let (addr, _) = server(move |_, req| {
            s2.lock().unwrap().push(req.to_owned());
            let authed = req
                .to_lowercase()
                .contains("authorization: bearer sk-123\r\n");
            Some(if req.starts_with("GET /health") {
                http(200, "")
            } else if !authed {
                http(401, "{\"error\":\"Unauthorized\"}")
            } else {
                route(req)
            })
        });
        let mut o = quick();
        o.completion = true;
        wait_ladder(&srv(addr, Some("sk-123")), &o, &FakeLive::running()).unwrap();
        let reqs = seen.lock().unwrap().clone();
        assert_eq!(reqs.len(), 3, "{reqs:?}");
        assert!(
            !reqs[0].to_lowercase().contains("authorization"),
            "{}",
            reqs[0]
        );
        assert!(reqs[2].starts_with("POST /v1/completions"), "{}", reqs[2]);
        assert!(reqs[2].contains("\"max_tokens\":1"), "{}", reqs[2]);
        // The wrong key fails fast, and its bytes appear nowhere in the error.
        let e =
            wait_ladder(&srv(addr, Some("sk-wrong")), &quick(), &FakeLive::running()).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("(stage: models): the API key was refused (HTTP 401)"),
            "{t}"
        );
        assert!(!t.contains("sk-wrong"), "{t}");
    }

    #[test]
    fn cancel_interrupts_the_wait() {
        let port = closed_port();
        let live = FakeLive::running();
        live.cancel.store(true, Ordering::SeqCst);
        let e = wait_ladder(&srv(port.addr(), None), &quick(), &live).unwrap_err();
        assert!(matches!(e, VllmError::Interrupted));
    }

    #[test]
    fn poll_interval_starts_fast_and_is_capped() {
        let o = WaitOptions::default();
        assert_eq!(o.pause(Duration::ZERO), Duration::from_millis(25));
        assert_eq!(
            o.pause(Duration::from_secs(1)),
            Duration::from_micros(62_500)
        );
        assert_eq!(o.pause(Duration::from_secs(4)), Duration::from_millis(250));
        assert_eq!(o.pause(Duration::from_secs(600)), Duration::from_secs(2));
        // Liveness: every 2 s at first, then an eighth of the wait, at most 5 s.
        assert_eq!(o.liveness_pause(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(
            o.liveness_pause(Duration::from_secs(16)),
            Duration::from_secs(2)
        );
        assert_eq!(
            o.liveness_pause(Duration::from_secs(24)),
            Duration::from_secs(3)
        );
        assert_eq!(
            o.liveness_pause(Duration::from_secs(600)),
            Duration::from_secs(5)
        );
        let mut m = Map::new();
        m.insert("timeout".into(), "2s".into());
        m.insert("completion".into(), Dynamic::from_bool(true));
        m.insert("download_timeout".into(), "2h".into());
        m.insert("progress_every".into(), "1s".into());
        let w = WaitOptions::from_map(&m).unwrap();
        assert_eq!((w.timeout, w.completion), (Duration::from_secs(2), true));
        assert_eq!(
            (w.download_timeout, w.progress_every),
            (Duration::from_secs(7200), Duration::from_secs(1))
        );
        let d = WaitOptions::default();
        assert_eq!(
            (d.timeout, d.download_timeout, d.progress_every),
            (
                Duration::from_secs(900),
                Duration::from_secs(6 * 3600),
                Duration::from_secs(5)
            )
        );
        m.insert("attempts".into(), Dynamic::from_int(1));
        assert!(
            WaitOptions::from_map(&m)
                .unwrap_err()
                .to_string()
                .contains("unknown option `attempts`")
        );
    }

    /// Liveness whose weights directory grows by 1 GB per reading for `grow` readings (from
    /// 1 GB), then stays; the server turns ready at reading `ready_at` (0: never).
    struct Downloading {
        grow: usize,
        ready_at: usize,
        readings: AtomicUsize,
        ready: Arc<AtomicBool>,
        exited: Option<String>,
        logs: String,
        /// What the ladder reported to progress.
        reports: Mutex<Vec<(Stage, Option<u64>)>>,
    }

    impl Downloading {
        fn new(grow: usize, ready_at: usize) -> Self {
            Self {
                grow,
                ready_at,
                readings: AtomicUsize::new(0),
                ready: Arc::new(AtomicBool::new(false)),
                exited: None,
                logs: "INFO loading".into(),
                reports: Mutex::new(Vec::new()),
            }
        }

        /// A server that accepts and closes (a published port while loading) until ready.
        fn server(&self) -> SocketAddr {
            let ready = Arc::clone(&self.ready);
            let (addr, _) = server(move |_, req| ready.load(Ordering::SeqCst).then(|| route(req)));
            addr
        }
    }

    impl Liveness for Downloading {
        fn exited(&self) -> Option<String> {
            self.exited.clone()
        }
        fn logs(&self) -> String {
            self.logs.clone()
        }
        fn cancelled(&self) -> bool {
            false
        }
        fn weights_bytes(&self) -> Option<u64> {
            let k = self.readings.fetch_add(1, Ordering::SeqCst) + 1;
            if k == self.ready_at {
                self.ready.store(true, Ordering::SeqCst);
            }
            Some(k.min(self.grow) as u64 * 1_000_000_000)
        }
        fn report(&self, stage: Stage, bytes: Option<u64>) {
            self.reports.lock().unwrap().push((stage, bytes));
        }
    }

    fn downloading_opts() -> WaitOptions {
        WaitOptions {
            timeout: Duration::from_millis(300),
            progress_every: Duration::from_millis(10),
            poll_max: Duration::from_millis(30),
            liveness_every: Duration::from_millis(10),
            ..WaitOptions::default()
        }
    }

    /// Issue 11: a download longer than the load limit does not fail a healthy first start;
    /// the load limit counts from the weights' last growth.
    #[test]
    fn a_download_longer_than_the_load_limit_is_its_own_stage() {
        let live = Downloading::new(30, 34);
        let addr = live.server();
        let r = wait_ladder(&srv(addr, None), &downloading_opts(), &live).unwrap();
        assert!(r.waited > Duration::from_millis(300), "{:?}", r.waited);
        let (bytes, took) = r.downloaded.unwrap();
        assert_eq!(bytes, 29_000_000_000);
        assert!(took > Duration::ZERO);
        assert_eq!(r.models, ["mistralai/Devstral-Small-2507"]);
        // Progress showed the download with its bytes, then the later stages.
        let reports = live.reports.lock().unwrap();
        assert!(
            reports
                .iter()
                .any(|(s, b)| *s == Stage::Downloading && b.is_some_and(|b| b >= 2_000_000_000)),
            "{reports:?}"
        );
        assert!(
            reports
                .iter()
                .all(|(s, b)| b.is_some() == (*s == Stage::Downloading)),
            "{reports:?}"
        );
        assert_eq!(reports.last().map(|r| r.0), Some(Stage::Models));
    }

    #[test]
    fn a_stalled_download_fails_the_load_limit_after_its_last_byte() {
        let live = Downloading::new(5, 0);
        let addr = live.server();
        let e = wait_ladder(&srv(addr, None), &downloading_opts(), &live).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("(stage: loading): timed out after")
                && t.contains(": the weights (5.0 GB) stopped growing"),
            "{t}"
        );
    }

    #[test]
    fn the_download_has_its_own_limit() {
        let live = Downloading::new(usize::MAX, 0);
        let addr = live.server();
        let mut o = downloading_opts();
        o.download_timeout = Duration::from_millis(150);
        let e = wait_ladder(&srv(addr, None), &o, &live).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("(stage: downloading): the download of the weights still ran after")
                && t.contains("raise `download_timeout`"),
            "{t}"
        );
    }

    /// Issue 11 "must show": weights that fill a disk end the container; the error names
    /// the cause and where the weights went.
    #[test]
    fn a_full_disk_is_named_as_the_cause() {
        let mut live = Downloading::new(3, 0);
        live.exited = Some(
            "the Docker container is gone and phoenix-vllm-901.service is activating/auto-restart"
                .into(),
        );
        live.logs = "(EngineCore_DP0 pid=280) ERROR [core.py:708] OSError: [Errno 28] No space left on device: '/root/.cache/huggingface/hub/x.incomplete'".into();
        let addr = live.server();
        let mut s = srv(addr, None);
        s.weights_dir = Some(AbsPath::new("/root/.cache/huggingface").unwrap());
        let e = wait_ladder(&s, &downloading_opts(), &live).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("the container is no longer running (the Docker container is gone and phoenix-vllm-901.service is activating/auto-restart): a disk is full (\"No space left on device\" in its log); the weights download into /root/.cache/huggingface: put them on the model dataset (`models_dir`) or give it more space"),
            "{t}"
        );
    }

    /// Issue 11 "must show": an image that ignored its model argument serves its default
    /// under the configured name: `root` gives it away.
    #[test]
    fn a_default_model_under_the_configured_name_is_caught() {
        let (addr, _) = server(|_, req| {
            Some(if req.starts_with("GET /health") {
                http(200, "")
            } else {
                http(
                    200,
                    r#"{"object":"list","data":[{"id":"mistralai/Devstral-Small-2507","object":"model","owned_by":"vllm","root":"Qwen/Qwen3-0.6B"}]}"#,
                )
            })
        });
        let e = wait_ladder(&srv(addr, None), &quick(), &FakeLive::running()).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("(stage: models): the server loaded \"Qwen/Qwen3-0.6B\" under the name \"mistralai/Devstral-Small-2507\", not the configured model \"mistralai/Devstral-Small-2507\""),
            "{t}"
        );
        // Without a configured root (an older server map) the name alone decides.
        let mut s = srv(addr, None);
        s.model_root = None;
        wait_ladder(&s, &quick(), &FakeLive::running()).unwrap();
    }

    /// Liveness through the host: Docker's state first, systemd's when Docker no longer
    /// knows the container (`--rm`), and the stopped LXC container itself.
    #[test]
    fn host_liveness_reads_docker_then_systemd() {
        let f = fixture(false, true);
        let port = closed_port();
        let s = srv(port.addr(), None);
        let live = HostLiveness::new(&f.rt, &s, &WaitOptions::default());
        assert_eq!(live.exited(), None);
        // The weights directory's size, from `du -s -b` inside the container.
        assert_eq!(live.weights_bytes(), None);
        *f.ct.weights.lock().unwrap() = Some(47_200_000_000);
        assert_eq!(live.weights_bytes(), Some(47_200_000_000));
        *f.ct.docker_state.lock().unwrap() = Some("exited".into());
        assert_eq!(
            live.exited().as_deref(),
            Some("docker reports the container exited")
        );
        // Gone from Docker, service still starting: not (yet) a failure.
        *f.ct.docker_state.lock().unwrap() = Some(String::new());
        f.ct.up.store(true, Ordering::SeqCst);
        assert_eq!(live.exited(), None);
        f.ct.up.store(false, Ordering::SeqCst);
        assert_eq!(
            live.exited().as_deref(),
            Some("the Docker container is gone and phoenix-vllm-901.service is inactive/dead")
        );
        assert_eq!(
            live.logs(),
            "INFO Starting vLLM API server\nWARNING slow disk"
        );
        // The LXC container stopped: `pct exec` refuses it, and only then is the host asked.
        f.ct.stopped.store(true, Ordering::SeqCst);
        let before = f.runner.calls().len();
        assert_eq!(live.exited().as_deref(), Some("container 901 is stopped"));
        let asked: Vec<String> = f.runner.calls()[before..]
            .iter()
            .map(|c| c.argv()[1..3].join(" "))
            .collect();
        assert_eq!(asked, ["exec 901", "status 901"]);
        // The container removed: the host says it is absent.
        std::fs::remove_file(f._dir.path().join("pve/lxc/901.conf")).unwrap();
        assert_eq!(live.exited().as_deref(), Some("container 901 is absent"));
    }
}

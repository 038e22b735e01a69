//! The readiness ladder of DESIGN.md §5: connection refused/reset/EOF = loading →
//! `GET /health` 200 → the configured model in `GET /v1/models` → (optional) a one-token
//! completion; failing fast on an exited container, a 503 or the wrong model.

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
    /// The total timeout passed.
    Timeout {
        /// How long phoenix waited.
        waited: Duration,
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
    /// The container is no longer running.
    Exited {
        /// What Docker or systemd said.
        state: String,
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
            Self::Timeout { waited } => write!(f, "timed out after {:.1}s", waited.as_secs_f64()),
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

/// What `vllm.wait_ready` accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitOptions {
    /// Total limit (default 15 min).
    pub timeout: Duration,
    /// Also ask for a one-token completion.
    pub completion: bool,
    /// Shortest pause between polls.
    pub poll_min: Duration,
    /// Longest pause between polls.
    pub poll_max: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// How often the container's liveness is checked.
    pub liveness_every: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15 * 60),
            completion: false,
            poll_min: Duration::from_millis(25),
            poll_max: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            liveness_every: Duration::from_secs(1),
        }
    }
}

impl WaitOptions {
    /// From `vllm.wait_ready`'s options map.
    pub fn from_map(m: &Map) -> Result<Self, ApiError> {
        const CALL: &str = "vllm.wait_ready";
        known_keys(
            CALL,
            m,
            &[
                "timeout",
                "completion",
                "poll",
                "max_poll",
                "request_timeout",
            ],
        )?;
        let mut o = Self::default();
        if let Some(d) = opt_duration(CALL, m, "timeout")? {
            o.timeout = d;
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
}

/// What a successful wait saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// How long it took.
    pub waited: Duration,
    /// The model ids `/v1/models` listed.
    pub models: Vec<String>,
}

/// The ids in a `/v1/models` answer.
pub fn model_ids(body: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("data")?
        .as_array()?
        .iter()
        .map(|m| m.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        .collect()
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
    let started = Instant::now();
    let mut last_live = started;
    let mut stage = Stage::Loading;
    let mut last: Option<Seen>;
    let fail = |stage: Stage, reason: NotReady, last: Option<Seen>| {
        VllmError::NotReady(Box::new(NotReadyError {
            container: server.container.clone(),
            url: server.url.to_string(),
            stage,
            reason,
            last: SeenText(last),
            logs: live.logs(),
        }))
    };
    loop {
        if live.cancelled() {
            return Err(VllmError::Interrupted);
        }
        match stage {
            Stage::Loading | Stage::Health => match http::send(&client, &health, None, None) {
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
            },
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
                    match model_ids(&r.body) {
                        Some(ids) if ids.contains(&server.model) => {
                            if !opts.completion {
                                return Ok(Ready {
                                    waited: started.elapsed(),
                                    models: ids,
                                });
                            }
                            stage = Stage::Completion;
                            continue;
                        }
                        Some(ids) if !ids.is_empty() => {
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
                        _ => {}
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
                        return Ok(Ready {
                            waited: started.elapsed(),
                            models: vec![server.model.clone()],
                        });
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
        let elapsed = started.elapsed();
        if elapsed >= opts.timeout {
            return Err(fail(stage, NotReady::Timeout { waited: elapsed }, last));
        }
        if last_live.elapsed() >= opts.liveness_every {
            last_live = Instant::now();
            if let Some(state) = live.exited() {
                return Err(fail(stage, NotReady::Exited { state }, last));
            }
        }
        let pause = opts
            .pause(elapsed)
            .min(opts.timeout.saturating_sub(elapsed));
        http::sleep_unless(pause, &|| live.cancelled());
    }
}

/// Liveness from the container through the host.
struct HostLiveness<'a> {
    rt: &'a Runtime,
    server: &'a Server,
}

impl Liveness for HostLiveness<'_> {
    fn exited(&self) -> Option<String> {
        let (rt, s) = (self.rt, self.server);
        match rt.host.ct_status(s.vmid) {
            Ok(CtStatus::Running) => {}
            Ok(other) => return Some(format!("container {} is {other}", s.vmid)),
            Err(e) => tracing::debug!("liveness query failed: {e}"),
        }
        let out = query(
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
        )
        .map_err(|e| tracing::debug!("liveness query failed: {e}"))
        .ok()?;
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
    let ready = wait_ladder(server, opts, &HostLiveness { rt, server }).map_err(|e| match e {
        // A server's body is shown in the error: hide any secret value it may echo.
        VllmError::NotReady(mut b) => {
            if let SeenText(Some(Seen::Status { body, .. })) = &mut b.last {
                *body = rt.redactor.redact(body);
            }
            VllmError::NotReady(b)
        }
        e => e,
    })?;
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
    }

    impl FakeLive {
        fn running() -> Self {
            Self {
                exited: None,
                checks: AtomicUsize::new(0),
                cancel: AtomicBool::new(false),
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
    }

    fn srv(addr: SocketAddr, key: Option<&str>) -> Server {
        Server {
            vmid: vmid(),
            url: HttpUrl::parse(&format!("http://{addr}/")).unwrap(),
            model: "mistralai/Devstral-Small-2507".into(),
            container: "phoenix-vllm-901".into(),
            unit: "phoenix-vllm-901.service".into(),
            api_key: key.map(|k| secret("vllm_api_key", k)),
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
        let mut m = Map::new();
        m.insert("timeout".into(), "2s".into());
        m.insert("completion".into(), Dynamic::from_bool(true));
        let w = WaitOptions::from_map(&m).unwrap();
        assert_eq!((w.timeout, w.completion), (Duration::from_secs(2), true));
        m.insert("attempts".into(), Dynamic::from_int(1));
        assert!(
            WaitOptions::from_map(&m)
                .unwrap_err()
                .to_string()
                .contains("unknown option `attempts`")
        );
    }

    /// Liveness through the host: Docker's state first, systemd's when Docker no longer
    /// knows the container (`--rm`), and the stopped LXC container itself.
    #[test]
    fn host_liveness_reads_docker_then_systemd() {
        let f = fixture(false, true);
        let port = closed_port();
        let s = srv(port.addr(), None);
        let live = HostLiveness {
            rt: &f.rt,
            server: &s,
        };
        assert_eq!(live.exited(), None);
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
        // The LXC container stopped.
        std::fs::remove_file(f._dir.path().join("pve/lxc/901.conf")).unwrap();
        assert_eq!(live.exited().as_deref(), Some("container 901 is absent"));
    }
}

//! The emulated vLLM server (DESIGN.md §7): what an emulated `docker run vllm/vllm-openai`
//! runs, on the loopback address the emulator gave the container.
//!
//! It behaves like vLLM as far as phoenix can see: while the model "loads" (the load delay)
//! nothing listens on the port, so connections are refused; then it answers
//! `GET /health` and `GET /ping` (200, empty body; 503 in mode `503`), `GET /version`,
//! `GET /v1/models` and `POST /v1/completions` (one token). With an API key, `/v1…` paths
//! need `Authorization: Bearer <key>` (401 `{"error":"Unauthorized"}` otherwise), as
//! vLLM's `--api-key` does. Modes: `ok`, `crash` (fails after the load delay: [`serve`]
//! returns [`Crashed`], and the emulator exits 1), `503`, `wrong-model` (lists another id),
//! `never-listen` (never binds).
//!
//! It checks `alive()` at least every 200 ms and returns `Ok(())` once it says false (the
//! container was destroyed or the emulated root removed), so a killed test leaves no
//! server behind. Only std and serde_json: one thread per connection, `Connection: close`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often `alive()` is asked.
const ALIVE_EVERY: Duration = Duration::from_millis(200);
/// How long `accept` sleeps when nothing is waiting.
const ACCEPT_NAP: Duration = Duration::from_millis(5);
/// The vLLM version reported by `/version`.
pub const VERSION: &str = "0.11.0";
/// The id listed in mode `wrong-model`.
pub const WRONG_MODEL: &str = "facebook/opt-125m";

/// What the server does after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve normally.
    Ok,
    /// Exit with an error after the load delay (the emulator exits 1).
    Crash,
    /// `/health` answers 503 (engine dead).
    Unavailable,
    /// `/v1/models` lists another model.
    WrongModel,
    /// Never bind the port.
    NeverListen,
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// `ok`, `crash`, `503`, `wrong-model`, `never-listen` (the `faults.json` spellings).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ok" => Ok(Self::Ok),
            "crash" => Ok(Self::Crash),
            "503" => Ok(Self::Unavailable),
            "wrong-model" => Ok(Self::WrongModel),
            "never-listen" => Ok(Self::NeverListen),
            other => Err(format!(
                "unknown vllm mode {other:?}: expected ok, crash, 503, wrong-model or never-listen"
            )),
        }
    }
}

/// How the emulated server behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behaviour {
    /// How long the port stays closed ("loading the model").
    pub load_delay: Duration,
    /// How long a whole first download of the weights takes (read by the server process).
    pub download_time: Duration,
    /// What happens after loading.
    pub mode: Mode,
    /// The API key `/v1…` paths require, if any.
    pub api_key: Option<String>,
    /// `max_model_len` reported by `/v1/models`.
    pub max_model_len: u64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            load_delay: Duration::ZERO,
            download_time: Duration::ZERO,
            mode: Mode::Ok,
            api_key: None,
            max_model_len: 4096,
        }
    }
}

/// The error [`serve`] returns in mode `crash` (the emulator exits with code 1).
#[derive(Debug)]
pub struct Crashed;

impl std::fmt::Display for Crashed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("emulated vLLM engine crashed after loading (mode crash)")
    }
}

impl std::error::Error for Crashed {}

/// Sleep up to `d`, asking `alive()` every 200 ms; false when it said no.
fn wait_alive(d: Duration, alive: &dyn Fn() -> bool) -> bool {
    let end = Instant::now() + d;
    loop {
        if !alive() {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(ALIVE_EVERY));
    }
}

/// Run the emulated vLLM server on `addr` until `alive()` returns false.
///
/// Returns `Ok(())` when told to stop, an error of kind `Other` wrapping [`Crashed`] in
/// mode `crash`, or the bind error.
pub fn serve(
    addr: SocketAddr,
    served_model: &str,
    model: &str,
    behaviour: Behaviour,
    alive: &dyn Fn() -> bool,
) -> io::Result<()> {
    if !wait_alive(behaviour.load_delay, alive) {
        return Ok(());
    }
    match behaviour.mode {
        Mode::Crash => return Err(io::Error::other(Crashed)),
        Mode::NeverListen => {
            while wait_alive(ALIVE_EVERY, alive) {}
            return Ok(());
        }
        _ => {}
    }
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let served = served_model.to_owned();
    let model = model.to_owned();
    let mut last_check = Instant::now();
    loop {
        if last_check.elapsed() >= ALIVE_EVERY {
            if !alive() {
                return Ok(());
            }
            last_check = Instant::now();
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let (served, model, b) = (served.clone(), model.clone(), behaviour.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &served, &model, &b);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(ACCEPT_NAP),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One parsed request.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// Read a request head and skip its body (Content-Length).
fn read_request(stream: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    let mut authorization = None;
    let mut length = 0usize;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "authorization" => authorization = Some(v.trim().to_owned()),
            "content-length" => length = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut have = buf.len() - (end + 4);
    while have < length.min(1 << 20) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Ok(Some(Request {
        method,
        path,
        authorization,
    }))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The status and JSON body (or empty) for `req`.
fn respond(req: &Request, served: &str, model: &str, b: &Behaviour) -> (u16, String) {
    let v1 = req.path.starts_with("/v1");
    if v1 {
        if let Some(key) = &b.api_key {
            let ok = req
                .authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|got| got == key);
            if !ok {
                return (401, r#"{"error":"Unauthorized"}"#.into());
            }
        }
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/health" | "/ping") | ("POST", "/ping") => {
            if b.mode == Mode::Unavailable {
                (503, String::new())
            } else {
                (200, String::new())
            }
        }
        ("GET", "/version") => (200, serde_json::json!({ "version": VERSION }).to_string()),
        ("GET", "/v1/models") => {
            // `root` is the model vLLM loaded (`serving_models.py` `show_available_models`:
            // `root=base_model.model_path`), `id` the name it serves it under.
            let (id, root) = if b.mode == Mode::WrongModel {
                (WRONG_MODEL, WRONG_MODEL)
            } else {
                (served, model)
            };
            let body = serde_json::json!({
                "object": "list",
                "data": [{
                    "id": id,
                    "object": "model",
                    "created": now_secs(),
                    "owned_by": "vllm",
                    "root": root,
                    "parent": null,
                    "max_model_len": b.max_model_len,
                    "permission": [],
                }],
            });
            (200, body.to_string())
        }
        ("POST", "/v1/completions") => {
            let body = serde_json::json!({
                "id": "cmpl-phoenix-emu",
                "object": "text_completion",
                "created": now_secs(),
                "model": served,
                "choices": [{
                    "index": 0,
                    "text": " Hello",
                    "logprobs": null,
                    "finish_reason": "length",
                    "stop_reason": null,
                }],
                "usage": {"prompt_tokens": 1, "total_tokens": 2, "completion_tokens": 1},
            });
            (200, body.to_string())
        }
        (_, "/health" | "/ping" | "/version" | "/v1/models" | "/v1/completions") => {
            (405, r#"{"detail":"Method Not Allowed"}"#.into())
        }
        _ => (404, r#"{"detail":"Not Found"}"#.into()),
    }
}

fn handle(mut stream: TcpStream, served: &str, model: &str, b: &Behaviour) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let Some(req) = read_request(&mut stream)? else {
        return Ok(());
    };
    let (status, body) = respond(&req, served, model, b);
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let content_type = if body.is_empty() {
        ""
    } else {
        "content-type: application/json\r\n"
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\n{content_type}connection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A free loopback address (bound and released).
    fn free_addr() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    /// Start `serve` in a thread; the flag stops it.
    fn start(
        behaviour: Behaviour,
    ) -> (
        SocketAddr,
        Arc<AtomicBool>,
        std::thread::JoinHandle<io::Result<()>>,
    ) {
        let addr = free_addr();
        let alive = Arc::new(AtomicBool::new(true));
        let a2 = Arc::clone(&alive);
        let h = std::thread::spawn(move || {
            serve(
                addr,
                "mistralai/Devstral-Small-2507",
                "mistralai/Devstral-Small-2507",
                behaviour,
                &|| a2.load(Ordering::SeqCst),
            )
        });
        (addr, alive, h)
    }

    /// One raw request; the status line's code and the body.
    fn get(
        addr: SocketAddr,
        method: &str,
        path: &str,
        auth: Option<&str>,
    ) -> io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let auth = auth.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
        let body = if method == "POST" {
            "{\"max_tokens\":1}"
        } else {
            ""
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}content-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let code = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|x| x.1.to_owned())
            .unwrap_or_default();
        Ok((code, body))
    }

    /// Wait until the port accepts (or `limit` passes).
    fn until_up(addr: SocketAddr, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if TcpStream::connect(addr).is_ok() {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    #[test]
    fn refuses_while_loading_then_serves() {
        let (addr, alive, h) = start(Behaviour {
            load_delay: Duration::from_millis(300),
            max_model_len: 128_000,
            ..Behaviour::default()
        });
        let e = TcpStream::connect(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let up = until_up(addr, Duration::from_secs(3)).unwrap();
        assert!(up >= Duration::from_millis(250), "{up:?}");
        assert_eq!(
            get(addr, "GET", "/health", None).unwrap(),
            (200, String::new())
        );
        assert_eq!(
            get(addr, "GET", "/ping", None).unwrap(),
            (200, String::new())
        );
        assert_eq!(
            get(addr, "GET", "/version", None).unwrap(),
            (200, "{\"version\":\"0.11.0\"}".into())
        );
        let (code, body) = get(addr, "GET", "/v1/models", None).unwrap();
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "mistralai/Devstral-Small-2507");
        assert_eq!(v["data"][0]["owned_by"], "vllm");
        assert_eq!(v["data"][0]["max_model_len"], 128_000);
        let (code, body) = get(addr, "POST", "/v1/completions", None).unwrap();
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 1);
        assert_eq!(v["model"], "mistralai/Devstral-Small-2507");
        assert_eq!(get(addr, "GET", "/nope", None).unwrap().0, 404);
        assert_eq!(get(addr, "POST", "/health", None).unwrap().0, 405);
        // Told to stop: it returns and the port closes.
        alive.store(false, Ordering::SeqCst);
        h.join().unwrap().unwrap();
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn api_key_guards_v1_only() {
        let (addr, alive, h) = start(Behaviour {
            api_key: Some("sk-emu".into()),
            ..Behaviour::default()
        });
        until_up(addr, Duration::from_secs(2)).unwrap();
        assert_eq!(get(addr, "GET", "/health", None).unwrap().0, 200);
        assert_eq!(
            get(addr, "GET", "/v1/models", None).unwrap(),
            (401, "{\"error\":\"Unauthorized\"}".into())
        );
        assert_eq!(
            get(addr, "GET", "/v1/models", Some("sk-bad")).unwrap().0,
            401
        );
        assert_eq!(
            get(addr, "GET", "/v1/models", Some("sk-emu")).unwrap().0,
            200
        );
        assert_eq!(
            get(addr, "POST", "/v1/completions", Some("sk-emu"))
                .unwrap()
                .0,
            200
        );
        alive.store(false, Ordering::SeqCst);
        h.join().unwrap().unwrap();
    }

    #[test]
    fn modes_503_and_wrong_model() {
        let (addr, alive, h) = start(Behaviour {
            mode: Mode::Unavailable,
            ..Behaviour::default()
        });
        until_up(addr, Duration::from_secs(2)).unwrap();
        assert_eq!(
            get(addr, "GET", "/health", None).unwrap(),
            (503, String::new())
        );
        alive.store(false, Ordering::SeqCst);
        h.join().unwrap().unwrap();

        let (addr, alive, h) = start(Behaviour {
            mode: Mode::WrongModel,
            ..Behaviour::default()
        });
        until_up(addr, Duration::from_secs(2)).unwrap();
        let (_, body) = get(addr, "GET", "/v1/models", None).unwrap();
        assert!(body.contains("\"id\":\"facebook/opt-125m\""), "{body}");
        alive.store(false, Ordering::SeqCst);
        h.join().unwrap().unwrap();
    }

    #[test]
    fn crash_fails_after_the_delay_and_never_listen_never_binds() {
        let (addr, _alive, h) = start(Behaviour {
            load_delay: Duration::from_millis(100),
            mode: Mode::Crash,
            ..Behaviour::default()
        });
        let e = h.join().unwrap().unwrap_err();
        assert!(e.get_ref().is_some_and(|i| i.is::<Crashed>()), "{e}");
        assert!(TcpStream::connect(addr).is_err());

        let (addr, alive, h) = start(Behaviour {
            mode: Mode::NeverListen,
            ..Behaviour::default()
        });
        assert!(until_up(addr, Duration::from_millis(500)).is_none());
        let t = Instant::now();
        alive.store(false, Ordering::SeqCst);
        h.join().unwrap().unwrap();
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn stops_during_the_load_delay() {
        let (addr, alive, h) = start(Behaviour {
            load_delay: Duration::from_secs(60),
            ..Behaviour::default()
        });
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        alive.store(false, Ordering::SeqCst);
        h.join().unwrap().unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(400),
            "{:?}",
            t.elapsed()
        );
        assert!(TcpStream::connect(addr).is_err());
    }

    #[test]
    fn modes_parse() {
        assert_eq!("503".parse::<Mode>().unwrap(), Mode::Unavailable);
        assert_eq!("wrong-model".parse::<Mode>().unwrap(), Mode::WrongModel);
        assert_eq!("never-listen".parse::<Mode>().unwrap(), Mode::NeverListen);
        assert!(
            "sometimes"
                .parse::<Mode>()
                .unwrap_err()
                .contains("unknown vllm mode")
        );
    }

    /// phoenix's readiness ladder against this emulator: each mode ends the way phoenix
    /// promises (ready, engine dead, wrong model, exited).
    mod ladder {
        use super::*;
        use phoenix::api::http::HttpUrl;
        use phoenix::api::vllm::{Liveness, Server, WaitOptions, wait_ladder};
        use phoenix::secret::Secret;
        use phoenix::types::{SecretName, Vmid};

        struct Live(Arc<AtomicBool>);

        impl Liveness for Live {
            fn exited(&self) -> Option<String> {
                (!self.0.load(Ordering::SeqCst)).then(|| "exited with code 1".to_owned())
            }
            fn logs(&self) -> String {
                "emulated log line".into()
            }
            fn cancelled(&self) -> bool {
                false
            }
        }

        fn run(behaviour: Behaviour, key: Option<&str>) -> Result<Duration, String> {
            let addr = free_addr();
            let alive = Arc::new(AtomicBool::new(true));
            let running = Arc::new(AtomicBool::new(true));
            let (a2, r2) = (Arc::clone(&alive), Arc::clone(&running));
            let h = std::thread::spawn(move || {
                let out = serve(
                    addr,
                    "devstral",
                    "mistralai/Devstral-Small-2507",
                    behaviour,
                    &|| a2.load(Ordering::SeqCst),
                );
                r2.store(false, Ordering::SeqCst);
                out
            });
            let server = Server {
                vmid: Vmid::new(901).unwrap(),
                url: HttpUrl::parse(&format!("http://{addr}/")).unwrap(),
                model: "devstral".into(),
                container: "phoenix-vllm-901".into(),
                unit: "phoenix-vllm-901.service".into(),
                api_key: key.map(|k| {
                    Secret::new(
                        SecretName::new("vllm_api_key").unwrap(),
                        zeroize::Zeroizing::new(k.as_bytes().to_vec()),
                    )
                }),
                model_root: Some("mistralai/Devstral-Small-2507".into()),
                weights_dir: None,
            };
            let opts = WaitOptions {
                timeout: Duration::from_secs(3),
                completion: true,
                liveness_every: Duration::from_millis(50),
                ..WaitOptions::default()
            };
            let r = wait_ladder(&server, &opts, &Live(running))
                .map(|r| r.waited)
                .map_err(|e| e.to_string());
            alive.store(false, Ordering::SeqCst);
            let _ = h.join();
            r
        }

        #[test]
        fn each_mode_ends_as_promised() {
            let ok = |mode| Behaviour {
                load_delay: Duration::from_millis(200),
                mode,
                api_key: Some("sk-emu".into()),
                ..Behaviour::default()
            };
            let waited = run(ok(Mode::Ok), Some("sk-emu")).unwrap();
            assert!(waited >= Duration::from_millis(200), "{waited:?}");
            let e = run(ok(Mode::Unavailable), Some("sk-emu")).unwrap_err();
            assert!(
                e.contains("(stage: health): GET /health answered 503"),
                "{e}"
            );
            let e = run(ok(Mode::WrongModel), Some("sk-emu")).unwrap_err();
            assert!(
                e.contains("[\"facebook/opt-125m\"], not the configured model \"devstral\""),
                "{e}"
            );
            let e = run(ok(Mode::Crash), Some("sk-emu")).unwrap_err();
            assert!(
                e.contains(
                    "(stage: loading): the container is no longer running (exited with code 1)"
                ),
                "{e}"
            );
            assert!(e.contains("emulated log line"), "{e}");
            let e = run(ok(Mode::Ok), Some("sk-wrong")).unwrap_err();
            assert!(e.contains("the API key was refused (HTTP 401)"), "{e}");
        }
    }
}

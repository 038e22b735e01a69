//! The process behind an emulated `docker run` of a web application image: Open WebUI,
//! the Portainer server and the Portainer agent ([`crate::docker::IMAGES`]).
//!
//! [`crate::docker`] starts it like the vLLM server (the same hidden entry point,
//! [`crate::vllm_proc::main`], which hands over here when the container's record carries an
//! [`AppSpec`]), so it stops exactly when the vLLM server would: `docker stop`/`rm -f`, the
//! emulated container stopping or being destroyed, the root disappearing. It listens on the
//! container's loopback address at the published host port of the image's port and answers
//! what the real application answers on the paths an operator checks:
//! - Open WebUI (port 8080): `GET /health` → 200 `{"status":true}` (open-webui
//!   `backend/open_webui/main.py`, `healthcheck`); it reads `OPENAI_API_BASE_URL(S)` and
//!   `OPENAI_API_KEY(S)` from its environment and logs neither value, only how many OpenAI
//!   connections it has;
//! - Portainer CE (HTTP port 9000): `GET /api/system/status` → 200 `{"Version":…,
//!   "InstanceID":…}` (portainer `api/http/handler/system/status.go`);
//! - the Portainer agent (port 9001) speaks only TLS with the server's signature: it is not
//!   emulated beyond running (no listener).
//!
//! Both serve their web UI at `/` (200, HTML). Anything else is a 404 with FastAPI's (Open
//! WebUI) or Portainer's error body.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Which application an image runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// Open WebUI.
    OpenWebui,
    /// The Portainer CE server.
    Portainer,
    /// The Portainer agent.
    PortainerAgent,
}

/// What the process needs, kept in the container's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSpec {
    /// The application.
    pub kind: Kind,
    /// `ip:port` to listen on; `None`: the port is not published.
    pub addr: Option<String>,
    /// The image's tag (Portainer reports its version).
    pub tag: String,
    /// How many OpenAI connections the environment configures (Open WebUI logs it).
    #[serde(default)]
    pub openai_connections: usize,
}

/// Open WebUI's page (shortened).
const INDEX_OPEN_WEBUI: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\" /><title>Open WebUI</title></head><body><div id=\"app\"></div></body></html>\n";

/// Portainer's page (shortened).
const INDEX_PORTAINER: &str = "<!doctype html>\n<html lang=\"en\" ng-app=\"portainer\"><head><meta charset=\"utf-8\" /><title>Portainer</title></head><body></body></html>\n";

/// How often `alive()` is asked.
const ALIVE_EVERY: Duration = Duration::from_millis(200);

/// The answer to one request.
fn respond(spec: &AppSpec, method: &str, path: &str) -> (u16, String) {
    match (spec.kind, method, path) {
        // Both serve their web UI's single page at `/`.
        (Kind::OpenWebui, "GET", "/") => (200, INDEX_OPEN_WEBUI.to_owned()),
        (Kind::Portainer, "GET", "/") => (200, INDEX_PORTAINER.to_owned()),
        (Kind::OpenWebui, "GET", "/health") => (200, r#"{"status":true}"#.to_owned()),
        (Kind::OpenWebui, _, _) => (404, r#"{"detail":"Not Found"}"#.to_owned()),
        (Kind::Portainer, "GET", "/api/system/status") => (
            200,
            serde_json::json!({
                "Version": spec.tag,
                "InstanceID": "4c7c1d8e-7c0e-4b8a-9a57-5f0e3a6b2c11",
            })
            .to_string(),
        ),
        (Kind::Portainer | Kind::PortainerAgent, _, _) => (
            404,
            r#"{"message":"Not found","details":"Unable to find handler"}"#.to_owned(),
        ),
    }
}

/// Read one request head; `(method, path)`.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<(String, String)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        if buf.len() > 64 * 1024 {
            return Ok(None);
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let path = first
        .next()
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("")
        .to_owned();
    Ok(Some((method, path)))
}

fn handle(mut stream: TcpStream, spec: &AppSpec) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let Some((method, path)) = read_head(&mut stream)? else {
        return Ok(());
    };
    let (status, body) = respond(spec, &method, &path);
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let kind = if body.starts_with("<!doctype") {
        "text/html; charset=utf-8"
    } else {
        "application/json"
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\ncontent-type: {kind}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes())
}

/// What the application logs at start (its container log), never a configured value.
fn startup_log(spec: &AppSpec) -> String {
    match spec.kind {
        Kind::OpenWebui => format!(
            "INFO  [open_webui.env] OpenAI API connections configured: {}\nINFO:     Started server process [1]\nINFO:     Waiting for application startup.\nINFO:     Application startup complete.\nINFO:     Uvicorn running on http://0.0.0.0:8080 (Press CTRL+C to quit)\n",
            spec.openai_connections
        ),
        Kind::Portainer => format!(
            "{{\"level\":\"info\",\"version\":\"{}\",\"message\":\"starting Portainer\"}}\n{{\"level\":\"info\",\"bind_address\":\":9000\",\"message\":\"starting HTTP server\"}}\n{{\"level\":\"info\",\"bind_address\":\":9443\",\"message\":\"starting HTTPS server\"}}\n",
            spec.tag
        ),
        Kind::PortainerAgent => format!(
            "{{\"level\":\"info\",\"version\":\"{}\",\"message\":\"agent running on Docker platform\"}}\n{{\"level\":\"info\",\"api_address\":\"0.0.0.0:9001\",\"message\":\"starting Agent API server\"}}\n",
            spec.tag
        ),
    }
}

/// Run the application until `alive()` says no; its exit code.
pub fn run(spec: &AppSpec, alive: &dyn Fn() -> bool) -> i32 {
    eprint!("{}", startup_log(spec));
    let addr = spec
        .addr
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .filter(|_| spec.kind != Kind::PortainerAgent);
    let Some(addr) = addr else {
        while alive() {
            std::thread::sleep(ALIVE_EVERY);
        }
        return 0;
    };
    let listener = match TcpListener::bind(addr).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ERROR: [Errno 98] error while attempting to bind on address {addr}: {e}");
            return 1;
        }
    };
    let mut last = Instant::now();
    loop {
        if last.elapsed() >= ALIVE_EVERY {
            if !alive() {
                return 0;
            }
            last = Instant::now();
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let spec = spec.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &spec);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("ERROR: {e}");
                return 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind) -> AppSpec {
        AppSpec {
            kind,
            addr: None,
            tag: "2.21.5".into(),
            openai_connections: 1,
        }
    }

    #[test]
    fn answers_what_the_applications_answer() {
        let w = spec(Kind::OpenWebui);
        assert_eq!(
            respond(&w, "GET", "/health"),
            (200, r#"{"status":true}"#.into())
        );
        assert_eq!(respond(&w, "GET", "/api/system/status").0, 404);
        assert_eq!(respond(&w, "GET", "/").0, 200);
        let p = spec(Kind::Portainer);
        let (code, body) = respond(&p, "GET", "/api/system/status");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["Version"], "2.21.5");
        assert_eq!(respond(&p, "GET", "/health").0, 404);
    }

    #[test]
    fn the_log_holds_no_configured_value() {
        let log = startup_log(&spec(Kind::OpenWebui));
        assert!(
            log.contains("OpenAI API connections configured: 1"),
            "{log}"
        );
        assert!(!log.contains("OPENAI_API_KEY="), "{log}");
    }
}

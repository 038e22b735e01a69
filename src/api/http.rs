//! The `http` family: `http.probe(url, opts)`, a GET retried with backoff until it answers
//! the expected status, and the small blocking HTTP client the `vllm` family shares.
//!
//! Decisions where DESIGN.md is silent:
//! - Only `http://` URLs: phoenix talks to servers it started inside its own containers on
//!   the host's network; TLS would need certificates phoenix does not manage. Anything else
//!   is refused before a connection is made.
//! - Where a probe may connect is the boundary's decision ([`crate::boundary::net`]): the
//!   address the host reports for a phoenix-owned container of the config, nothing else.
//! - The client ignores proxy variables (`no_proxy`): a proxy would see the API key and
//!   could not reach a container's private address anyway.
//! - Defaults: 10 attempts, 500 ms first delay, backoff ×2 (the schedule is `backon`'s
//!   exponential backoff, no jitter), delays capped at 10 s, 5 s per
//!   try, expected status 200. The body kept is at most 1 MiB; errors show its first 200
//!   bytes.
//! - A dry run skips the probe (waits are skipped) and returns the expected status with an
//!   empty body.

use std::io::Read;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, FuncRegistration, Map};

use super::support::{known_keys, opt_duration, opt_int};
use super::{ApiError, script_error};

crate::api::handle!(
    /// The `http` object recipes call methods on.
    HttpApi
);

type RhaiResult<T> = Result<T, Box<rhai::EvalAltResult>>;

/// The most body bytes kept from one response.
const BODY_LIMIT: u64 = 1 << 20;
/// How many body bytes an error message shows.
const SHOWN_BODY: usize = 200;

/// Errors of the `http` family.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL does not parse.
    #[error("invalid URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// The parser's message.
        reason: String,
    },
    /// The URL is not plain `http://`.
    #[error("{url:?}: only plain http:// URLs are accepted (found scheme `{scheme}`)")]
    Scheme {
        /// The URL as given.
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// An option is out of range.
    #[error("`{option}` {message}")]
    Option {
        /// The option (`attempts`).
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The client could not be built.
    #[error("cannot build the HTTP client")]
    Client(#[source] reqwest::Error),
    /// Every attempt failed.
    #[error(
        "GET {url}: no {expect} after {attempts} attempt(s) in {elapsed:.1?}; last seen: {last}"
    )]
    Exhausted {
        /// The URL.
        url: String,
        /// The status wanted.
        expect: u16,
        /// How many attempts were made.
        attempts: u32,
        /// How long it took.
        elapsed: Duration,
        /// The last answer or connection failure.
        last: Seen,
    },
    /// A signal asked phoenix to stop.
    #[error("interrupted by a signal")]
    Interrupted,
}

/// How a connection failed, as far as phoenix cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnFailure {
    /// Nothing listens on the port (a vLLM server still loading its model).
    Refused,
    /// The peer reset the connection.
    Reset,
    /// The connection closed before a complete response (EOF).
    Closed,
    /// The try ran past its timeout.
    Timeout,
    /// Another I/O error while connecting or reading.
    Io(std::io::ErrorKind),
}

impl ConnFailure {
    /// Whether a server that is still starting looks like this (refused, reset, EOF).
    pub fn is_loading(self) -> bool {
        matches!(self, Self::Refused | Self::Reset | Self::Closed)
    }
}

impl std::fmt::Display for ConnFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused => f.write_str("connection refused"),
            Self::Reset => f.write_str("connection reset"),
            Self::Closed => f.write_str("connection closed before a response (EOF)"),
            Self::Timeout => f.write_str("timed out"),
            Self::Io(k) => write!(f, "i/o error ({k})"),
        }
    }
}

/// What one request saw last: an HTTP answer or a connection failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// An HTTP answer.
    Status {
        /// The status code.
        status: u16,
        /// The first 200 bytes of the body (lossy UTF-8).
        body: String,
    },
    /// No HTTP answer.
    Connection(ConnFailure),
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status { status, body } if body.is_empty() => {
                write!(f, "HTTP {status} with an empty body")
            }
            Self::Status { status, body } => write!(f, "HTTP {status}, body {body:?}"),
            Self::Connection(c) => write!(f, "{c}"),
        }
    }
}

/// One HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body (at most 1 MiB, lossy UTF-8).
    pub body: String,
}

impl Response {
    /// What an error message shows of this response.
    pub fn seen(&self) -> Seen {
        Seen::Status {
            status: self.status,
            body: prefix(&self.body, SHOWN_BODY).to_owned(),
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn prefix(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A validated plain-HTTP URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(reqwest::Url);

impl HttpUrl {
    /// Parse `url`, refusing anything but `http://host[:port]/…`.
    pub fn parse(url: &str) -> Result<Self, HttpError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| HttpError::BadUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if parsed.scheme() != "http" {
            return Err(HttpError::Scheme {
                url: url.to_owned(),
                scheme: parsed.scheme().to_owned(),
            });
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(HttpError::BadUrl {
                url: url.to_owned(),
                reason: "no host".into(),
            });
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(HttpError::BadUrl {
                url: url.to_owned(),
                reason: "credentials in a URL are not accepted".into(),
            });
        }
        Ok(Self(parsed))
    }

    /// This URL with `path` (absolute, e.g. `/v1/models`) in place of its own path.
    pub fn with_path(&self, path: &str) -> Self {
        let mut u = self.0.clone();
        u.set_path(path);
        u.set_query(None);
        Self(u)
    }

    /// The URL text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// A blocking client that ignores proxies, with `timeout` per request.
pub fn client(timeout: Duration) -> Result<reqwest::blocking::Client, HttpError> {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(HttpError::Client)
}

/// A request body sent as `application/json`.
pub struct JsonBody<'a>(pub &'a str);

/// Send one request; `bearer` is sent as `Authorization: Bearer …` (marked sensitive).
pub fn send(
    client: &reqwest::blocking::Client,
    url: &HttpUrl,
    bearer: Option<&[u8]>,
    body: Option<JsonBody<'_>>,
) -> Result<Response, ConnFailure> {
    // A request is a primitive's work, not the script's (its CPU budget).
    crate::boundary::limits::outside_script(|| send_inner(client, url, bearer, body))
}

fn send_inner(
    client: &reqwest::blocking::Client,
    url: &HttpUrl,
    bearer: Option<&[u8]>,
    body: Option<JsonBody<'_>>,
) -> Result<Response, ConnFailure> {
    let mut req = match &body {
        Some(_) => client.post(url.0.clone()),
        None => client.get(url.0.clone()),
    };
    if let Some(key) = bearer {
        let mut v = Vec::with_capacity(7 + key.len());
        v.extend_from_slice(b"Bearer ");
        v.extend_from_slice(key);
        let mut value = reqwest::header::HeaderValue::from_bytes(&v)
            .map_err(|_| ConnFailure::Io(std::io::ErrorKind::InvalidInput))?;
        zeroize::Zeroize::zeroize(&mut v);
        value.set_sensitive(true);
        req = req.header(reqwest::header::AUTHORIZATION, value);
    }
    if let Some(JsonBody(text)) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(text.to_owned());
    }
    let resp = req.send().map_err(|e| classify(&e))?;
    let status = resp.status().as_u16();
    let mut bytes = Vec::new();
    resp.take(BODY_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| io_failure(e.kind()))?;
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

fn io_failure(kind: std::io::ErrorKind) -> ConnFailure {
    use std::io::ErrorKind as K;
    match kind {
        K::ConnectionRefused => ConnFailure::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => ConnFailure::Reset,
        K::UnexpectedEof => ConnFailure::Closed,
        K::TimedOut | K::WouldBlock => ConnFailure::Timeout,
        k => ConnFailure::Io(k),
    }
}

/// Sort a client error into what the readiness logic needs to know.
fn classify(err: &reqwest::Error) -> ConnFailure {
    if err.is_timeout() {
        return ConnFailure::Timeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io_failure(io.kind());
        }
        source = s.source();
    }
    // No I/O error underneath: the peer closed the connection mid-exchange (hyper's
    // "connection closed before message completed") or sent something that is not HTTP.
    ConnFailure::Closed
}

/// What `http.probe` does.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSpec {
    /// The URL (plain http only).
    pub url: HttpUrl,
    /// How many tries at most (≥ 1).
    pub attempts: u32,
    /// The pause after the first failed try.
    pub delay: Duration,
    /// Each pause is the previous one times this (≥ 1).
    pub backoff: f64,
    /// The longest pause.
    pub max_delay: Duration,
    /// Per-try timeout.
    pub timeout: Duration,
    /// The status that counts as success.
    pub expect: u16,
}

impl ProbeSpec {
    /// The defaults for `url`.
    pub fn new(url: HttpUrl) -> Self {
        Self {
            url,
            attempts: 10,
            delay: Duration::from_millis(500),
            backoff: 2.0,
            max_delay: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            expect: 200,
        }
    }

    /// The pauses between tries, computed by `backon`'s exponential backoff: `attempts - 1`
    /// of them, the first `delay`, each the previous times `backoff`, none above `max_delay`
    /// (a first `delay` above `max_delay` is capped too), no jitter.
    pub fn pauses(&self) -> impl Iterator<Item = Duration> + use<> {
        use backon::BackoffBuilder as _;
        backon::ExponentialBuilder::new()
            .with_min_delay(self.delay.min(self.max_delay))
            // `backon` multiplies in f32; `backoff` is checked to be 1…100 (f32 holds it).
            .with_factor(self.backoff as f32)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts.saturating_sub(1) as usize)
            .build()
    }

    /// The spec from `http.probe`'s options map.
    pub fn from_map(url: &str, opts: &Map) -> Result<Self, ApiError> {
        const CALL: &str = "http.probe";
        known_keys(CALL, opts, super::options::PROBE.keys)?;
        let url = HttpUrl::parse(url).map_err(|e| http_api_error(CALL, &e))?;
        let mut spec = Self::new(url);
        if let Some(a) = opt_int(CALL, opts, "attempts")? {
            spec.attempts = u32::try_from(a)
                .ok()
                .filter(|a| (1..=10_000).contains(a))
                .ok_or_else(|| {
                    ApiError::spec(CALL, format!("`attempts` must be 1…10000, not {a}"))
                })?;
        }
        if let Some(d) = opt_duration(CALL, opts, "delay")? {
            spec.delay = d;
        }
        if let Some(d) = opt_duration(CALL, opts, "max_delay")? {
            spec.max_delay = d;
        }
        if let Some(d) = opt_duration(CALL, opts, "timeout")? {
            if d.is_zero() {
                return Err(ApiError::spec(CALL, "`timeout` must be more than 0"));
            }
            spec.timeout = d;
        }
        if let Some(b) = opts.get("backoff") {
            let b = b
                .as_float()
                .or_else(|_| b.as_int().map(|i| i as f64))
                .map_err(|t| {
                    ApiError::spec(CALL, format!("`backoff` must be a number, found {t}"))
                })?;
            if !(1.0..=100.0).contains(&b) {
                return Err(ApiError::spec(
                    CALL,
                    format!("`backoff` must be 1…100, not {b}"),
                ));
            }
            spec.backoff = b;
        }
        if let Some(e) = opt_int(CALL, opts, "expect")? {
            spec.expect = u16::try_from(e)
                .ok()
                .filter(|e| (100..=599).contains(e))
                .ok_or_else(|| {
                    ApiError::spec(
                        CALL,
                        format!("`expect` must be an HTTP status 100…599, not {e}"),
                    )
                })?;
        }
        Ok(spec)
    }
}

/// What a successful probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// The status (the expected one).
    pub status: u16,
    /// The body (at most 1 MiB).
    pub body: String,
}

/// `http.probe`: GET `spec.url` until it answers `spec.expect`.
pub fn probe(spec: &ProbeSpec) -> Result<ProbeResult, HttpError> {
    probe_until(spec, &|| false)
}

/// [`probe`], stopping with [`HttpError::Interrupted`] when `cancelled()` turns true.
pub fn probe_until(
    spec: &ProbeSpec,
    cancelled: &dyn Fn() -> bool,
) -> Result<ProbeResult, HttpError> {
    if spec.attempts == 0 {
        return Err(HttpError::Option {
            option: "attempts",
            message: "must be at least 1".into(),
        });
    }
    let client = client(spec.timeout)?;
    let started = Instant::now();
    let mut pauses = spec.pauses();
    let mut attempts = 0;
    let last = loop {
        if cancelled() {
            return Err(HttpError::Interrupted);
        }
        attempts += 1;
        let last = match send(&client, &spec.url, None, None) {
            Ok(r) if r.status == spec.expect => {
                return Ok(ProbeResult {
                    status: r.status,
                    body: r.body,
                });
            }
            Ok(r) => r.seen(),
            Err(c) => Seen::Connection(c),
        };
        tracing::debug!(url = %spec.url, attempt = attempts, last = %last, "probe");
        // `backon`'s schedule decides whether there is another try and how long to wait
        // for it; the wait itself is ours, so that cancelling cuts it short (backon's
        // blocking retry wants a sleeper that borrows nothing).
        match pauses.next() {
            Some(pause) => sleep_unless(pause, cancelled),
            None => break last,
        }
    };
    Err(HttpError::Exhausted {
        url: spec.url.to_string(),
        expect: spec.expect,
        attempts,
        elapsed: started.elapsed(),
        last,
    })
}

/// Sleep `d` in short slices, returning early when `cancelled()` turns true.
pub fn sleep_unless(d: Duration, cancelled: &dyn Fn() -> bool) {
    let end = Instant::now() + d;
    loop {
        let now = Instant::now();
        if now >= end || cancelled() {
            return;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// An [`HttpError`] as the [`ApiError`] a recipe sees.
fn http_api_error(call: &'static str, e: &HttpError) -> ApiError {
    match e {
        HttpError::Interrupted => ApiError::Interrupted,
        e => ApiError::spec(call, e.to_string()),
    }
}

/// Register the `http` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<HttpApi>("Http");
    let probe_fn = |api: HttpApi, url: &str, opts: Map| -> RhaiResult<Map> {
        const CALL: &str = "http.probe";
        // The URL's form is the boundary's to judge first (user info, host, port).
        crate::boundary::net::check_form(CALL, url).map_err(|e| script_error(ApiError::from(e)))?;
        let mut spec = ProbeSpec::from_map(url, &opts).map_err(script_error)?;
        let rt = api.runtime();
        // The boundary: only a phoenix-owned container's address, decided before any
        // connection (DESIGN.md §12). The URL used is the one the boundary checked.
        let (checked, _) = rt
            .boundary()
            .network(CALL, url)
            .map_err(|e| script_error(ApiError::from(e)))?;
        spec.url = HttpUrl(checked.url);
        let result = if rt.dry_run {
            ProbeResult {
                status: spec.expect,
                body: String::new(),
            }
        } else {
            probe_until(&spec, &|| rt.cancel.is_cancelled())
                .map_err(|e| script_error(http_api_error(CALL, &e)))?
        };
        let mut m = Map::new();
        m.insert("status".into(), Dynamic::from_int(i64::from(result.status)));
        m.insert("body".into(), rt.redactor.redact(&result.body).into());
        Ok(m)
    };
    FuncRegistration::new("probe")
        .with_params_info(["http: Http", "url: String", "Map"])
        .with_comments([
            "/// GET `url` (plain http:// only) until it answers 200: 10 attempts, 500 ms first",
            "/// delay doubling up to 10 s, 5 s per try. Returns `#{status, body}`; the error names",
            "/// the last status and body (or connection failure) seen.",
        ])
        .register_into_engine(engine, move |api: HttpApi, url: &str| {
            probe_fn(api, url, Map::new())
        });
    FuncRegistration::new("probe")
        .with_params_info(["http: Http", "url: String", "opts: Map", "Map"])
        .with_comments([
            "/// GET `url` with options: `attempts`, `delay` (`\"500ms\"`, the first pause),",
            "/// `backoff` (factor), `max_delay` (cap), `timeout` (per try), `expect` (status).",
        ])
        .register_into_engine(engine, probe_fn);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A loopback test server: `answer(n, request_head)` gives the raw response for the
    /// n-th connection (0-based), or `None` to close the connection without answering.
    pub(crate) fn server(
        answer: impl Fn(usize, &str) -> Option<String> + Send + Sync + 'static,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&count);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let n = c.fetch_add(1, Ordering::SeqCst);
                let head = read_request(&mut s);
                if let Some(resp) = answer(n, &head) {
                    let _ = s.write_all(resp.as_bytes());
                }
            }
        });
        (addr, count)
    }

    /// Read a request's head and (Content-Length) body.
    pub(crate) fn read_request(s: &mut TcpStream) -> String {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut b = [0u8; 1024];
        while let Ok(n) = s.read(&mut b) {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&b[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    let Ok(n) = s.read(&mut b) else { break };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&b[..n]);
                }
                break;
            }
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A complete HTTP/1.1 response that closes the connection.
    pub(crate) fn http(status: u16, body: &str) -> String {
        format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// A loopback port of this test's own: bound (port 0) and kept, but not listening, so
    /// every connection is refused until [`QuietPort::listen`]. Nothing else can take the
    /// port meanwhile (a port bound and closed again could be reused by another test).
    pub(crate) struct QuietPort {
        socket: socket2::Socket,
        addr: SocketAddr,
    }

    impl QuietPort {
        /// The address that refuses connections.
        pub(crate) fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// Start listening on the same port.
        pub(crate) fn listen(self) -> TcpListener {
            self.socket.listen(128).unwrap();
            self.socket.into()
        }
    }

    /// A loopback port where nothing listens (yet).
    pub(crate) fn closed_port() -> QuietPort {
        use socket2::{Domain, SockAddr, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&SockAddr::from(any)).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        QuietPort { socket, addr }
    }

    fn spec(addr: SocketAddr, path: &str) -> ProbeSpec {
        let mut s = ProbeSpec::new(HttpUrl::parse(&format!("http://{addr}{path}")).unwrap());
        s.delay = Duration::from_millis(10);
        s.max_delay = Duration::from_millis(40);
        s.timeout = Duration::from_secs(2);
        s
    }

    #[test]
    fn only_plain_http_urls() {
        let e = HttpUrl::parse("https://127.0.0.1/").unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"https://127.0.0.1/\": only plain http:// URLs are accepted (found scheme `https`)"
        );
        assert!(matches!(
            HttpUrl::parse("file:///etc/passwd"),
            Err(HttpError::Scheme { .. })
        ));
        assert!(matches!(
            HttpUrl::parse("127.0.0.1:80"),
            Err(HttpError::BadUrl { .. }) | Err(HttpError::Scheme { .. })
        ));
        assert!(matches!(
            HttpUrl::parse("http://u:p@127.0.0.1/"),
            Err(HttpError::BadUrl { .. })
        ));
        let u = HttpUrl::parse("http://127.0.0.1:8000/x?y=1").unwrap();
        assert_eq!(
            u.with_path("/health").as_str(),
            "http://127.0.0.1:8000/health"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut s = ProbeSpec::new(HttpUrl::parse("http://127.0.0.1/").unwrap());
        s.delay = Duration::from_millis(100);
        s.backoff = 3.0;
        s.max_delay = Duration::from_millis(1000);
        s.attempts = 6;
        let p: Vec<u128> = s.pauses().map(|d| d.as_millis()).collect();
        assert_eq!(p, [100, 300, 900, 1000, 1000]);
    }

    #[test]
    fn default_schedule_is_pinned() {
        // The defaults: 10 attempts, so 9 pauses: 500 ms doubling, capped at 10 s.
        let s = ProbeSpec::new(HttpUrl::parse("http://127.0.0.1/").unwrap());
        let p: Vec<Duration> = s.pauses().collect();
        let ms = Duration::from_millis;
        assert_eq!(
            p,
            [
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(10_000),
                ms(10_000),
                ms(10_000),
                ms(10_000)
            ]
        );
        // One attempt: no pause at all; a first delay above the cap is capped.
        let mut one = s.clone();
        one.attempts = 1;
        assert_eq!(one.pauses().count(), 0);
        let mut over = s.clone();
        over.attempts = 3;
        over.delay = Duration::from_secs(30);
        assert_eq!(over.pauses().collect::<Vec<_>>(), [ms(10_000), ms(10_000)]);
        // backoff 1: a constant pause.
        let mut flat = s;
        flat.attempts = 4;
        flat.backoff = 1.0;
        flat.delay = ms(250);
        assert_eq!(flat.pauses().collect::<Vec<_>>(), [ms(250); 3]);
    }

    #[test]
    fn attempts_counted_against_a_local_server() {
        // Every try answered 503: exactly `attempts` requests reach the server, and the
        // error says how many were made.
        let (addr, count) = server(|_, _| Some(http(503, "busy")));
        let mut s = spec(addr, "/ready");
        s.delay = Duration::from_millis(1);
        s.max_delay = Duration::from_millis(2);
        s.attempts = 5;
        match probe(&s).unwrap_err() {
            HttpError::Exhausted {
                attempts, expect, ..
            } => assert_eq!((attempts, expect), (5, 200)),
            e => panic!("{e}"),
        }
        assert_eq!(count.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn retries_until_the_expected_status() {
        let (addr, count) = server(|n, _| {
            Some(if n < 2 {
                http(503, "warming up")
            } else {
                http(200, "ok")
            })
        });
        let r = probe(&spec(addr, "/health")).unwrap();
        assert_eq!(
            r,
            ProbeResult {
                status: 200,
                body: "ok".into()
            }
        );
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn expect_other_status() {
        let (addr, _) = server(|_, _| Some(http(204, "")));
        let mut s = spec(addr, "/");
        s.expect = 204;
        assert_eq!(probe(&s).unwrap().status, 204);
    }

    #[test]
    fn exhausted_error_names_last_status_and_body_prefix() {
        let long = "e".repeat(300);
        let body = long.clone();
        let (addr, count) = server(move |_, _| Some(http(500, &body)));
        let mut s = spec(addr, "/x");
        s.attempts = 3;
        let e = probe(&s).unwrap_err();
        assert_eq!(count.load(Ordering::SeqCst), 3);
        let text = e.to_string();
        assert!(
            text.contains(&format!("GET http://{addr}/x: no 200 after 3 attempt(s)")),
            "{text}"
        );
        assert!(
            text.contains(&format!("last seen: HTTP 500, body \"{}\"", &long[..200])),
            "{text}"
        );
        assert!(!text.contains(&long[..201]), "{text}");
    }

    #[test]
    fn exhausted_error_names_connection_refused() {
        let port = closed_port();
        let mut s = spec(port.addr(), "/");
        s.attempts = 2;
        let e = probe(&s).unwrap_err();
        match e {
            HttpError::Exhausted { last, attempts, .. } => {
                assert_eq!(attempts, 2);
                assert_eq!(last, Seen::Connection(ConnFailure::Refused));
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn closed_without_answer_is_eof() {
        let (addr, _) = server(|_, _| None);
        let mut s = spec(addr, "/");
        s.attempts = 1;
        match probe(&s).unwrap_err() {
            HttpError::Exhausted {
                last: Seen::Connection(c),
                ..
            } => {
                assert!(c.is_loading(), "{c:?}");
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn per_try_timeout() {
        // Listens (the kernel completes the connection) and never answers: the listener is
        // kept, nothing accepts.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut s = spec(listener.local_addr().unwrap(), "/");
        s.attempts = 1;
        s.timeout = Duration::from_millis(200);
        match probe(&s).unwrap_err() {
            HttpError::Exhausted { last, .. } => {
                assert_eq!(last, Seen::Connection(ConnFailure::Timeout));
            }
            e => panic!("{e}"),
        }
        drop(listener);
    }

    #[test]
    fn cancel_stops_between_attempts() {
        let port = closed_port();
        let mut s = spec(port.addr(), "/");
        s.attempts = 1000;
        let calls = AtomicUsize::new(0);
        let e = probe_until(&s, &|| calls.fetch_add(1, Ordering::SeqCst) > 3).unwrap_err();
        assert!(matches!(e, HttpError::Interrupted), "{e}");
    }

    #[test]
    fn options_map_is_checked() {
        let mut m = Map::new();
        m.insert("attempts".into(), Dynamic::from_int(0));
        let e = ProbeSpec::from_map("http://127.0.0.1/", &m).unwrap_err();
        assert!(
            e.to_string().contains("`attempts` must be 1…10000, not 0"),
            "{e}"
        );
        let mut m = Map::new();
        m.insert("retries".into(), Dynamic::from_int(3));
        let e = ProbeSpec::from_map("http://127.0.0.1/", &m).unwrap_err();
        assert!(e.to_string().contains("unknown option `retries`"), "{e}");
        let mut m = Map::new();
        m.insert("delay".into(), "100ms".into());
        m.insert("backoff".into(), Dynamic::from_float(1.5));
        m.insert("max_delay".into(), "1s".into());
        m.insert("timeout".into(), "2s".into());
        m.insert("expect".into(), Dynamic::from_int(204));
        m.insert("attempts".into(), Dynamic::from_int(4));
        let s = ProbeSpec::from_map("http://127.0.0.1:9/", &m).unwrap();
        assert_eq!(
            (
                s.attempts,
                s.delay,
                s.backoff,
                s.max_delay,
                s.timeout,
                s.expect
            ),
            (
                4,
                Duration::from_millis(100),
                1.5,
                Duration::from_secs(1),
                Duration::from_secs(2),
                204
            )
        );
        let e = ProbeSpec::from_map("https://127.0.0.1/", &Map::new()).unwrap_err();
        assert!(e.to_string().contains("only plain http://"), "{e}");
    }

    #[test]
    fn bearer_and_json_body_are_sent() {
        let seen = Arc::new(std::sync::Mutex::new(String::new()));
        let s2 = Arc::clone(&seen);
        let (addr, _) = server(move |_, req| {
            *s2.lock().unwrap() = req.to_owned();
            Some(http(200, "{}"))
        });
        let c = client(Duration::from_secs(2)).unwrap();
        let url = HttpUrl::parse(&format!("http://{addr}/v1/completions")).unwrap();
        let r = send(&c, &url, Some(b"k3y"), Some(JsonBody("{\"a\":1}"))).unwrap();
        assert_eq!(r.status, 200);
        let req = seen.lock().unwrap().clone();
        assert!(
            req.starts_with("POST /v1/completions HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(
            req.to_lowercase().contains("authorization: bearer k3y\r\n"),
            "{req}"
        );
        assert!(req.ends_with("\r\n\r\n{\"a\":1}"), "{req}");
    }
}

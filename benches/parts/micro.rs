//! P3 and P4: phoenix's in-process hot paths, each timed over several runs.
//!
//! - P4 config: a generated 1,000-container config (every other container a vLLM server
//!   with two GPUs, static addresses, MACs, features) through `phoenix::config::load_str`
//!   (parse, position scan, schema, semantic checks): what `phoenix config validate` does
//!   after reading the file. Goal ≤ 50 ms per load.
//! - P4 lint: 100 copies of the largest recipe or stdlib module through the linter
//!   (compile, AST walk, metadata checks). Goal ≤ 500 ms for all 100.
//! - P3 readiness: `phoenix::api::vllm::wait_ladder` against a loopback server in this
//!   process that behaves as the emulated vLLM server does (the port refuses connections
//!   for the 2 s load delay, then `/health` answers 200 and `/v1/models` lists the model),
//!   5 runs. Measured: from the instant the server's port was bound (recorded by the
//!   server thread, the moment it starts answering) to `wait_ladder` returning. Goal
//!   ≤ 100 ms.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// Entries of the generated config.
pub const CONTAINERS: usize = 1_000;
/// Loads timed.
pub const RUNS: usize = 30;

fn generate(n: usize) -> String {
    let mut s = String::from(
        "{\n  \"$schema\": \"../schemas/phoenix_lxc_configs.schema.json\",\n  \"lxc_configs\": {\n",
    );
    for i in 0..n {
        let vmid = 1000 + i;
        let (hi, lo) = (i / 250, i % 250 + 2);
        let _ = write!(
            s,
            r#"    "{vmid}": {{
      "name": "ct-{vmid}",
      "memory_mb": 32768,
      "cores": 8,
      "template": "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
      "storage_pool": "local-zfs",
      "storage_size_gb": 64,
      "network_config": {{
        "name": "eth0",
        "bridge": "vmbr0",
        "ip": "10.1.{hi}.{lo}/16",
        "gw": "10.1.255.254",
        "dns": ["10.1.255.254", "1.1.1.1"],
        "mac": "52:54:00:00:{:02x}:{:02x}"
      }},
      "features": {{ "nesting": true, "keyctl": true }},
      "unprivileged": false"#,
            i / 256,
            i % 256
        );
        if i % 2 == 0 {
            let _ = write!(
                s,
                r#",
      "gpu_assignment": [{}, {}],
      "vllm_model": "mistralai/Devstral-Small-2507",
      "vllm_tensor_parallel_size": 2,
      "vllm_max_model_len": 128000,
      "vllm_kv_cache_dtype": "fp8",
      "vllm_shm_size": "16g",
      "vllm_port": 8000,
      "recipe": "drdevstral.rhai""#,
                (i / 2) % 8 * 2,
                (i / 2) % 8 * 2 + 1
            );
        }
        s.push_str(if i + 1 == n {
            "\n    }\n"
        } else {
            "\n    },\n"
        });
    }
    s.push_str("  }\n}\n");
    s
}

/// P4 config: the first load (which also compiles the embedded schema) and [`RUNS`]
/// further loads of a generated [`CONTAINERS`]-entry config.
pub struct ConfigFigures {
    /// The size of the generated file in bytes.
    pub bytes: usize,
    /// The first load, schema compilation included.
    pub first: Duration,
    /// `serde_json` parse alone (what any JSON config costs).
    pub parse: Stats,
    /// The schema validator alone.
    pub schema: Stats,
    /// `load_str`, every pass.
    pub load: Stats,
}

/// P4 config: load a generated 1,000-container config as `config validate` does.
pub fn config_bench() -> ConfigFigures {
    let text = generate(CONTAINERS);
    let path = Path::new("bench.json");
    let start = Instant::now();
    let config = match phoenix::config::load_str(path, &text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("generated config is invalid: {e}");
            std::process::exit(1);
        }
    };
    let first = start.elapsed();
    assert_eq!(config.lxc.len(), CONTAINERS);

    let schema: serde_json::Value =
        serde_json::from_str(phoenix::config::schema::SCHEMA).expect("schema is JSON");
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .expect("schema compiles");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("generated JSON");
    ConfigFigures {
        bytes: text.len(),
        first,
        parse: timed("serde_json parse", RUNS, || {
            serde_json::from_str::<serde_json::Value>(&text).is_ok()
        }),
        schema: timed("schema is_valid", RUNS, || validator.is_valid(&doc)),
        load: timed("load_str", RUNS, || {
            phoenix::config::load_str(path, &text).is_ok()
        }),
    }
}

/// The served model of the readiness bench.
const MODEL: &str = "mistralai/Devstral-Small-2507";
/// The emulated server's load delay in the readiness bench.
pub const LOAD_DELAY: Duration = Duration::from_secs(2);
/// Runs of the readiness bench.
pub const READY_RUNS: usize = 5;

/// A liveness that always reports a running container (the server is in this process).
struct Running;

impl phoenix::api::vllm::Liveness for Running {
    fn exited(&self) -> Option<String> {
        None
    }
    fn logs(&self) -> String {
        String::new()
    }
    fn cancelled(&self) -> bool {
        false
    }
}

/// Read one request's head from `s`; its first line.
fn request_line(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while let Ok(n) = s.read(&mut b) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&b[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

/// A loopback server that binds `addr` after `delay` (vLLM refuses connections while it
/// loads) and then answers as a ready vLLM does; the instant it started answering.
fn late_vllm(addr: std::net::SocketAddr, delay: Duration) -> std::sync::mpsc::Receiver<Instant> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let listener = std::net::TcpListener::bind(addr).expect("bind the bench server");
        let _ = tx.send(Instant::now());
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            std::thread::spawn(move || {
                let line = request_line(&mut s);
                let (code, body) = if line.starts_with("GET /health") {
                    ("200 OK", String::new())
                } else if line.starts_with("GET /v1/models") {
                    (
                        "200 OK",
                        format!(
                            r#"{{"object":"list","data":[{{"id":"{MODEL}","object":"model","owned_by":"vllm","max_model_len":128000}}]}}"#
                        ),
                    )
                } else {
                    ("404 Not Found", r#"{"detail":"Not Found"}"#.to_owned())
                };
                let reply = format!(
                    "HTTP/1.1 {code}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = std::io::Write::write_all(&mut s, reply.as_bytes());
            });
        }
    });
    rx
}

/// P3: how long after a server became ready `wait_ladder` returned, and the whole wait,
/// over [`READY_RUNS`] runs.
pub fn readiness_bench() -> (Stats, Stats) {
    use phoenix::api::vllm::{Server, WaitOptions, wait_ladder};
    let mut noticed = Vec::new();
    let mut total = Vec::new();
    for _ in 0..READY_RUNS {
        // A free loopback port, closed again until the server binds it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        let server = Server {
            vmid: phoenix::types::Vmid::new(901).expect("vmid"),
            url: phoenix::api::http::HttpUrl::parse(&format!("http://{addr}/")).expect("url"),
            model: MODEL.to_owned(),
            container: "phoenix-vllm-901".to_owned(),
            unit: "phoenix-vllm-901.service".to_owned(),
            api_key: None,
            model_root: Some(MODEL.to_owned()),
            weights_dir: None,
        };
        let ready_at = late_vllm(addr, LOAD_DELAY);
        let start = Instant::now();
        let opts = WaitOptions {
            timeout: Duration::from_secs(30),
            ..WaitOptions::default()
        };
        if let Err(e) = wait_ladder(&server, &opts, &Running) {
            eprintln!("readiness: wait_ladder failed: {e}");
            std::process::exit(1);
        }
        let done = Instant::now();
        let bound = ready_at.recv().expect("the server started");
        noticed.push(done.saturating_duration_since(bound));
        total.push(done - start);
    }
    (Stats::of(noticed), Stats::of(total))
}

/// P4 lint: the file linted (path, bytes) and the time of 100 lints of it, over 10 rounds.
pub fn lint_bench() -> Option<(String, u64, Stats)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<(u64, std::path::PathBuf)> = ["recipes", "stdlib"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .map(|p| (std::fs::metadata(&p).map_or(0, |m| m.len()), p))
        .collect();
    files.sort();
    let (size, largest) = files.pop()?;
    let source = std::fs::read_to_string(&largest).expect("recipe is readable");
    let name = largest
        .strip_prefix(root)
        .unwrap_or(&largest)
        .display()
        .to_string();
    let linter = phoenix::script::lint::Linter::new(phoenix::script::stdlib::Stdlib::Embedded);
    let stats = timed("lint ×100", 10, || {
        for _ in 0..100 {
            std::hint::black_box(linter.lint_source(&name, &source));
        }
        true
    });
    Some((name, size, stats))
}

/// Min, median and max of a set of timings.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// The fastest.
    pub min: Duration,
    /// The median (the upper one of an even count).
    pub median: Duration,
    /// The slowest.
    pub max: Duration,
}

impl Stats {
    /// The figures of `times` (not empty).
    pub fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        Self {
            min: times[0],
            median: times[times.len() / 2],
            max: times[times.len() - 1],
        }
    }
}

/// Time `f` over `runs` runs.
fn timed(label: &str, runs: usize, mut f: impl FnMut() -> bool) -> Stats {
    let times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let ok = f();
            let t = start.elapsed();
            assert!(std::hint::black_box(ok), "{label} failed");
            t
        })
        .collect();
    Stats::of(times)
}

//! `cargo bench --bench phoenix-bench`: phoenix's hot paths, timed side by side in one
//! run and printed as tables (never asserted: these machines are shared and noisy).
//!
//! - config: a generated 1,000-container config (every other container a vLLM server with
//!   two GPUs, static addresses, MACs, features) through `phoenix::config::load_str`
//!   (parse, position scan, schema, semantic checks). Goal ≤ 50 ms per load.
//! - lint: 100 copies of the largest recipe or stdlib module through the linter (compile,
//!   AST walk, metadata checks). Goal ≤ 500 ms for all 100.
//! - readiness: `phoenix::api::vllm::wait_ladder` against a loopback server in this process
//!   that behaves as the emulated vLLM server does (the port refuses connections for the
//!   2 s load delay, then `/health` answers 200 and `/v1/models` lists the model), 5 runs.
//!   Measured: from the instant the server's port was bound (recorded by the server
//!   thread, the moment it starts answering) to `wait_ladder` returning. Goal ≤ 250 ms.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

const CONTAINERS: usize = 1_000;
const RUNS: usize = 30;

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

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let text = generate(CONTAINERS);
    let path = Path::new("bench.json");
    // The first load also compiles the embedded schema; time it on its own.
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

    println!(
        "config load_str: {CONTAINERS} containers, {} KiB, {RUNS} runs (first load incl. schema compile: {})",
        text.len() / 1024,
        ms(first)
    );
    println!("{:<22} {:>10} {:>10} {:>10}", "", "min", "median", "max");
    row("serde_json parse", || {
        serde_json::from_str::<serde_json::Value>(&text).is_ok()
    });
    row("schema is_valid", || validator.is_valid(&doc));
    row("load_str (all passes)", || {
        phoenix::config::load_str(path, &text).is_ok()
    });
    println!();
    lint_bench();
    println!();
    readiness_bench();
}

/// The served model of the readiness bench.
const MODEL: &str = "mistralai/Devstral-Small-2507";
/// The emulated server's load delay in the readiness bench.
const LOAD_DELAY: Duration = Duration::from_secs(2);
/// Runs of the readiness bench.
const READY_RUNS: usize = 5;

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

/// How long after a server became ready `wait_ladder` returned, over [`READY_RUNS`] runs.
fn readiness_bench() {
    use phoenix::api::vllm::{Server, WaitOptions, wait_ladder};
    println!(
        "readiness: wait_ladder vs a loopback server with a {} s load delay, {READY_RUNS} runs",
        LOAD_DELAY.as_secs()
    );
    println!("{:<22} {:>10} {:>10} {:>10}", "", "min", "median", "max");
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
    for (label, mut times) in [("ready → returned", noticed), ("total wait", total)] {
        times.sort();
        println!(
            "{label:<22} {:>10} {:>10} {:>10}",
            ms(times[0]),
            ms(times[READY_RUNS / 2]),
            ms(times[READY_RUNS - 1])
        );
    }
}

/// Lint 100 copies of the largest file in `recipes/` and `stdlib/`.
fn lint_bench() {
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
    let Some((size, largest)) = files.pop() else {
        println!("lint: no recipe found");
        return;
    };
    let source = std::fs::read_to_string(&largest).expect("recipe is readable");
    let name = largest.display().to_string();
    let linter = phoenix::script::lint::Linter::new(phoenix::script::stdlib::Stdlib::Embedded);
    println!("lint: 100 copies of {name} ({size} bytes), {} rounds", 10);
    println!("{:<22} {:>10} {:>10} {:>10}", "", "min", "median", "max");
    let mut times: Vec<Duration> = (0..10)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..100 {
                std::hint::black_box(linter.lint_source(&name, &source));
            }
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "{:<22} {:>10} {:>10} {:>10}",
        "lint ×100",
        ms(times[0]),
        ms(times[5]),
        ms(times[9])
    );
}

/// Time `f` over `RUNS` runs and print min/median/max.
fn row(label: &str, mut f: impl FnMut() -> bool) {
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let ok = f();
            let t = start.elapsed();
            assert!(std::hint::black_box(ok), "{label} failed");
            t
        })
        .collect();
    times.sort();
    println!(
        "{label:<22} {:>10} {:>10} {:>10}",
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1])
    );
}

//! `cargo bench --bench phoenix-bench`: phoenix's hot paths, timed side by side in one
//! run and printed as tables (never asserted: these machines are shared and noisy).
//!
//! - config: a generated 1,000-container config (every other container a vLLM server with
//!   two GPUs, static addresses, MACs, features) through `phoenix::config::load_str`
//!   (parse, position scan, schema, semantic checks). Goal ≤ 50 ms per load.
//! - lint: 100 copies of the largest recipe or stdlib module through the linter (compile,
//!   AST walk, metadata checks). Goal ≤ 500 ms for all 100.

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
      "storage_pool": "lxc-disks",
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

//! `phoenix config validate` against the real binary (issue 2, seed T-101, T-104, T-108).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/recipes/phoenix_lxc_configs.json"
);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

/// A temp dir with an empty settings file, logs and state inside it.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("settings.toml"), "").unwrap();
        Self { dir }
    }

    /// Write `text` as a config file and return its path.
    fn config(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("phoenix_lxc_configs.json");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn validate(&self, config: &Path, json: bool) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_phoenix"));
        cmd.args(["config", "validate", "--config"]).arg(config);
        if json {
            cmd.arg("--json");
        }
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PHOENIX_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("PHOENIX_SETTINGS", self.dir.path().join("settings.toml"))
            .env("PHOENIX_LOG_DIR", self.dir.path().join("log"))
            .env("PHOENIX_STATE_DIR", self.dir.path().join("state"))
            .output()
            .unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn example() -> String {
    std::fs::read_to_string(EXAMPLE).unwrap()
}

/// Replace exactly one occurrence of `from` in the example.
fn example_with(from: &str, to: &str) -> String {
    let text = example();
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

/// Every problem line of the human listing (`file:line:col: /pointer: …`).
fn problem_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("  ") && !l.trim_start().starts_with("caused by"))
        .map(|l| l.trim().to_owned())
        .collect()
}

#[test]
fn example_is_valid() {
    let env = Env::new();
    let o = env.validate(Path::new(EXAMPLE), false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("{EXAMPLE}: valid, 2 container(s): 901 drdevstral, 902 gateway\n")
    );
    let o = env.validate(Path::new(EXAMPLE), true);
    assert_eq!(o.status.code(), Some(0));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"version": 1, "valid": true, "containers": 2, "warnings": [], "problems": []})
    );
}

#[test]
fn example_types_the_seed_container() {
    let c = phoenix::config::load(Path::new(EXAMPLE)).unwrap();
    let e = &c.lxc[&"901".parse().unwrap()];
    assert_eq!(e.name.as_str(), "drdevstral");
    assert_eq!((e.cores, e.memory_mb, e.storage_size_gb), (8, 32768, 64));
    assert_eq!(e.storage_pool.as_str(), "local-zfs");
    assert_eq!(e.network.ip.to_string(), "10.0.0.111/24");
    assert_eq!(e.features.to_pve().as_deref(), Some("keyctl=1,nesting=1"));
    assert!(!e.unprivileged);
    assert_eq!(e.gpus.as_ref().unwrap().to_string(), "0,1");
    let v = e.vllm.as_ref().unwrap();
    assert_eq!(v.model.as_str(), "mistralai/Devstral-Small-2507");
    assert_eq!(
        (v.tensor_parallel_size, v.max_model_len, v.port),
        (2, Some(128000), 8000)
    );
    assert_eq!(v.kv_cache_dtype.unwrap().as_str(), "fp8");
    assert_eq!(v.shm_size.as_ref().unwrap().as_str(), "16g");
    assert_eq!(e.recipe.as_deref(), Some("drdevstral.rhai"));
    let g = &c.lxc[&"902".parse().unwrap()];
    assert!(g.vllm.is_none() && g.gpus.is_none());
}

/// Seed T-108.
#[test]
fn t108_memory_mb_invalid_is_a_schema_error_with_position() {
    let env = Env::new();
    let cfg = env.config(&example_with(
        "\"memory_mb\": 32768",
        "\"memory_mb\": \"invalid\"",
    ));
    let o = env.validate(&cfg, false);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        problem_lines(&o),
        [format!(
            "{}:6:20: /lxc_configs/901/memory_mb: expected integer, found string \"invalid\"",
            cfg.display()
        )]
    );
    let o = env.validate(&cfg, true);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(
        v["problems"],
        serde_json::json!([{
            "pointer": "/lxc_configs/901/memory_mb",
            "line": 6,
            "column": 20,
            "expected": "integer",
            "found": "string \"invalid\"",
        }])
    );
}

/// Seed T-101: `|` is allowed and stays one value.
#[test]
fn t101_pipe_in_model_is_one_value() {
    let env = Env::new();
    let text = example_with("mistralai/Devstral-Small-2507", "mistralai/Devstral|Small");
    let cfg = env.config(&text);
    let o = env.validate(&cfg, false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let c = phoenix::config::load(&cfg).unwrap();
    let v = c.lxc[&"901".parse().unwrap()].vllm.clone().unwrap();
    assert_eq!(v.model.as_str(), "mistralai/Devstral|Small");
}

/// Seed T-104: a shell injection in the model fails validation, naming the field.
#[test]
fn t104_injection_in_model_is_refused() {
    let env = Env::new();
    let cfg = env.config(&example_with("mistralai/Devstral-Small-2507", "; rm -rf /"));
    let o = env.validate(&cfg, false);
    assert_eq!(o.status.code(), Some(2));
    let lines = problem_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{}:23:21: /lxc_configs/901/vllm_model: expected a valid model id, found \"; rm -rf /\"",
            cfg.display()
        )),
        "{}",
        lines[0]
    );
}

#[test]
fn five_mistakes_are_five_errors_in_file_order() {
    let env = Env::new();
    let cfg = fixture("five_mistakes.json");
    let o = env.validate(&cfg, true);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let got: Vec<(String, u64)> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["pointer"].as_str().unwrap().to_owned(),
                p["line"].as_u64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("/lxc_configs/901/memory_mb", 5),
        ("/lxc_configs/901/cores", 6),
        ("/lxc_configs/901/network_config/gw", 14),
        ("/lxc_configs/901/vllm_tensor_parallel_size", 18),
        ("/lxc_configs/901/vllm_kv_cache_dtype", 19),
    ];
    assert_eq!(
        got,
        want.map(|(p, l)| (p.to_owned(), l)).to_vec(),
        "{}",
        stdout(&o)
    );
    let o = env.validate(&cfg, false);
    assert_eq!(problem_lines(&o).len(), 5);
    assert!(stderr(&o).contains("5 problem(s)"));
}

#[test]
fn value_starting_with_dash_is_refused() {
    let env = Env::new();
    for (from, to, pointer) in [
        (
            "\"local-zfs\",\n      \"storage_size_gb\": 64",
            "\"--force\",\n      \"storage_size_gb\": 64",
            "/lxc_configs/901/storage_pool",
        ),
        ("\"gateway\"", "\"-gateway\"", "/lxc_configs/902/name"),
        (
            "\"vllm_port\": 8000",
            "\"vllm_port\": 8000, \"vllm_served_model_name\": \"--help\"",
            "/lxc_configs/901/vllm_served_model_name",
        ),
    ] {
        let cfg = env.config(&example_with(from, to));
        let o = env.validate(&cfg, false);
        assert_eq!(o.status.code(), Some(2), "{to}");
        let lines = problem_lines(&o);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains(&format!(": {pointer}: expected")),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("`-`"), "{}", lines[0]);
    }
}

#[test]
fn legacy_forms_are_accepted_with_warnings() {
    let env = Env::new();
    let cfg = fixture("legacy_forms.json");
    let o = env.validate(&cfg, false);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{out}");
    assert!(
        warnings[0].contains(":10:25: /lxc_configs/901/network_config: expected an object"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[1]
            .contains(":13:25: /lxc_configs/901/gpu_assignment: expected an array such as [0,1]"),
        "{}",
        warnings[1]
    );

    let o = env.validate(&cfg, true);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2);

    let c = phoenix::config::load(&cfg).unwrap();
    let e = &c.lxc[&"901".parse().unwrap()];
    assert_eq!(e.network.ip.to_string(), "10.0.0.110/24");
    assert_eq!(e.network.gw.unwrap().to_string(), "10.0.0.1");
    assert_eq!(e.network.dns[0].to_string(), "8.8.8.8");
    assert_eq!(e.gpus.as_ref().unwrap().to_string(), "0,1");
    assert!(e.features.nesting && e.features.keyctl);
    assert_eq!(c.warnings.len(), 2);
}

#[test]
fn duplicate_entry_is_refused_with_both_positions() {
    let env = Env::new();
    let cfg = fixture("duplicate_entry.json");
    let o = env.validate(&cfg, false);
    assert_eq!(o.status.code(), Some(2));
    let lines = problem_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{}:12:5: /lxc_configs/901: expected each key once in an object (first at 3:5)",
            cfg.display()
        )),
        "{}",
        lines[0]
    );
}

#[test]
fn legacy_quantization_type_is_refused_with_its_replacement() {
    let env = Env::new();
    let cfg = env.config(&example_with(
        "\"vllm_port\": 8000",
        "\"vllm_port\": 8000, \"vllm_quantization_config_type\": \"fp8\"",
    ));
    let o = env.validate(&cfg, false);
    assert_eq!(o.status.code(), Some(2));
    let lines = problem_lines(&o);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("/lxc_configs/901/vllm_quantization_config_type: expected `vllm_quantization_config` (a JSON object passed to vLLM as `--quantization-config`)"), "{}", lines[0]);
    assert!(lines[0].contains("never existed in vLLM"), "{}", lines[0]);
}

#[test]
fn syntax_error_exits_2_with_position() {
    let env = Env::new();
    let cfg = env.config("{\n  \"lxc_configs\": {\n    \"901\": {,}\n  }\n}\n");
    let o = env.validate(&cfg, true);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["line"], 3);
    assert!(
        stderr(&o).contains(&format!("{}:3:13: not valid JSON", cfg.display())),
        "{}",
        stderr(&o)
    );
}

#[test]
fn json_output_keeps_warnings_when_invalid() {
    let env = Env::new();
    let text = std::fs::read_to_string(fixture("legacy_forms.json"))
        .unwrap()
        .replace("\"cores\": 8", "\"cores\": 8, \"coers\": 8");
    let cfg = env.config(&text);
    let o = env.validate(&cfg, true);
    assert_eq!(o.status.code(), Some(2));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["problems"],
        serde_json::json!([{
            "pointer": "/lxc_configs/901/coers",
            "line": 6,
            "column": 19,
            "expected": "a known field (did you mean `cores`?)",
            "found": "unknown field `coers`",
        }])
    );
}

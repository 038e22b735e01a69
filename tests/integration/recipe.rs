//! `phoenix recipe run` and `recipe api` from the command line: everything that must fail
//! before the host is touched (exit 2, no journal written), and the API reference.

use std::path::{Path, PathBuf};
use std::process::Command;

use phoenix::script::docs;
use phoenix::script::stdlib::Stdlib;

/// The shipped example config (the suite's one config fixture).
const CONFIG: &str = crate::support::CONFIG_901;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch phoenix installation: settings, config and state in a temp dir.
struct Setup {
    tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("phoenix.toml"), "").unwrap();
        std::fs::write(tmp.path().join("lxc.json"), CONFIG).unwrap();
        Self { tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn recipe(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn phoenix(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args(args)
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PHOENIX_SETTINGS", self.path("phoenix.toml"))
            // The emulated host: `--host pve` needs Proxmox's `pct` before anything runs.
            .env("PHOENIX_HOST", "emulated")
            .env("PHOENIX_CONFIG", self.path("lxc.json"))
            .env("PHOENIX_STATE_DIR", self.path("state"))
            .env("PHOENIX_LOG_DIR", self.path("log"))
            .env("PHOENIX_SECRETS_DIR", self.path("secrets"))
            .env("PHOENIX_SECRET_KEY", self.path("secret.key"))
            .env("PHOENIX_EMU_ROOT", self.path("emu"))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// Nothing was touched: no journal, no emulated host.
    fn untouched(&self) -> bool {
        !self.path("state/journal.jsonl").exists() && !self.path("emu").exists()
    }
}

#[test]
fn a_recipe_that_does_not_compile_exits_2_touching_nothing() {
    let s = Setup::new();
    s.recipe("bad.rhai", "log.info(\"a\");\nlet x = eval(\"1\");\n");
    let (code, _, err) = s.phoenix(&["recipe", "run", "bad.rhai", "--host", "emulated"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("phoenix: error: bad.rhai:2:9: reserved keyword 'eval' is disabled"),
        "{err}"
    );
    assert!(s.untouched());
}

#[test]
fn imports_outside_stdlib_exit_2_naming_the_import_and_line() {
    let s = Setup::new();
    for (import, line) in [("/etc/passwd", 1), ("../../x", 3), ("nosuch", 2)] {
        let text = format!("{}import \"{import}\" as m;\n", "\n".repeat(line - 1));
        s.recipe("imp.rhai", &text);
        let (code, _, err) = s.phoenix(&["recipe", "run", "imp.rhai", "--host", "emulated"]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.starts_with(&format!(
                "phoenix: error: imp.rhai:{line}:1: cannot import \"{import}\"\n  caused by: import \"{import}\""
            )),
            "{err}"
        );
        assert!(s.untouched());
    }
}

#[test]
fn a_shell_argv_or_a_call_that_cannot_succeed_exits_2_touching_nothing() {
    let s = Setup::new();
    s.recipe(
        "sh.rhai",
        "let ct = config.target().vmid;\nlxc.exec(ct, [\"bash\", \"-c\", \"apt-get update\"]);\n",
    );
    let (code, _, err) = s.phoenix(&["recipe", "run", "sh.rhai"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("phoenix: error: sh.rhai:2:5: lxc.exec runs `bash`"),
        "{err}"
    );
    s.recipe("typo.rhai", "log.info(\"start\");\nconfig.targte();\n");
    let (code, _, err) = s.phoenix(&["recipe", "run", "typo.rhai"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.starts_with("phoenix: error: typo.rhai:2:8: unknown method `config.targte`"),
        "{err}"
    );
    assert!(s.untouched());
}

#[test]
fn the_config_is_checked_before_the_recipe() {
    let s = Setup::new();
    std::fs::write(s.path("lxc.json"), "{ \"lxc_configs\": ").unwrap();
    s.recipe("bad.rhai", "eval(\"x\")");
    let (code, _, err) = s.phoenix(&["recipe", "run", "bad.rhai"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lxc.json"), "{err}");
    assert!(!err.contains("eval"), "{err}");
    assert!(s.untouched());
}

#[test]
fn an_unknown_lxc_selection_exits_2() {
    let s = Setup::new();
    s.recipe("ok.rhai", "log.info(\"x\");");
    let (code, _, err) = s.phoenix(&["recipe", "run", "ok.rhai", "--lxc", "903"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--lxc 903:") && err.contains("(ids: 901, 902)"),
        "{err}"
    );
    assert!(s.untouched());
}

#[test]
fn a_recipe_using_secrets_needs_the_key_before_anything_happens() {
    let s = Setup::new();
    s.recipe(
        "sec.rhai",
        "fn token() { secret.get(\"hf_token\") }\nlog.info(\"start\");\n",
    );
    let (code, _, err) = s.phoenix(&["recipe", "run", "sec.rhai", "--host", "emulated"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no secret key at"), "{err}");
    assert!(s.untouched());
}

#[test]
fn a_recipe_that_compiles_reaches_the_journal_and_the_host() {
    // Past every check the run is recorded before the host backend opens. (While the
    // backends are being built, opening one fails; the journal then says the run ended.)
    let s = Setup::new();
    s.recipe("ok.rhai", "log.info(\"x\");");
    let (code, _, err) = s.phoenix(&["recipe", "run", "ok.rhai"]);
    let journal = std::fs::read_to_string(s.path("state/journal.jsonl")).unwrap();
    let kinds: Vec<String> = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(kinds[0], "run", "{journal}");
    assert_eq!(kinds.last().unwrap(), "end", "{journal}");
    assert_eq!(code == 0, journal.contains("\"ok\":true"), "{err}");
}

#[test]
fn api_reference_lists_every_registered_call() {
    let s = Setup::new();
    let (code, out, err) = s.phoenix(&["recipe", "api", "--format", "markdown"]);
    assert_eq!(code, 0, "{err}");
    let entries = docs::entries(&Stdlib::Embedded);
    assert!(entries.len() >= 9, "{entries:?}");
    for e in &entries {
        assert!(
            out.contains(&format!("### `{}`", e.signature())),
            "{} missing",
            e.signature()
        );
    }
    for call in [
        "config.target",
        "config.lxc",
        "config.ids",
        "log.info",
        "steps::begin",
    ] {
        assert!(out.contains(&format!("`{call}(")), "{call}");
    }
    let (code, json, _) = s.phoenix(&["recipe", "api", "--format", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["entries"].as_array().unwrap().len(), entries.len());
}

#[test]
fn committed_api_reference_is_in_sync() {
    let want = docs::render(&docs::entries(&Stdlib::Embedded), docs::Format::Markdown);
    let path = root().join("docs/recipe-api.md");
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is stale: regenerate it with `{}`",
        Path::new("docs/recipe-api.md").display(),
        docs::REGENERATE
    );
}

#[test]
fn stringifying_a_secret_stops_the_recipe_without_showing_it() {
    let s = Setup::new();
    let (code, _, err) = s.phoenix(&["secret", "init"]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(s.path("token.txt"), "hf_ThisIsTheSecretValue123456\n").unwrap();
    let token = s.path("token.txt");
    let (code, _, err) = s.phoenix(&[
        "secret",
        "set",
        "hf_token",
        "--from-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    for (name, body) in [
        (
            "interp.rhai",
            "let t = secret.get(\"hf_token\");\nlet s = `token: ${t}`;\nlog.info(\"after\");\n",
        ),
        (
            "concat.rhai",
            "let t = secret.get(\"hf_token\");\nlog.info(\"token: \" + t);\n",
        ),
        (
            "print.rhai",
            "let t = secret.get(\"hf_token\");\nprint(t);\n",
        ),
        (
            "tostring.rhai",
            "let t = secret.get(\"hf_token\");\nlet s = t.to_string();\n",
        ),
        (
            "compare.rhai",
            "let t = secret.get(\"hf_token\");\nif t == \"x\" { log.info(\"eq\"); }\n",
        ),
    ] {
        s.recipe(name, body);
        let (code, out, err) = s.phoenix(&["recipe", "run", name]);
        assert_eq!(code, 1, "{name}: {err}");
        assert!(
            err.contains("a secret can only be passed to a primitive that accepts one"),
            "{name}: {err}"
        );
        assert!(
            !err.contains("ThisIsTheSecretValue") && !out.contains("ThisIsTheSecretValue"),
            "{name} leaked: {err}"
        );
        assert!(
            !err.contains("after"),
            "{name} went on after the misuse: {err}"
        );
    }
}

#[test]
fn secret_ensure_generates_once_and_never_shows_the_value() {
    let s = Setup::new();
    let (code, _, err) = s.phoenix(&["secret", "init"]);
    assert_eq!(code, 0, "{err}");
    s.recipe(
        "key.rhai",
        "if secret.has(\"vllm_api_key\") { throw \"already there\"; }\nlet a = secret.ensure(\"vllm_api_key\");\nlet b = secret.ensure(\"vllm_api_key\");\nif !secret.has(\"vllm_api_key\") { throw \"not stored\"; }\nlog.info(\"ok\");\n",
    );
    let (code, out, err) = s.phoenix(&["recipe", "run", "key.rhai"]);
    assert_eq!(code, 0, "{err}");
    let (code, value, err) = s.phoenix(&["secret", "get", "vllm_api_key", "--reveal"]);
    assert_eq!(code, 0, "{err}");
    let value = value.trim();
    assert_eq!(value.len(), 64, "{value}");
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!out.contains(value) && !err.contains(value));
    // The run's log file exists and records the generation, without the value.
    let log = std::fs::read_to_string(s.path("log/phoenix.log")).unwrap();
    assert!(log.contains("secret generated and stored"), "{log}");
    assert!(!log.contains(value), "the log holds the generated key");
    // A second run reuses the stored value.
    s.recipe("again.rhai", "let a = secret.ensure(\"vllm_api_key\");\n");
    let (code, _, err) = s.phoenix(&["recipe", "run", "again.rhai"]);
    assert_eq!(code, 0, "{err}");
    let (_, again, _) = s.phoenix(&["secret", "get", "vllm_api_key", "--reveal"]);
    assert_eq!(again.trim(), value);
}

//! `phoenix recipe test` (issue 16 item 2) through the real binary: each run gets an
//! operator environment whose every path points at a directory that must stay untouched
//! (the recipe test builds its own throw-away host under `TMPDIR`), and `TMPDIR` must be
//! empty again afterwards.
//!
//! Exit codes: a passing recipe 0; a recipe that fails 1, cleaned up all the same; a
//! recipe whose undo step cannot run 3, naming what is left; an endpoint reported with an
//! address that is no container's 1 (never asked: no traffic leaves loopback); a bad
//! `--lxc` 2 with nothing made.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::acceptance::Out;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// An operator's machine: their phoenix paths under `operator/` (must stay absent) and a
/// `TMPDIR` of the test's own.
struct Machine {
    tmp: tempfile::TempDir,
}

impl Machine {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("tmp")).unwrap();
        std::fs::create_dir(tmp.path().join("recipes")).unwrap();
        std::fs::write(tmp.path().join("operator.toml"), "").unwrap();
        Self { tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn recipe(&self, name: &str, text: &str) -> String {
        let p = self.path("recipes").join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn test(&self, args: &[&str]) -> Out {
        let op = self.path("operator");
        let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args(["recipe", "test"])
            .args(args)
            .arg("--config")
            .arg(repo("recipes/phoenix_lxc_configs.json"))
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PHOENIX_SETTINGS", self.path("operator.toml"))
            .env("PHOENIX_STATE_DIR", op.join("state"))
            .env("PHOENIX_LOG_DIR", op.join("log"))
            .env("PHOENIX_MARKER_DIR", op.join("markers"))
            .env("PHOENIX_SECRETS_DIR", op.join("secrets"))
            .env("PHOENIX_SECRET_KEY", op.join("secret.key"))
            .env("PHOENIX_EMU_ROOT", op.join("emu"))
            .env("PHOENIX_STDLIB", repo("stdlib"))
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Nothing of the operator's was made, and the throw-away directory is gone.
    fn assert_untouched(&self, what: &str) {
        assert!(
            !self.path("operator").exists(),
            "{what}: the operator's paths were touched"
        );
        let left: Vec<_> = std::fs::read_dir(self.path("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{what}: left in TMPDIR: {left:?}");
    }
}

const PASSING: &str = r#"let ct = lxc.create(config.target());
lxc.start(ct);
lxc.exec(ct, ["mkdir", "-p", "/opt/app"]);
lxc.push(ct, "/opt/app/.env", secret.template("KEY={k}\n", #{ k: secret.get("app_key") }));
"#;

#[test]
fn a_passing_recipe_exits_0_says_what_it_made_and_touches_nothing_of_the_operators() {
    let m = Machine::new();
    let r = m.recipe("app.rhai", PASSING);
    let out = m.test(&[&r, "--lxc", "901"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "recipe test of app.rhai on a throw-away emulated host: PASS"
    );
    assert!(lines[1].starts_with("  run      ok in "), "{}", out.stdout);
    assert_eq!(
        &lines[2..],
        [
            "  created  container 901",
            "  created  container 901 started",
            "  created  file /opt/app/.env in container 901",
            "  cleanup  undone        remove /opt/app/.env in 901 [lxc.push:901:/opt/app/.env]",
            "  cleanup  undone        stop container 901 [lxc.start:901]",
            "  cleanup  undone        destroy container 901 [lxc.create:901]",
            "  left     nothing",
        ]
    );
    m.assert_untouched("pass");

    // --json: the same as data, with the run's own result document.
    let out = m.test(&[&r, "--lxc", "901", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["run"]["ok"], true);
    assert_eq!(doc["run"]["containers"][0]["vmid"], 901);
    assert_eq!(doc["run"]["destroy"], serde_json::Value::Null);
    assert_eq!(doc["created"][0], "container 901");
    assert_eq!(doc["leftovers"], serde_json::json!([]));
    m.assert_untouched("pass --json");
}

#[test]
fn a_failing_recipe_exits_1_and_is_cleaned_up_all_the_same() {
    let m = Machine::new();
    let r = m.recipe(
        "fails.rhai",
        "let ct = lxc.create(config.target());\nlxc.start(ct);\nthrow \"no such package: nginxx\";\n",
    );
    let out = m.test(&[&r, "--lxc", "901"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.starts_with(&format!(
            "recipe test of fails.rhai on a throw-away emulated host: FAIL\n  run      FAILED: {r}:3:1: the recipe threw: no such package: nginxx\n  created  container 901\n"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "  cleanup  undone        destroy container 901 [lxc.create:901]\n  left     nothing\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("phoenix: error: ")
            && out
                .stderr
                .contains("the recipe threw: no such package: nginxx"),
        "{}",
        out.stderr
    );
    // The test removes what the run made itself: nothing points the operator at destroy.
    assert!(
        !out.stderr.contains("phoenix destroy` removes it"),
        "{}",
        out.stderr
    );
    m.assert_untouched("failing recipe");
}

#[test]
fn an_undo_step_that_cannot_run_exits_3_naming_what_is_left() {
    let m = Machine::new();
    let r = m.recipe(
        "left.rhai",
        "let ct = lxc.create(config.target());\nlxc.start(ct);\nundo.push(#{ ct: ct, argv: [\"rm\", \"/no/such/file\"] });\n",
    );
    let out = m.test(&[&r, "--lxc", "901"]);
    assert_eq!(out.code, 3, "{out:?}");
    let left =
        "journal step run [\"rm\", \"/no/such/file\"] in 901 [undo.push:901:rm /no/such/file]";
    assert!(
        out.stdout.contains(&format!("  LEFT     {left}\n")),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains(&format!(
            "phoenix: error: recipe test failed: left after cleanup: {left}"
        )),
        "{}",
        out.stderr
    );
    // The container itself was removed: only the journal step is left.
    assert!(
        out.stdout
            .contains("  cleanup  undone        destroy container 901 [lxc.create:901]\n"),
        "{}",
        out.stdout
    );
    m.assert_untouched("leftover");
}

#[test]
fn endpoints_are_asked_only_at_a_containers_address() {
    let m = Machine::new();
    // The drdevstral flow reports its vLLM endpoint at the address the host gives.
    let out = m.test(&[
        repo("recipes/drdevstral.rhai").to_str().unwrap(),
        "--lxc",
        "901",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let endpoint = out
        .stdout
        .lines()
        .find(|l| l.starts_with("  endpoint  "))
        .unwrap_or_else(|| panic!("no endpoint line: {}", out.stdout));
    let url = endpoint
        .strip_prefix("  endpoint  http://")
        .and_then(|r| r.split_once(":8000/v1 (vLLM): answered HTTP 200 to GET http://"))
        .map(|(a, b)| (a.to_owned(), b.to_owned()));
    let (addr, asked) = url.unwrap_or_else(|| panic!("{endpoint}"));
    assert!(addr.starts_with("127."), "{endpoint}");
    assert_eq!(asked, format!("{addr}:8000/v1/models"), "{endpoint}");
    assert!(
        out.stdout.contains("  left      nothing\n"),
        "{}",
        out.stdout
    );
    m.assert_untouched("drdevstral");

    // An endpoint written with the config's address is never asked: the test fails.
    let r = m.recipe(
        "ep.rhai",
        "let ct = lxc.create(config.target());\nlxc.start(ct);\noutput.endpoint(#{ name: \"app\", url: \"http://10.0.0.111:8080\", api: \"http\", ct: ct });\n",
    );
    let out = m.test(&[&r, "--lxc", "901"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("  endpoint  http://10.0.0.111:8080 (app): DID NOT ANSWER: not asked: 10.0.0.111 is no container's address on the emulated host"),
        "{}",
        out.stdout
    );
    m.assert_untouched("config address");
}

#[test]
fn a_bad_lxc_exits_2_and_makes_nothing() {
    let m = Machine::new();
    let r = m.recipe("app.rhai", PASSING);
    let out = m.test(&[&r, "--lxc", "777"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--lxc 777: "), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    m.assert_untouched("bad --lxc");
}

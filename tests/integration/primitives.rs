//! Primitives against the emulated host through the real `pve` code path (issue 4): failure
//! paths driven by `faults.json` end in a clear error naming the command and its stderr,
//! and nothing is left half-done that `destroy` cannot remove.

use std::path::{Path, PathBuf};
use std::process::Command;

const FLOW: &str = r#"let e = config.target();
let ct = lxc.create(e);
gpu.attach(ct, e.gpus);
zfs.dataset("rpool/phoenix/models/flow", #{ compression: "lz4" });
lxc.mount(ct, "rpool/phoenix/models/flow", "/models");
lxc.start(ct);
lxc.push(ct, "/etc/phoenix-test.txt", "hello\n");
let r = lxc.exec(ct, ["cat", "/etc/phoenix-test.txt"]);
if r.stdout != "hello\n" { throw `read back ${r.stdout}`; }
log.info("address " + lxc.address(ct));
"#;

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("phoenix.toml"), "").unwrap();
        std::fs::write(dir.path().join("flow.rhai"), FLOW).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/phoenix_lxc_configs.json"),
            dir.path().join("config.json"),
        )
        .unwrap();
        Self { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn phoenix(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args(args)
            .args(["--host", "emulated", "--config"])
            .arg(self.path("config.json"))
            .env_clear()
            .env("PHOENIX_SETTINGS", self.path("phoenix.toml"))
            .env("PHOENIX_STATE_DIR", self.path("state"))
            .env("PHOENIX_LOG_DIR", self.path("log"))
            .env("PHOENIX_EMU_ROOT", self.path("emu"))
            .env("PHOENIX_LIFECYCLE_TIMEOUT", "1s")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn run_with_fault(&self, fault: serde_json::Value) -> (i32, String) {
        std::fs::create_dir_all(self.path("emu")).unwrap();
        std::fs::write(
            self.path("emu/faults.json"),
            serde_json::json!([fault]).to_string(),
        )
        .unwrap();
        let flow = self.path("flow.rhai");
        self.phoenix(&["recipe", "run", flow.to_str().unwrap(), "--lxc", "901"])
    }

    fn assert_destroy_cleans(&self) {
        std::fs::remove_file(self.path("emu/faults.json")).unwrap();
        let (code, err) = self.phoenix(&["destroy"]);
        assert_eq!(code, 0, "{err}");
        let left: Vec<_> = std::fs::read_dir(self.path("emu/etc/pve/lxc"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "containers left: {left:?}");
    }
}

#[test]
fn the_whole_flow_succeeds_and_is_idempotent() {
    let h = Host::new();
    let flow = h.path("flow.rhai");
    let (code, err) = h.phoenix(&["recipe", "run", flow.to_str().unwrap(), "--lxc", "901"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("address 127."),
        "the address is the emulator's loopback one: {err}"
    );
    let conf = std::fs::read_to_string(h.path("emu/etc/pve/lxc/901.conf")).unwrap();
    assert!(conf.contains("tags: phoenix;phoenix-run-"), "{conf}");
    assert!(conf.contains("dev0: /dev/nvidia0\n"), "{conf}");
    assert!(
        conf.contains("mp0: /rpool/phoenix/models/flow,mp=/models\n"),
        "{conf}"
    );
    let (code, err) = h.phoenix(&["recipe", "run", flow.to_str().unwrap(), "--lxc", "901"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(h.path("emu/etc/pve/lxc/901.conf")).unwrap(),
        conf
    );
    std::fs::write(h.path("emu/faults.json"), "[]").unwrap();
    h.assert_destroy_cleans();
}

#[test]
fn a_failing_pct_create_names_the_command_and_its_stderr() {
    let h = Host::new();
    let (code, err) =
        h.run_with_fault(serde_json::json!({"match": ["pct", "create"], "action": "fail"}));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("lxc.create failed"), "{err}");
    assert!(
        err.contains("pct create 901"),
        "the error names the command: {err}"
    );
    assert!(
        err.contains("injected failure"),
        "the error carries the stderr: {err}"
    );
    h.assert_destroy_cleans();
}

#[test]
fn a_hanging_pct_start_is_killed_at_the_timeout() {
    let h = Host::new();
    let (code, err) =
        h.run_with_fault(serde_json::json!({"match": ["pct", "start"], "action": "hang"}));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("pct start 901"), "{err}");
    assert!(err.contains("timed out after 1s"), "{err}");
    h.assert_destroy_cleans();
}

#[test]
fn a_failing_zfs_create_names_the_command_and_exit_code() {
    let h = Host::new();
    let (code, err) =
        h.run_with_fault(serde_json::json!({"match": ["zfs", "create"], "action": "exit:1"}));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("zfs.dataset failed"), "{err}");
    assert!(err.contains("zfs create"), "{err}");
    assert!(err.contains("(exit 1)"), "{err}");
    h.assert_destroy_cleans();
}

/// `pct exec --keep-env` exists from PVE 8.2 on: older hosts get `pct exec <vmid> --`, and
/// the emulated `pct` of that version refuses the option, so a wrong flag would fail here.
#[test]
fn keep_env_is_passed_only_where_pct_has_it() {
    for (version, expect) in [("8.1.4", false), ("8.2.2", true), ("7.4.3", false)] {
        let dir = tempfile::tempdir().unwrap();
        let h = Host { dir };
        std::fs::write(h.path("phoenix.toml"), "").unwrap();
        std::fs::write(h.path("flow.rhai"), FLOW).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/phoenix_lxc_configs.json"),
            h.path("config.json"),
        )
        .unwrap();
        let flow = h.path("flow.rhai");
        let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args([
                "recipe",
                "run",
                flow.to_str().unwrap(),
                "--lxc",
                "901",
                "--host",
                "emulated",
                "--config",
            ])
            .arg(h.path("config.json"))
            .env_clear()
            .env("PHOENIX_SETTINGS", h.path("phoenix.toml"))
            .env("PHOENIX_STATE_DIR", h.path("state"))
            .env("PHOENIX_LOG_DIR", h.path("log"))
            .env("PHOENIX_EMU_ROOT", h.path("emu"))
            .env("PHOENIX_EMU_PVE_VERSION", version)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let log = std::fs::read_to_string(h.path("emu/argv.log")).unwrap();
        let execs: Vec<&str> = log.lines().filter(|l| l.contains("\"exec\"")).collect();
        assert!(!execs.is_empty());
        for line in execs {
            assert_eq!(line.contains("\"--keep-env\""), expect, "{version}: {line}");
        }
    }
}

/// `phoenix gpu list --json` on the emulated two-H100 host: indices, bus ids, UUIDs and the
/// minor numbers from `nvidia-smi -q`.
#[test]
fn gpu_list_json_reports_the_fixture() {
    let h = Host::new();
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["gpu", "list", "--json", "--host", "emulated"])
        .env_clear()
        .env("PHOENIX_SETTINGS", h.path("phoenix.toml"))
        .env("PHOENIX_STATE_DIR", h.path("state"))
        .env("PHOENIX_LOG_DIR", h.path("log"))
        .env("PHOENIX_EMU_ROOT", h.path("emu"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gpus: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gpus["version"], 1, "{gpus}");
    let gpus = gpus["gpus"].as_array().unwrap();
    assert_eq!(gpus.len(), 2);
    assert_eq!(gpus[0]["index"], 0);
    assert_eq!(gpus[0]["pci_bus_id"], "00000000:00:06.0");
    assert_eq!(gpus[0]["uuid"], "GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4");
    assert_eq!(gpus[0]["name"], "NVIDIA H100 80GB HBM3");
    assert_eq!(gpus[0]["memory_mib"], 81559);
    assert_eq!(gpus[0]["driver_version"], "580.159.04");
    assert_eq!(gpus[0]["minor"], 0);
    assert_eq!(gpus[1]["index"], 1);
    assert_eq!(gpus[1]["minor"], 1);
}

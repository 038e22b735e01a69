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

    /// The emulator's argv.log from line `from` on, as `(tool, argv)`.
    fn logged(&self, from: usize) -> Vec<(String, Vec<String>)> {
        crate::support::argv_log(&self.path("emu/argv.log"), from)
    }

    fn phoenix(&self, args: &[&str]) -> (i32, String) {
        let (code, _, err) = self.phoenix_out(args);
        (code, err)
    }

    /// `phoenix args…`: exit code, stdout and stderr.
    fn phoenix_out(&self, args: &[&str]) -> (i32, String, String) {
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
            String::from_utf8_lossy(&out.stdout).into_owned(),
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

/// Reads and writes of files by `lxc.push` in the emulator's argv.log from line `from`:
/// `cat PATH` (a read before the write) and `push PATH`.
fn file_calls(h: &Host, from: usize) -> Vec<String> {
    h.logged(from)
        .into_iter()
        .filter(|(tool, _)| tool == "pct")
        .filter_map(|(_, argv)| match argv.as_slice() {
            [push, _, _, dest, ..] if push == "push" => Some(format!("push {dest}")),
            [exec, .., dash, cat, path] if exec == "exec" && dash == "--" && cat == "cat" => {
                Some(format!("cat {path}"))
            }
            _ => None,
        })
        .collect()
}

/// In a container this run created, a file on the rootfs is written without reading it
/// first (nothing of phoenix's can be there); one on a mounted dataset is read, since the
/// dataset outlives containers. A later run, which did not create the container, reads
/// both and writes neither (unchanged).
#[test]
fn push_reads_first_except_on_the_rootfs_of_a_container_this_run_created() {
    let h = Host::new();
    std::fs::write(
        h.path("push.rhai"),
        r#"let ct = lxc.create(config.target());
zfs.dataset("rpool/phoenix/models/flow", #{});
lxc.mount(ct, "rpool/phoenix/models/flow", "/models");
lxc.start(ct);
lxc.push(ct, "/etc/phoenix-test.txt", "hello\n");
lxc.push(ct, "/models/phoenix-test.txt", "hello\n");
"#,
    )
    .unwrap();
    let flow = h.path("push.rhai");
    let (code, err) = h.phoenix(&["recipe", "run", flow.to_str().unwrap(), "--lxc", "901"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        file_calls(&h, 0),
        [
            "push /etc/phoenix-test.txt",
            "cat /models/phoenix-test.txt",
            "push /models/phoenix-test.txt"
        ]
    );
    let n = h.logged(0).len();
    let (code, err) = h.phoenix(&["recipe", "run", flow.to_str().unwrap(), "--lxc", "901"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        file_calls(&h, n),
        ["cat /etc/phoenix-test.txt", "cat /models/phoenix-test.txt"]
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

/// A flow that gives a dataset to a container and writes it from inside.
const SHARE: &str = r#"let e = config.target();
let ct = lxc.create(e);
let mp = zfs.dataset("rpool/phoenix/models/share", #{});
lxc.mount(ct, mp, "/models");
lxc.start(ct);
lxc.exec(ct, ["mkdir", "-p", "/models/huggingface"]);
"#;

impl Host {
    /// Entry 901 as `edit` leaves it; `flow` as `share.rhai`.
    fn with_entry(edit: impl FnOnce(&mut serde_json::Value), flow: &str) -> Self {
        let h = Self::new();
        let path = h.path("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut config["lxc_configs"]["901"]);
        std::fs::write(&path, config.to_string()).unwrap();
        std::fs::write(h.path("share.rhai"), flow).unwrap();
        h
    }

    fn run_share(&self) {
        let flow = self.path("share.rhai");
        let (code, err) = self.phoenix(&["recipe", "run", flow.to_str().unwrap(), "--lxc", "901"]);
        assert_eq!(code, 0, "{err}");
    }

    /// Every `stat`/`chown` call in the emulator's argv.log, as `tool arg…`.
    fn owner_calls(&self) -> Vec<String> {
        self.logged(0)
            .into_iter()
            .filter(|(tool, _)| tool == "stat" || tool == "chown")
            .map(|(tool, argv)| format!("{tool} {}", argv.join(" ")))
            .collect()
    }

    /// The owner step's records in the journal: each `intent` whose undo gives a dataset
    /// back, and the kinds of the records that follow it up (`done`, `undone`).
    fn owner_records(&self) -> Vec<(serde_json::Value, Vec<String>)> {
        let records: Vec<serde_json::Value> =
            std::fs::read_to_string(self.path("state/journal.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        records
            .iter()
            .filter(|r| r["kind"] == "intent" && r["undo"]["op"] == "restore_dataset_owner")
            .map(|i| {
                let after = records
                    .iter()
                    // Sequence numbers are the journal's, across runs.
                    .filter(|r| r["of"] == i["seq"])
                    .map(|r| r["kind"].as_str().unwrap().to_owned())
                    .collect();
                (i.clone(), after)
            })
            .collect()
    }

    /// The emulated host's owner of `path` (`uid:gid`): its record of what `chown` did
    /// (root's when there is none, as a dataset's new directory is).
    fn owner(&self, path: &str) -> String {
        let owners: serde_json::Value =
            match std::fs::read_to_string(self.path("emu/hostfs-owners.json")) {
                Ok(t) => serde_json::from_str(&t).unwrap(),
                Err(_) => serde_json::json!({}),
            };
        match owners.get(path) {
            Some(ids) => format!("{}:{}", ids[0], ids[1]),
            None => "0:0".to_owned(),
        }
    }
}

/// One owner step, named for 901's `/models`, that gives the dataset back to `uid:gid`.
fn assert_owner_step(
    records: &[(serde_json::Value, Vec<String>)],
    uid: u32,
    gid: u32,
    after: &[&str],
) {
    assert_eq!(records.len(), 1, "{records:?}");
    let (intent, follow) = &records[0];
    assert_eq!(intent["step"], "lxc.mount:901:/models:owner", "{intent}");
    assert_eq!(
        intent["undo"],
        serde_json::json!({
            "op": "restore_dataset_owner",
            "vmid": 901,
            "name": "rpool/phoenix/models/share",
            "uid": uid,
            "gid": gid,
        }),
        "{intent}"
    );
    assert_eq!(follow, after, "{intent}");
}

#[test]
fn an_unprivileged_container_gets_its_dataset_as_100000_journaled_once() {
    let h = Host::with_entry(
        |e| {
            e["unprivileged"] = true.into();
            e["gpu_assignment"] = serde_json::json!([0]);
            e["vllm_tensor_parallel_size"] = 1.into();
        },
        SHARE,
    );
    h.run_share();
    assert_eq!(h.owner("/rpool/phoenix/models/share"), "100000:100000");
    assert_eq!(
        h.owner_calls(),
        [
            "stat -c %u:%g /rpool/phoenix/models/share",
            "chown 100000:100000 /rpool/phoenix/models/share",
        ]
    );
    let first = h.owner_records();
    assert_owner_step(&first, 0, 0, &["done"]);

    // A re-run reads the owner and changes nothing: no chown, no new step.
    h.run_share();
    assert_eq!(
        h.owner_calls()[2..],
        ["stat -c %u:%g /rpool/phoenix/models/share"]
    );
    assert_eq!(h.owner_records(), first);

    // destroy --keep-data keeps the dataset and gives it back to the host's root.
    let (code, err) = h.phoenix(&["destroy", "--keep-data", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("give dataset rpool/phoenix/models/share back to 0:0 (from 901)"),
        "{err}"
    );
    assert_eq!(
        h.owner_calls()[3..],
        [
            "stat -c %u:%g /rpool/phoenix/models/share",
            "chown 0:0 /rpool/phoenix/models/share"
        ]
    );
    assert_eq!(h.owner("/rpool/phoenix/models/share"), "0:0");
    assert_owner_step(&h.owner_records(), 0, 0, &["done", "undone"]);
}

#[test]
fn the_dataset_goes_to_the_ids_the_containers_idmap_maps_root_to() {
    let h = Host::with_entry(
        |e| {
            e["unprivileged"] = true.into();
            e["gpu_assignment"] = serde_json::json!([0]);
            e["vllm_tensor_parallel_size"] = 1.into();
        },
        "lxc.create(config.target());\n",
    );
    h.run_share();
    // The operator's own mapping (PVE keeps raw lxc.* keys at the end of the config).
    let conf_path = h.path("emu/etc/pve/lxc/901.conf");
    let mut conf = std::fs::read_to_string(&conf_path).unwrap();
    conf.push_str(
        "lxc.idmap: u 0 200000 1000\nlxc.idmap: u 1000 1000 1\nlxc.idmap: g 0 300000 65536\n",
    );
    std::fs::write(&conf_path, conf).unwrap();
    std::fs::write(h.path("share.rhai"), SHARE).unwrap();
    h.run_share();
    assert_eq!(h.owner("/rpool/phoenix/models/share"), "200000:300000");
    assert_eq!(
        h.owner_calls(),
        [
            "stat -c %u:%g /rpool/phoenix/models/share",
            "chown 200000:300000 /rpool/phoenix/models/share",
        ]
    );
    assert_owner_step(&h.owner_records(), 0, 0, &["done"]);
    // destroy gives it back before the dataset goes.
    let (code, err) = h.phoenix(&["destroy", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        h.owner_calls()
            .contains(&"chown 0:0 /rpool/phoenix/models/share".to_owned())
    );
    assert!(!h.path("emu/hostfs/rpool/phoenix/models/share").exists());
}

#[test]
fn a_malformed_idmap_line_fails_the_mount_naming_it_and_changes_nothing() {
    let h = Host::with_entry(
        |e| {
            e["gpu_assignment"] = serde_json::json!([0]);
            e["vllm_tensor_parallel_size"] = 1.into();
        },
        "lxc.create(config.target());\n",
    );
    h.run_share();
    let conf_path = h.path("emu/etc/pve/lxc/901.conf");
    let mut conf = std::fs::read_to_string(&conf_path).unwrap();
    conf.push_str("lxc.idmap: u 0 lots 65536\n");
    std::fs::write(&conf_path, &conf).unwrap();
    std::fs::write(h.path("share.rhai"), SHARE).unwrap();
    let flow = h.path("share.rhai");
    let (code, err) = h.phoenix(&["recipe", "run", flow.to_str().unwrap(), "--lxc", "901"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("lxc.mount")
            && err.contains("container 901: failed to parse idmap: u 0 lots 65536"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&conf_path).unwrap(), conf);
    assert!(
        h.owner_calls().iter().all(|c| !c.starts_with("chown")),
        "{:?}",
        h.owner_calls()
    );
}

#[test]
fn a_privileged_container_leaves_the_dataset_as_it_is() {
    let h = Host::with_entry(
        |e| {
            e["gpu_assignment"] = serde_json::json!([0]);
            e["vllm_tensor_parallel_size"] = 1.into();
        },
        SHARE,
    );
    h.run_share();
    assert_eq!(h.owner_calls(), Vec::<String>::new());
    assert_eq!(h.owner_records(), []);
    assert_eq!(h.owner("/rpool/phoenix/models/share"), "0:0");
}

#[test]
fn destroying_one_container_leaves_the_dataset_to_another_that_mounts_it() {
    let h = Host::with_entry(
        |e| {
            e["unprivileged"] = true.into();
            e["gpu_assignment"] = serde_json::json!([0]);
            e["vllm_tensor_parallel_size"] = 1.into();
        },
        SHARE,
    );
    h.run_share();
    // 902 (unprivileged, same default mapping) mounts the same dataset: already its root's.
    let flow = h.path("share.rhai");
    let (code, err) = h.phoenix(&["recipe", "run", flow.to_str().unwrap(), "--lxc", "902"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(h.owner_calls().len(), 3, "{:?}", h.owner_calls());
    let (code, out, err) = h.phoenix_out(&["destroy", "--lxc", "901", "--yes"]);
    assert!(
        out.contains("give dataset rpool/phoenix/models/share back to 0:0 (from 901) [lxc.mount:901:/models:owner] (mounted by container 902)"),
        "{code} {out} {err}"
    );
    assert_eq!(h.owner("/rpool/phoenix/models/share"), "100000:100000");
    assert!(h.owner_calls().iter().all(|c| !c.starts_with("chown 0:0")));
}

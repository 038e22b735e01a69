//! Shared helpers for the integration tests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use phoenix::exec::{CancelFlag, Redactor};
use phoenix::host::Host;
use phoenix::journal::Journal;
use phoenix::runtime::Runtime;
use phoenix::secret::SecretStore;
use phoenix::settings::{FlagOverrides, Settings};

pub use crate::wait::{wait_for, wait_until};

/// Make the emulated root `root` (prepared, no container created yet) this test process's:
/// its emulated vLLM servers end with the process (`owner` in `emu.json`), and its
/// containers get addresses in a loopback prefix no other root of this process has. A
/// root's own prefix comes from a hash of its path (one of 16,384): two roots of tests
/// running at once could share it, and then one test's probes reach the other's server.
pub fn own_emulated_root(root: &Path) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let pid = std::process::id();
    // 127.A.B with A in 64..=127 and B in 0..=255, as the emulator derives them; counted,
    // so 16,384 roots of this process pass before one repeats.
    let (a, b) = (64 + (n / 256 + pid) % 64, n % 256);
    set_emu_settings(
        root,
        &[
            ("owner", owner_of(pid)),
            ("loopback_prefix", format!("127.{a}.{b}").into()),
        ],
    );
}

/// Name `pid` as the owner of the root's emulated vLLM servers in `emu.json`: they end
/// with that process.
pub fn set_owner(root: &Path, pid: u32) {
    set_emu_settings(root, &[("owner", owner_of(pid))]);
}

/// `emu.json`'s `owner` for process `pid`: its id and start time (so a reused pid is not
/// taken for it).
fn owner_of(pid: u32) -> serde_json::Value {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let start: u64 = rest.split_whitespace().nth(19).unwrap().parse().unwrap();
    serde_json::json!({"pid": pid, "start": start})
}

/// Set `values` in the prepared root's `emu.json`, keeping the rest.
fn set_emu_settings(root: &Path, values: &[(&str, serde_json::Value)]) {
    let path = root.join("emu.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (k, value) in values {
        v[*k] = value.clone();
    }
    std::fs::write(&path, v.to_string()).unwrap();
}

/// The example config shipped next to the recipes (CT 901, the seed's drdevstral, and 902).
pub const CONFIG_901: &str = include_str!("../../recipes/phoenix_lxc_configs.json");

/// The emulator's argv.log (`path`) from line `skip` on, as `(tool, argv)`; empty when
/// there is no log yet.
pub fn argv_log(path: &Path, skip: usize) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .skip(skip)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let argv = v["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            (v["tool"].as_str().unwrap().to_owned(), argv)
        })
        .collect()
}

/// Settings for a test: every directory under `root`, no override file.
pub fn settings(root: &Path, extra: &[(&str, String)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::new();
    let settings_file = root.join("phoenix.toml");
    std::fs::write(&settings_file, "").unwrap();
    env.insert(
        "PHOENIX_SETTINGS".into(),
        settings_file.display().to_string(),
    );
    for (k, d) in [
        ("PHOENIX_STATE_DIR", "state"),
        ("PHOENIX_LOG_DIR", "logs"),
        ("PHOENIX_SECRETS_DIR", "secrets"),
        ("PHOENIX_SECRET_KEY", "key/secret.key"),
        ("PHOENIX_PVE_LXC_DIR", "pve/lxc"),
        ("PHOENIX_DEV_DIR", "dev"),
        ("PHOENIX_SYS_DIR", "sys"),
        ("PHOENIX_SYSTEMD_DIR", "systemd"),
    ] {
        env.insert(k.into(), root.join(d).display().to_string());
    }
    for (k, v) in extra {
        env.insert((*k).to_owned(), v.clone());
    }
    Settings::resolve_with(&FlagOverrides::default(), &move |k| env.get(k).cloned()).unwrap()
}

/// A runtime over `host` with the config text `config`.
pub fn runtime(
    settings: Settings,
    host: Arc<dyn Host>,
    config: &str,
    dry_run: bool,
) -> Arc<Runtime> {
    let path = PathBuf::from("test-config.json");
    let config = phoenix::config::load_str(&path, config).unwrap();
    let redactor = Redactor::default();
    let run_id = "r1".to_owned();
    let journal = if dry_run {
        Journal::in_memory(&run_id)
    } else {
        Journal::open(&settings.state_dir.value, &run_id).unwrap()
    };
    Arc::new(Runtime {
        secrets: SecretStore::new(&settings, redactor.clone()),
        settings,
        config: Arc::new(config),
        selected: Vec::new(),
        // The example config's 901 names this recipe: it is the run's selection.
        recipe_name: "drdevstral.rhai".into(),
        host,
        journal,
        redactor,
        dry_run,
        plan: None,
        cancel: CancelFlag::default(),
        run_id,
        notes: phoenix::plan::Notes::default(),
        progress: phoenix::progress::Tracker::default(),
    })
}

/// Compare `actual` with the golden file `tests/golden/<name>`; the test never writes it
/// (a difference fails and leaves a pending file for `cargo run --example bless`).
#[track_caller]
pub fn golden(name: &str, actual: &str) {
    crate::golden_file::check(&format!("tests/golden/{name}"), actual);
}

/// The emulated host under `root` (shared by the fault and acceptance tests): every file
/// under it (path → mode and bytes) but the
/// call log, the fault file, lock files (empty files that exist only to be locked) and
/// the emulator's ZFS file, which is compared through `zfs get` instead (dataset names
/// and user properties; sizes and counters change with every create). Directories
/// count through the files in them: the emulator leaves empty mountpoint directories
/// behind.
pub fn emu_snapshot(root: &Path) -> BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut out = BTreeMap::new();
    let root = root.to_path_buf();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(&root).unwrap().display().to_string();
            let name = entry.file_name().to_string_lossy().into_owned();
            if matches!(rel.as_str(), "argv.log" | "faults.json" | "zfs.json")
                || name.ends_with(".lock")
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(rel, (0, target.display().to_string().into_bytes()));
            } else if meta.is_file() {
                out.insert(rel, (mode, std::fs::read(&path).unwrap()));
            } else {
                // A device node: its numbers are its content.
                out.insert(rel, (mode, meta.rdev().to_string().into_bytes()));
            }
        }
    }
    for (name, props) in emu_datasets(&root) {
        out.insert(format!("zfs:{name}"), (0, props.join("\n").into_bytes()));
    }
    out
}

/// The emulated host's datasets with their user properties (`name=value`), as
/// `zfs get` reports them.
pub fn emu_datasets(root: &Path) -> BTreeMap<String, Vec<String>> {
    let out = std::process::Command::new(root.join("bin/zfs"))
        .args(["get", "-H", "-p", "-o", "name,property,value", "all"])
        .env_clear()
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "zfs get: {out:?}");
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(prop), Some(value)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let props = map.entry(name.to_owned()).or_default();
        if prop.contains(':') {
            props.push(format!("{prop}={value}"));
        }
    }
    map
}

//! Golden tests (issue 4): the exact `pct create` argv for the example config, the exact
//! `devN:` and legacy config lines `gpu.attach` produces for the real H100 fixture (note the
//! majors 238 and 241) and for a two-GPU host derived from it, and the systemd unit
//! `vllm.start` writes for the example entry. The goldens are compared, never written here
//! (`cargo run --example bless` accepts a reviewed change).

use std::path::Path;
use std::sync::Arc;

use phoenix::exec::{CommandOutput, HostCommand, RecordingRunner};
use phoenix::host::CreateSpec;
use phoenix::host::pve::{PveHost, PvePaths};
use phoenix::types::Vmid;

use crate::support;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/gpu/h100-driver580"
);
const H100_CSV: &str = "0, 00000000:00:06.0, GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n";
const SECOND_CSV: &str = "1, 00000000:00:07.0, GPU-660ad3e3-1b5f-dbf1-871d-464e953400c5, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n";

fn ok(text: &str) -> CommandOutput {
    CommandOutput {
        code: 0,
        stdout: text.as_bytes().to_vec(),
        stderr: Vec::new(),
    }
}

/// How the fake host is set up beyond its PVE version and GPU count.
#[derive(Clone, Copy, Default)]
struct Opts {
    /// MIG mode enabled on every GPU.
    mig: bool,
    /// Booted with cgroup v1.
    cgroup_v1: bool,
    /// The host has no `nvidia-modprobe` (its path does not exist), so `systemctl` fails to
    /// start the unit that names it.
    no_modprobe: bool,
}

/// A host answering like a PVE node of `version` with `gpus` H100s.
fn host(root: &Path, version: &'static str, gpus: usize) -> (Arc<PveHost>, Arc<RecordingRunner>) {
    host_with(root, version, gpus, Opts::default())
}

fn host_with(
    root: &Path,
    version: &'static str,
    gpus: usize,
    opts: Opts,
) -> (Arc<PveHost>, Arc<RecordingRunner>) {
    let q = std::fs::read_to_string(Path::new(FIXTURE).join("nvidia-smi-q.txt")).unwrap();
    let q = if opts.mig {
        let enabled = q.replace(
            "    MIG Mode\n        Current                                        : Disabled\n",
            "    MIG Mode\n        Current                                        : Enabled\n",
        );
        assert_ne!(enabled, q, "the fixture has a MIG Mode block");
        enabled
    } else {
        q
    };
    let q = if gpus == 2 {
        format!(
            "{q}\nGPU 00000000:00:07.0\n    Minor Number                                       : 1\n"
        )
    } else {
        q
    };
    let conf_dir = root.join("pve/lxc");
    let runner = Arc::new(RecordingRunner::new(move |cmd: &HostCommand| {
        let argv = cmd.argv();
        let tool = Path::new(&argv[0])
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        match (tool.as_str(), argv.get(1).map(String::as_str)) {
            ("pveversion", _) => ok(&format!(
                "pve-manager/{version}/2a5fa54a8503f96d (running kernel: 6.8.12-4-pve)\n"
            )),
            ("nvidia-smi", Some("-q")) => ok(&q),
            ("nvidia-smi", _) => ok(&if gpus == 2 {
                format!("{H100_CSV}{SECOND_CSV}")
            } else {
                H100_CSV.to_owned()
            }),
            ("systemctl", _) if opts.no_modprobe => CommandOutput {
                code: 1,
                stdout: Vec::new(),
                stderr: b"Job for phoenix-nvidia-nodes.service failed because the control process exited with error code.\n".to_vec(),
            },
            ("pct", Some("status")) => ok("status: stopped\n"),
            ("pct", Some("set")) => {
                // Apply `--key value` pairs the way `pct set` would, so a second attach sees them.
                let conf = conf_dir.join(format!("{}.conf", argv[2]));
                let mut text = std::fs::read_to_string(&conf).unwrap();
                for pair in argv[3..].chunks(2) {
                    text.push_str(&format!(
                        "{}: {}\n",
                        pair[0].trim_start_matches('-'),
                        pair[1]
                    ));
                }
                std::fs::write(&conf, text).unwrap();
                ok("")
            }
            _ => ok(""),
        }
    }));
    // Device nodes with the fixture's majors and minors (stand-in files: see api/gpu.rs).
    let dev = root.join("dev");
    std::fs::create_dir_all(dev.join("nvidia-caps")).unwrap();
    let mut nodes = vec![
        ("nvidia0", "c 195:0"),
        ("nvidiactl", "c 195:255"),
        ("nvidia-uvm", "c 238:0"),
        ("nvidia-uvm-tools", "c 238:1"),
        ("nvidia-caps/nvidia-cap1", "c 241:1"),
        ("nvidia-caps/nvidia-cap2", "c 241:2"),
    ];
    if gpus == 2 {
        nodes.push(("nvidia1", "c 195:1"));
    }
    for (rel, dev_no) in nodes {
        std::fs::write(dev.join(rel), format!("{dev_no}\n")).unwrap();
    }
    let lxc_dir = root.join("pve/lxc");
    std::fs::create_dir_all(&lxc_dir).unwrap();
    // A pure cgroup v2 host (PVE 7 and later by default), or one booted with cgroup v1
    // (the device controller at fs/cgroup/devices, no cgroup2 at fs/cgroup).
    if opts.cgroup_v1 {
        std::fs::create_dir_all(root.join("sys/fs/cgroup/devices")).unwrap();
    } else {
        std::fs::create_dir_all(root.join("sys/fs/cgroup")).unwrap();
        std::fs::write(
            root.join("sys/fs/cgroup/cgroup.controllers"),
            "cpu io memory pids\n",
        )
        .unwrap();
    }
    let bin = Path::new("/usr/sbin");
    let paths = PvePaths {
        pct: bin.join("pct"),
        pvesm: bin.join("pvesm"),
        pveversion: Path::new("/usr/bin/pveversion").to_owned(),
        zfs: bin.join("zfs"),
        nvidia_smi: Path::new("/usr/bin/nvidia-smi").to_owned(),
        systemctl: Path::new("/usr/bin/systemctl").to_owned(),
        nvidia_modprobe: if opts.no_modprobe {
            root.join("missing/nvidia-modprobe")
        } else {
            Path::new("/usr/bin/nvidia-modprobe").to_owned()
        },
        stat: Path::new("/usr/bin/stat").to_owned(),
        chown: Path::new("/usr/bin/chown").to_owned(),
        systemd_dir: root.join("systemd"),
        sys_dir: root.join("sys"),
        proc_dir: root.join("proc"),
        host_root: root.join("hostfs"),
        lxc_dir,
        dev_dir: dev,
        lock_dir: root.join("lock"),
        backup_dir: root.join("backups"),
        tmp_dir: root.join("tmp"),
    };
    (Arc::new(PveHost::new(paths, runner.clone())), runner)
}

fn argv_lines(cmds: &[HostCommand]) -> String {
    cmds.iter()
        .map(|c| serde_json::to_string(&c.argv()).unwrap() + "\n")
        .collect()
}

#[test]
fn pct_create_argv_for_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let (host, _) = host(dir.path(), "8.4.1", 2);
    let settings = support::settings(dir.path(), &[]);
    let rt = support::runtime(settings, host.clone(), support::CONFIG_901, false);
    let entry = rt.config.get(Vmid::new(901).unwrap()).unwrap().clone();
    let cmd = host
        .create_command(&CreateSpec {
            vmid: entry.vmid,
            entry,
            run_id: "r1".into(),
        })
        .unwrap();
    let text = serde_json::to_string_pretty(&cmd.argv()).unwrap() + "\n";
    support::golden("pct-create-901.argv.json", &text);
}

fn owned_conf(root: &Path) {
    std::fs::write(
        root.join("pve/lxc/901.conf"),
        "arch: amd64\ncores: 8\nhostname: drdevstral\nmemory: 32768\nnet0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=10.0.0.111/24,gw=10.0.0.1,type=veth\nostype: ubuntu\nrootfs: local-zfs:subvol-901-disk-0,size=64G\nswap: 512\ntags: phoenix;phoenix-run-r1\nunprivileged: 0\n",
    )
    .unwrap();
}

fn attach_and_record(version: &'static str, gpus: usize, selector: &str) -> (String, String) {
    attach_with(version, gpus, selector, Opts::default()).0
}

/// Attach twice on a fresh fake host; the `pct set` argv lines and the config after the
/// first attach, and the host unit it left.
fn attach_with(
    version: &'static str,
    gpus: usize,
    selector: &str,
    opts: Opts,
) -> ((String, String), String) {
    let dir = tempfile::tempdir().unwrap();
    let (host, runner) = host_with(dir.path(), version, gpus, opts);
    owned_conf(dir.path());
    let settings = support::settings(dir.path(), &[]);
    let rt = support::runtime(settings, host.clone(), support::CONFIG_901, false);
    let vmid = Vmid::new(901).unwrap();
    phoenix::api::gpu::attach(&rt, vmid, &selector.parse().unwrap()).unwrap();
    let sets: Vec<HostCommand> = runner
        .calls()
        .into_iter()
        .filter(|c| c.argv().get(1).is_some_and(|a| a == "set"))
        .collect();
    let conf = std::fs::read_to_string(dir.path().join("pve/lxc/901.conf")).unwrap();
    // The boot-time unit was written and started once, before the config changed.
    let unit =
        std::fs::read_to_string(dir.path().join("systemd/phoenix-nvidia-nodes.service")).unwrap();
    let systemctl: Vec<Vec<String>> = runner
        .calls()
        .iter()
        .map(|c| c.argv())
        .filter(|a| a[0].ends_with("systemctl"))
        .collect();
    assert_eq!(
        systemctl,
        [vec![
            "/usr/bin/systemctl".to_owned(),
            "enable".into(),
            "--now".into(),
            "phoenix-nvidia-nodes.service".into()
        ]]
    );
    // Attaching again changes nothing: no new command, same file.
    let before = runner.calls().len();
    phoenix::api::gpu::attach(&rt, vmid, &selector.parse().unwrap()).unwrap();
    let again: Vec<HostCommand> = runner.calls()[before..]
        .iter()
        .filter(|c| c.is_mutating())
        .cloned()
        .collect();
    assert!(again.is_empty(), "re-attach issued {again:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pve/lxc/901.conf")).unwrap(),
        conf
    );
    ((argv_lines(&sets), conf), unit)
}

#[test]
fn devn_entries_for_the_h100_fixture() {
    let (sets, conf) = attach_and_record("8.4.1", 1, "0");
    support::golden("gpu-devn-h100.argv.jsonl", &sets);
    assert!(
        !conf.contains("lxc.cgroup2"),
        "PVE 8.4 must use devN, not raw lines"
    );
}

#[test]
fn devn_entries_for_two_gpus() {
    let (sets, _) = attach_and_record("8.4.1", 2, "0,1");
    support::golden("gpu-devn-2gpu.argv.jsonl", &sets);
}

#[test]
fn legacy_lines_for_the_h100_fixture() {
    let (sets, conf) = attach_and_record("7.4.3", 1, "0");
    assert!(
        sets.is_empty(),
        "legacy mode writes the config, not `pct set`: {sets}"
    );
    assert!(conf.contains("lxc.cgroup2.devices.allow: c 195:* rwm"));
    assert!(conf.contains("lxc.cgroup2.devices.allow: c 238:* rwm"));
    // MIG is off on the fixture: no capability nodes, no rule for their major.
    assert!(
        !conf.contains("241") && !conf.contains("nvidia-caps"),
        "{conf}"
    );
    support::golden("gpu-legacy-h100.conf", &conf);
}

#[test]
fn mig_in_use_attaches_the_capability_nodes_and_the_unit_makes_them() {
    let opts = Opts {
        mig: true,
        ..Opts::default()
    };
    let ((sets, _), unit) = attach_with("8.4.1", 1, "0", opts);
    assert!(sets.contains("\"/dev/nvidia-caps/nvidia-cap1\""), "{sets}");
    assert!(sets.contains("\"/dev/nvidia-caps/nvidia-cap2\""), "{sets}");
    assert!(
        unit.contains("ExecStart=/usr/bin/nvidia-modprobe -f /proc/driver/nvidia/capabilities/mig/config -f /proc/driver/nvidia/capabilities/mig/monitor\n"),
        "{unit}"
    );
    let ((plain, _), plain_unit) = attach_with("8.4.1", 1, "0", Opts::default());
    assert!(!plain.contains("nvidia-caps"), "{plain}");
    assert!(!plain_unit.contains("capabilities"), "{plain_unit}");
}

#[test]
fn a_cgroup_v1_host_gets_v1_rules_even_where_pve_has_dev_entries() {
    let opts = Opts {
        cgroup_v1: true,
        ..Opts::default()
    };
    let ((sets, conf), _) = attach_with("8.4.1", 1, "0", opts);
    assert!(sets.is_empty(), "PVE's devN rules are cgroup2-only: {sets}");
    for major in [195, 238] {
        assert!(
            conf.contains(&format!("\nlxc.cgroup.devices.allow: c {major}:* rwm\n")),
            "{conf}"
        );
    }
    assert!(!conf.contains("lxc.cgroup2"), "{conf}");
    assert!(conf.contains(
        "lxc.mount.entry: /dev/nvidia-uvm dev/nvidia-uvm none bind,optional,create=file\n"
    ));
}

#[test]
fn legacy_lines_for_two_gpus() {
    let (_, conf) = attach_and_record(
        "8.0.2",
        2,
        "GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4,00000000:00:07.0",
    );
    support::golden("gpu-legacy-2gpu.conf", &conf);
}

#[test]
fn hostile_hostname_is_refused_before_any_command() {
    let dir = tempfile::tempdir().unwrap();
    let (host, runner) = host(dir.path(), "8.4.1", 1);
    let settings = support::settings(dir.path(), &[]);
    let rt = support::runtime(settings, host, support::CONFIG_901, false);
    let mut spec = rhai::Map::new();
    spec.insert("vmid".into(), rhai::Dynamic::from_int(905));
    let entry = serde_json::from_str::<serde_json::Value>(support::CONFIG_901).unwrap()["lxc_configs"]["901"].clone();
    for (k, v) in entry.as_object().unwrap() {
        spec.insert(k.as_str().into(), rhai::serde::to_dynamic(v).unwrap());
    }
    spec.insert("name".into(), "gpu-a; rm -rf /".into());
    let err = phoenix::api::lxc::entry_from_map(&rt, &spec).unwrap_err();
    assert!(err.to_string().contains("/lxc_configs/905/name"), "{err}");
    assert!(runner.calls().is_empty());
}

/// The unit `vllm.start` pushes for the example entry (CT 901), resolved from the shipped
/// example config and the default settings the way a recipe's `vllm.start(ct, spec)` does,
/// with the drdevstral recipe's `/models` and a generated API key.
#[test]
fn vllm_unit_file_for_the_example_entry() {
    use phoenix::api::vllm::{Overrides, UnitFile, resolve};
    use phoenix::secret::Secret;
    use phoenix::types::{AbsPath, SecretName};
    let dir = tempfile::tempdir().unwrap();
    let (host, runner) = host(dir.path(), "8.4.1", 2);
    let settings = support::settings(dir.path(), &[]);
    let rt = support::runtime(settings, host, support::CONFIG_901, false);
    let key = Secret::new(
        SecretName::new("vllm_api_key").unwrap(),
        zeroize::Zeroizing::new(b"sk-golden".to_vec()),
    );
    let spec = resolve(
        &rt,
        Vmid::new(901).unwrap(),
        &rhai::Map::new(),
        Overrides {
            api_key: Some(key),
            models_dir: Some(AbsPath::new("/models").unwrap()),
            ..Overrides::default()
        },
    )
    .unwrap();
    let unit = UnitFile::for_server(&spec).render().unwrap();
    assert!(!unit.contains("sk-golden"), "the API key reached the unit");
    assert!(runner.calls().is_empty(), "{:?}", runner.calls());
    support::golden("vllm-901.service", &unit);
}

/// A host without `nvidia-modprobe`: the unit cannot start, the error says what to install,
/// and the container's config is not touched.
#[test]
fn a_host_without_nvidia_modprobe_is_told_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Opts {
        no_modprobe: true,
        ..Opts::default()
    };
    let (host, runner) = host_with(dir.path(), "8.4.1", 1, opts);
    owned_conf(dir.path());
    let before = std::fs::read_to_string(dir.path().join("pve/lxc/901.conf")).unwrap();
    let settings = support::settings(dir.path(), &[]);
    let rt = support::runtime(settings, host.clone(), support::CONFIG_901, false);
    let err = phoenix::api::gpu::attach(&rt, Vmid::new(901).unwrap(), &"0".parse().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "missing/nvidia-modprobe does not exist on this host: install nvidia-modprobe"
        ),
        "{err}"
    );
    assert!(
        !runner
            .calls()
            .iter()
            .any(|c| c.argv().get(1).is_some_and(|a| a == "set"))
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("pve/lxc/901.conf")).unwrap(),
        before
    );
}

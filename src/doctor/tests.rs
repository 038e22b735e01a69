//! The preflight against the production `pve` backend, with a scripted runner answering
//! as `pveversion`, `pvesm`, `nvidia-smi` and `zfs` do and a temp dir standing in for
//! `/proc`, `/sys`, `/dev` and `/etc/pve`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Check, Report, Severity, check};
use crate::exec::{CommandOutput, HostCommand, RecordingRunner};
use crate::host::pve::{PveHost, PvePaths};
use crate::settings::{FlagOverrides, Settings};
use crate::types::Vmid;

const STATUS: &str = "Name             Type     Status           Total            Used       Available        %\n\
local             dir     active        98497780        12582912        85914868   12.77%\n\
local-zfs     zfspool     active       942931968       104857600       838074368   11.12%\n\
nfs-iso           nfs   disabled               0               0               0      N/A\n";
const STATUS_ROOTDIR: &str = "Name             Type     Status           Total            Used       Available        %\n\
local-zfs     zfspool     active       942931968       104857600       838074368   11.12%\n";
const TEMPLATES: &str = "Volid                                                    Format  Type      Size VMID\n\
local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst tzst    vztmpl      57\n";
const GPUS: &str = "0, 00000000:00:06.0, GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n\
1, 00000000:00:07.0, GPU-770ad3e3-1b5f-dbf1-871d-464e953400c5, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n";
const GPUS_Q: &str = "GPU 00000000:00:06.0\n    Minor Number                          : 0\n\
GPU 00000000:00:07.0\n    Minor Number                          : 1\n";

/// Two containers: 901 with both GPUs and vLLM, 902 plain.
fn config_text(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = serde_json::json!({
        "lxc_configs": {
            "901": {
                "name": "drdevstral", "memory_mb": 32768, "cores": 8,
                "template": "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
                "storage_pool": "local-zfs", "storage_size_gb": 64,
                "network_config": {"name": "eth0", "bridge": "vmbr0", "ip": "10.0.0.110/24", "gw": "10.0.0.1"},
                "gpu_assignment": "0,1",
                "vllm_model": "mistralai/Devstral-Small-2507",
                "vllm_tensor_parallel_size": 2
            },
            "902": {
                "name": "helper", "memory_mb": 2048, "cores": 2,
                "template": "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
                "storage_pool": "local-zfs", "storage_size_gb": 16,
                "network_config": {"name": "eth0", "bridge": "vmbr0", "ip": "10.0.0.111/24", "gw": "10.0.0.1"}
            }
        }
    });
    edit(&mut v);
    v.to_string()
}

/// A fake PVE node in a temp dir, answering from `answers` (argv after the program →
/// output; anything else fails as the real tool would with a usage error).
struct Node {
    dir: tempfile::TempDir,
    answers: Arc<Mutex<BTreeMap<String, CommandOutput>>>,
    runner: Arc<RecordingRunner>,
}

fn ok(text: &str) -> CommandOutput {
    CommandOutput {
        code: 0,
        stdout: text.as_bytes().to_vec(),
        stderr: Vec::new(),
    }
}

fn fail(code: i32, stderr: &str) -> CommandOutput {
    CommandOutput {
        code,
        stdout: Vec::new(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

impl Node {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let answers: Arc<Mutex<BTreeMap<String, CommandOutput>>> = Arc::default();
        let a = answers.clone();
        let runner = Arc::new(RecordingRunner::new(move |cmd: &HostCommand| {
            let argv = cmd.argv();
            let prog = Path::new(&argv[0])
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let key = std::iter::once(prog)
                .chain(argv[1..].iter().cloned())
                .collect::<Vec<_>>()
                .join(" ");
            a.lock()
                .unwrap()
                .get(&key)
                .cloned()
                .unwrap_or_else(|| fail(255, &format!("unexpected command {key}")))
        }));
        let node = Self {
            dir,
            answers,
            runner,
        };
        for tool in [
            "pct",
            "pvesm",
            "pveversion",
            "zfs",
            "nvidia-smi",
            "nvidia-modprobe",
        ] {
            node.write(&format!("bin/{tool}"), "");
        }
        node.write("proc/meminfo", "MemTotal:       268435456 kB\n");
        node.write(
            "proc/cpuinfo",
            &(0..64)
                .map(|i| format!("processor\t: {i}\n\n"))
                .collect::<String>(),
        );
        node.mkdir("sys/class/net/vmbr0/bridge");
        node.mkdir("sys/class/net/eno1");
        node.mkdir("etc/pve/lxc");
        for (rel, n) in [
            ("nvidia0", "195:0"),
            ("nvidia1", "195:1"),
            ("nvidiactl", "195:255"),
            ("nvidia-uvm", "238:0"),
            ("nvidia-uvm-tools", "238:1"),
        ] {
            node.write(&format!("dev/{rel}"), &format!("c {n}\n"));
        }
        for (k, v) in [
            (
                "pveversion",
                ok("pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-4-pve)\n"),
            ),
            ("pvesm status", ok(STATUS)),
            ("pvesm status --content rootdir", ok(STATUS_ROOTDIR)),
            ("pvesm list local --content vztmpl", ok(TEMPLATES)),
            (
                "nvidia-smi --query-gpu=index,pci.bus_id,uuid,name,memory.total,driver_version --format=csv,noheader,nounits",
                ok(GPUS),
            ),
            ("nvidia-smi -q", ok(GPUS_Q)),
            ("zfs list -H -o name -d 0", ok("rpool\n")),
            (
                "zfs get -H -o property,value,source all rpool/phoenix/models",
                fail(
                    1,
                    "cannot open 'rpool/phoenix/models': dataset does not exist",
                ),
            ),
        ] {
            node.answer(k, v);
        }
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.path(rel)).unwrap();
    }

    fn answer(&self, key: &str, out: CommandOutput) {
        self.answers.lock().unwrap().insert(key.to_owned(), out);
    }

    fn host(&self) -> PveHost {
        let bin = |t: &str| self.path(&format!("bin/{t}"));
        PveHost::new(
            PvePaths {
                pct: bin("pct"),
                pvesm: bin("pvesm"),
                pveversion: bin("pveversion"),
                zfs: bin("zfs"),
                nvidia_smi: bin("nvidia-smi"),
                systemctl: bin("systemctl"),
                nvidia_modprobe: bin("nvidia-modprobe"),
                stat: bin("stat"),
                chown: bin("chown"),
                systemd_dir: self.path("etc/systemd/system"),
                sys_dir: self.path("sys"),
                proc_dir: self.path("proc"),
                host_root: self.path("hostfs"),
                lxc_dir: self.path("etc/pve/lxc"),
                dev_dir: self.path("dev"),
                lock_dir: self.path("run/lock/lxc"),
                backup_dir: self.path("state/backups"),
                tmp_dir: self.path("state/tmp"),
            },
            self.runner.clone(),
        )
    }

    fn settings(&self) -> Settings {
        self.write("phoenix.toml", "");
        let env: BTreeMap<&str, PathBuf> = [
            ("PHOENIX_SETTINGS", self.path("phoenix.toml")),
            ("PHOENIX_STATE_DIR", self.path("state")),
        ]
        .into();
        Settings::resolve_with(&FlagOverrides::default(), &move |k| {
            env.get(k).map(|p| p.display().to_string())
        })
        .unwrap()
    }

    fn check(&self, config: &str, selection: &[u64]) -> Report {
        let config = crate::config::load_str(Path::new("/etc/phoenix/lxc.json"), config).unwrap();
        let sel: Vec<Vmid> = selection.iter().map(|v| Vmid::new(*v).unwrap()).collect();
        check(&self.settings(), &config, &sel, &self.host())
    }

    /// The argv (after the program name) of every command run.
    fn ran(&self) -> Vec<String> {
        self.runner
            .calls()
            .iter()
            .map(|c| {
                let argv = c.argv();
                let prog = Path::new(&argv[0])
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                std::iter::once(prog)
                    .chain(argv[1..].iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }
}

/// `(check, severity, vmid)` of every finding that is not ok.
fn problems(r: &Report) -> Vec<(Check, Severity, Option<u32>)> {
    r.findings
        .iter()
        .filter(|f| f.severity != Severity::Ok)
        .map(|f| (f.check, f.severity, f.vmid.map(Vmid::get)))
        .collect()
}

fn finding(r: &Report, check: Check) -> &super::Finding {
    r.findings
        .iter()
        .find(|f| f.check == check && f.severity != Severity::Ok)
        .unwrap_or_else(|| panic!("no {check} problem in {r:#?}"))
}

#[test]
fn a_good_host_passes_every_check_with_read_only_queries() {
    let node = Node::new();
    let r = node.check(&config_text(|_| {}), &[]);
    assert!(r.passed(), "{}", r.render(true));
    assert_eq!(problems(&r), []);
    let checks: Vec<Check> = r.findings.iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        [
            Check::Proxmox,
            Check::Vmid,
            Check::Vmid,
            Check::Storage,
            Check::Template,
            Check::Bridge,
            Check::Memory,
            Check::Cores,
            Check::Driver,
            Check::Gpu,
            Check::DeviceNodes,
            Check::ModelsDataset,
        ]
    );
    assert_eq!(
        r.findings[3].message,
        "storage local-zfs (zfspool, active): 799.2 GiB available, 901, 902 need 80.0 GiB"
    );
    assert_eq!(
        r.findings[6].message,
        "containers 901, 902 ask for 34816 MiB of memory, 13 % of the host's 262144 MiB"
    );
    // Exactly these queries, each read-only.
    assert_eq!(
        node.ran(),
        [
            "pveversion",
            "pvesm status --content rootdir",
            "pvesm list local --content vztmpl",
            "nvidia-smi --query-gpu=index,pci.bus_id,uuid,name,memory.total,driver_version --format=csv,noheader,nounits",
            "nvidia-smi -q",
            "zfs list -H -o name -d 0",
            "zfs get -H -o property,value,source all rpool/phoenix/models",
        ]
    );
    assert!(node.runner.calls().iter().all(|c| !c.is_mutating()));
    let doc = r.to_json();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["findings"][0]["fix"], serde_json::Value::Null);
    assert!(
        r.render(true)
            .ends_with("passed: this host can take these containers\n")
    );
}

#[test]
fn a_machine_without_pct_is_told_to_use_the_emulated_host_and_nothing_else_is_asked() {
    let node = Node::new();
    std::fs::remove_file(node.path("bin/pct")).unwrap();
    let r = node.check(&config_text(|_| {}), &[]);
    assert_eq!(r.findings.len(), 1, "{r:#?}");
    let f = &r.findings[0];
    assert_eq!((f.check, f.severity), (Check::Proxmox, Severity::Error));
    assert_eq!(
        f.message,
        format!(
            "this is not a Proxmox VE host: {} does not exist",
            node.path("bin/pct").display()
        )
    );
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("phoenix doctor --host emulated"),
        "{f:?}"
    );
    assert_eq!(node.ran(), Vec::<String>::new());
    assert!(matches!(
        r.failure(),
        Some(crate::Error::Preflight {
            errors: 1,
            warnings: 0
        })
    ));
    assert_eq!(r.failure().unwrap().code(), 2);
}

#[test]
fn missing_template_missing_bridge_and_overcommitted_memory_are_three_errors() {
    let node = Node::new();
    node.answer(
        "pvesm list local --content vztmpl",
        ok("Volid Format Type Size VMID\n"),
    );
    std::fs::remove_dir_all(node.path("sys/class/net/vmbr0")).unwrap();
    node.write("proc/meminfo", "MemTotal:       33554432 kB\n");
    let r = node.check(&config_text(|_| {}), &[]);
    assert_eq!(
        problems(&r),
        [
            (Check::Template, Severity::Error, None),
            (Check::Bridge, Severity::Error, None),
            (Check::Memory, Severity::Error, None),
        ]
    );
    assert_eq!(
        finding(&r, Check::Template).fix.as_deref(),
        Some("pveam update && pveam download local ubuntu-24.04-standard_24.04-2_amd64.tar.zst")
    );
    assert_eq!(
        finding(&r, Check::Bridge).message,
        "bridge vmbr0 (for 901, 902) does not exist on this host"
    );
    assert!(
        finding(&r, Check::Bridge)
            .fix
            .as_deref()
            .unwrap()
            .contains("ifreload -a")
    );
    assert_eq!(
        finding(&r, Check::Memory).message,
        "containers 901, 902 ask for 34816 MiB of memory, 106 % of the host's 32768 MiB: more than it has"
    );
    let text = r.render(false);
    assert!(
        text.contains("  error    bridge          bridge vmbr0"),
        "{text}"
    );
    assert!(
        text.ends_with("3 error(s), 0 warning(s): nothing was changed; fix the errors and run `phoenix doctor` again\n"),
        "{text}"
    );
    assert!(
        !text.contains("  ok "),
        "render(false) shows only problems: {text}"
    );
}

#[test]
fn memory_over_80_percent_and_cores_over_the_host_are_warnings() {
    let node = Node::new();
    // 34816 MiB of 40960 MiB: 85 %.
    node.write("proc/meminfo", "MemTotal:       41943040 kB\n");
    node.write(
        "proc/cpuinfo",
        "processor\t: 0\n\nprocessor\t: 1\n\nprocessor\t: 2\n\nprocessor\t: 3\n\n",
    );
    let r = node.check(&config_text(|_| {}), &[]);
    assert_eq!(
        problems(&r),
        [
            (Check::Memory, Severity::Warning, None),
            (Check::Cores, Severity::Warning, Some(901)),
            (Check::Cores, Severity::Warning, None),
        ]
    );
    assert!(r.passed());
    assert_eq!(
        r.findings
            .iter()
            .find(|f| f.vmid.is_some_and(|v| v.get() == 901) && f.check == Check::Cores)
            .unwrap()
            .message,
        "asks for 8 cores; the host has 4 CPUs, so the container gets all 4"
    );
    assert!(r.render(true).ends_with("passed with 3 warning(s)\n"));
}

#[test]
fn storages_must_exist_be_active_hold_container_disks_and_have_room() {
    let cases: [(&str, &str, &str); 4] = [
        (
            "lxc-disks",
            "storage lxc-disks (for 902) does not exist on this host; it has: local, local-zfs, nfs-iso",
            "set `storage_pool` to a storage for container disks (local-zfs) in /etc/phoenix/lxc.json",
        ),
        (
            "nfs-iso",
            "storage nfs-iso (for 902) is disabled",
            "enable it: pvesm set nfs-iso --disable 0",
        ),
        (
            "local",
            "storage local (dir) cannot hold container disks: its content types lack `rootdir`",
            "use a storage for container disks (local-zfs) in /etc/phoenix/lxc.json, or add rootdir to local's content types: pvesm set local --content rootdir,<its current types>",
        ),
        (
            "local-zfs",
            "storage local-zfs has 799.2 GiB available; 902 need 900.0 GiB",
            "free space on local-zfs, lower `storage_size_gb`, or put some containers on another storage (local-zfs)",
        ),
    ];
    for (storage, message, fix) in cases {
        let node = Node::new();
        let config = config_text(|v| {
            v["lxc_configs"]["902"]["storage_pool"] = storage.into();
            v["lxc_configs"]["902"]["storage_size_gb"] = 900.into();
        });
        let r = node.check(&config, &[902]);
        assert_eq!(
            problems(&r),
            [(Check::Storage, Severity::Error, Some(902))],
            "{storage}"
        );
        let f = finding(&r, Check::Storage);
        assert_eq!(f.message, message);
        assert_eq!(f.fix.as_deref(), Some(fix));
        assert_eq!(f.subject.as_deref(), Some(storage));
    }
}

#[test]
fn ids_must_be_free_or_phoenixs() {
    let node = Node::new();
    // 901 exists and is phoenix's: reused, so its storage and template are not asked for.
    node.write(
        "etc/pve/lxc/901.conf",
        "hostname: drdevstral\ntags: phoenix;phoenix-run-r1\n",
    );
    // 902 is a VM on this node.
    node.write("etc/pve/qemu-server/902.conf", "name: vm\n");
    let r = node.check(&config_text(|_| {}), &[]);
    assert_eq!(problems(&r), [(Check::Vmid, Severity::Error, Some(902))]);
    let f = finding(&r, Check::Vmid);
    assert_eq!(
        f.message,
        "the id is taken by a virtual machine (/etc/pve/qemu-server/902.conf)"
    );
    assert!(
        !node.ran().iter().any(|c| c.starts_with("pvesm")),
        "{:?}",
        node.ran()
    );
    let reused = r
        .findings
        .iter()
        .find(|f| f.check == Check::Vmid && f.severity == Severity::Ok)
        .unwrap();
    assert_eq!(
        reused.message,
        "the container exists and is phoenix's: it is reused"
    );

    // Someone else's container, and a create in progress that phoenix's journal does not know.
    let node = Node::new();
    node.write("etc/pve/lxc/901.conf", "hostname: theirs\n");
    node.write("etc/pve/lxc/902.conf", "lock: create\n");
    let r = node.check(&config_text(|_| {}), &[]);
    assert_eq!(
        problems(&r),
        [
            (Check::Vmid, Severity::Error, Some(901)),
            (Check::Vmid, Severity::Error, Some(902)),
        ]
    );
    assert!(r.findings.iter().any(|f| f.message
        == "a container with this id exists and is not phoenix's (no `phoenix` tag): phoenix never changes or destroys it"));
    assert!(r.findings.iter().any(|f| f.message.starts_with(
        "a container with this id is being created (`lock: create`) by something other than phoenix"
    )));
}

#[test]
fn gpus_must_exist_and_lazy_nodes_are_a_warning_only_when_nvidia_modprobe_will_make_them() {
    // A GPU the host lacks.
    let node = Node::new();
    let config = config_text(|v| v["lxc_configs"]["901"]["gpu_assignment"] = "0,5".into());
    let r = node.check(&config, &[901]);
    assert_eq!(problems(&r), [(Check::Gpu, Severity::Error, Some(901))]);
    assert!(
        finding(&r, Check::Gpu)
            .message
            .starts_with("no GPU 5 on this host; it has: 0 ("),
        "{:?}",
        finding(&r, Check::Gpu)
    );

    // The UVM nodes appear lazily: the nodes unit will run nvidia-modprobe.
    let node = Node::new();
    std::fs::remove_file(node.path("dev/nvidia-uvm")).unwrap();
    std::fs::remove_file(node.path("dev/nvidia-uvm-tools")).unwrap();
    let r = node.check(&config_text(|_| {}), &[901]);
    assert_eq!(
        problems(&r),
        [(Check::DeviceNodes, Severity::Warning, None)]
    );
    let f = finding(&r, Check::DeviceNodes);
    assert_eq!(
        f.message,
        "/dev/nvidia-uvm, /dev/nvidia-uvm-tools missing: nvidia-modprobe makes them on demand, and gpu.attach installs phoenix-nvidia-nodes.service, which makes them before the container starts and at every boot"
    );
    assert_eq!(
        f.fix.clone().unwrap(),
        format!(
            "nothing to do; to make them now: {} -u -c=0",
            node.path("bin/nvidia-modprobe").display()
        )
    );

    // Without nvidia-modprobe nothing will make them: an error.
    std::fs::remove_file(node.path("bin/nvidia-modprobe")).unwrap();
    let r = node.check(&config_text(|_| {}), &[901]);
    assert_eq!(problems(&r), [(Check::DeviceNodes, Severity::Error, None)]);
    assert!(
        finding(&r, Check::DeviceNodes)
            .fix
            .as_deref()
            .unwrap()
            .starts_with("install nvidia-modprobe"),
    );

    // No driver at all.
    let node = Node::new();
    node.answer(
        "nvidia-smi --query-gpu=index,pci.bus_id,uuid,name,memory.total,driver_version --format=csv,noheader,nounits",
        fail(9, "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"),
    );
    let r = node.check(&config_text(|_| {}), &[901]);
    assert_eq!(problems(&r), [(Check::Driver, Severity::Error, None)]);
    assert!(
        finding(&r, Check::Driver)
            .message
            .contains("couldn't communicate with the NVIDIA driver")
    );
}

#[test]
fn a_bridge_that_is_not_a_linux_bridge_is_a_warning() {
    let node = Node::new();
    let config =
        config_text(|v| v["lxc_configs"]["902"]["network_config"]["bridge"] = "eno1".into());
    let r = node.check(&config, &[902]);
    assert_eq!(
        problems(&r),
        [(Check::Bridge, Severity::Warning, Some(902))]
    );
    assert_eq!(
        finding(&r, Check::Bridge).fix.as_deref(),
        Some(
            "check it: `ovs-vsctl br-exists eno1` exits 0 for an Open vSwitch bridge; otherwise set `network_config.bridge` to a bridge"
        )
    );
}

#[test]
fn the_models_parent_must_sit_in_a_pool_the_host_has() {
    let node = Node::new();
    let config = config_text(|v| v["models_dataset"] = "tank/phoenix/models".into());
    node.answer(
        "zfs get -H -o property,value,source all tank/phoenix/models",
        fail(
            1,
            "cannot open 'tank/phoenix/models': dataset does not exist",
        ),
    );
    let r = node.check(&config, &[901]);
    assert_eq!(
        problems(&r),
        [(Check::ModelsDataset, Severity::Error, None)]
    );
    let f = finding(&r, Check::ModelsDataset);
    assert_eq!(
        f.message,
        "tank/phoenix/models (from /etc/phoenix/lxc.json) cannot be created: the host has no ZFS pool tank (it has: rpool)"
    );
    // An entry without vLLM needs no models parent: nothing is asked of ZFS.
    let node = Node::new();
    let r = node.check(&config, &[902]);
    assert!(r.passed());
    assert!(!node.ran().iter().any(|c| c.starts_with("zfs")));
}

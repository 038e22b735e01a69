//! The `lxc` backend against real LXC (DESIGN.md §8).
//!
//! Each test builds a busybox root file system from the host's static `/bin/busybox`, uses
//! its own LXC path (a tempdir, `-P` on every command) and a container name unique to the
//! process, and always cleans up through a drop guard. Every container has
//! `lxc.net.0.type = empty` (the backend writes nothing else).
//!
//! These tests never skip themselves: the development machines and CI have LXC 5,
//! busybox-static and root (`.ci/run` installs them), and where any is missing each test
//! fails naming what to install (leave them out knowingly with `--skip real_lxc::`). The GPU
//! test needs an NVIDIA host and is `#[ignore]`d with its reason; run it there with
//! `cargo test --test integration real_lxc::gpu -- --ignored`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::wait_until;
use phoenix::config::{Features, IpConfig, LxcConfig, Network};
use phoenix::exec::{HostCommand, Runner, SystemRunner};
use phoenix::host::lxc::{LxcHost, LxcPaths};
use phoenix::host::{CreateSpec, CtStatus, ExecRequest, Host, HostError};
use phoenix::types::{AbsPath, BridgeName, Hostname, IfaceName, StorageId, Template, Vmid};

/// The static busybox the test rootfs is built from (`PHOENIX_TEST_BUSYBOX` overrides it,
/// e.g. a copy carried to a machine without busybox-static).
fn busybox() -> PathBuf {
    std::env::var_os("PHOENIX_TEST_BUSYBOX")
        .map_or_else(|| PathBuf::from("/bin/busybox"), PathBuf::from)
}
const TOOLS: &[&str] = &[
    "/usr/bin/lxc-start",
    "/usr/bin/lxc-stop",
    "/usr/bin/lxc-attach",
    "/usr/bin/lxc-info",
    "/usr/bin/lxc-wait",
    "/usr/bin/lxc-destroy",
];

/// Fail, naming what is missing and how to get it, unless real LXC containers can run here
/// (the LXC tools, a static busybox for the root file system, and root).
fn require_lxc() {
    let missing: Vec<String> = TOOLS
        .iter()
        .map(PathBuf::from)
        .chain([busybox()])
        .filter(|t| !t.exists())
        .map(|t| t.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "real LXC tests need LXC and a static busybox: missing {} \
         (`apt-get install -y lxc busybox-static`; `--skip real_lxc::` leaves these tests out)",
        missing.join(", ")
    );
    assert!(
        nix::unistd::geteuid().is_root(),
        "real LXC tests need root (`--skip real_lxc::` leaves these tests out)"
    );
}

/// A container id unique to this process and test.
fn vmid(test: u32) -> Vmid {
    Vmid::new(900_000_000 + u64::from(std::process::id() % 9_000_000) * 10 + u64::from(test))
        .unwrap()
}

/// A busybox root file system whose init (busybox init, empty inittab) keeps running.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("template");
    for d in [
        "bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root", "gpu",
    ] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox(), root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "env", "printf", "cat", "sleep", "ps", "stat", "echo", "ls",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init")).unwrap();
    std::fs::write(root.join("etc/inittab"), "::sysinit:/bin/busybox true\n").unwrap();
    root
}

fn entry(vmid: Vmid, template: &Path) -> LxcConfig {
    LxcConfig {
        vmid,
        name: Hostname::new("phoenix-lxc-test").unwrap(),
        memory_mb: 256,
        swap_mb: 0,
        cores: 1,
        template: Template::new(template.to_str().unwrap()).unwrap(),
        storage_pool: StorageId::new("local").unwrap(),
        storage_size_gb: 1,
        network: Network {
            name: IfaceName::new("eth0").unwrap(),
            bridge: BridgeName::new("vmbr0").unwrap(),
            ip: IpConfig::Dhcp,
            gw: None,
            dns: Vec::new(),
            mac: None,
            vlan: None,
        },
        features: Features::default(),
        unprivileged: false,
        onboot: false,
        gpus: None,
        vllm: None,
        recipe: None,
        portainer_role: None,
        openai_backend: None,
        gpu_exclusive: false,
        after: Vec::new(),
        packages: Vec::new(),
    }
}

/// One container under test: its host, its ids, and a guard that removes it on drop.
struct Ct {
    host: LxcHost,
    vmid: Vmid,
    lxc_path: PathBuf,
    dir: tempfile::TempDir,
}

impl Ct {
    fn new(test: u32, runner: SystemRunner) -> Self {
        Self::with_nvidia_smi(test, runner, None)
    }

    fn with_nvidia_smi(test: u32, runner: SystemRunner, smi: Option<PathBuf>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lxc_path = dir.path().join("lxc");
        let paths = LxcPaths {
            lxc_path: lxc_path.clone(),
            lxc_start: "/usr/bin/lxc-start".into(),
            lxc_stop: "/usr/bin/lxc-stop".into(),
            lxc_attach: "/usr/bin/lxc-attach".into(),
            lxc_info: "/usr/bin/lxc-info".into(),
            lxc_wait: "/usr/bin/lxc-wait".into(),
            lxc_destroy: "/usr/bin/lxc-destroy".into(),
            cp: "/usr/bin/cp".into(),
            tar: "/usr/bin/tar".into(),
            nvidia_smi: smi.unwrap_or_else(|| dir.path().join("no-nvidia-smi")),
            dev_dir: "/dev".into(),
            backup_dir: dir.path().join("backups"),
        };
        Self {
            host: LxcHost::new(paths, Arc::new(runner)),
            vmid: vmid(test),
            lxc_path,
            dir,
        }
    }

    fn create(&self) {
        self.create_from(&busybox_rootfs(self.dir.path()));
    }

    fn create_from(&self, template: &Path) {
        let spec = CreateSpec {
            vmid: self.vmid,
            entry: entry(self.vmid, template),
            run_id: "test-run".into(),
        };
        self.host.ct_create(&spec).unwrap();
    }

    fn exec(&self, argv: &[&str]) -> Result<phoenix::exec::CommandOutput, HostError> {
        let req = ExecRequest {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            timeout: Some(Duration::from_secs(20)),
            ..ExecRequest::default()
        };
        self.host.ct_exec(self.vmid, &req)
    }

    /// Exit code and stderr of `busybox cat <path>` inside.
    fn cat(&self, path: &str) -> (i32, String) {
        let req = ExecRequest {
            argv: vec!["/bin/busybox".into(), "cat".into(), path.into()],
            timeout: Some(Duration::from_secs(20)),
            ok_codes: vec![0, 1],
            ..ExecRequest::default()
        };
        let out = self.host.ct_exec(self.vmid, &req).unwrap();
        (out.code, out.stderr_text())
    }
}

impl Drop for Ct {
    fn drop(&mut self) {
        // Best effort, whatever state a failed test left: kill, then destroy (forced).
        let runner = SystemRunner::default();
        let name = self.vmid.to_string();
        for (tool, extra) in [
            ("/usr/bin/lxc-stop", &["-k"][..]),
            ("/usr/bin/lxc-destroy", &["-f"][..]),
        ] {
            let cmd = HostCommand::new(tool)
                .args(["-n", &name, "-P"])
                .arg(&self.lxc_path)
                .args(extra)
                .ok_codes([0, 1, 2])
                .timeout(Duration::from_secs(60));
            let _ = runner.run(&cmd);
        }
    }
}

/// cgroup directories LXC made for container `name`, in every hierarchy.
fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from("/sys/fs/cgroup")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let n = e.file_name().to_string_lossy().into_owned();
            if n == format!("lxc.payload.{name}") || n == format!("lxc.monitor.{name}") {
                found.push(e.path());
            }
            // LXC puts its cgroups near the top; no need to walk deep hierarchies.
            if e.path().components().count() < 9 {
                stack.push(e.path());
            }
        }
    }
    found
}

/// Processes whose command line mentions `needle` (the LXC path names the monitor).
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

fn init_pid(ct: &Ct) -> u32 {
    let out = SystemRunner::default()
        .run(
            &HostCommand::new("/usr/bin/lxc-info")
                .args(["-n", &ct.vmid.to_string(), "-P"])
                .arg(&ct.lxc_path)
                .args(["-p", "-H"]),
        )
        .unwrap();
    out.stdout_text().trim().parse().unwrap()
}

#[test]
fn lifecycle_create_start_exec_push_stop_destroy_leaves_nothing() {
    require_lxc();
    let ct = Ct::new(1, SystemRunner::default());
    let h = &ct.host;
    assert_eq!(h.ct_status(ct.vmid).unwrap(), CtStatus::Absent);
    ct.create();
    let conf = h.ct_config(ct.vmid).unwrap().unwrap();
    assert!(conf.is_owned(), "{conf:?}");
    assert_eq!(conf.get("lxc.net.0.type"), Some("empty"));
    assert_eq!(h.ct_status(ct.vmid).unwrap(), CtStatus::Stopped);

    h.ct_start(ct.vmid).unwrap();
    assert_eq!(h.ct_status(ct.vmid).unwrap(), CtStatus::Running);
    let out = ct.exec(&["busybox", "echo", "hello from lxc"]).unwrap();
    assert_eq!(out.stdout_text(), "hello from lxc\n");
    // The only network device is loopback (`empty`).
    let out = ct.exec(&["busybox", "ls", "/sys/class/net"]).unwrap();
    assert_eq!(
        out.stdout_text().split_whitespace().collect::<Vec<_>>(),
        ["lo"]
    );
    // Exit codes come back; ok_codes decide success.
    let err = ct.exec(&["busybox", "false"]).unwrap_err();
    assert!(err.to_string().contains("exit 1"), "{err}");

    // Push into the running container, with its mode, through a fresh directory.
    let dest = AbsPath::new("/etc/phoenix/unit.conf").unwrap();
    h.ct_push(ct.vmid, b"a=1\n", &dest, 0o640).unwrap();
    let out = ct
        .exec(&["busybox", "stat", "-c", "%a %u", "/etc/phoenix/unit.conf"])
        .unwrap();
    assert_eq!(out.stdout_text(), "640 0\n");
    assert_eq!(
        ct.exec(&["cat", "/etc/phoenix/unit.conf"])
            .unwrap()
            .stdout_text(),
        "a=1\n"
    );

    // A bind mount (`mp0`) shows the host directory inside after a restart.
    let shared = ct.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("model.txt"), "weights\n").unwrap();
    h.ct_set(
        ct.vmid,
        &[("mp0".into(), format!("{},mp=/models", shared.display()))],
    )
    .unwrap();
    h.ct_stop(ct.vmid).unwrap();
    assert_eq!(h.ct_status(ct.vmid).unwrap(), CtStatus::Stopped);
    h.ct_start(ct.vmid).unwrap();
    assert_eq!(
        ct.exec(&["cat", "/models/model.txt"])
            .unwrap()
            .stdout_text(),
        "weights\n"
    );

    let pid = init_pid(&ct);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    let name = ct.vmid.to_string();
    assert!(
        !cgroup_dirs(&name).is_empty(),
        "a running container has cgroups"
    );
    // The memory limit is applied on whichever hierarchy the host enforces.
    // Only the payload cgroup carries the limit (the monitor's has none).
    let limit = cgroup_dirs(&name)
        .iter()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("lxc.payload."))
        })
        .find_map(|d| {
            ["memory.limit_in_bytes", "memory.max"]
                .iter()
                .find_map(|f| std::fs::read_to_string(d.join(f)).ok())
        });
    assert_eq!(limit.unwrap().trim(), (256u64 << 20).to_string());
    h.ct_stop(ct.vmid).unwrap();
    h.ct_destroy(ct.vmid).unwrap();
    assert_eq!(h.ct_status(ct.vmid).unwrap(), CtStatus::Absent);
    assert!(!ct.lxc_path.join(&name).exists());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "init {pid} survived"
    );
    assert_eq!(cgroup_dirs(&name), Vec::<PathBuf>::new());
    let lxc_path = ct.lxc_path.display().to_string();
    assert_eq!(processes_mentioning(&lxc_path), Vec::<u32>::new());
    // Destroy is idempotent.
    h.ct_destroy(ct.vmid).unwrap();
}

#[test]
fn hostile_argv_is_one_argument_and_environment_is_cleared() {
    require_lxc();
    let runner = SystemRunner::default().with_env("PHOENIX_TEST_SECRET", "hunter2-not-for-cts");
    let ct = Ct::new(2, runner);
    ct.create();
    ct.host.ct_start(ct.vmid).unwrap();

    let hostile = "; rm -rf / $(reboot) `id` | && \"quotes\" 'single'\nsecond line";
    let out = ct
        .exec(&["busybox", "printf", "%s\\0", hostile, "x"])
        .unwrap();
    assert_eq!(out.stdout, format!("{hostile}\0x\0").into_bytes());

    let env = ct.exec(&["env"]).unwrap().stdout_text();
    assert!(!env.contains("PHOENIX_TEST_SECRET"), "{env}");
    assert!(!env.contains("hunter2"), "{env}");
    assert!(env.lines().any(|l| l == "container=lxc"), "{env}");

    // Stdin bytes reach the program.
    let req = ExecRequest {
        argv: vec!["cat".into()],
        stdin: Some(zeroize::Zeroizing::new(b"line one\nline two\n".to_vec())),
        timeout: Some(Duration::from_secs(20)),
        ..ExecRequest::default()
    };
    let out = ct.host.ct_exec(ct.vmid, &req).unwrap();
    assert_eq!(out.stdout, b"line one\nline two\n");

    // A timeout kills the program inside the container too.
    let req = ExecRequest {
        argv: vec!["sleep".into(), "77".into()],
        timeout: Some(Duration::from_secs(1)),
        ..ExecRequest::default()
    };
    let err = ct.host.ct_exec(ct.vmid, &req).unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    wait_until("`sleep 77` to end inside the container", || {
        !ct.exec(&["ps"]).unwrap().stdout_text().contains("sleep 77")
    });
}

#[test]
fn device_rules_are_enforced_until_gpu_lines_are_applied() {
    require_lxc();
    let ct = Ct::new(3, SystemRunner::default());
    ct.create();
    let h = &ct.host;
    // A character device with the NVIDIA major in the rootfs. Minor 200 is no GPU (GPUs are
    // 0…N, modeset 254, ctl 255), so on an NVIDIA host this never touches real hardware.
    let node = h.rootfs_path(ct.vmid).join("gpu/nvidia0");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(195, 200),
    )
    .unwrap();
    h.ct_start(ct.vmid).unwrap();
    let (code, stderr) = ct.cat("/gpu/nvidia0");
    assert_eq!(code, 1);
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    let marker_dir = ct.dir.path().join("host-dev");
    std::fs::create_dir(&marker_dir).unwrap();
    std::fs::write(marker_dir.join("nvidia-marker"), "bound\n").unwrap();
    let lines = vec![
        (
            "lxc.cgroup2.devices.allow".to_owned(),
            "c 195:* rwm".to_owned(),
        ),
        (
            "lxc.mount.entry".to_owned(),
            format!(
                "{}/nvidia-marker dev/nvidia-marker none bind,optional,create=file",
                marker_dir.display()
            ),
        ),
    ];
    let backup = ct.dir.path().join("backups/gpu.conf");
    let before = std::fs::read_to_string(h.config_path(ct.vmid)).unwrap();
    h.ct_append_lines(ct.vmid, &lines, &backup).unwrap();
    let after = std::fs::read_to_string(h.config_path(ct.vmid)).unwrap();
    h.ct_append_lines(ct.vmid, &lines, &backup).unwrap();
    assert_eq!(
        std::fs::read_to_string(h.config_path(ct.vmid)).unwrap(),
        after
    );
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), before);
    let pos = |l: &str| after.lines().position(|x| x == l).unwrap();
    for v in ["lxc.cgroup.devices", "lxc.cgroup2.devices"] {
        assert!(pos(&format!("{v}.deny = a")) < pos(&format!("{v}.allow = c 195:* rwm")));
    }

    h.ct_stop(ct.vmid).unwrap();
    h.ct_start(ct.vmid).unwrap();
    let (code, stderr) = ct.cat("/gpu/nvidia0");
    assert_eq!(code, 1);
    // The cgroup lets the open through; then the driver (or its absence) answers.
    assert!(!stderr.contains("Operation not permitted"), "{stderr}");
    let driver = std::fs::read_to_string("/proc/devices")
        .unwrap()
        .lines()
        .any(|l| l.trim().starts_with("195 "));
    if !driver {
        assert!(
            stderr.contains("No such device or address") || stderr.contains("No such device"),
            "no NVIDIA driver here: ENXIO/ENODEV expected, got {stderr}"
        );
    }
    assert_eq!(
        ct.exec(&["cat", "/dev/nvidia-marker"])
            .unwrap()
            .stdout_text(),
        "bound\n"
    );
    // Standard devices still work behind the deny-all rule.
    assert_eq!(ct.cat("/dev/null"), (0, String::new()));

    // Restoring the backup takes the rule away again.
    h.ct_restore_config(ct.vmid, &backup).unwrap();
    h.ct_stop(ct.vmid).unwrap();
    h.ct_start(ct.vmid).unwrap();
    let (_, stderr) = ct.cat("/gpu/nvidia0");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    h.ct_destroy(ct.vmid).unwrap();
}

#[test]
fn tarball_template_and_destroy_refuses_a_container_phoenix_did_not_create() {
    require_lxc();
    let ct = Ct::new(4, SystemRunner::default());
    let tree = busybox_rootfs(ct.dir.path());
    let tarball = ct.dir.path().join("rootfs.tar.gz");
    SystemRunner::default()
        .run(
            &HostCommand::new("/usr/bin/tar")
                .args(["-c", "-z", "-f"])
                .arg(&tarball)
                .arg("-C")
                .arg(&tree)
                .arg("."),
        )
        .unwrap();
    ct.create_from(&tarball);
    ct.host.ct_start(ct.vmid).unwrap();
    let out = ct.exec(&["busybox", "readlink", "/sbin/init"]).unwrap();
    assert_eq!(out.stdout_text(), "../bin/busybox\n");
    ct.host.ct_stop(ct.vmid).unwrap();
    // Strip the owner marker: now it looks like an operator's own container.
    let path = ct.host.config_path(ct.vmid);
    let text = std::fs::read_to_string(&path).unwrap();
    let foreign: String = text
        .lines()
        .filter(|l| !l.starts_with("# phoenix:owner="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, foreign).unwrap();
    let err = ct.host.ct_destroy(ct.vmid).unwrap_err();
    assert!(matches!(err, HostError::NotOwned(_)), "{err}");
    assert!(ct.lxc_path.join(ct.vmid.to_string()).exists());
}

/// Legacy GPU passthrough end to end on a real NVIDIA host (DESIGN.md §8, the H100
/// machine): ignored elsewhere; run there, it fails when the host has no NVIDIA GPU.
/// phoenix chooses what is passed: the nodes `gpu.attach` would attach (`/dev/nvidiaN` by
/// each GPU's minor number, `nvidiactl`, the UVM nodes, `nvidia-caps` only with MIG), read
/// from the live `/dev`, and its legacy lines for the host's cgroup mode. `nvidia-smi` must
/// fail inside with the binds alone and list the host's GPU once the allow rules are added.
#[test]
#[ignore = "needs an NVIDIA GPU host with LXC (DESIGN.md §8): cargo test --test integration real_lxc::gpu -- --ignored"]
fn gpu_passthrough_on_a_real_nvidia_host() {
    require_lxc();
    let smi = ["/usr/bin/nvidia-smi", "/usr/local/nvidia/bin/nvidia-smi"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect(
            "this test needs an NVIDIA host: no nvidia-smi in /usr/bin or /usr/local/nvidia/bin",
        );
    let ct = Ct::with_nvidia_smi(5, SystemRunner::default(), Some(smi.clone()));
    let h = &ct.host;
    let gpus = h.gpus().unwrap();
    eprintln!("host GPUs: {gpus:?}");
    assert!(!gpus.is_empty(), "nvidia-smi lists no GPU on the host");
    let mig = gpus.iter().any(|g| g.mig);
    let nodes = phoenix::api::gpu::nodes_for(Path::new("/dev"), &gpus, mig)
        .unwrap_or_else(|e| panic!("{e} (the UVM nodes appear after `nvidia-modprobe -u -c=0`)"));
    let cgroup = phoenix::host::CgroupMode::detect(Path::new("/sys")).unwrap();
    let lines = phoenix::api::gpu::legacy_lines(&nodes, cgroup);
    let is_bind = |(k, _): &&(String, String)| k == "lxc.mount.entry";
    let allows: Vec<(String, String)> = lines.iter().filter(|l| !is_bind(l)).cloned().collect();
    let binds: Vec<(String, String)> = lines.iter().filter(is_bind).cloned().collect();
    eprintln!("cgroup {cgroup:?}, nodes {nodes:?}, rules {allows:?}");
    assert!(
        allows.iter().any(|(_, v)| v == "c 195:* rwm"),
        "the GPUs' major is allowed: {allows:?}"
    );

    // The busybox rootfs, plus the host's /usr (recursive, read-only: the driver userspace
    // may be a submount such as /usr/local/nvidia) and merged-/usr library links.
    let template = busybox_rootfs(ct.dir.path());
    std::os::unix::fs::symlink("usr/lib", template.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/lib64", template.join("lib64")).unwrap();
    ct.create_from(&template);
    let mut mounts: Vec<(String, String)> = [
        "/usr usr none rbind,ro,create=dir 0 0",
        "/etc/ld.so.cache etc/ld.so.cache none bind,ro,optional,create=file 0 0",
    ]
    .iter()
    .map(|m| ("lxc.mount.entry".to_owned(), (*m).to_owned()))
    .collect();
    mounts.extend(binds);
    let backup = ct.dir.path().join("backups/gpu.conf");
    h.ct_append_lines(ct.vmid, &mounts, &backup).unwrap();

    let smi_inside = |h: &LxcHost| {
        let req = ExecRequest {
            argv: vec![
                "/bin/busybox".into(),
                "env".into(),
                "LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/local/nvidia/lib".into(),
                smi.display().to_string(),
                "-L".into(),
            ],
            timeout: Some(Duration::from_secs(60)),
            ok_codes: (0..=255).collect(),
            ..ExecRequest::default()
        };
        let out = h.ct_exec(ct.vmid, &req).unwrap();
        eprintln!(
            "nvidia-smi -L inside: exit {}\n{}{}",
            out.code,
            out.stdout_text(),
            out.stderr_text()
        );
        out
    };
    h.ct_start(ct.vmid).unwrap();
    let denied = smi_inside(h);
    assert_ne!(denied.code, 0, "NVML must fail without the allow rules");

    h.ct_append_lines(ct.vmid, &allows, &backup).unwrap();
    eprintln!(
        "config:\n{}",
        std::fs::read_to_string(h.config_path(ct.vmid)).unwrap()
    );
    h.ct_stop(ct.vmid).unwrap();
    h.ct_start(ct.vmid).unwrap();
    let allowed = smi_inside(h);
    assert_eq!(allowed.code, 0);
    assert!(
        allowed.stdout_text().contains(&gpus[0].uuid),
        "the host's GPU {} is listed inside",
        gpus[0].uuid
    );
    h.ct_stop(ct.vmid).unwrap();
    h.ct_destroy(ct.vmid).unwrap();
}

/// Issue 8: `phoenix destroy` after a SIGKILL mid-run leaves nothing on the real host. The
/// whole CLI runs with `--host lxc`: a recipe creates and starts a container and runs a long
/// command in it; phoenix is killed during that command; `phoenix destroy` must then remove
/// the container, its directory, its cgroups and every process.
#[test]
fn destroy_after_sigkill_mid_run_leaves_nothing_on_the_real_host() {
    require_lxc();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let template = busybox_rootfs(d);
    let id = vmid(7);
    let config = serde_json::json!({ "lxc_configs": { id.to_string(): {
        "name": "phoenix-kill-test", "memory_mb": 256, "cores": 1,
        "template": template.to_str().unwrap(), "storage_pool": "local", "storage_size_gb": 1,
        "network_config": { "name": "eth0", "bridge": "vmbr0", "ip": "dhcp" },
        "unprivileged": false
    }}});
    std::fs::write(d.join("config.json"), config.to_string()).unwrap();
    std::fs::write(d.join("phoenix.toml"), "").unwrap();
    std::fs::write(
        d.join("long.rhai"),
        "let ct = lxc.create(config.target());\nlxc.start(ct);\nlxc.exec(ct, [\"/bin/busybox\", \"sleep\", \"120\"], #{ timeout: \"150s\" });\n",
    )
    .unwrap();
    let lxc_path = d.join("lxc");
    let phoenix = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_phoenix"));
        cmd.args(args)
            .args(["--host", "lxc", "--config"])
            .arg(d.join("config.json"))
            .env_clear()
            .env("PHOENIX_SETTINGS", d.join("phoenix.toml"))
            .env("PHOENIX_STATE_DIR", d.join("state"))
            .env("PHOENIX_LOG_DIR", d.join("log"))
            .env("PHOENIX_LXC_PATH", &lxc_path);
        cmd
    };
    let mut run = phoenix(&["recipe", "run"])
        .arg(d.join("long.rhai"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the long command runs inside the container.
    let name = id.to_string();
    wait_until("the long command to run inside the container", || {
        assert!(
            run.try_wait().unwrap().is_none(),
            "phoenix ended before the long command"
        );
        processes_mentioning("sleep").into_iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&format!("lxc.payload.{name}")))
        })
    });
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(
        lxc_path.join(&name).exists(),
        "the container should exist after the kill"
    );

    let out = phoenix(&["destroy"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing left: no container directory, no cgroups, no process (the orphaned attach
    // and the command inside ended with the container).
    assert!(!lxc_path.join(&name).exists(), "container directory left");
    wait_until("the container's cgroups and processes to go", || {
        cgroup_dirs(&name).is_empty() && processes_mentioning(lxc_path.to_str().unwrap()).is_empty()
    });
    assert_eq!(cgroup_dirs(&name), Vec::<PathBuf>::new(), "cgroups left");
    assert_eq!(
        processes_mentioning(lxc_path.to_str().unwrap()),
        Vec::<u32>::new(),
        "processes left"
    );
    // A second destroy finds nothing to do.
    let out = phoenix(&["destroy"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to destroy"));
}

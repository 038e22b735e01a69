//! The emulated Proxmox host (DESIGN.md §7), driven directly through the `$ROOT/bin`
//! symlinks that phoenix's `host::emulated::prepare` installs: argv vectors, no shell, a
//! minimal environment as phoenix's runner gives its children.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use phoenix::host::emulated;
use phoenix::settings::{FlagOverrides, Settings};
use tempfile::TempDir;

use crate::support::wait_until;

/// One emulated host in a temp dir (also used by `emulator_gpu`).
pub(crate) struct Emu {
    _dir: TempDir,
    pub(crate) root: PathBuf,
}

impl Emu {
    pub(crate) fn new() -> Self {
        Self::with_version(None)
    }

    fn with_version(version: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("emulated");
        let state = dir.path().join("state");
        let settings = Settings::resolve_with(&FlagOverrides::default(), &|k| match k {
            "PHOENIX_EMU_ROOT" => Some(root.display().to_string()),
            "PHOENIX_STATE_DIR" => Some(state.display().to_string()),
            "PHOENIX_EMU_PVE_VERSION" => version.map(str::to_owned),
            _ => None,
        })
        .unwrap();
        let paths = emulated::prepare(&settings).unwrap();
        assert_eq!(paths.pct, root.join("bin/pct"));
        Self { _dir: dir, root }
    }

    fn cmd(&self, tool: &str, args: &[&str]) -> Command {
        let mut c = Command::new(self.root.join("bin").join(tool));
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        c
    }

    pub(crate) fn run(&self, tool: &str, args: &[&str]) -> Output {
        self.cmd(tool, args).output().unwrap()
    }

    fn run_stdin(&self, tool: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd(tool, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Start a call that a `hang` or `succeed-then-hang` fault holds: returns once
    /// `argv.log` records it (the emulator logs a hung call, with `exit: null`, before it
    /// hangs) and the process is still running. The caller kills it.
    fn spawn_hung(&self, tool: &str, args: &[&str]) -> std::process::Child {
        let mut child = self
            .cmd(tool, args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(&format!("`{tool} {args:?}` to hang"), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{tool} {args:?} ended ({status}) instead of hanging");
            }
            self.log()
                .iter()
                .any(|l| l["tool"] == tool && l["argv"] == serde_json::json!(args))
        });
        assert!(child.try_wait().unwrap().is_none(), "{tool} {args:?} ended");
        child
    }

    pub(crate) fn ok(&self, tool: &str, args: &[&str]) -> String {
        let o = self.run(tool, args);
        assert!(
            o.status.success(),
            "{tool} {args:?} failed ({:?}): {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    pub(crate) fn conf(&self, vmid: u32) -> String {
        std::fs::read_to_string(self.root.join(format!("etc/pve/lxc/{vmid}.conf"))).unwrap()
    }

    pub(crate) fn settings(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.root.join("emu.json")).unwrap()).unwrap()
    }

    fn prefix(&self) -> String {
        self.settings()["loopback_prefix"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) fn log(&self) -> Vec<serde_json::Value> {
        // No log yet only before the emulator's first call; any other error fails.
        let text = match std::fs::read_to_string(self.root.join("argv.log")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("argv.log: {e}"),
        };
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn faults(&self, v: serde_json::Value) {
        std::fs::write(self.root.join("faults.json"), v.to_string()).unwrap();
    }

    pub(crate) fn create(&self, vmid: &str) {
        self.ok(
            "pct",
            &[
                "create",
                vmid,
                "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                "--hostname",
                "gpu-a",
                "--memory",
                "4096",
                "--swap",
                "512",
                "--cores",
                "4",
                "--rootfs",
                "local-zfs:8",
                "--net0",
                "name=eth0,bridge=vmbr0,ip=dhcp",
                "--unprivileged",
                "0",
                "--onboot",
                "1",
                "--tags",
                "phoenix;phoenix-run-r1",
            ],
        );
    }
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn create_writes_the_config_as_pve_does() {
    let emu = Emu::new();
    let out = emu.ok(
        "pct",
        &[
            "create",
            "901",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "--hostname",
            "gpu-a",
            "--memory",
            "8192",
            "--swap",
            "1024",
            "--cores",
            "8",
            "--rootfs",
            "local-zfs:32",
            "--net0",
            "name=eth0,bridge=vmbr0,ip=10.0.0.21/24,gw=10.0.0.1,hwaddr=BC:24:11:12:34:56,tag=20",
            "--nameserver",
            "8.8.8.8 1.1.1.1",
            "--features",
            "nesting=1,keyctl=1",
            "-unprivileged",
            "1",
            "--onboot",
            "0",
            "--tags",
            "phoenix;phoenix-run-r1",
        ],
    );
    assert!(
        out.contains("Detected container architecture: amd64"),
        "{out}"
    );
    assert_eq!(
        emu.conf(901),
        "arch: amd64\n\
         cores: 8\n\
         features: keyctl=1,nesting=1\n\
         hostname: gpu-a\n\
         memory: 8192\n\
         nameserver: 8.8.8.8 1.1.1.1\n\
         net0: name=eth0,bridge=vmbr0,gw=10.0.0.1,hwaddr=BC:24:11:12:34:56,ip=10.0.0.21/24,tag=20,type=veth\n\
         onboot: 0\n\
         ostype: debian\n\
         rootfs: local-zfs:subvol-901-disk-0,size=32G\n\
         swap: 1024\n\
         tags: phoenix;phoenix-run-r1\n\
         unprivileged: 1\n"
    );
    assert!(
        emu.root
            .join("var/lib/lxc/901/rootfs/etc/hostname")
            .is_file()
    );
    assert_eq!(emu.ok("pct", &["status", "901"]), "status: stopped\n");
    assert_eq!(emu.ok("pct", &["config", "901"]), emu.conf(901));
}

#[test]
fn create_generates_a_mac_and_omits_unprivileged_0() {
    let emu = Emu::new();
    emu.create("902");
    let conf = emu.conf(902);
    let net0 = conf.lines().find(|l| l.starts_with("net0: ")).unwrap();
    let re = regex::Regex::new(
        r"^net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:[0-9A-F]{2}:[0-9A-F]{2}:[0-9A-F]{2},ip=dhcp,type=veth$",
    )
    .unwrap();
    assert!(re.is_match(net0), "{net0}");
    assert!(
        !conf.contains("unprivileged"),
        "PVE writes unprivileged only when 1: {conf}"
    );
}

#[test]
fn create_fails_like_pve_for_an_existing_ct_or_unknown_storage() {
    let emu = Emu::new();
    emu.create("903");
    let before = emu.conf(903);
    let o = emu.run(
        "pct",
        &[
            "create",
            "903",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "--rootfs",
            "local-zfs:8",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(stderr(&o), "CT 903 already exists on node 'pve'\n");
    assert_eq!(emu.conf(903), before);

    let o = emu.run(
        "pct",
        &[
            "create",
            "904",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "--rootfs",
            "nope:8",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(stderr(&o), "storage 'nope' does not exist\n");
    assert!(!emu.root.join("etc/pve/lxc/904.conf").exists());

    let o = emu.run(
        "pct",
        &[
            "create",
            "904",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "--rootfs",
            "local:8",
        ],
    );
    assert_eq!(
        stderr(&o),
        "400 Parameter verification failed.\nstorage: storage 'local' does not support container directories\npct create <vmid> <ostemplate> [OPTIONS]\n"
    );
    assert!(!emu.root.join("etc/pve/lxc/904.conf").exists());
}

#[test]
fn options_pct_does_not_have_are_refused() {
    let emu = Emu::new();
    let o = emu.run(
        "pct",
        &[
            "create",
            "905",
            "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
            "--rootfs",
            "local-zfs:8",
            "--bogus",
            "1",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        stderr(&o),
        "Unknown option: bogus\n400 unable to parse option\npct create <vmid> <ostemplate> [OPTIONS]\n"
    );
    assert!(!emu.root.join("etc/pve/lxc/905.conf").exists());

    let o = emu.run(
        "pct",
        &[
            "create",
            "905",
            "local:vztmpl/d.tar.zst",
            "--memory",
            "lots",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(stderr(&o).starts_with("400 Parameter verification failed.\nmemory: type check ('integer') failed - got 'lots'\n"), "{}", stderr(&o));

    let o = emu.run(
        "pct",
        &[
            "create",
            "905",
            "local:vztmpl/d.tar.zst",
            "--net0",
            "name=eth0,colour=red",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains("colour: property is not defined in schema"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn lifecycle_round_trip() {
    let emu = Emu::new();
    emu.create("910");
    let o = emu.run(
        "pct",
        &[
            "exec",
            "910",
            "--keep-env",
            "0",
            "--",
            "cat",
            "/etc/hostname",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(stderr(&o), "container '910' not running!\n");
    let o = emu.run(
        "pct",
        &["push", "910", "/etc/hostname", "/root/x", "--perms", "0600"],
    );
    assert_eq!(stderr(&o), "can only push files to a running CT\n");

    assert_eq!(emu.ok("pct", &["start", "910"]), "");
    assert_eq!(emu.ok("pct", &["status", "910"]), "status: running\n");
    let o = emu.run("pct", &["start", "910"]);
    assert_eq!(stderr(&o), "CT 910 already running\n");

    // The address: the root's loopback prefix, whatever the config says.
    let ip = emu.ok(
        "pct",
        &[
            "exec",
            "910",
            "--keep-env",
            "0",
            "--",
            "ip",
            "-j",
            "-4",
            "addr",
            "show",
            "dev",
            "eth0",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&ip).unwrap();
    let local = v[0]["addr_info"][0]["local"].as_str().unwrap();
    assert_eq!(local, format!("{}.2", emu.prefix()));
    assert_eq!(v[0]["ifname"], "eth0");
    assert_eq!(v[0]["addr_info"][0]["family"], "inet");

    // push with mode, owner; read back through exec.
    let src = emu.root.join("payload");
    std::fs::write(&src, "hello\n").unwrap();
    emu.ok("pct", &["exec", "910", "--", "mkdir", "-p", "/etc/phoenix"]);
    emu.ok(
        "pct",
        &[
            "push",
            "910",
            src.to_str().unwrap(),
            "/etc/phoenix/a.env",
            "--perms",
            "0600",
            "--user",
            "root",
            "--group",
            "root",
        ],
    );
    let pushed = emu.root.join("var/lib/lxc/910/rootfs/etc/phoenix/a.env");
    assert_eq!(
        std::fs::metadata(&pushed).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(
        emu.ok("pct", &["exec", "910", "--", "cat", "/etc/phoenix/a.env"]),
        "hello\n"
    );
    assert_eq!(
        emu.run(
            "pct",
            &["exec", "910", "--", "test", "-e", "/etc/phoenix/a.env"]
        )
        .status
        .code(),
        Some(0)
    );
    emu.ok(
        "pct",
        &["exec", "910", "--", "rm", "-f", "/etc/phoenix/a.env"],
    );
    assert_eq!(
        emu.run(
            "pct",
            &["exec", "910", "--", "test", "-e", "/etc/phoenix/a.env"]
        )
        .status
        .code(),
        Some(1)
    );
    let o = emu.run(
        "pct",
        &[
            "push",
            "910",
            src.to_str().unwrap(),
            "/nope/a",
            "--perms",
            "0644",
        ],
    );
    assert_eq!(
        stderr(&o),
        "failed to create file: /nope/a: No such file or directory\n"
    );

    // Anything else is not there (no shell in an emulated container).
    let o = emu.run("pct", &["exec", "910", "--", "sh", "-c", "true"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(
        stderr(&o).contains("Failed to exec \"sh\""),
        "{}",
        stderr(&o)
    );

    // set: mount point, device, delete.
    emu.ok(
        "pct",
        &[
            "set",
            "910",
            "--mp0",
            "/rpool/phoenix/models,mp=/models,ro=1",
            "--dev0",
            "/dev/nvidia0,mode=0666",
        ],
    );
    let conf = emu.conf(910);
    assert!(conf.contains("\ndev0: /dev/nvidia0,mode=0666\n"), "{conf}");
    assert!(
        conf.contains("\nmp0: /rpool/phoenix/models,mp=/models,ro=1\n"),
        "{conf}"
    );
    assert!(
        conf.find("dev0:").unwrap()
            < conf
                .find("features")
                .unwrap_or(usize::MAX)
                .min(conf.find("hostname").unwrap())
    );
    assert_eq!(
        emu.run("pct", &["exec", "910", "--", "test", "-e", "/dev/nvidia0"])
            .status
            .code(),
        Some(0)
    );
    let o = emu.run("pct", &["set", "910", "--dev1", "/dev/nvidia7"]);
    assert!(
        stderr(&o).contains("Device /dev/nvidia7 does not exist"),
        "{}",
        stderr(&o)
    );
    let o = emu.run("pct", &["set", "910", "--delete", "mp0,dev0,cpulimit"]);
    assert!(o.status.success());
    assert_eq!(
        stderr(&o),
        "cannot delete 'cpulimit' - not set in current configuration!\n"
    );
    assert!(!emu.conf(910).contains("mp0") && !emu.conf(910).contains("dev0"));

    // destroy refuses a running CT unless forced.
    let o = emu.run("pct", &["destroy", "910"]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        stderr(&o),
        "unable to destroy CT 910 - container is running\n"
    );
    emu.ok("pct", &["stop", "910"]);
    assert_eq!(emu.ok("pct", &["status", "910"]), "status: stopped\n");
    emu.ok("pct", &["destroy", "910", "--purge", "1"]);
    assert!(!emu.root.join("etc/pve/lxc/910.conf").exists());
    assert!(!emu.root.join("var/lib/lxc/910").exists());
    let o = emu.run("pct", &["status", "910"]);
    assert_eq!(
        stderr(&o),
        "Configuration file 'nodes/pve/lxc/910.conf' does not exist\n"
    );
}

#[test]
fn a_hand_written_config_gets_an_address_and_files_on_start() {
    let emu = Emu::new();
    std::fs::write(
        emu.root.join("etc/pve/lxc/990.conf"),
        "arch: amd64\nhostname: foreign\nmemory: 512\nostype: debian\nrootfs: local-zfs:subvol-990-disk-0,size=8G\n",
    )
    .unwrap();
    assert_eq!(emu.ok("pct", &["status", "990"]), "status: stopped\n");
    emu.ok("pct", &["start", "990"]);
    let ip = emu.ok(
        "pct",
        &[
            "exec", "990", "--", "ip", "-j", "-4", "addr", "show", "dev", "eth0",
        ],
    );
    assert!(
        ip.contains(&format!("\"local\":\"{}.2\"", emu.prefix())),
        "{ip}"
    );
    assert_eq!(
        emu.ok("pct", &["exec", "990", "--", "cat", "/etc/hostname"]),
        "foreign\n"
    );
}

#[test]
fn a_locked_config_is_refused() {
    let emu = Emu::new();
    emu.create("991");
    let path = emu.root.join("etc/pve/lxc/991.conf");
    let text = emu
        .conf(991)
        .replace("hostname: gpu-a\n", "hostname: gpu-a\nlock: backup\n");
    std::fs::write(&path, text).unwrap();
    for args in [
        &["start", "991"][..],
        &["set", "991", "--cores", "1"],
        &["destroy", "991"],
    ] {
        let o = emu.run("pct", args);
        assert_eq!(o.status.code(), Some(255), "{args:?}");
        assert_eq!(stderr(&o), "CT is locked (backup)\n", "{args:?}");
    }
}

#[test]
fn destroy_force_stops_a_running_ct() {
    let emu = Emu::new();
    emu.create("911");
    emu.ok("pct", &["start", "911"]);
    let o = emu.run("pct", &["destroy", "911", "--force", "1", "--purge", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!emu.root.join("etc/pve/lxc/911.conf").exists());
}

#[test]
fn raw_lines_appended_by_phoenix_survive_pct_set() {
    let emu = Emu::new();
    emu.create("912");
    let path = emu.root.join("etc/pve/lxc/912.conf");
    let mut text = emu.conf(912);
    text.push_str("lxc.cgroup2.devices.allow: c 195:* rwm\nlxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n");
    std::fs::write(&path, &text).unwrap();
    emu.ok("pct", &["set", "912", "--cores", "2"]);
    let after = emu.conf(912);
    assert!(after.ends_with("lxc.cgroup2.devices.allow: c 195:* rwm\nlxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n"), "{after}");
    assert!(after.contains("\ncores: 2\n"));
}

#[test]
fn keep_env_follows_the_pve_version() {
    let old = Emu::with_version(Some("8.1.4"));
    assert_eq!(old.ok("pveversion", &[]).split('/').nth(1), Some("8.1.4"));
    old.create("920");
    old.ok("pct", &["start", "920"]);
    let o = old.run(
        "pct",
        &[
            "exec",
            "920",
            "--keep-env",
            "0",
            "--",
            "cat",
            "/etc/hostname",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).starts_with("Unknown option: keep-env\n400 unable to parse option\n"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        old.ok("pct", &["exec", "920", "--", "cat", "/etc/hostname"]),
        "gpu-a\n"
    );

    let older = Emu::with_version(Some("8.0.4"));
    older.create("921");
    let o = older.run("pct", &["set", "921", "--dev0", "/dev/nvidia0"]);
    assert!(
        stderr(&o).starts_with("Unknown option: dev0\n"),
        "{}",
        stderr(&o)
    );

    let new = Emu::new();
    new.create("922");
    new.ok("pct", &["start", "922"]);
    assert_eq!(
        new.ok(
            "pct",
            &[
                "exec",
                "922",
                "--keep-env",
                "0",
                "--",
                "cat",
                "/etc/hostname"
            ]
        ),
        "gpu-a\n"
    );
}

#[test]
fn chpasswd_records_the_user_never_the_password() {
    let emu = Emu::new();
    emu.create("930");
    emu.ok("pct", &["start", "930"]);
    let o = emu.run_stdin(
        "pct",
        &["exec", "930", "--keep-env", "0", "--", "chpasswd"],
        b"root:s3cr3t-value\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let state = std::fs::read_to_string(emu.root.join("var/lib/lxc/930/emu-state.json")).unwrap();
    assert!(state.contains("\"root\""));
    let log = std::fs::read_to_string(emu.root.join("argv.log")).unwrap();
    for text in [&state, &log] {
        assert!(!text.contains("s3cr3t"));
    }
    let entry = emu.log().into_iter().last().unwrap();
    assert_eq!(entry["stdin_bytes"], 18);
    let o = emu.run_stdin("pct", &["exec", "930", "--", "chpasswd"], b"ghost:x\n");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("user 'ghost' does not exist"));
}

#[test]
fn every_call_is_logged_as_one_json_line() {
    let emu = Emu::new();
    emu.ok("pveversion", &[]);
    let _ = emu.run("pct", &["status", "999"]);
    let log = emu.log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["tool"], "pveversion");
    assert_eq!(log[0]["argv"], serde_json::json!([]));
    assert_eq!(log[0]["exit"], 0);
    assert_eq!(log[0]["stdin_bytes"], 0);
    assert_eq!(log[0]["env"]["LC_ALL"], "C");
    assert_eq!(log[1]["tool"], "pct");
    assert_eq!(log[1]["argv"], serde_json::json!(["status", "999"]));
    assert_eq!(log[1]["exit"], 255);
    // The work of each call as [began, ended] on the monotonic clock, in order.
    let work = |i: usize| -> (u64, u64) {
        let w = log[i]["work_us"].as_array().unwrap();
        (w[0].as_u64().unwrap(), w[1].as_u64().unwrap())
    };
    assert!(work(0).0 <= work(0).1, "{:?}", log[0]);
    assert!(
        work(0).1 <= work(1).0,
        "the second call worked before the first ended"
    );
    // An injected fault stands in for the work: no interval.
    emu.faults(serde_json::json!([{"match": ["pvesm"], "action": "fail"}]));
    let _ = emu.run("pvesm", &["status"]);
    let log = emu.log();
    assert_eq!(log[2]["fault"], "fail");
    assert!(log[2].get("work_us").is_none(), "{:?}", log[2]);
}

#[test]
fn a_latency_profile_with_a_bad_value_fails_the_call_naming_the_key() {
    let emu = Emu::new();
    let mut settings = emu.settings();
    settings["latency"] = serde_json::json!({"pct": "0ms", "pct start": "later"});
    std::fs::write(emu.root.join("emu.json"), settings.to_string()).unwrap();
    // A good value delays and works (no timing asserted: only that the call is answered).
    emu.create("931");
    let o = emu.run("pct", &["start", "931"]);
    assert_eq!(o.status.code(), Some(70), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        "phoenix-emu: emu.json: latency.\"pct start\" = \"later\" is not a duration\n"
    );
    // Nothing ran: the container is still stopped, and the refused call is not logged.
    assert_eq!(emu.ok("pct", &["status", "931"]), "status: stopped\n");
    let tools: Vec<String> = emu
        .log()
        .iter()
        .map(|e| e["argv"][0].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tools, ["create", "status"]);
}

#[test]
fn parallel_calls_log_whole_lines() {
    let emu = std::sync::Arc::new(Emu::new());
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let emu = emu.clone();
            std::thread::spawn(move || {
                let name = format!("rpool/p{i}");
                emu.ok("zfs", &["create", "-o", "phoenix:owner=phoenix", &name]);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(emu.log().len(), 8);
    let list = emu.ok("zfs", &["list", "-H", "-o", "name", "-r", "rpool"]);
    let made = list.lines().filter(|l| l.starts_with("rpool/p")).count();
    assert_eq!(made, 8, "{list}");
}

#[test]
fn fault_fail_and_exit_code() {
    let emu = Emu::new();
    emu.faults(serde_json::json!([
        {"match": ["pct", "create"], "action": "fail"},
        {"match": ["zfs", "list"], "action": "exit:3"}
    ]));
    let o = emu.run(
        "pct",
        &[
            "create",
            "940",
            "local:vztmpl/d.tar.zst",
            "--rootfs",
            "local-zfs:8",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert!(
        !emu.root.join("etc/pve/lxc/940.conf").exists(),
        "a failed call does nothing"
    );
    let o = emu.run("zfs", &["list", "-H", "-o", "name", "rpool"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        emu.ok(
            "zfs",
            &[
                "get",
                "-H",
                "-p",
                "-o",
                "property,value",
                "mountpoint",
                "rpool"
            ]
        ),
        "mountpoint\t/rpool\n"
    );
    let log = emu.log();
    assert_eq!(log[0]["fault"], "fail");
    assert_eq!(log[1]["exit"], 3);
}

#[test]
fn fault_times_counts_down_and_is_persisted() {
    let emu = Emu::new();
    emu.faults(serde_json::json!([{"match": ["pveversion"], "action": "exit:7", "times": 2}]));
    assert_eq!(emu.run("pveversion", &[]).status.code(), Some(7));
    let left: serde_json::Value =
        serde_json::from_slice(&std::fs::read(emu.root.join("faults.json")).unwrap()).unwrap();
    assert_eq!(left[0]["times"], 1);
    assert_eq!(emu.run("pveversion", &[]).status.code(), Some(7));
    assert_eq!(emu.run("pveversion", &[]).status.code(), Some(0));
}

#[test]
fn faults_file_may_carry_vllm_settings() {
    let emu = Emu::new();
    emu.faults(serde_json::json!([
        {"vllm": {"load_delay": "3s", "mode": "503"}},
        {"match": ["pveversion"], "action": "exit:5", "times": 1}
    ]));
    assert_eq!(emu.run("pveversion", &[]).status.code(), Some(5));
    assert_eq!(emu.run("pveversion", &[]).status.code(), Some(0));
    emu.faults(serde_json::json!({
        "faults": [{"match": ["pvesm"], "action": "exit:6"}],
        "vllm": {"mode": "crash"}
    }));
    assert_eq!(emu.run("pvesm", &["status"]).status.code(), Some(6));
    emu.faults(serde_json::json!([{"match": ["pvesm"], "action": "explode"}]));
    let o = emu.run("pvesm", &["status"]);
    assert_eq!(o.status.code(), Some(70));
    assert!(
        stderr(&o).contains("unknown action \"explode\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn fault_hang_is_killed_by_the_callers_timeout() {
    let emu = Emu::new();
    emu.faults(serde_json::json!([{"match": ["pct", "status", "950"], "action": "hang"}]));
    let mut hung = emu.spawn_hung("pct", &["status", "950"]);
    let log = emu.log();
    assert_eq!(log[0]["exit"], serde_json::Value::Null);
    assert_eq!(log[0]["fault"], "hang");
    // Other commands are not affected, and the hung one still hangs.
    let other = emu.run("pct", &["status", "951"]);
    assert_eq!(other.status.code(), Some(255), "{other:?}");
    assert!(
        String::from_utf8_lossy(&other.stderr)
            .contains("Configuration file 'nodes/pve/lxc/951.conf' does not exist"),
        "{other:?}"
    );
    assert!(hung.try_wait().unwrap().is_none(), "the hung call ended");
    // The caller's kill ends it.
    hung.kill().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&hung.wait().unwrap()),
        Some(9)
    );
}

#[test]
fn fault_delay_then_works() {
    let emu = Emu::new();
    // A delay holds its call: the first `pveversion` takes the fault (its `times` is used
    // up in faults.json) and is still waiting after a second one has come and gone.
    emu.faults(serde_json::json!([{"match": ["pveversion"], "action": "delay:60m", "times": 1}]));
    let mut held = emu
        .cmd("pveversion", &[])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the first pveversion to take the delay fault", || {
        if let Some(status) = held.try_wait().unwrap() {
            panic!("the delayed pveversion ended ({status})");
        }
        let f: serde_json::Value =
            serde_json::from_slice(&std::fs::read(emu.root.join("faults.json")).unwrap()).unwrap();
        f[0]["times"] == 0
    });
    let out = emu.ok("pveversion", &[]);
    assert!(out.starts_with("pve-manager/8.4.1/"), "{out}");
    assert!(held.try_wait().unwrap().is_none(), "the delayed call ended");
    assert_eq!(emu.log().len(), 1, "only the second call finished");
    held.kill().unwrap();
    held.wait().unwrap();
    // After the delay the call works normally, and the log names the fault.
    emu.faults(serde_json::json!([{"match": ["pveversion"], "action": "delay:10ms"}]));
    let out = emu.ok("pveversion", &[]);
    assert!(out.starts_with("pve-manager/8.4.1/"), "{out}");
    let log = emu.log();
    assert_eq!(log.last().unwrap()["fault"], "delay:10ms", "{log:?}");
    assert_eq!(log.last().unwrap()["exit"], 0, "{log:?}");
}

#[test]
fn fault_succeed_then_hang_does_the_work() {
    let emu = Emu::new();
    emu.faults(serde_json::json!([{"match": ["zfs", "create"], "action": "succeed-then-hang", "times": 1}]));
    let mut hung = emu.spawn_hung("zfs", &["create", "rpool/sth"]);
    hung.kill().unwrap();
    hung.wait().unwrap();
    assert_eq!(
        emu.ok("zfs", &["list", "-H", "-o", "name", "rpool/sth"]),
        "rpool/sth\n"
    );
}

#[test]
fn fault_matches_the_program_inside_a_container() {
    let emu = Emu::new();
    emu.create("960");
    emu.ok("pct", &["start", "960"]);
    emu.faults(serde_json::json!([{"match": ["cat", "/etc/hostname"], "action": "exit:42"}]));
    let o = emu.run(
        "pct",
        &[
            "exec",
            "960",
            "--keep-env",
            "0",
            "--",
            "/bin/cat",
            "/etc/hostname",
        ],
    );
    assert_eq!(o.status.code(), Some(42));
    emu.faults(
        serde_json::json!([{"match": ["pct", "exec", "960"], "action": "exit:43", "times": 1}]),
    );
    let o = emu.run("pct", &["exec", "960", "--", "test", "-e", "/etc"]);
    assert_eq!(o.status.code(), Some(43));
    assert_eq!(
        emu.ok("pct", &["exec", "960", "--", "cat", "/etc/os-release"])
            .lines()
            .count(),
        2
    );
}

#[test]
fn pvesm_status_lists_the_storages() {
    let emu = Emu::new();
    let out = emu.ok("pvesm", &["status"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "Name             Type     Status           Total            Used       Available        %"
    );
    let names: Vec<(&str, &str)> = lines[1..]
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0], f[1])
        })
        .collect();
    assert_eq!(names, [("local", "dir"), ("local-zfs", "zfspool"),]);
    assert!(
        lines[1].ends_with("active        98497780        12582912        85914868   12.77%"),
        "{}",
        lines[1]
    );
    let o = emu.run("pvesm", &["status", "--bogus"]);
    assert_eq!(o.status.code(), Some(255));
}

#[test]
fn pveversion_reports_the_configured_version() {
    let emu = Emu::with_version(Some("8.2.7"));
    let out = emu.ok("pveversion", &[]);
    let re = regex::Regex::new(
        r"^pve-manager/8\.2\.7/[0-9a-f]{16} \(running kernel: 6\.8\.12-4-pve\)\n$",
    )
    .unwrap();
    assert!(re.is_match(&out), "{out}");
    assert_eq!(emu.settings()["pve_version"], "8.2.7");
}

#[test]
fn zfs_datasets_behave_like_openzfs() {
    let emu = Emu::new();
    let o = emu.run("zfs", &["list", "-H", "-o", "name", "rpool/models"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "cannot open 'rpool/models': dataset does not exist\n"
    );

    let o = emu.run("zfs", &["create", "rpool/a/b"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "cannot create 'rpool/a/b': parent does not exist\n"
    );

    emu.ok(
        "zfs",
        &[
            "create",
            "-o",
            "phoenix:owner=phoenix",
            "-o",
            "phoenix:run=r1",
            "-o",
            "compression=lz4",
            "rpool/models",
        ],
    );
    assert_eq!(
        emu.ok("zfs", &["list", "-H", "-o", "name", "rpool/models"]),
        "rpool/models\n"
    );
    assert_eq!(
        emu.ok(
            "zfs",
            &[
                "get",
                "-H",
                "-p",
                "-o",
                "property,value",
                "phoenix:owner,phoenix:run,mountpoint,compression,phoenix:other",
                "rpool/models"
            ]
        ),
        "phoenix:owner\tphoenix\nphoenix:run\tr1\nmountpoint\t/rpool/models\ncompression\tlz4\nphoenix:other\t-\n"
    );
    let all = emu.ok(
        "zfs",
        &[
            "get",
            "-H",
            "-p",
            "-o",
            "property,value",
            "all",
            "rpool/models",
        ],
    );
    assert!(all.starts_with("type\tfilesystem\ncreation\t"), "{all}");
    assert!(all.contains("\nphoenix:owner\tphoenix\n"));
    assert!(emu.root.join("hostfs/rpool/models").is_dir());

    let o = emu.run("zfs", &["create", "rpool/models"]);
    assert_eq!(
        stderr(&o),
        "cannot create 'rpool/models': dataset already exists\n"
    );
    let o = emu.run("zfs", &["create", "-o", "colour=blue", "rpool/c"]);
    assert_eq!(
        (o.status.code(), stderr(&o)),
        (
            Some(1),
            "cannot create 'rpool/c': invalid property 'colour'\n".into()
        )
    );
    let o = emu.run("zfs", &["get", "-H", "bogus", "rpool"]);
    assert_eq!(o.status.code(), Some(2));

    emu.ok("zfs", &["create", "-p", "rpool/models/x/y"]);
    emu.ok("zfs", &["create", "-p", "rpool/models/x/y"]);
    let o = emu.run("zfs", &["destroy", "rpool/models"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("cannot destroy 'rpool/models': filesystem has children\n"),
        "{}",
        stderr(&o)
    );
    emu.ok("zfs", &["destroy", "-r", "rpool/models"]);
    assert_eq!(
        emu.run("zfs", &["list", "rpool/models/x"]).status.code(),
        Some(1)
    );
    assert_eq!(
        emu.ok("zfs", &["list", "-H", "-o", "name", "rpool"]),
        "rpool\n"
    );
}

#[test]
fn zfspool_rootfs_is_a_dataset() {
    let emu = Emu::new();
    emu.ok(
        "pct",
        &[
            "create",
            "970",
            "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
            "--rootfs",
            "local-zfs:16",
        ],
    );
    assert!(
        emu.conf(970)
            .contains("rootfs: local-zfs:subvol-970-disk-0,size=16G\n")
    );
    assert!(emu.conf(970).contains("ostype: ubuntu\n"));
    assert_eq!(
        emu.ok(
            "zfs",
            &[
                "get",
                "-H",
                "-p",
                "-o",
                "value",
                "refquota",
                "rpool/data/subvol-970-disk-0"
            ]
        ),
        format!("{}\n", 16u64 << 30)
    );
    emu.ok("pct", &["destroy", "970"]);
    assert_eq!(
        emu.run("zfs", &["list", "rpool/data/subvol-970-disk-0"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn nvidia_smi_answers_from_the_fixture() {
    let emu = Emu::new();
    assert_eq!(
        emu.ok(
            "nvidia-smi",
            &[
                "--query-gpu=index,pci.bus_id,uuid,name,memory.total,driver_version",
                "--format=csv,noheader,nounits"
            ]
        ),
        "0, 00000000:00:06.0, GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n\
         1, 00000000:00:07.0, GPU-8d3c5e1a-47b2-4f0e-9a61-2b7e0c9d1f35, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n"
    );
    let l = emu.ok("nvidia-smi", &["-L"]);
    assert_eq!(
        l.lines().next().unwrap(),
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4)"
    );
    let q = emu.ok("nvidia-smi", &["-q"]);
    let minors: Vec<&str> = q
        .lines()
        .filter(|l| l.trim_start().starts_with("Minor Number"))
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(minors, ["0", "1"]);
    assert!(q.contains("Attached GPUs                                          : 2"));
    use std::os::unix::fs::FileTypeExt;
    for (node, _) in [
        ("nvidia0", 0),
        ("nvidia1", 1),
        ("nvidiactl", 255),
        ("nvidia-uvm", 0),
        ("nvidia-uvm-tools", 1),
        ("nvidia-caps/nvidia-cap1", 1),
        ("nvidia-caps/nvidia-cap2", 2),
    ] {
        let m = std::fs::metadata(emu.root.join("dev").join(node)).unwrap();
        assert!(m.file_type().is_char_device() || m.is_file(), "{node}");
    }

    // The settings file can choose the single real GPU.
    let mut s = emu.settings();
    s["gpus"] = "h100x1".into();
    std::fs::write(emu.root.join("emu.json"), s.to_string()).unwrap();
    let one = emu.ok(
        "nvidia-smi",
        &["--query-gpu=index,pci.bus_id", "--format=csv"],
    );
    assert_eq!(one, "index, pci.bus_id\n0, 00000000:00:06.0\n");
    let o = emu.run("nvidia-smi", &["--query-gpu=bogus", "--format=csv"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn device_nodes_carry_the_fixture_numbers() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let emu = Emu::new();
    // phoenix's prepare makes no device node: the emulated host makes its own /dev when
    // it boots on its first call.
    assert!(!emu.root.join("dev").exists());
    emu.ok("pveversion", &[]);
    let m = std::fs::metadata(emu.root.join("dev/nvidia-uvm")).unwrap();
    if m.file_type().is_char_device() {
        let rdev = m.rdev();
        assert_eq!((libc_major(rdev), libc_minor(rdev)), (238, 0));
        assert_eq!(m.permissions().mode() & 0o777, 0o666);
        let cap = std::fs::metadata(emu.root.join("dev/nvidia-caps/nvidia-cap1")).unwrap();
        assert_eq!(cap.permissions().mode() & 0o777, 0o400);
    } else {
        assert_eq!(
            std::fs::read_to_string(emu.root.join("dev/nvidia-uvm")).unwrap(),
            "c 238:0\n"
        );
    }
}

fn libc_major(dev: u64) -> u64 {
    ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)
}

fn libc_minor(dev: u64) -> u64 {
    ((dev >> 12) & 0xffff_ff00) | (dev & 0xff)
}

#[test]
fn prepare_is_idempotent_and_keeps_test_choices() {
    let emu = Emu::new();
    let mut s = emu.settings();
    s["gpus"] = "h100x1".into();
    std::fs::write(emu.root.join("emu.json"), s.to_string()).unwrap();
    let state = emu.root.parent().unwrap().join("state");
    let settings = Settings::resolve_with(&FlagOverrides::default(), &|k| match k {
        "PHOENIX_EMU_ROOT" => Some(emu.root.display().to_string()),
        "PHOENIX_STATE_DIR" => Some(state.display().to_string()),
        _ => None,
    })
    .unwrap();
    emulated::prepare(&settings).unwrap();
    assert_eq!(emu.settings()["gpus"], "h100x1");
    assert!(
        std::fs::read_link(emu.root.join("bin/zfs"))
            .unwrap()
            .ends_with("phoenix-emu")
    );
}

#[test]
fn two_roots_get_different_loopback_prefixes() {
    let a = Emu::new();
    let b = Emu::new();
    assert_ne!(a.prefix(), b.prefix());
    for emu in [&a, &b] {
        let p: Vec<u32> = emu
            .prefix()
            .split('.')
            .map(|x| x.parse().unwrap())
            .collect();
        assert_eq!(p[0], 127);
        assert!((64..=127).contains(&p[1]));
    }
    a.create("980");
    a.create("981");
    a.ok("pct", &["start", "981"]);
    let ip = a.ok(
        "pct",
        &[
            "exec", "981", "--", "ip", "-j", "-4", "addr", "show", "dev", "eth0",
        ],
    );
    assert!(
        ip.contains(&format!("\"local\":\"{}.3\"", a.prefix())),
        "{ip}"
    );
}

#[test]
fn pools_are_the_hosts_settings_and_list_depth_follows_openzfs() {
    let emu = Emu::new();
    assert_eq!(
        emu.settings()["pools"],
        serde_json::Value::Null,
        "default: rpool"
    );
    assert_eq!(
        emu.ok("zfs", &["list", "-H", "-o", "name", "-d", "0"]),
        "rpool\n"
    );
    let emu = Emu::new();
    let mut s = emu.settings();
    s["pools"] = serde_json::json!(["rpool", "tank"]);
    std::fs::write(emu.root.join("emu.json"), s.to_string()).unwrap();
    assert_eq!(
        emu.ok("zfs", &["list", "-H", "-o", "name", "-d", "0"]),
        "rpool\ntank\n"
    );
    emu.ok("zfs", &["create", "-p", "tank/a/b"]);
    assert_eq!(
        emu.ok("zfs", &["list", "-H", "-o", "name", "-d", "1", "tank"]),
        "tank\ntank/a\n"
    );
    assert_eq!(
        emu.ok("zfs", &["list", "-H", "-o", "name", "-r", "tank"]),
        "tank\ntank/a\ntank/a/b\n"
    );
    let o = emu.run("zfs", &["list", "-d", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("x is not an integer\n"),
        "{}",
        stderr(&o)
    );
}

// ---- Storages, templates and an interrupted `pct create` (issue 11 items 5 and 10,
// issue 13 item 5) ----

const UBUNTU: &str = "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst";

#[test]
fn storage_content_lists_the_hosts_templates_and_disks() {
    let emu = Emu::new();
    assert_eq!(
        emu.ok("pvesm", &["list", "local", "--content", "vztmpl"]),
        "Volid                                                    Format  Type      Size VMID\n\
         local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst     tzst    vztmpl    57\n\
         local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst tzst    vztmpl    57\n"
    );
    emu.create("930");
    assert_eq!(
        emu.ok("pvesm", &["list", "local-zfs", "--vmid", "930"]),
        "Volid                       Format  Type            Size VMID\n\
         local-zfs:subvol-930-disk-0 subvol  rootdir   8589934592 930\n"
    );
    assert_eq!(
        emu.ok("pvesm", &["list", "local-zfs", "--vmid", "931"]),
        "Volid Format  Type      Size VMID\n"
    );
    let o = emu.run("pvesm", &["list", "tank"]);
    assert_eq!(
        (o.status.code(), stderr(&o)),
        (Some(255), "storage 'tank' does not exist\n".to_owned())
    );
}

#[test]
fn storages_and_templates_are_the_hosts_settings() {
    let emu = Emu::new();
    let mut s = emu.settings();
    s["pools"] = serde_json::json!(["rpool", "tank"]);
    s["storages"] = serde_json::json!([
        {"id": "local", "type": "dir", "path": "/var/lib/vz", "content": ["vztmpl", "iso"]},
        {"id": "fast", "type": "zfspool", "pool": "tank/ct", "content": ["rootdir", "images"]}
    ]);
    s["templates"] = serde_json::json!(["local:vztmpl/alpine-3.22-default_20250617_amd64.tar.xz"]);
    std::fs::write(emu.root.join("emu.json"), s.to_string()).unwrap();
    let status = emu.ok("pvesm", &["status"]);
    let names: Vec<&str> = status
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(names, ["fast", "local"]);
    assert_eq!(
        emu.ok("pvesm", &["list", "local"]),
        "Volid                                                  Format  Type      Size VMID\n\
         local:vztmpl/alpine-3.22-default_20250617_amd64.tar.xz txz     vztmpl    57\n"
    );
    let alpine = "local:vztmpl/alpine-3.22-default_20250617_amd64.tar.xz";
    emu.ok("pct", &["create", "932", alpine, "--rootfs", "fast:2"]);
    assert!(
        emu.conf(932)
            .contains("\nrootfs: fast:subvol-932-disk-0,size=2G\n")
    );
    assert_eq!(
        emu.ok("zfs", &["list", "-H", "-o", "name", "-r", "tank"]),
        "tank\ntank/ct\ntank/ct/subvol-932-disk-0\n"
    );
    // The default host's names mean nothing here.
    let o = emu.run("pct", &["create", "933", alpine, "--rootfs", "local-zfs:2"]);
    assert_eq!(stderr(&o), "storage 'local-zfs' does not exist\n");
    let o = emu.run("pct", &["create", "933", UBUNTU, "--rootfs", "fast:2"]);
    assert_eq!(
        stderr(&o),
        format!("unable to create CT 933 - can't find file '{UBUNTU}'\n")
    );
}

#[test]
fn a_missing_template_fails_after_the_lock_and_frees_the_volume() {
    let emu = Emu::new();
    let missing = "local:vztmpl/ubuntu-22.04-standard_22.04-1_amd64.tar.zst";
    let o = emu.run(
        "pct",
        &[
            "create",
            "934",
            missing,
            "--rootfs",
            "local-zfs:8",
            "--tags",
            "phoenix",
        ],
    );
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        stderr(&o),
        format!("unable to create CT 934 - can't find file '{missing}'\n")
    );
    assert!(!emu.root.join("etc/pve/lxc/934.conf").exists());
    assert_eq!(
        emu.ok("pvesm", &["list", "local-zfs", "--vmid", "934"]),
        "Volid Format  Type      Size VMID\n"
    );
}

#[test]
fn an_interrupted_create_leaves_lock_create_only_and_destroy_refuses_it() {
    let emu = Emu::new();
    emu.faults(serde_json::json!([{"match": ["pct", "create"], "action": "hang-midway"}]));
    let args = [
        "create",
        "935",
        UBUNTU,
        "--hostname",
        "gpu-a",
        "--rootfs",
        "local-zfs:8",
        "--tags",
        "phoenix;phoenix-run-r1",
    ];
    let mut hung = emu.spawn_hung("pct", &args);
    assert_eq!(emu.log().last().unwrap()["fault"], "hang-midway");
    hung.kill().unwrap();
    hung.wait().unwrap();
    emu.faults(serde_json::json!([]));
    // Only PVE's create lock: no hostname, no tags; the volume is allocated.
    assert_eq!(emu.conf(935), "lock: create\n");
    assert_eq!(
        emu.ok("pvesm", &["list", "local-zfs", "--vmid", "935"]),
        "Volid                       Format  Type            Size VMID\n\
         local-zfs:subvol-935-disk-0 subvol  rootdir   8589934592 935\n"
    );
    let o = emu.run("pct", &["destroy", "935"]);
    assert_eq!(
        (o.status.code(), stderr(&o)),
        (Some(255), "CT is locked (create)\n".to_owned())
    );
    assert_eq!(emu.conf(935), "lock: create\n");
    let o = emu.run("pct", &["set", "935", "--memory", "1024"]);
    assert_eq!(stderr(&o), "CT is locked (create)\n");
    emu.ok("pct", &["unlock", "935"]);
    assert_eq!(emu.conf(935), "");
    let o = emu.run("pct", &["unlock", "935"]);
    assert_eq!(stderr(&o), "no lock found trying to remove any lock\n");
    // The empty config names no volume: destroy leaves it, unless asked for unreferenced
    // disks; `pvesm free` removes it by name.
    emu.ok("pct", &["destroy", "935", "--purge", "1"]);
    assert!(!emu.root.join("etc/pve/lxc/935.conf").exists());
    assert_eq!(
        emu.ok("pvesm", &["list", "local-zfs", "--vmid", "935"]),
        "Volid                       Format  Type            Size VMID\n\
         local-zfs:subvol-935-disk-0 subvol  images    8589934592 935\n"
    );
    assert_eq!(
        emu.ok("pvesm", &["free", "local-zfs:subvol-935-disk-0"]),
        "Removed volume 'local-zfs:subvol-935-disk-0'\n"
    );
    assert_eq!(
        emu.run("zfs", &["list", "rpool/data/subvol-935-disk-0"])
            .status
            .code(),
        Some(1)
    );
}

#[test]
fn destroy_unreferenced_disks_and_the_next_free_disk_name() {
    let emu = Emu::new();
    // An orphan disk of 936 (its container is long gone): the next create takes disk-1.
    emu.ok(
        "zfs",
        &[
            "create",
            "-o",
            "refquota=1G",
            "rpool/data/subvol-936-disk-0",
        ],
    );
    emu.ok("pct", &["create", "936", UBUNTU, "--rootfs", "local-zfs:8"]);
    assert!(
        emu.conf(936)
            .contains("\nrootfs: local-zfs:subvol-936-disk-1,size=8G\n")
    );
    emu.ok("pct", &["destroy", "936"]);
    assert_eq!(
        emu.ok(
            "zfs",
            &["list", "-H", "-o", "name", "-d", "1", "rpool/data"]
        ),
        "rpool/data\nrpool/data/subvol-936-disk-0\n"
    );
    emu.ok("pct", &["create", "936", UBUNTU, "--rootfs", "local-zfs:8"]);
    emu.ok(
        "pct",
        &["destroy", "936", "--destroy-unreferenced-disks", "1"],
    );
    assert_eq!(
        emu.ok(
            "zfs",
            &["list", "-H", "-o", "name", "-d", "1", "rpool/data"]
        ),
        "rpool/data\n"
    );
}

#[test]
fn user_properties_inherit_and_get_s_local_shows_only_what_a_dataset_sets() {
    let emu = Emu::new();
    emu.ok(
        "zfs",
        &[
            "create",
            "-o",
            "phoenix:owner=phoenix",
            "-o",
            "phoenix:run=r1",
            "rpool/p",
        ],
    );
    emu.ok(
        "zfs",
        &["create", "-o", "compression=lz4", "rpool/p/theirs"],
    );
    let get = |args: &[&str]| emu.ok("zfs", &[&["get", "-H"], args].concat());
    assert_eq!(
        get(&[
            "-o",
            "name,property,value,source",
            "phoenix:owner",
            "rpool/p",
            "rpool/p/theirs"
        ]),
        "rpool/p\tphoenix:owner\tphoenix\tlocal\n\
         rpool/p/theirs\tphoenix:owner\tphoenix\tinherited from rpool/p\n"
    );
    assert_eq!(
        get(&[
            "-s",
            "local",
            "-o",
            "property,value",
            "all",
            "rpool/p/theirs"
        ]),
        "compression\tlz4\n"
    );
    assert_eq!(
        get(&["-s", "local", "-o", "property,value", "all", "rpool/p"]),
        "phoenix:owner\tphoenix\nphoenix:run\tr1\n"
    );
    assert_eq!(
        get(&[
            "-s",
            "inherited",
            "-o",
            "property,value",
            "phoenix:owner,phoenix:run",
            "rpool/p/theirs"
        ]),
        "phoenix:owner\tphoenix\nphoenix:run\tr1\n"
    );
    assert_eq!(
        get(&[
            "-s",
            "none",
            "-o",
            "property,value",
            "phoenix:other",
            "rpool/p"
        ]),
        "phoenix:other\t-\n"
    );
    let o = emu.run("zfs", &["get", "-s", "mine", "all", "rpool/p"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("invalid source 'mine'\n"),
        "{}",
        stderr(&o)
    );
    // `zfs inherit` drops the local value: the child of a child inherits from rpool/p.
    emu.ok("zfs", &["set", "phoenix:owner=them", "rpool/p/theirs"]);
    assert_eq!(
        get(&["-o", "value,source", "phoenix:owner", "rpool/p/theirs"]),
        "them\tlocal\n"
    );
    emu.ok("zfs", &["inherit", "phoenix:owner", "rpool/p/theirs"]);
    assert_eq!(
        get(&["-o", "value,source", "phoenix:owner", "rpool/p/theirs"]),
        "phoenix\tinherited from rpool/p\n"
    );
    let o = emu.run("zfs", &["inherit", "used", "rpool/p"]);
    assert_eq!(o.status.code(), Some(2));
}

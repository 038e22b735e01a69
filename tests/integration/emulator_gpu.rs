//! The emulated host's GPU side (issue 13, DESIGN.md §8 and §11): the emulator, not phoenix,
//! makes `/dev` and `/sys`; the lazy NVIDIA nodes disappear on a reboot and come back only
//! through `nvidia-modprobe` (run by an enabled unit); `pct start` refuses a missing `devN`
//! path as PVE does; a GPU is visible inside a container only when its node is passed in
//! *and* the device cgroup of the hierarchy the host booted with allows it; a GPU whose
//! minor number differs from its index is seen through its own node.

use std::process::Output;

use crate::emulator::{Emu, stderr, stdout};

/// The host's nodes that `nvidia-modprobe` makes, not the boot.
const LAZY: [&str; 4] = [
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-caps/nvidia-cap1",
    "nvidia-caps/nvidia-cap2",
];

fn exists(emu: &Emu, rel: &str) -> bool {
    emu.root.join("dev").join(rel).symlink_metadata().is_ok()
}

/// Change the emulated host's settings (they take effect at its next boot).
fn set(emu: &Emu, key: &str, value: serde_json::Value) {
    let mut s = emu.settings();
    s[key] = value;
    std::fs::write(emu.root.join("emu.json"), s.to_string()).unwrap();
}

fn reboot(emu: &Emu) {
    emu.ok("systemctl", &["reboot"]);
}

fn boot_log(emu: &Emu) -> String {
    std::fs::read_to_string(emu.root.join("var/log/emu-boot.log")).unwrap_or_default()
}

/// A oneshot unit of the host running `lines` as `ExecStart=`.
fn write_unit(emu: &Emu, name: &str, before_guests: bool, lines: &[String]) {
    let mut text = String::from("[Unit]\nDescription=test\n");
    if before_guests {
        text.push_str("Before=pve-guests.service\n");
    }
    text.push_str("\n[Service]\nType=oneshot\nRemainAfterExit=yes\n");
    for l in lines {
        text.push_str(&format!("ExecStart={l}\n"));
    }
    text.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    std::fs::write(emu.root.join("etc/systemd/system").join(name), text).unwrap();
}

fn modprobe(emu: &Emu) -> String {
    emu.root.join("bin/nvidia-modprobe").display().to_string()
}

fn append_conf(emu: &Emu, vmid: u32, lines: &str) {
    let path = emu.root.join(format!("etc/pve/lxc/{vmid}.conf"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(lines);
    std::fs::write(&path, text).unwrap();
}

/// Put the driver userspace of the host's version into container `vmid`.
fn userspace(emu: &Emu, vmid: &str) {
    let src = emu.root.join("userspace.tmp");
    std::fs::write(&src, "phoenix-emu nvidia-smi 580.159.04\n").unwrap();
    emu.ok(
        "pct",
        &[
            "push",
            vmid,
            src.to_str().unwrap(),
            "/usr/bin/nvidia-smi",
            "--perms",
            "0755",
        ],
    );
}

/// `nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader` inside `vmid`.
fn smi(emu: &Emu, vmid: &str) -> Output {
    emu.run(
        "pct",
        &[
            "exec",
            vmid,
            "--",
            "nvidia-smi",
            "--query-gpu=pci.bus_id",
            "--format=csv,noheader",
        ],
    )
}

/// A running privileged container `vmid` with the driver userspace and `lines` in its config.
fn gpu_ct(emu: &Emu, vmid: &str, lines: &str) {
    emu.create(vmid);
    append_conf(emu, vmid.parse().unwrap(), lines);
    emu.ok("pct", &["start", vmid]);
    userspace(emu, vmid);
}

const BIND: &str = "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\nlxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file\n";
const NVML_DENIED: &str = "Failed to initialize NVML: Unknown Error\n";
const BUS0: &str = "00000000:00:06.0";
const BUS1: &str = "00000000:00:07.0";

#[test]
fn dev_and_sys_are_made_by_the_emulated_host_not_by_phoenix() {
    let emu = Emu::new();
    assert!(!emu.root.join("dev").exists(), "prepare made /dev");
    assert!(!emu.root.join("sys").exists(), "prepare made /sys");
    emu.ok("pveversion", &[]);
    for n in ["nvidia0", "nvidia1", "nvidiactl"]
        .iter()
        .chain(LAZY.iter())
    {
        assert!(exists(&emu, n), "{n} after the first boot");
    }
    assert!(emu.root.join("sys/fs/cgroup/cgroup.controllers").is_file());
    // Boot is not a received command: argv.log has the one call.
    assert_eq!(emu.log().len(), 1);
}

#[test]
fn a_reboot_drops_the_lazy_nodes_and_an_enabled_unit_makes_them_again() {
    let emu = Emu::new();
    emu.ok("pveversion", &[]);
    reboot(&emu);
    for n in LAZY {
        assert!(!exists(&emu, n), "{n} survived the reboot");
    }
    assert!(exists(&emu, "nvidia1") && exists(&emu, "nvidiactl"));

    let unit = "nodes.service";
    write_unit(&emu, unit, true, &[format!("{} -u -c=0", modprobe(&emu))]);
    let o = emu.run("systemctl", &["is-enabled", unit]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(1), "disabled\n")
    );
    let o = emu.run("systemctl", &["enable", "--now", unit]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(
        "Created symlink /etc/systemd/system/multi-user.target.wants/nodes.service → /etc/systemd/system/nodes.service."
    ));
    assert!(exists(&emu, "nvidia-uvm") && exists(&emu, "nvidia-uvm-tools"));
    assert_eq!(emu.ok("systemctl", &["is-active", unit]), "active\n");

    reboot(&emu);
    assert!(exists(&emu, "nvidia-uvm") && exists(&emu, "nvidia-uvm-tools"));
    assert!(
        !exists(&emu, "nvidia-caps/nvidia-cap1"),
        "no unit made the caps"
    );
    assert!(
        boot_log(&emu).contains("unit nodes.service: started"),
        "{}",
        boot_log(&emu)
    );

    emu.ok("systemctl", &["disable", "--now", unit]);
    assert_eq!(
        emu.run("systemctl", &["is-active", unit]).status.code(),
        Some(3)
    );
    reboot(&emu);
    assert!(!exists(&emu, "nvidia-uvm"));
    // A unit naming a program the host does not have fails at its exec step.
    write_unit(
        &emu,
        "bad.service",
        false,
        &["/usr/bin/nvidia-modprobe -u -c=0".into()],
    );
    let o = emu.run("systemctl", &["start", "bad.service"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("status=203/EXEC"), "{}", stderr(&o));
}

#[test]
fn pct_start_refuses_a_missing_dev_path_and_onboot_follows_the_unit_order() {
    let emu = Emu::new();
    emu.create("930"); // onboot: 1
    emu.ok(
        "pct",
        &[
            "set",
            "930",
            "--dev0",
            "/dev/nvidia0",
            "--dev1",
            "/dev/nvidia-uvm",
        ],
    );
    emu.ok("pct", &["start", "930"]);
    reboot(&emu);
    // pve-container's vm_start → update_lxc_config → get_device_mode_and_rdev.
    let o = emu.run("pct", &["start", "930"]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(stderr(&o), "Device /dev/nvidia-uvm does not exist\n");
    assert!(
        boot_log(&emu)
            .contains("pve-guests.service: CT 930: Device /dev/nvidia-uvm does not exist"),
        "{}",
        boot_log(&emu)
    );

    // A unit that runs after the guests comes too late for an onboot container…
    write_unit(
        &emu,
        "late.service",
        false,
        &[format!("{} -u -c=0", modprobe(&emu))],
    );
    emu.ok("systemctl", &["enable", "late.service"]);
    reboot(&emu);
    assert_eq!(emu.ok("pct", &["status", "930"]), "status: stopped\n");
    // …though by then the node is there and a manual start works.
    emu.ok("pct", &["start", "930"]);
    emu.ok("systemctl", &["disable", "late.service"]);

    // Ordered before pve-guests.service, it brings the container up at boot.
    write_unit(
        &emu,
        "early.service",
        true,
        &[format!("{} -u -c=0", modprobe(&emu))],
    );
    emu.ok("systemctl", &["enable", "early.service"]);
    reboot(&emu);
    assert_eq!(emu.ok("pct", &["status", "930"]), "status: running\n");

    // A bind entry without `optional` whose source is missing stops LXC too.
    emu.create("931");
    emu.ok("pct", &["set", "931", "--onboot", "0"]);
    append_conf(
        &emu,
        931,
        "lxc.mount.entry: /dev/nvidia-caps/nvidia-cap1 dev/nvidia-caps/nvidia-cap1 none bind,create=file\n",
    );
    let o = emu.run("pct", &["start", "931"]);
    assert_eq!(o.status.code(), Some(255));
    assert!(
        stderr(&o).contains("Failed to mount \"/dev/nvidia-caps/nvidia-cap1\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn nvidia_modprobe_makes_the_nodes_its_options_name() {
    let emu = Emu::new();
    emu.ok("pveversion", &[]);
    reboot(&emu);
    emu.ok("nvidia-modprobe", &["-u", "-c", "0"]);
    assert!(exists(&emu, "nvidia-uvm") && exists(&emu, "nvidia-uvm-tools"));
    emu.ok(
        "nvidia-modprobe",
        &["-f", "/proc/driver/nvidia/capabilities/mig/config"],
    );
    assert!(exists(&emu, "nvidia-caps/nvidia-cap1") && !exists(&emu, "nvidia-caps/nvidia-cap2"));
    emu.ok("nvidia-modprobe", &["-c=3"]);
    assert!(exists(&emu, "nvidia3"));
    let o = emu.run("nvidia-modprobe", &["--bogus"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("Invalid commandline"));
    // Without a GPU the driver does not load and nothing is made.
    set(&emu, "gpus", "none".into());
    reboot(&emu);
    assert_eq!(
        emu.run("nvidia-modprobe", &["-u", "-c=0"]).status.code(),
        Some(1)
    );
    assert!(!exists(&emu, "nvidia-uvm") && !exists(&emu, "nvidia0"));
}

#[test]
fn minors_and_mig_come_from_the_emulated_hosts_settings() {
    let emu = Emu::new();
    emu.ok("pveversion", &[]);
    set(&emu, "gpu_minors", serde_json::json!([2, 0]));
    set(&emu, "mig", true.into());
    reboot(&emu);
    assert!(exists(&emu, "nvidia2") && exists(&emu, "nvidia0") && !exists(&emu, "nvidia1"));
    let q = emu.ok("nvidia-smi", &["-q"]);
    let minors: Vec<&str> = q
        .lines()
        .filter(|l| l.trim_start().starts_with("Minor Number"))
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(minors, ["2", "0"]);
    assert_eq!(
        q.matches(
            "    MIG Mode\n        Current                                        : Enabled\n"
        )
        .count(),
        2
    );
    assert_eq!(
        emu.ok(
            "nvidia-smi",
            &[
                "--query-gpu=index,mig.mode.current",
                "--format=csv,noheader"
            ]
        ),
        "0, Enabled\n1, Enabled\n"
    );
}

#[test]
fn a_gpu_is_visible_only_with_its_node_and_a_cgroup_rule_of_the_booted_hierarchy() {
    let emu = Emu::new();
    emu.ok("pveversion", &[]);
    // Nodes passed, no allow rule: what the real H100 showed (DESIGN.md §8).
    gpu_ct(&emu, "940", BIND);
    let o = smi(&emu, "940");
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(255), NVML_DENIED)
    );
    // A v2 rule on a v2 host: visible.
    gpu_ct(
        &emu,
        "941",
        &format!("lxc.cgroup2.devices.allow: c 195:* rwm\n{BIND}"),
    );
    assert_eq!(
        emu.ok(
            "pct",
            &[
                "exec",
                "941",
                "--",
                "nvidia-smi",
                "--query-gpu=pci.bus_id",
                "--format=csv,noheader"
            ]
        ),
        format!("{BUS0}\n")
    );
    // The rule without the node: not visible.
    gpu_ct(&emu, "942", "lxc.cgroup2.devices.allow: c 195:* rwm\n");
    assert_eq!(smi(&emu, "942").status.code(), Some(9));
    // A v1 rule on a v2 host is ignored.
    gpu_ct(
        &emu,
        "943",
        &format!("lxc.cgroup.devices.allow: c 195:* rwm\n{BIND}"),
    );
    assert_eq!(stdout(&smi(&emu, "943")), NVML_DENIED);
    // devN entries: PVE adds a cgroup2 rule per device.
    emu.create("944");
    emu.ok(
        "pct",
        &[
            "set",
            "944",
            "--dev0",
            "/dev/nvidia1",
            "--dev1",
            "/dev/nvidiactl",
        ],
    );
    emu.ok("pct", &["start", "944"]);
    userspace(&emu, "944");
    assert_eq!(stdout(&smi(&emu, "944")), format!("{BUS1}\n"));

    // The same host booted with cgroup v1: only v1 rules count, and devN's cgroup2 rules
    // no longer open anything.
    set(&emu, "cgroup", "v1".into());
    reboot(&emu);
    assert!(!emu.root.join("sys/fs/cgroup/cgroup.controllers").exists());
    assert!(emu.root.join("sys/fs/cgroup/devices").is_dir());
    // `onboot: 1`: pve-guests.service started them again.
    for vmid in ["941", "943", "944"] {
        assert_eq!(emu.ok("pct", &["status", vmid]), "status: running\n");
    }
    assert_eq!(stdout(&smi(&emu, "941")), NVML_DENIED);
    assert_eq!(stdout(&smi(&emu, "943")), format!("{BUS0}\n"));
    assert_eq!(stdout(&smi(&emu, "944")), NVML_DENIED);
}

#[test]
fn a_gpu_whose_minor_differs_from_its_index_is_seen_through_its_own_node() {
    let emu = Emu::new();
    emu.ok("pveversion", &[]);
    set(&emu, "gpu_minors", serde_json::json!([1, 0]));
    reboot(&emu);
    // /dev/nvidia1 is GPU 0 (bus 06.0) here.
    gpu_ct(
        &emu,
        "950",
        "lxc.cgroup2.devices.allow: c 195:* rwm\nlxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file\nlxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file\n",
    );
    assert_eq!(stdout(&smi(&emu, "950")), format!("{BUS0}\n"));
    // Denying that node's minor hides it again.
    append_conf(&emu, 950, "lxc.cgroup2.devices.deny: c 195:1 rwm\n");
    let o = smi(&emu, "950");
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(6), "No devices were found\n")
    );
}

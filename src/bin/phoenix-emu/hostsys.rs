//! The emulated host below PVE: its boot, its `/dev` and `/sys`, its systemd (`systemctl`)
//! and `nvidia-modprobe`. phoenix writes none of this: the kernel, udev and systemd of a
//! real host do, so the emulator does.
//!
//! - **Boot.** The first call on a root boots the host (`run/emu-booted` marks it). Every
//!   boot makes the kernel's `/proc` and `/sys/class/net` ([`crate::kernel`]), mounts `/sys/fs/cgroup` as the settings' `cgroup` says (v2: a cgroup2 mount whose
//!   root holds `cgroup.controllers`; v1: the device controller at `sys/fs/cgroup/devices`,
//!   cgroup2 only at `sys/fs/cgroup/unified`, as a host booted with
//!   `systemd.unified_cgroup_hierarchy=0`), and creates `/dev/nvidia<minor>` for each GPU
//!   and `/dev/nvidiactl` (the driver is loaded at boot). Decision: the *first* boot also
//!   creates the lazy nodes `nvidia-uvm`, `nvidia-uvm-tools` and `nvidia-caps/*`, because the
//!   H100 host the fixture was captured on had them (something had run CUDA since its boot);
//!   a later boot does not: they appear only when `nvidia-modprobe` makes them
//!   (NVIDIA/nvidia-modprobe `nvidia-modprobe.c`, `modprobe-utils/nvidia-modprobe-utils.c`
//!   `nvidia_uvm_mknod`, `nvidia_cap_mknod`, at 610.43.03 = a9556df).
//!   Numbers and modes are the fixture's (`tests/fixtures/gpu/h100-driver580/facts.txt`:
//!   195 nvidia, 238 nvidia-uvm, 241 nvidia-caps; `nvidia-cap1` 0400, `nvidia-cap2` 0444).
//!   A node is made with `mknod`; where that is refused (no `CAP_MKNOD`) it becomes the
//!   documented stand-in, a regular file holding `c MAJOR:MINOR\n`.
//! - **Units.** Unit files live in `etc/systemd/system/`; a unit is enabled when its
//!   `[Install] WantedBy=` target's `.wants/` directory links to it, as `systemctl enable`
//!   makes it. At boot the enabled units ordered `Before=pve-guests.service` run first, then
//!   `pve-guests.service` starts every container with `onboot: 1` (in vmid order, through
//!   `pct start`'s own checks), then the other enabled units. Only `Type=oneshot` units are
//!   run (phoenix writes no other kind to the host); each `ExecStart=` runs in order, and a
//!   program is found only among the emulated host's tools (`$ROOT/bin/<tool>`), else it
//!   fails as systemd's exec step does (status 203/EXEC). What happened at each boot is
//!   appended to `var/log/emu-boot.log` (one line per unit or container).
//! - **`systemctl`** (`man systemctl`, systemd 252): `daemon-reload`, `enable [--now]`
//!   (which "implicitly reloads the system manager configuration"), `disable [--now]`,
//!   `is-enabled`, `is-active`, `start`, `restart`, `stop` (a unit's state since boot is a
//!   file under `run/systemd/units/`, none when inactive), and `reboot`, which shuts the
//!   host down (every container stops, its processes end, `/run` state and every NVIDIA
//!   node go) and boots it again before returning.
//! - **`nvidia-modprobe`** (option table `option-table.h`, parsed by `nvgetopt`, which
//!   accepts `-c 0` and `-c=0`): `-c N` makes `/dev/nvidiaN` (`N` = 255: `/dev/nvidiactl`),
//!   `-u -c N` makes `/dev/nvidia-uvm` (minor N) and `/dev/nvidia-uvm-tools` (N+1), `-f
//!   /proc/driver/nvidia/capabilities/mig/{config,monitor}` makes `nvidia-caps/nvidia-cap1`
//!   and `nvidia-cap2`. Without a GPU (driver not loaded) the module cannot load: exit 1.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::out::Out;
use crate::root::{CgroupMode, Root, RootError};

/// The major numbers of the fixture host (`/proc/devices`).
const NVIDIA_MAJOR: u64 = 195;
const UVM_MAJOR: u64 = 238;
const CAPS_MAJOR: u64 = 241;

/// The pseudo unit whose start is PVE's start of `onboot` guests.
pub const PVE_GUESTS: &str = "pve-guests.service";

/// One device node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    rel: String,
    major: u64,
    minor: u64,
    mode: u32,
}

fn node(rel: impl Into<String>, major: u64, minor: u64, mode: u32) -> Node {
    Node {
        rel: rel.into(),
        major,
        minor,
        mode,
    }
}

/// The nodes a loaded driver has at boot: one per GPU (by minor) and the control node.
fn boot_nodes(root: &Root) -> Vec<Node> {
    let gpus = crate::nvidia::gpus(&root.settings);
    if gpus.is_empty() {
        return Vec::new();
    }
    let mut v: Vec<Node> = gpus
        .iter()
        .map(|g| {
            node(
                format!("nvidia{}", g.minor),
                NVIDIA_MAJOR,
                u64::from(g.minor),
                0o666,
            )
        })
        .collect();
    v.push(node("nvidiactl", NVIDIA_MAJOR, 255, 0o666));
    v
}

/// The nodes only `nvidia-modprobe` makes (present at the first boot, see the module docs).
fn lazy_nodes() -> Vec<Node> {
    vec![
        node("nvidia-uvm", UVM_MAJOR, 0, 0o666),
        node("nvidia-uvm-tools", UVM_MAJOR, 1, 0o666),
        node("nvidia-caps/nvidia-cap1", CAPS_MAJOR, 1, 0o400),
        node("nvidia-caps/nvidia-cap2", CAPS_MAJOR, 2, 0o444),
    ]
}

/// Make one node under `$ROOT/dev` (a character device, or the stand-in file).
fn make_node(root: &Root, n: &Node) -> Result<(), RootError> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    use std::os::unix::fs::PermissionsExt;
    let path = root.join("dev").join(&n.rel);
    if path.symlink_metadata().is_ok() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| RootError::io("create", dir, e))?;
    }
    match mknod(
        &path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(n.mode),
        makedev(n.major, n.minor),
    ) {
        // mknod applies the umask; set the mode exactly.
        Ok(()) => std::fs::set_permissions(&path, std::fs::Permissions::from_mode(n.mode))
            .map_err(|e| RootError::io("set the mode of", &path, e)),
        Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(nix::errno::Errno::EPERM | nix::errno::Errno::EACCES) => {
            std::fs::write(&path, format!("c {}:{}\n", n.major, n.minor))
                .map_err(|e| RootError::io("write the device stand-in", &path, e))
        }
        Err(e) => Err(RootError::io("mknod", &path, e.into())),
    }
}

/// The `(major, minor)` of the host's device node `path` (`/dev/…`), `None` when absent.
pub fn host_node(root: &Root, path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let rel = path
        .strip_prefix("/dev/")
        .filter(|r| !r.split('/').any(|c| c == ".." || c.is_empty()))?;
    let p = root.join("dev").join(rel);
    let m = std::fs::metadata(&p).ok()?;
    if m.file_type().is_char_device() {
        let rdev = m.rdev();
        return Some((nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev)));
    }
    if m.is_file() {
        let text = std::fs::read_to_string(&p).ok()?;
        let (ma, mi) = text.trim().strip_prefix("c ")?.split_once(':')?;
        return Some((ma.parse().ok()?, mi.parse().ok()?));
    }
    None
}

/// Boot the host unless it is up (the first call on a fresh root).
pub fn ensure_booted(root: &Root) -> Result<(), RootError> {
    let marker = root.join("run/emu-booted");
    if marker.exists() {
        return Ok(());
    }
    let _lock = root.lock()?;
    if marker.exists() {
        return Ok(());
    }
    mount_cgroup(root)?;
    crate::kernel::boot(root)?;
    let base = boot_nodes(root);
    if !base.is_empty() {
        for n in base.iter().chain(lazy_nodes().iter()) {
            make_node(root, n)?;
        }
    }
    crate::root::atomic_write(&marker, b"1\n")
}

/// `/sys/fs/cgroup` as the settings say (rebuilt at every boot).
fn mount_cgroup(root: &Root) -> Result<(), RootError> {
    let cg = root.join("sys/fs/cgroup");
    if cg.exists() {
        std::fs::remove_dir_all(&cg).map_err(|e| RootError::io("remove", &cg, e))?;
    }
    let controllers = "cpuset cpu io memory hugetlb pids rdma misc\n";
    let (dir, file) = match root.settings.cgroup {
        CgroupMode::V2 => (cg.clone(), cg.join("cgroup.controllers")),
        CgroupMode::V1 => {
            let devices = cg.join("devices");
            std::fs::create_dir_all(&devices).map_err(|e| RootError::io("create", &devices, e))?;
            std::fs::write(devices.join("devices.list"), "a *:* rwm\n")
                .map_err(|e| RootError::io("write", &devices, e))?;
            (cg.join("unified"), cg.join("unified/cgroup.controllers"))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| RootError::io("create", &dir, e))?;
    std::fs::write(&file, controllers).map_err(|e| RootError::io("write", &file, e))
}

/// Append one line to the boot log.
fn boot_log(root: &Root, line: &str) {
    let path = root.join("var/log/emu-boot.log");
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    {
        let _ = writeln!(f, "{line}");
    }
}

/// Every container id of the host.
fn container_ids(root: &Root) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(root.join("etc/pve/lxc"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".conf")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Shut the host down and boot it again.
fn reboot(root: &Root) -> Result<(), RootError> {
    boot_log(root, "-- reboot --");
    for vmid in container_ids(root) {
        if let Err(m) = crate::pct::stop_for_shutdown(root, vmid) {
            boot_log(root, &format!("shutdown: CT {vmid}: {m}"));
        }
    }
    {
        let _lock = root.lock()?;
        for rel in ["run/systemd", "run/emu-booted"] {
            let p = root.join(rel);
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = r {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(RootError::io("remove", &p, e));
                }
            }
        }
        // devtmpfs starts empty: every NVIDIA node goes with the old boot.
        let dev = root.join("dev");
        if let Ok(entries) = std::fs::read_dir(&dev) {
            for e in entries.flatten() {
                if !e.file_name().to_string_lossy().starts_with("nvidia") {
                    continue;
                }
                let p = e.path();
                let r = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                r.map_err(|e| RootError::io("remove", &p, e))?;
            }
        }
        mount_cgroup(root)?;
        crate::kernel::boot(root)?;
        for n in boot_nodes(root) {
            make_node(root, &n)?;
        }
        crate::root::atomic_write(&root.join("run/emu-booted"), b"1\n")?;
    }
    // systemd: the units ordered before pve-guests, the guests, then the rest.
    let enabled = enabled_units(root);
    let (before, after): (Vec<&Unit>, Vec<&Unit>) = enabled
        .iter()
        .partition(|u| u.before.iter().any(|b| b == PVE_GUESTS));
    for u in before {
        let line = match start_unit(root, u) {
            Ok(()) => format!("unit {}: started", u.name),
            Err(m) => format!("unit {}: failed: {m}", u.name),
        };
        boot_log(root, &line);
    }
    for vmid in container_ids(root) {
        let onboot = crate::container::load_conf(root, vmid)
            .ok()
            .flatten()
            .is_some_and(|c| c.get("onboot") == Some("1"));
        if !onboot {
            continue;
        }
        let line = match crate::pct::start_for_boot(root, vmid) {
            Ok(()) => format!("{PVE_GUESTS}: CT {vmid}: started"),
            Err(m) => format!("{PVE_GUESTS}: CT {vmid}: {}", m.replace('\n', " | ")),
        };
        boot_log(root, &line);
    }
    for u in after {
        let line = match start_unit(root, u) {
            Ok(()) => format!("unit {}: started", u.name),
            Err(m) => format!("unit {}: failed: {m}", u.name),
        };
        boot_log(root, &line);
    }
    Ok(())
}

/// A unit file of the host, as far as the emulator reads it.
#[derive(Debug, Clone, Default)]
struct Unit {
    name: String,
    kind: String,
    remain: bool,
    exec_start: Vec<String>,
    before: Vec<String>,
    wanted_by: Vec<String>,
}

fn unit_dir(root: &Root) -> PathBuf {
    root.join("etc/systemd/system")
}

/// Parse a unit file (`[Section]` headers, `Key=Value` lines, `#`/`;` comments).
fn parse_unit(name: &str, text: &str) -> Unit {
    let mut u = Unit {
        name: name.to_owned(),
        kind: "simple".into(),
        ..Unit::default()
    };
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if l.starts_with('[') {
            section = l.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match (section.as_str(), k) {
            ("Unit", "Before") => u.before.extend(v.split_whitespace().map(str::to_owned)),
            ("Service", "Type") => u.kind = v.to_owned(),
            ("Service", "RemainAfterExit") => u.remain = matches!(v, "yes" | "true" | "1" | "on"),
            ("Service", "ExecStart") => u.exec_start.push(v.to_owned()),
            ("Install", "WantedBy") => u.wanted_by.extend(v.split_whitespace().map(str::to_owned)),
            _ => {}
        }
    }
    u
}

fn load_unit(root: &Root, name: &str) -> Option<Unit> {
    let text = std::fs::read_to_string(unit_dir(root).join(name)).ok()?;
    Some(parse_unit(name, &text))
}

/// Whether a `<target>.wants/` directory links to `name`.
fn is_enabled(root: &Root, name: &str) -> bool {
    std::fs::read_dir(unit_dir(root))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wants"))
        .any(|e| e.path().join(name).symlink_metadata().is_ok())
}

/// Every enabled unit, by name.
fn enabled_units(root: &Root) -> Vec<Unit> {
    let mut names: Vec<String> = std::fs::read_dir(unit_dir(root))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service") && is_enabled(root, n))
        .collect();
    names.sort();
    names.iter().filter_map(|n| load_unit(root, n)).collect()
}

/// Split an `ExecStart=` value into its prefix flags and argv (systemd.service(5),
/// "Command lines": whitespace-separated words, `"…"`/`'…'` quoting, `\` escapes).
fn split_command(line: &str) -> (bool, Vec<String>) {
    let mut s = line.trim_start();
    let mut ignore_failure = false;
    while let Some(c) = s.chars().next() {
        match c {
            '-' => ignore_failure = true,
            '@' | ':' | '+' | '!' => {}
            _ => break,
        }
        s = &s[1..];
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    (ignore_failure, words)
}

/// `run/systemd/units/<unit>`: the unit's state since boot (`active` or `failed`); an
/// inactive unit has no file.
fn state_path(root: &Root, name: &str) -> PathBuf {
    root.join("run/systemd/units").join(name)
}

fn set_state(root: &Root, name: &str, state: &str) -> Result<(), RootError> {
    let path = state_path(root, name);
    if state == "inactive" {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RootError::io("remove", &path, e))
            }
            _ => Ok(()),
        };
    }
    crate::root::atomic_write(&path, format!("{state}\n").as_bytes())
}

fn get_state(root: &Root, name: &str) -> String {
    std::fs::read_to_string(state_path(root, name))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "inactive".into())
}

/// Run a oneshot unit's commands; `Err` carries the reason it failed.
fn start_unit(root: &Root, u: &Unit) -> Result<(), String> {
    if u.kind != "oneshot" {
        return Err(format!(
            "phoenix-emu: only Type=oneshot host units are emulated, {} is {}",
            u.name, u.kind
        ));
    }
    let bin = root.join("bin");
    for line in &u.exec_start {
        let (ignore, argv) = split_command(line);
        let Some(prog) = argv.first() else {
            continue;
        };
        let tool = Path::new(prog)
            .strip_prefix(&bin)
            .ok()
            .and_then(|t| t.to_str())
            .filter(|t| crate::TOOLS.contains(t) && !t.contains('/'));
        let code = match tool {
            Some(t) => {
                let mut out = Out::default();
                crate::run_tool(root, t, &argv[1..], &[], &mut out)
            }
            None => {
                // systemd's exec step: "Failed to locate executable …" (status 203/EXEC).
                203
            }
        };
        if code != 0 && !ignore {
            let _ = set_state(root, &u.name, "failed");
            return Err(if code == 203 {
                format!(
                    "{prog}: Failed at step EXEC spawning {prog}: No such file or directory (status=203/EXEC)"
                )
            } else {
                format!("{prog} exited with status {code}")
            });
        }
    }
    let state = if u.remain { "active" } else { "inactive" };
    set_state(root, &u.name, state).map_err(|e| e.to_string())
}

/// `systemctl …` on the host.
pub fn systemctl(root: &Root, args: &[String], out: &mut Out) -> i32 {
    let mut now = false;
    let mut quiet = false;
    let mut words: Vec<&str> = Vec::new();
    for a in args {
        match a.as_str() {
            "--now" => now = true,
            "-q" | "--quiet" => quiet = true,
            "--no-pager" | "--no-block" => {}
            s if s.starts_with('-') => {
                out.err(format!("systemctl: unrecognized option '{s}'\n"));
                return 1;
            }
            s => words.push(s),
        }
    }
    let Some((verb, units)) = words.split_first() else {
        out.err("phoenix-emu: systemctl needs a command\n");
        return 1;
    };
    let units: Vec<String> = units
        .iter()
        .map(|u| {
            if u.contains('.') {
                (*u).to_owned()
            } else {
                format!("{u}.service")
            }
        })
        .collect();
    let missing = |out: &mut Out, u: &str| {
        out.err(format!(
            "Failed to enable unit: Unit file {u} does not exist.\n"
        ));
        1
    };
    match *verb {
        "daemon-reload" => 0,
        "reboot" => match reboot(root) {
            Ok(()) => 0,
            Err(e) => {
                out.err(format!("phoenix-emu: reboot: {e}\n"));
                1
            }
        },
        "enable" => {
            for name in &units {
                let Some(u) = load_unit(root, name) else {
                    return missing(out, name);
                };
                if u.wanted_by.is_empty() {
                    out.err(format!("The unit files have no installation config (WantedBy=, RequiredBy=, UpheldBy=,\nAlso=, or Alias= settings in the [Install] section, and DefaultInstance= for\ntemplate units). This means they are not meant to be enabled or disabled using systemctl.\n(unit {name})\n"));
                }
                for t in &u.wanted_by {
                    let wants = unit_dir(root).join(format!("{t}.wants"));
                    let link = wants.join(name);
                    if link.symlink_metadata().is_ok() {
                        continue;
                    }
                    let target = format!("/etc/systemd/system/{name}");
                    match std::fs::create_dir_all(&wants)
                        .and_then(|()| std::os::unix::fs::symlink(&target, &link))
                    {
                        Ok(()) => {}
                        // Another enable made the same link meanwhile: systemd's
                        // `create_symlink` (src/shared/install.c, v252) finds the link
                        // already pointing at the unit and counts it as no change (PID 1
                        // also applies unit file changes one at a time).
                        Err(e)
                            if e.kind() == std::io::ErrorKind::AlreadyExists
                                && std::fs::read_link(&link)
                                    .is_ok_and(|t| t == std::path::Path::new(&target)) =>
                        {
                            continue;
                        }
                        Err(e) => {
                            out.err(format!("Failed to enable unit: {e}\n"));
                            return 1;
                        }
                    }
                    out.err(format!(
                        "Created symlink /etc/systemd/system/{t}.wants/{name} → /etc/systemd/system/{name}.\n"
                    ));
                }
                if now {
                    if let Err(m) = start_unit(root, &u) {
                        out.err(job_failed(name, &m));
                        return 1;
                    }
                }
            }
            0
        }
        "disable" => {
            for name in &units {
                if now {
                    let _ = set_state(root, name, "inactive");
                }
                for e in std::fs::read_dir(unit_dir(root))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let dir = e.file_name().to_string_lossy().into_owned();
                    if !dir.ends_with(".wants") {
                        continue;
                    }
                    let link = e.path().join(name);
                    if link.symlink_metadata().is_ok() {
                        if let Err(err) = std::fs::remove_file(&link) {
                            out.err(format!("Failed to disable unit: {err}\n"));
                            return 1;
                        }
                        out.err(format!("Removed \"/etc/systemd/system/{dir}/{name}\".\n"));
                    }
                }
            }
            0
        }
        "is-enabled" => {
            let Some(name) = units.first() else {
                out.err("Too few arguments.\n");
                return 1;
            };
            if load_unit(root, name).is_none() {
                out.err(format!(
                    "Failed to get unit file state for {name}: No such file or directory\n"
                ));
                return 1;
            }
            let (state, code) = if is_enabled(root, name) {
                ("enabled\n", 0)
            } else {
                ("disabled\n", 1)
            };
            if !quiet {
                out.out(state);
            }
            code
        }
        "is-active" => {
            let Some(name) = units.first() else {
                out.err("Too few arguments.\n");
                return 1;
            };
            let state = get_state(root, name);
            if !quiet {
                out.out(format!("{state}\n"));
            }
            i32::from(state != "active") * 3
        }
        "start" | "restart" => {
            for name in &units {
                let Some(u) = load_unit(root, name) else {
                    out.err(format!("Failed to start {name}: Unit {name} not found.\n"));
                    return 5;
                };
                if *verb == "start" && get_state(root, name) == "active" {
                    continue;
                }
                if let Err(m) = start_unit(root, &u) {
                    out.err(job_failed(name, &m));
                    return 1;
                }
            }
            0
        }
        "stop" => {
            for name in &units {
                if let Err(e) = set_state(root, name, "inactive") {
                    out.err(format!("phoenix-emu: {e}\n"));
                    return 1;
                }
            }
            0
        }
        other => {
            out.err(format!("Unknown command verb '{other}'.\n"));
            1
        }
    }
}

/// systemctl's message when a start job fails (the reason goes to the emulated journal,
/// here appended so a test can read it).
fn job_failed(name: &str, why: &str) -> String {
    format!(
        "Job for {name} failed because the control process exited with error code.\nSee \"systemctl status {name}\" and \"journalctl -xeu {name}\" for details.\n({why})\n"
    )
}

/// `nvidia-modprobe …` on the host.
pub fn nvidia_modprobe(root: &Root, args: &[String], out: &mut Out) -> i32 {
    let invalid = |out: &mut Out| {
        out.err("nvidia-modprobe: Invalid commandline, please run `nvidia-modprobe --help` for usage information.\n\n");
        1
    };
    let mut minors: Vec<u64> = Vec::new();
    let mut caps: Vec<String> = Vec::new();
    let mut uvm = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (a.as_str(), None),
        };
        let value =
            |it: &mut std::slice::Iter<'_, String>| inline.clone().or_else(|| it.next().cloned());
        match name {
            "-u" | "--unified-memory" => uvm = true,
            "-c" | "--create-nvidia-device-file" => {
                match value(&mut it).and_then(|v| v.parse().ok()) {
                    Some(n) => minors.push(n),
                    None => return invalid(out),
                }
            }
            "-f" | "--nvidia-capability-device-file" => match value(&mut it) {
                Some(p) => caps.push(p),
                None => return invalid(out),
            },
            "-v" | "--version" => {
                out.out("\nnvidia-modprobe:  version 580.159.04\n\n");
                return 0;
            }
            _ => return invalid(out),
        }
    }
    // Without the driver (no GPU) `modprobe nvidia` fails and nothing is made.
    if crate::nvidia::gpus(&root.settings).is_empty() {
        return 1;
    }
    let mut nodes = Vec::new();
    for m in &minors {
        if uvm {
            nodes.push(node("nvidia-uvm", UVM_MAJOR, *m, 0o666));
            nodes.push(node("nvidia-uvm-tools", UVM_MAJOR, m + 1, 0o666));
        } else if *m == 255 {
            nodes.push(node("nvidiactl", NVIDIA_MAJOR, 255, 0o666));
        } else {
            nodes.push(node(format!("nvidia{m}"), NVIDIA_MAJOR, *m, 0o666));
        }
    }
    for c in &caps {
        // The capability's /proc file names its node (DeviceFileMinor); these two exist on
        // every MIG-capable GPU's driver.
        let minor = match c.as_str() {
            "/proc/driver/nvidia/capabilities/mig/config" => 1,
            "/proc/driver/nvidia/capabilities/mig/monitor" => 2,
            _ => return 1,
        };
        let mode = if minor == 1 { 0o400 } else { 0o444 };
        nodes.push(node(
            format!("nvidia-caps/nvidia-cap{minor}"),
            CAPS_MAJOR,
            minor,
            mode,
        ));
    }
    for n in &nodes {
        if let Err(e) = make_node(root, n) {
            out.err(format!("nvidia-modprobe: {e}\n"));
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_lines_split_like_systemd() {
        assert_eq!(
            split_command("/r/bin/nvidia-modprobe -u -c=0"),
            (
                false,
                vec![
                    "/r/bin/nvidia-modprobe".to_owned(),
                    "-u".into(),
                    "-c=0".into()
                ]
            )
        );
        assert_eq!(
            split_command("-/usr/bin/docker \"rm\" \"-f\" 'a b'"),
            (
                true,
                vec![
                    "/usr/bin/docker".to_owned(),
                    "rm".into(),
                    "-f".into(),
                    "a b".into()
                ]
            )
        );
    }

    #[test]
    fn units_read_their_order_and_install_target() {
        let u = parse_unit(
            "x.service",
            "[Unit]\nBefore=pve-guests.service\n[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/a -u\nExecStart=/b\n[Install]\nWantedBy=multi-user.target\n",
        );
        assert_eq!(u.before, ["pve-guests.service"]);
        assert_eq!(u.kind, "oneshot");
        assert!(u.remain);
        assert_eq!(u.exec_start, ["/a -u", "/b"]);
        assert_eq!(u.wanted_by, ["multi-user.target"]);
    }
}

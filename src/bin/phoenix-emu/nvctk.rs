//! NVIDIA inside an emulated container: `nvidia-ctk` (from `nvidia-container-toolkit`),
//! `nvidia-smi` and `/proc/driver/nvidia/version`.
//!
//! Decisions where DESIGN.md is silent:
//! - a fresh container has no NVIDIA userspace (`ubuntu-24.04-standard` ships none); the
//!   driver's `.run` installer ([`installer`]) or the `nvidia-utils-NNN` package
//!   (`crate::apt`) puts `/usr/bin/nvidia-smi` there, a file holding its version
//!   (`phoenix-emu nvidia-smi 580.159.04`), so a test can write another version into it to
//!   get NVML's `Driver/library version mismatch` (exit 18);
//! - the container sees the host GPUs it can open as the kernel decides ([`access`]: the
//!   node passed in *and* allowed by the device cgroup of the hierarchy the host booted
//!   with), renumbered from 0; `/proc/driver/nvidia/version` is the host's;
//! - `nvidia-ctk runtime configure --runtime=docker` writes `/etc/docker/daemon.json`; Docker
//!   lists the `nvidia` runtime once `docker.service` (re)started after that;
//! - `nvidia-ctk config --set K=V --in-place` edits `/etc/nvidia-container-runtime/config.toml`
//!   (`a.b=v` sets `b = v` in section `[a]`) and records the setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::container;
use crate::inner::Ct;
use crate::nvidia::{self, Gpu};
use crate::out::Out;

/// What `nvidia-ctk` configured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CtkState {
    /// `runtime configure --runtime=docker` ran.
    #[serde(default)]
    pub runtime_configured: bool,
    /// `config --set` values by key.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

impl CtkState {
    /// `nvidia-container-cli.no-cgroups=true` was set.
    pub fn no_cgroups(&self) -> bool {
        self.settings
            .get("nvidia-container-cli.no-cgroups")
            .is_some_and(|v| v == "true")
    }
}

/// The host driver version (from the fixture).
fn host_driver() -> String {
    crate::nvidia::FIXTURE_Q
        .lines()
        .find(|l| l.starts_with("Driver Version"))
        .and_then(|l| l.split_once(" : "))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// What a process in the container may do with a host device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The node is not in the container.
    Absent,
    /// The node is there but the device cgroup refuses to open it (`EPERM`).
    Denied,
    /// It can be opened for reading and writing.
    Allowed,
}

/// Whether the emulated host was booted with pure cgroup v2 (its `/sys/fs/cgroup` is a
/// cgroup2 mount, whose root holds `cgroup.controllers`).
fn host_cgroup_v2(root: &crate::root::Root) -> bool {
    root.join("sys/fs/cgroup/cgroup.controllers").is_file()
}

/// One device cgroup rule (`a`, or `TYPE MAJOR:MINOR ACCESS`, `*` wildcards) as the kernel
/// reads it (Linux `Documentation/admin-guide/cgroup-v1/devices.rst`; LXC writes v1 rules
/// to `devices.allow|deny` and turns `lxc.cgroup2.devices.*` into a BPF device program with
/// the same rule syntax, `src/lxc/cgroups/cgroup2_devices.c`). Whether it matches a
/// character device `major:minor` opened read-write.
fn rule_matches(rule: &str, major: u64, minor: u64) -> bool {
    let f: Vec<&str> = rule.split_whitespace().collect();
    match f.as_slice() {
        ["a"] | ["a", ..] => true,
        [kind, numbers, access] => {
            let num = |s: &str, n: u64| s == "*" || s.parse::<u64>().is_ok_and(|v| v == n);
            let Some((ma, mi)) = numbers.split_once(':') else {
                return false;
            };
            (*kind == "c" || *kind == "a")
                && num(ma, major)
                && num(mi, minor)
                && (access.contains('r') || access.contains('w'))
        }
        _ => false,
    }
}

/// Access to the host node `path` (`/dev/…`) from inside the container, as the kernel
/// decides it: the node must be in the container (a `devN` entry, or an `lxc.mount.entry`
/// bind of an existing source) *and* the container's device cgroup must allow it.
/// The device cgroup starts from LXC's default deny-all (`config/common.conf.in`:
/// `lxc.cgroup.devices.deny = a`); for each `devN` PVE adds
/// `lxc.cgroup2.devices.allow = c MAJOR:MINOR rw` (pve-container `src/PVE/LXC.pm`
/// `update_lxc_config`, 6.1.10) — a cgroup2 key, so on a host booted with cgroup v1 it does
/// not apply; then the config's own raw `lxc.*` rules, in order, of the hierarchy the host
/// runs (`lxc.cgroup.devices.*` on v1, `lxc.cgroup2.devices.*` on v2: the other kind is
/// ignored). The last rule that matches decides.
pub fn access(ct: &Ct<'_>, path: &str) -> Access {
    let Some((major, minor)) = crate::hostsys::host_node(ct.root, path) else {
        return Access::Absent;
    };
    let v2 = host_cgroup_v2(ct.root);
    let mut allowed = false;
    let mut present = false;
    for (k, v) in &ct.conf.opts {
        if !k.starts_with("dev") || !k[3..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let passes = crate::propstr::parse(crate::propstr::DEV, v)
            .ok()
            .and_then(|p| p.get("path").cloned())
            .is_some_and(|p| p == path);
        if passes {
            present = true;
            allowed |= v2;
        }
    }
    let key = if v2 {
        "lxc.cgroup2.devices."
    } else {
        "lxc.cgroup.devices."
    };
    for (k, v) in &ct.conf.lxc {
        if k == "lxc.mount.entry" && v.split_whitespace().next() == Some(path) {
            present = true;
        }
        if let Some(kind) = k.strip_prefix(key) {
            if rule_matches(v, major, minor) {
                allowed = kind == "allow";
            }
        }
    }
    match (present, allowed) {
        (false, _) => Access::Absent,
        (true, false) => Access::Denied,
        (true, true) => Access::Allowed,
    }
}

/// The minors of the host GPUs a process in the container can use: `/dev/nvidiactl` and
/// the GPU's `/dev/nvidia<minor>` both allowed.
pub fn visible_minors(ct: &Ct<'_>) -> Vec<u32> {
    if access(ct, "/dev/nvidiactl") != Access::Allowed {
        return Vec::new();
    }
    nvidia::gpus(&ct.root.settings)
        .iter()
        .map(|g| g.minor)
        .filter(|m| access(ct, &format!("/dev/nvidia{m}")) == Access::Allowed)
        .collect()
}

/// The host GPUs the container sees, renumbered from 0.
fn ct_gpus(ct: &Ct<'_>) -> Vec<Gpu> {
    let minors = visible_minors(ct);
    nvidia::gpus(&ct.root.settings)
        .into_iter()
        .filter(|g| minors.contains(&g.minor))
        .enumerate()
        .map(|(i, g)| Gpu {
            index: u32::try_from(i).unwrap_or(0),
            ..g
        })
        .collect()
}

/// `nvidia-smi` inside the container. NVML opens `/dev/nvidiactl` first: absent, it reports
/// that it cannot talk to the driver (exit 9); present but refused by the device cgroup, it
/// fails as it did on the real H100 without the allow rules (DESIGN.md §8: `Failed to
/// initialize NVML: Unknown Error`, exit 255); then the userspace version must be the
/// kernel module's (exit 18); GPUs whose node is absent or refused are not listed.
pub fn smi(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    let stub = std::fs::read_to_string(container::resolve(
        ct.root,
        ct.vmid,
        ct.conf,
        "/usr/bin/nvidia-smi",
    ))
    .unwrap_or_default();
    let version = stub.split_whitespace().last().unwrap_or("").to_owned();
    match access(ct, "/dev/nvidiactl") {
        Access::Absent => {
            out.out("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n\n");
            return 9;
        }
        Access::Denied => {
            out.out("Failed to initialize NVML: Unknown Error\n");
            return 255;
        }
        Access::Allowed => {}
    }
    if version != host_driver() {
        out.out(format!(
            "Failed to initialize NVML: Driver/library version mismatch\nNVML library version: {version}\n"
        ));
        return 18;
    }
    let gpus = ct_gpus(ct);
    if gpus.is_empty() {
        out.out("No devices were found\n");
        return 6;
    }
    nvidia::run_with(&gpus, args, out)
}

/// Files under `/proc` the container sees: `/proc/driver/nvidia/version` whenever the host
/// has the driver loaded (procfs shows the host kernel's driver in every container).
/// `None`: not an emulated `/proc` path.
pub fn proc_file(ct: &Ct<'_>, path: &str) -> Option<Result<String, ()>> {
    let parts = container::normalize(path);
    if parts.first().map(String::as_str) != Some("proc") {
        return None;
    }
    if parts.join("/") == "proc/driver/nvidia/version"
        && !nvidia::gpus(&ct.root.settings).is_empty()
    {
        return Some(Ok(format!(
            "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {}  Release Build  (nixbld@)  \nGCC version:  gcc version 15.3.0 (GCC) \n",
            host_driver()
        )));
    }
    Some(Err(()))
}

/// The first line of an emulated NVIDIA `.run` installer (what the emulated download server
/// serves and a test puts on the host): `phoenix-emu nvidia-installer VERSION`.
pub const INSTALLER_MAGIC: &str = "phoenix-emu nvidia-installer ";

/// The driver version of the emulated installer `bytes`, `None` when they are not one.
pub fn installer_version(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes.get(..bytes.len().min(200))?).ok()?;
    let v = text.lines().next()?.strip_prefix(INSTALLER_MAGIC)?.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

/// An NVIDIA `.run` installer of driver `version` run inside the container. Options as
/// NVIDIA/nvidia-installer `option_table.h` (590.48.01, 00aaa9f) names them, through
/// `nvgetopt`. In a container the kernel module is the host's: without `--no-kernel-module`
/// (alias of `--no-kernel-modules`) the installer finds the module loaded (`kernel.c`: "An
/// NVIDIA kernel module 'nvidia' appears to be already loaded in your kernel") and the
/// installation fails (`install-from-cwd.c`: "Installation has failed."). Decision: without
/// `--silent` or `--no-questions` it fails too, because its questions would be read from a
/// stdin that is not a terminal. With both it installs the userspace of its own version
/// (nvidia-smi, libcuda, libnvidia-ml) and, being silent, prints nothing.
pub fn installer(ct: &Ct<'_>, version: &str, args: &[String], out: &mut Out) -> i32 {
    let mut no_kernel_module = false;
    let mut no_questions = false;
    for a in args {
        match a.as_str() {
            "--no-kernel-module" | "--no-kernel-modules" => no_kernel_module = true,
            "-s" | "--silent" | "-q" | "--no-questions" => no_questions = true,
            "--ui=none"
            | "-a"
            | "--accept-license"
            | "--no-x-check"
            | "-z"
            | "--no-nouveau-check"
            | "--no-drm"
            | "--install-libglvnd"
            | "--no-install-libglvnd"
            | "--no-systemd"
            | "--no-check-for-alternate-installs"
            | "-N"
            | "--no-network"
            | "--skip-module-load" => {}
            other => {
                out.err(format!(
                    "nvidia-installer: unrecognized option: \"{other}\"\n\nERROR: Invalid commandline, please run `nvidia-installer --help` for usage information.\n\n"
                ));
                return 1;
            }
        }
    }
    let failed = "ERROR: Installation has failed.  Please see the file '/var/log/nvidia-installer.log' for details.  You may find suggestions on fixing installation problems in the README available on the Linux driver download page at www.nvidia.com.\n";
    if !no_questions {
        out.err(format!(
            "phoenix-emu: nvidia-installer would ask its questions on a stdin that is not a terminal; run it with --silent\n{failed}"
        ));
        return 1;
    }
    if !no_kernel_module {
        out.err(format!(
            "WARNING: An NVIDIA kernel module 'nvidia' appears to be already loaded in your kernel.  This may be because it is in use (for example, by an X server, a CUDA program, or the NVIDIA Persistence Daemon), but this may also happen if your kernel was configured without support for module unloading.\nERROR: Unable to load the kernel module 'nvidia.ko' inside a container.\n{failed}"
        ));
        return 1;
    }
    let files = [
        (
            "/usr/bin/nvidia-smi",
            0o755,
            format!("phoenix-emu nvidia-smi {version}\n"),
        ),
        (
            "/usr/lib/x86_64-linux-gnu/libcuda.so.1",
            0o644,
            format!("phoenix-emu libcuda {version}\n"),
        ),
        (
            "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
            0o644,
            format!("phoenix-emu libnvidia-ml {version}\n"),
        ),
        (
            "/var/log/nvidia-installer.log",
            0o644,
            format!(
                "Installation of the NVIDIA Accelerated Graphics Driver for Linux-x86_64 (version: {version}) is now complete.\n"
            ),
        ),
    ];
    for (path, mode, content) in &files {
        if let Err(e) = crate::apt::write_file(ct, path, *mode, content) {
            out.err(format!("ERROR: Unable to create '{path}': {e}\n{failed}"));
            return 1;
        }
    }
    0
}

/// `nvidia-ctk runtime configure …` and `nvidia-ctk config --set … --in-place`.
pub fn ctk(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let undefined = |out: &mut Out, f: &str| {
        out.err(format!(
            "Incorrect Usage: flag provided but not defined: -{}\n",
            f.trim_start_matches('-')
        ));
        1
    };
    match words.as_slice() {
        ["runtime", "configure", rest @ ..] => {
            let mut runtime = None;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match *a {
                    "--runtime" => runtime = it.next().copied(),
                    s if s.starts_with("--runtime=") => runtime = Some(&s["--runtime=".len()..]),
                    "--set-as-default" => {}
                    s => return undefined(out, s),
                }
            }
            if runtime != Some("docker") {
                out.err(format!(
                    "ERRO[0000] unrecognized runtime '{}'\n",
                    runtime.unwrap_or("")
                ));
                return 1;
            }
            let daemon = "{\n    \"runtimes\": {\n        \"nvidia\": {\n            \"args\": [],\n            \"path\": \"nvidia-container-runtime\"\n        }\n    }\n}\n";
            if let Err(e) = crate::apt::write_file(ct, "/etc/docker/daemon.json", 0o644, daemon) {
                out.err(format!(
                    "ERRO[0000] unable to write /etc/docker/daemon.json: {e}\n"
                ));
                return 1;
            }
            if let Err(e) = container::update_state(ct.root, ct.vmid, |st| {
                st.nvidia_ctk.runtime_configured = true;
            }) {
                out.err(format!("ERRO[0000] {e}\n"));
                return 1;
            }
            out.err("INFO[0000] Wrote updated config to /etc/docker/daemon.json\nINFO[0000] It is recommended that docker daemon be restarted.\n");
            0
        }
        ["config", rest @ ..] => {
            let mut sets = Vec::new();
            let mut in_place = false;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match *a {
                    "--set" => match it.next() {
                        Some(v) => sets.push((*v).to_owned()),
                        None => return undefined(out, "set"),
                    },
                    s if s.starts_with("--set=") => sets.push(s["--set=".len()..].to_owned()),
                    "--in-place" | "-i" => in_place = true,
                    s => return undefined(out, s),
                }
            }
            let path = "/etc/nvidia-container-runtime/config.toml";
            let file = container::resolve(ct.root, ct.vmid, ct.conf, path);
            let mut text = std::fs::read_to_string(&file).unwrap_or_default();
            let mut parsed = Vec::new();
            for s in &sets {
                let Some((k, v)) = s.split_once('=') else {
                    out.err(format!(
                        "ERRO[0000] invalid --set option {s}: expected key=value\n"
                    ));
                    return 1;
                };
                text = set_toml(&text, k, v);
                parsed.push((k.to_owned(), v.to_owned()));
            }
            if !in_place {
                out.out(text);
                return 0;
            }
            if let Err(e) = crate::apt::write_file(ct, path, 0o644, &text) {
                out.err(format!("ERRO[0000] unable to write {path}: {e}\n"));
                return 1;
            }
            if let Err(e) = container::update_state(ct.root, ct.vmid, |st| {
                st.nvidia_ctk.settings.extend(parsed);
            }) {
                out.err(format!("ERRO[0000] {e}\n"));
                return 1;
            }
            0
        }
        _ => {
            out.err(format!(
                "phoenix-emu: `nvidia-ctk {}` is not emulated\n",
                words.join(" ")
            ));
            1
        }
    }
}

/// Set `key` (`section.name` or `name`) to `value` in a TOML text, replacing the line
/// (commented or not) in that section or adding one.
fn set_toml(text: &str, key: &str, value: &str) -> String {
    let (section, name) = match key.rsplit_once('.') {
        Some((s, n)) => (Some(format!("[{s}]")), n),
        None => (None, key),
    };
    let literal = if matches!(value, "true" | "false") || value.parse::<f64>().is_ok() {
        value.to_owned()
    } else {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    };
    let line = format!("{name} = {literal}");
    let mut out: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut done = false;
    let mut section_end = None;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            if current == section && section.is_some() && section_end.is_none() {
                section_end = Some(out.len());
            }
            current = Some(t.to_owned());
        }
        let key_of = t
            .trim_start_matches('#')
            .split('=')
            .next()
            .unwrap_or("")
            .trim();
        if !done && current == section && !t.starts_with('[') && key_of == name {
            out.push(line.clone());
            done = true;
            continue;
        }
        out.push(l.to_owned());
    }
    if !done {
        match (section_end, &section) {
            (Some(i), _) => out.insert(i, line),
            (None, Some(s)) if current.as_ref() == Some(s) => out.push(line),
            (None, Some(s)) => {
                out.push(String::new());
                out.push(s.clone());
                out.push(line);
            }
            (None, None) => out.insert(0, line),
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_set_replaces_the_commented_default() {
        let t = set_toml(
            crate::apt::CTK_CONFIG,
            "nvidia-container-cli.no-cgroups",
            "true",
        );
        assert!(t.contains("[nvidia-container-cli]\nenvironment = []\nldconfig = \"@/sbin/ldconfig.real\"\nload-kmods = true\nno-cgroups = true\n"), "{t}");
        assert!(!t.contains("#no-cgroups"));
        let t = set_toml("a = 1\n", "x.y", "v");
        assert_eq!(t, "a = 1\n\n[x]\ny = \"v\"\n");
    }
}

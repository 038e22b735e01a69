//! `pct`: the container commands phoenix uses, with pve-container's options, checks, config
//! format and error texts (read in pve-container's `src/PVE/CLI/pct.pm`,
//! `src/PVE/API2/LXC.pm`, `src/PVE/API2/LXC/Status.pm`, `src/PVE/LXC/Config.pm`).
//!
//! Emulated: `create`, `start`, `stop`, `status`, `destroy`, `config`, `set`, `push`, `exec`,
//! `list`, `unlock`. Errors print as the PVE CLI prints them and exit 255 (an uncaught Perl `die`);
//! parameter errors print `400 Parameter verification failed.` with one `key: message` line
//! each, then the command's usage line.
//!
//! Version-dependent behaviour (from pve-container's changelog):
//! - `devN` options exist from pve-container 5.0.7 (PVE 8.1);
//! - `pct exec --keep-env` was added in pve-container 5.0.9 (2024-03-15); PVE 8.1's
//!   pve-container was 5.0.8, so the emulator accepts `--keep-env` from PVE 8.2 on;
//! - `pct create` defaults to an unprivileged container from PVE 9.0 (before, the API
//!   default was privileged); `unprivileged: 1` is written only when set, as PVE does;
//! - `entrypoint` and `env` exist from PVE 9.0.
//!
//! `pct create` follows pve-container's `create_vm`: the config holds only `lock: create`
//! while the volumes are allocated and the template is extracted; the template must be on
//! its storage ([`crate::pvesm`]) or the create fails after the lock, freeing what it
//! allocated: `unable to create CT <vmid> - can't find file '<volid>'`.
//!
//! Decisions: volumes allocated with `STORAGE:SIZE` are named as PVE names them (the first
//! free `subvol-<vmid>-disk-N` on zfspool, where the dataset also appears in the emulated
//! ZFS, `<vmid>/vm-<vmid>-disk-N.raw` on dir); an absolute template path is a file under
//! `$ROOT/hostfs`, as bind mount sources are; `pct set` on a
//! running container applies changes at once (no `[pending]` section: pve-container's
//! `update_pct_config` applies `$LXC_FASTPLUG_OPTIONS` — hostname, cores, onboot, tags … —
//! at once and hot-plugs memory, swap, netN, new mpN/devN, but leaves e.g. `nameserver` and
//! `features` pending until the next start, src/PVE/LXC/Config.pm at 94f5585); it refuses
//! `unprivileged` as upstream does ("unable to modify read-only option"); bind mount sources are
//! not checked; `digest` is accepted but not compared.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use crate::container::{self, CtState};
use crate::ctconf::CtConf;
use crate::opts::{self, Kind, OptError};
use crate::out::Out;
use crate::propstr::{self, Key};
use crate::pvesm;
use crate::root::{Root, RootError};

/// Why a `pct` command failed.
#[derive(Debug)]
enum PctErr {
    /// A plain `die`: the message (exit 255).
    Die(String),
    /// `400 Parameter verification failed.` with `(key, message)` lines.
    Param(Vec<(String, String)>),
    /// Getopt refused the command line.
    Opt(OptError),
    /// `400 too many arguments` / `400 not enough arguments`.
    Args(&'static str),
}

impl From<RootError> for PctErr {
    fn from(e: RootError) -> Self {
        Self::Die(e.to_string())
    }
}

type Res<T = i32> = Result<T, PctErr>;

/// The value type of a config option.
#[derive(Debug, Clone, Copy)]
enum Vt {
    Bool,
    Int(i64, i64),
    Num,
    Str,
    Enum(&'static [&'static str]),
    Prop(&'static [Key]),
    Hostname,
    Nameserver,
    Tags,
}

const LOCKS: &[&str] = &[
    "backup",
    "create",
    "destroyed",
    "disk",
    "fstrim",
    "migrate",
    "mounted",
    "rollback",
    "snapshot",
    "snapshot-delete",
];
const ARCHES: &[&str] = &["amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"];
const OSTYPES: &[&str] = &[
    "debian",
    "devuan",
    "ubuntu",
    "centos",
    "fedora",
    "opensuse",
    "archlinux",
    "alpine",
    "gentoo",
    "nixos",
    "unmanaged",
];

/// The type of config option `key` on PVE `ver`, `None` when the option does not exist.
fn conf_type(key: &str, ver: (u32, u32, u32)) -> Option<Vt> {
    Some(match key {
        "lock" => Vt::Enum(LOCKS),
        "onboot" | "template" | "console" | "protection" | "debug" | "unprivileged" => Vt::Bool,
        "startup" | "description" | "searchdomain" | "timezone" | "hookscript" => Vt::Str,
        "arch" => Vt::Enum(ARCHES),
        "ostype" => Vt::Enum(OSTYPES),
        "tty" => Vt::Int(0, 6),
        "cores" => Vt::Int(1, 8192),
        "cpulimit" => Vt::Num,
        "cpuunits" => Vt::Int(0, 500_000),
        "memory" => Vt::Int(16, i64::MAX),
        "swap" => Vt::Int(0, i64::MAX),
        "hostname" => Vt::Hostname,
        "nameserver" => Vt::Nameserver,
        "cmode" => Vt::Enum(&["shell", "console", "tty"]),
        "features" => Vt::Prop(propstr::FEATURES),
        "tags" => Vt::Tags,
        "rootfs" => Vt::Prop(propstr::ROOTFS),
        "entrypoint" | "env" if ver >= (9, 0, 0) => Vt::Str,
        _ => {
            let (prefix, max, vt) = if let Some(n) = key.strip_prefix("net") {
                (n, 32, Vt::Prop(propstr::NET))
            } else if let Some(n) = key.strip_prefix("mp") {
                (n, 256, Vt::Prop(propstr::MP))
            } else if let Some(n) = key.strip_prefix("unused") {
                (n, 256, Vt::Str)
            } else if let Some(n) = key.strip_prefix("dev") {
                if ver < (8, 1, 0) {
                    return None;
                }
                (n, 256, Vt::Prop(propstr::DEV))
            } else {
                return None;
            };
            let ok = !prefix.is_empty()
                && prefix.chars().all(|c| c.is_ascii_digit())
                && (prefix == "0" || !prefix.starts_with('0'))
                && prefix.parse::<u32>().is_ok_and(|n| n < max);
            if !ok {
                return None;
            }
            vt
        }
    })
}

fn kind(vt: Vt) -> Kind {
    if matches!(vt, Vt::Bool) {
        Kind::Bool
    } else {
        Kind::Value
    }
}

/// Options of `pct create` besides the config keys.
fn create_extra(o: &str) -> Option<Vt> {
    Some(match o {
        "storage" | "password" | "ssh-public-keys" | "pool" => Vt::Str,
        "restore" | "force" | "unique" | "ignore-unpack-errors" | "start" | "ha-managed" => {
            Vt::Bool
        }
        "bwlimit" => Vt::Num,
        _ => return None,
    })
}

/// Options of `pct set` besides the config keys.
fn set_extra(o: &str) -> Option<Vt> {
    matches!(o, "delete" | "revert" | "digest").then_some(Vt::Str)
}

/// `pct <command> …`.
pub fn run(root: &Root, args: &[String], stdin: &[u8], out: &mut Out) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        out.err("ERROR: no command specified\nUSAGE: pct <COMMAND> [ARGS] [OPTIONS]\n");
        return 255;
    };
    let (usage, res) = match cmd.as_str() {
        "create" => (
            "pct create <vmid> <ostemplate> [OPTIONS]",
            create(root, rest, out),
        ),
        "start" => ("pct start <vmid> [OPTIONS]", start(root, rest)),
        "stop" => ("pct stop <vmid> [OPTIONS]", stop(root, rest)),
        "status" => ("pct status <vmid> [OPTIONS]", status(root, rest, out)),
        "destroy" => ("pct destroy <vmid> [OPTIONS]", destroy(root, rest, out)),
        "config" => ("pct config <vmid> [OPTIONS]", config(root, rest, out)),
        "set" => ("pct set <vmid> [OPTIONS]", set(root, rest, out)),
        "push" => (
            "pct push <vmid> <file> <destination> [OPTIONS]",
            push(root, rest),
        ),
        "exec" => (
            "pct exec <vmid> [<extra-args>] [OPTIONS]",
            exec(root, rest, stdin, out),
        ),
        "list" => ("pct list", list(root, rest, out)),
        "unlock" => ("pct unlock <vmid>", unlock(root, rest)),
        other => {
            out.err(format!(
                "ERROR: unknown command 'pct {other}'\nUSAGE: pct <COMMAND> [ARGS] [OPTIONS]\n"
            ));
            return 255;
        }
    };
    match res {
        Ok(code) => code,
        Err(PctErr::Die(m)) => {
            out.err(m);
            if !out.stderr.ends_with(b"\n") {
                out.err("\n");
            }
            255
        }
        Err(PctErr::Param(errs)) => {
            out.err("400 Parameter verification failed.\n");
            for (k, m) in errs {
                out.err(format!("{k}: {m}\n"));
            }
            out.err(format!("{usage}\n"));
            255
        }
        Err(PctErr::Opt(e)) => {
            out.err(e.message());
            out.err(format!("{usage}\n"));
            255
        }
        Err(PctErr::Args(m)) => {
            out.err(format!("400 {m}\n{usage}\n"));
            255
        }
    }
}

/// Parse with `kinds`, requiring exactly `n` positional arguments (`exec` takes the rest).
fn parse_n(rest: &[String], n: usize, kinds: impl Fn(&str) -> Option<Kind>) -> Res<opts::Parsed> {
    let p = opts::parse(rest, kinds).map_err(PctErr::Opt)?;
    if p.args.len() < n {
        return Err(PctErr::Args("not enough arguments"));
    }
    if p.args.len() > n {
        return Err(PctErr::Args("too many arguments"));
    }
    Ok(p)
}

/// `pve-vmid`: 100..=999999999.
fn parse_vmid(s: &str) -> Res<u32> {
    let bad = |m: String| PctErr::Param(vec![("vmid".into(), m)]);
    let n: i64 = s
        .parse()
        .map_err(|_| bad(format!("type check ('integer') failed - got '{s}'")))?;
    if n < 100 {
        return Err(bad("value must have a minimum value of 100".into()));
    }
    if n > 999_999_999 {
        return Err(bad("value must have a maximum value of 999999999".into()));
    }
    Ok(n as u32)
}

fn no_conf(root: &Root, vmid: u32) -> PctErr {
    PctErr::Die(format!(
        "Configuration file 'nodes/{}/lxc/{vmid}.conf' does not exist",
        root.settings.node
    ))
}

fn load(root: &Root, vmid: u32) -> Res<CtConf> {
    container::load_conf(root, vmid)?.ok_or_else(|| no_conf(root, vmid))
}

/// pve-guest-common `src/PVE/AbstractConfig.pm` (4a8f6cb) `check_lock`: `CT is locked
/// (<lock>)`. pve-container `src/PVE/API2/LXC.pm` (94f5585) `destroy_vm` runs it in its
/// early checks, so `pct destroy` refuses a locked container (`pct unlock` first).
fn check_lock(conf: &CtConf) -> Res<()> {
    match conf.get("lock") {
        Some(l) => Err(PctErr::Die(format!("CT is locked ({l})"))),
        None => Ok(()),
    }
}

/// Check and canonicalise one option value (PVE's `check_type` plus the format checks of
/// `update_pct_config`).
fn check_value(root: &Root, key: &str, vt: Vt, v: &str) -> Result<String, String> {
    if v.contains(['\n', '\r']) {
        return Err("property contains a line feed".into());
    }
    Ok(match vt {
        Vt::Bool => match opts::parse_bool(v) {
            Some(b) => u8::from(b).to_string(),
            None => return Err(format!("type check ('boolean') failed - got '{v}'")),
        },
        Vt::Int(lo, hi) => {
            let n: i64 = v
                .parse()
                .map_err(|_| format!("type check ('integer') failed - got '{v}'"))?;
            if n < lo {
                return Err(format!("value must have a minimum value of {lo}"));
            }
            if n > hi {
                return Err(format!("value must have a maximum value of {hi}"));
            }
            n.to_string()
        }
        Vt::Num => {
            v.parse::<f64>()
                .map_err(|_| format!("type check ('number') failed - got '{v}'"))?;
            v.to_owned()
        }
        Vt::Str => v.to_owned(),
        Vt::Enum(words) => {
            if !words.contains(&v) {
                return Err(format!(
                    "value '{v}' does not have a value in the enumeration '{}'",
                    words.join(", ")
                ));
            }
            v.to_owned()
        }
        Vt::Hostname => {
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if !v.split('.').all(label_ok) {
                return Err(format!(
                    "value does not look like a valid DNS name - got '{v}'"
                ));
            }
            v.to_owned()
        }
        Vt::Nameserver => {
            let list = split_list(v);
            for ip in &list {
                if ip.parse::<std::net::IpAddr>().is_err() {
                    return Err(format!("unable to parse IP address '{ip}'"));
                }
            }
            list.join(" ")
        }
        Vt::Tags => {
            let mut tags: Vec<String> = Vec::new();
            for t in split_list(v) {
                let ok = t
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-+.".contains(c));
                if !ok {
                    return Err(format!("invalid format - invalid tag '{t}'"));
                }
                tags.push(t.to_ascii_lowercase());
            }
            tags.sort();
            tags.dedup();
            tags.join(";")
        }
        Vt::Prop(format) => {
            let mut props = propstr::parse(format, v)?;
            if std::ptr::eq(format, propstr::NET) {
                props.insert("type".into(), "veth".into());
                props.entry("hwaddr".into()).or_insert_with(random_mac);
            }
            if std::ptr::eq(format, propstr::DEV) {
                let path = props
                    .get("path")
                    .ok_or_else(|| format!("Path is not defined for passthrough device {key}"))?;
                check_device(root, path)?;
            }
            if std::ptr::eq(format, propstr::MP) {
                let mp = props.get("mp").map(String::as_str).unwrap_or("");
                if mp.split('/').any(|c| c == ".." || c == ".") {
                    return Err(format!("{mp} contains illegal character sequences"));
                }
            }
            propstr::print(format, &props)
        }
    })
}

/// PVE's `split_list`: separated by `,`, `;`, NUL or whitespace.
fn split_list(v: &str) -> Vec<String> {
    v.split(|c: char| c == ',' || c == ';' || c == '\0' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A random MAC with PVE's default prefix `BC:24:11`.
fn random_mac() -> String {
    let mut b = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
}

/// A device path must exist under the root's `dev/` and be a device node (or the documented
/// stand-in: a regular file holding `c MAJOR:MINOR`). The messages are pve-container's
/// `PVE::LXC::Tools::get_device_mode_and_rdev` (`src/PVE/LXC/Tools.pm`, 6.1.10).
fn check_device(root: &Root, path: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let Some(rel) = path
        .strip_prefix("/dev/")
        .filter(|r| !r.split('/').any(|c| c == ".."))
    else {
        return Err(format!("{path} is not a device"));
    };
    let host = root.join("dev").join(rel);
    match std::fs::metadata(&host) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("Device {path} does not exist"))
        }
        Err(_) => Err(format!("Error accessing device {path}")),
        Ok(m) if m.file_type().is_char_device() || m.file_type().is_block_device() => Ok(()),
        Ok(m) if m.is_file() => {
            let text = std::fs::read_to_string(&host).unwrap_or_default();
            if text.starts_with("c ") || text.starts_with("b ") {
                Ok(())
            } else {
                Err(format!("{path} is not a device"))
            }
        }
        Ok(_) => Err(format!("{path} is not a device")),
    }
}

/// Allocate a volume `STORAGE:SIZE_GB` for container `vmid`, named as PVE names it: the
/// first free `subvol-VMID-disk-N` (zfspool) or `vm-VMID-disk-N.raw` (dir), as
/// pve-storage's `find_free_diskname` picks it. Returns the volume id and the size in bytes.
fn allocate(root: &Root, vmid: u32, spec: &str) -> Res<(String, u64)> {
    let (sid, size) = spec.split_once(':').unwrap_or(("", spec));
    let storage = pvesm::find(root, sid)
        .ok_or_else(|| PctErr::Die(format!("storage '{sid}' does not exist")))?;
    if !storage.holds("rootdir") {
        return Err(PctErr::Param(vec![(
            "storage".into(),
            format!("storage '{sid}' does not support container directories"),
        )]));
    }
    let gib: f64 = size
        .parse()
        .map_err(|_| PctErr::Die(format!("unable to parse volume ID '{spec}'")))?;
    let bytes = (gib * f64::from(1u32 << 30)) as u64;
    let taken: Vec<String> = pvesm::volumes(root, storage)?
        .into_iter()
        .map(|v| v.volid)
        .collect();
    let name = |n: usize| match storage.ty {
        pvesm::StorageType::Zfspool => format!("subvol-{vmid}-disk-{n}"),
        pvesm::StorageType::Dir => format!("vm-{vmid}-disk-{n}.raw"),
    };
    let free = (0..)
        .map(name)
        .find(|n| {
            !taken
                .iter()
                .any(|t| t.ends_with(&format!(":{n}")) || t.ends_with(&format!("/{n}")))
        })
        .unwrap_or_default();
    let volid = pvesm::alloc(root, storage, vmid, &free, bytes)?;
    Ok((volid, bytes))
}

/// Whether a volume spec asks for a new volume (`STORAGE:SIZE`).
fn is_alloc(volume: &str) -> bool {
    volume
        .split_once(':')
        .is_some_and(|(_, s)| !s.is_empty() && s.parse::<f64>().is_ok())
}

/// Allocate the volume of a rootfs/mp value if it asks for one; returns the new value.
fn alloc_mount(
    root: &Root,
    vmid: u32,
    format: &'static [Key],
    value: &str,
    allocated: &mut Vec<String>,
) -> Res<String> {
    let mut props = propstr::parse(format, value).map_err(|m| PctErr::Die(m + "\n"))?;
    let volume = props.get("volume").cloned().unwrap_or_default();
    if is_alloc(&volume) {
        let (volid, bytes) = allocate(root, vmid, &volume)?;
        allocated.push(volid.clone());
        props.insert("volume".into(), volid);
        props.insert("size".into(), propstr::format_size(bytes));
    } else if let Some((sid, _)) = volume.split_once(':').filter(|_| !volume.starts_with('/')) {
        if pvesm::find(root, sid).is_none() {
            return Err(PctErr::Die(format!("storage '{sid}' does not exist")));
        }
    }
    Ok(propstr::print(format, &props))
}

/// Check that a rootfs/mp value names an existing storage that holds container disks
/// (bind mounts, absolute paths, pass).
fn check_mount_storage(root: &Root, format: &'static [Key], value: &str) -> Res<()> {
    let props = propstr::parse(format, value).map_err(|m| {
        let key = if std::ptr::eq(format, propstr::ROOTFS) {
            "rootfs"
        } else {
            "mp"
        };
        PctErr::Param(vec![(key.into(), m)])
    })?;
    let volume = props.get("volume").map(String::as_str).unwrap_or("");
    if volume.starts_with('/') {
        return Ok(());
    }
    let Some((sid, _)) = volume.split_once(':') else {
        return Err(PctErr::Die(format!("unable to parse volume ID '{volume}'")));
    };
    let storage = pvesm::find(root, sid)
        .ok_or_else(|| PctErr::Die(format!("storage '{sid}' does not exist")))?;
    if !storage.holds("rootdir") {
        return Err(PctErr::Param(vec![(
            "storage".into(),
            format!("storage '{sid}' does not support container directories"),
        )]));
    }
    Ok(())
}

/// The storage volumes a config references (`rootfs`, `mpN`, `unusedN`; bind mounts and
/// device paths are not volumes).
fn config_volumes(conf: &CtConf) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in &conf.opts {
        let volume = if k == "rootfs" {
            propstr::parse(propstr::ROOTFS, v)
                .ok()
                .and_then(|p| p.get("volume").cloned())
        } else if k.starts_with("mp") {
            propstr::parse(propstr::MP, v)
                .ok()
                .and_then(|p| p.get("volume").cloned())
        } else if k.starts_with("unused") {
            Some(v.clone())
        } else {
            None
        };
        if let Some(vol) = volume.filter(|v| !v.starts_with('/') && v.contains(':')) {
            out.push(vol);
        }
    }
    out
}

/// Free the volumes a config references (pve-container `destroy_lxc_container`), and with
/// `unreferenced` every other disk of `vmid` on every storage (`--destroy-unreferenced-disks`).
fn free_volumes(root: &Root, vmid: u32, conf: &CtConf, unreferenced: bool) -> Res<()> {
    let mut vols = config_volumes(conf);
    if unreferenced {
        for st in &root.settings.storages {
            for v in pvesm::volumes(root, st)? {
                if v.vmid == Some(vmid) && !vols.contains(&v.volid) {
                    vols.push(v.volid);
                }
            }
        }
    }
    for v in vols {
        pvesm::free(root, &v).map_err(PctErr::Die)?;
    }
    Ok(())
}

/// `ostype` from a template's file name.
fn ostype_of(template: &str) -> &'static str {
    let name = template.rsplit(['/', ':']).next().unwrap_or("");
    let known = [
        ("debian", "debian"),
        ("ubuntu", "ubuntu"),
        ("alpine", "alpine"),
        ("centos", "centos"),
        ("rockylinux", "centos"),
        ("almalinux", "centos"),
        ("fedora", "fedora"),
        ("archlinux", "archlinux"),
        ("opensuse", "opensuse"),
        ("gentoo", "gentoo"),
        ("devuan", "devuan"),
        ("nixos", "nixos"),
    ];
    known
        .iter()
        .find(|(p, _)| name.starts_with(p))
        .map_or("unmanaged", |(_, o)| o)
}

fn create(root: &Root, rest: &[String], out: &mut Out) -> Res {
    let ver = root.pve_version();
    let p = parse_n(rest, 2, |o| {
        conf_type(o, ver).or_else(|| create_extra(o)).map(kind)
    })?;
    let vmid = parse_vmid(&p.args[0])?;
    let template = p.args[1].clone();

    let mut params: BTreeMap<String, String> = BTreeMap::new();
    let mut errors = Vec::new();
    for (k, v) in &p.opts {
        let vt = conf_type(k, ver)
            .or_else(|| create_extra(k))
            .unwrap_or(Vt::Str);
        // Volumes are checked when allocated.
        let checked = if k == "rootfs"
            || (k.starts_with("mp") && is_alloc(v.split(',').next().unwrap_or("")))
        {
            Ok(v.clone())
        } else {
            check_value(root, k, vt, v)
        };
        match checked {
            Ok(c) => {
                params.insert(k.clone(), c);
            }
            Err(m) => errors.push((k.clone(), m)),
        }
    }
    if !errors.is_empty() {
        return Err(PctErr::Param(errors));
    }
    let _lock = root.ct_lock(vmid)?;
    if container::conf_path(root, vmid).exists() {
        return Err(PctErr::Die(format!(
            "CT {vmid} already exists on node '{}'",
            root.settings.node
        )));
    }

    let storage = params.remove("storage").unwrap_or_else(|| "local".into());
    let start_after = params.remove("start").as_deref() == Some("1");
    let unprivileged = params
        .remove("unprivileged")
        .map_or(ver >= (9, 0, 0), |v| v == "1");
    // Secrets and create-only switches never reach the config.
    for k in [
        "password",
        "ssh-public-keys",
        "pool",
        "restore",
        "force",
        "unique",
        "ignore-unpack-errors",
        "ha-managed",
        "bwlimit",
    ] {
        params.remove(k);
    }

    // The template: a volume id on a storage with `vztmpl` content, or an absolute path.
    // Whether the file is there is found out only when it is extracted, after the lock and
    // the volumes (pve-storage `abs_filesystem_path`, called by pve-container
    // `PVE::LXC::Create::restore_archive`).
    let (template_path, template_file) = if template.starts_with('/') {
        (
            template.clone(),
            Some(root.join("hostfs").join(template.trim_start_matches('/'))),
        )
    } else {
        let (sid, vol) = template
            .split_once(':')
            .ok_or_else(|| PctErr::Die(format!("unable to parse volume ID '{template}'")))?;
        let st = pvesm::find(root, sid)
            .ok_or_else(|| PctErr::Die(format!("storage '{sid}' does not exist")))?;
        if !st.holds("vztmpl") {
            return Err(PctErr::Die(format!(
                "storage '{sid}' does not support content-type 'vztmpl'"
            )));
        }
        let file = vol.strip_prefix("vztmpl/").unwrap_or(vol);
        let base = st.path.as_deref().unwrap_or("/var/lib/vz");
        (
            format!("{}/template/cache/{file}", base.trim_end_matches('/')),
            pvesm::template_path(root, &template),
        )
    };

    let mut conf = CtConf::default();
    if let Some(d) = params.remove("description") {
        conf.description = d.split('\n').map(str::to_owned).collect();
    }
    conf.opts.insert("arch".into(), "amd64".into());
    conf.opts
        .insert("ostype".into(), ostype_of(&template).to_owned());
    // The storages of the rootfs and mount points are checked before anything is written,
    // as PVE's `create_vm` does (so its errors carry no "unable to create CT" prefix).
    let rootfs = params
        .remove("rootfs")
        .map(|r| {
            if r.parse::<f64>().is_ok() {
                format!("{storage}:{r}")
            } else {
                r
            }
        })
        .unwrap_or_else(|| format!("{storage}:4"));
    check_mount_storage(root, propstr::ROOTFS, &rootfs)?;
    for (k, v) in &params {
        if k.starts_with("mp") {
            check_mount_storage(root, propstr::MP, v)?;
        }
    }
    // The config holds only `lock: create` until the template is extracted: pve-guest-common
    // `AbstractConfig.pm` `create_and_lock_config` writes `{lock => 'create'}` and nothing
    // else; pve-container `src/PVE/API2/LXC.pm` (94f5585) `create_vm` allocates the volumes
    // (`create_disks`), extracts the archive, and only then writes the whole config (tags
    // included) with `write_config`, which drops the lock. A kill in between leaves a config
    // of that one line and the volumes.
    let mut locked = CtConf::default();
    locked.opts.insert("lock".into(), "create".into());
    container::save_conf(root, vmid, &locked)?;

    let mut allocated: Vec<String> = Vec::new();
    let result = (|| -> Res<CtConf> {
        let rootfs = alloc_mount(root, vmid, propstr::ROOTFS, &rootfs, &mut allocated)?;
        conf.opts.insert("rootfs".into(), rootfs);
        for (k, v) in params {
            let v = if k.starts_with("mp") {
                alloc_mount(root, vmid, propstr::MP, &v, &mut allocated)?
            } else {
                v
            };
            conf.opts.insert(k, v);
        }
        if unprivileged {
            conf.opts.insert("unprivileged".into(), "1".into());
        }
        if out.midway {
            // A `hang-midway` fault: the template is being extracted (the longest part of
            // a real create) when the call is killed.
            out.hang_now = true;
            return Err(PctErr::Die(String::new()));
        }
        if !template_file.as_ref().is_some_and(|f| f.is_file()) {
            return Err(PctErr::Die(format!("can't find file '{template}'")));
        }
        Ok(conf)
    })();
    if out.hang_now {
        return Ok(0);
    }
    let conf = match result {
        Ok(c) => c,
        Err(e) => {
            // On error PVE frees the volumes it allocated (`destroy_disks`) and removes the
            // half-created config (`destroy_config`).
            for v in &allocated {
                let _ = pvesm::free(root, v);
            }
            let _ = std::fs::remove_file(container::conf_path(root, vmid));
            return Err(match e {
                PctErr::Die(m) => PctErr::Die(format!("unable to create CT {vmid} - {m}")),
                other => other,
            });
        }
    };

    let hostname = conf
        .get("hostname")
        .map_or_else(|| format!("CT{vmid}"), str::to_owned);
    let ostype = conf.get("ostype").unwrap_or("debian").to_owned();
    let _ = std::fs::remove_dir_all(container::ct_dir(root, vmid));
    container::seed_rootfs(root, vmid, &hostname, &ostype)?;
    {
        let _root_lock = root.lock()?;
        let address = container::allocate_address(root)?.ok_or_else(|| {
            PctErr::Die("phoenix-emu: no free loopback address left in this root".into())
        })?;
        container::save_state(
            root,
            vmid,
            &CtState {
                running: false,
                address,
                ..CtState::default()
            },
        )?;
    }
    container::save_conf(root, vmid, &conf)?;
    out.out(format!(
        "extracting archive '{template_path}'\nTotal bytes read: 519966720 (496MiB, 165MiB/s)\nDetected container architecture: amd64\n"
    ));
    if start_after {
        set_running(root, vmid, true)?;
    }
    Ok(0)
}

fn set_running(root: &Root, vmid: u32, running: bool) -> Res<()> {
    let mut st = container::load_state(root, vmid)?;
    st.running = running;
    if running && st.address.is_empty() {
        // A config written by hand (a container phoenix did not create) has no state yet:
        // it gets its address and files on first start.
        let _root_lock = root.lock()?;
        st.address = container::allocate_address(root)?.ok_or_else(|| {
            PctErr::Die("phoenix-emu: no free loopback address left in this root".into())
        })?;
        container::save_state(root, vmid, &st)?;
    }
    if running && !container::rootfs(root, vmid).exists() {
        let conf = load(root, vmid)?;
        let hostname = conf.get("hostname").unwrap_or("localhost").to_owned();
        let ostype = conf.get("ostype").unwrap_or("debian").to_owned();
        container::seed_rootfs(root, vmid, &hostname, &ostype)?;
    }
    container::save_state(root, vmid, &st)?;
    Ok(())
}

fn start(root: &Root, rest: &[String]) -> Res {
    let p = parse_n(rest, 1, |o| match o {
        "skiplock" | "debug" => Some(Kind::Bool),
        _ => None,
    })?;
    let vmid = parse_vmid(&p.args[0])?;
    start_ct(root, vmid, p.get("skiplock") == Some("1"))?;
    Ok(0)
}

/// Start container `vmid` as `pct start` does; the boot's `pve-guests.service` starts
/// `onboot` containers through [`start_for_boot`].
fn start_ct(root: &Root, vmid: u32, skiplock: bool) -> Res<()> {
    let lock = root.ct_lock(vmid)?;
    let conf = load(root, vmid)?;
    if container::load_state(root, vmid)?.running {
        return Err(PctErr::Die(format!("CT {vmid} already running")));
    }
    if !skiplock {
        check_lock(&conf)?;
    }
    // pve-container `src/PVE/LXC.pm` (6.1.10, commit 94f5585) `vm_start` calls
    // `update_lxc_config`, which stats every `devN` path through
    // `PVE::LXC::Tools::get_device_mode_and_rdev` (`src/PVE/LXC/Tools.pm`) and dies with
    // "Device $path does not exist" before LXC runs; `src/lxc-pve-prestart-hook` repeats the
    // stat ("Could not get mode or device ID of $path") when the container starts. A GPU
    // container whose `/dev/nvidia-uvm` is not there yet (the node appears only after
    // `nvidia-modprobe -u`) therefore does not start.
    for (k, v) in &conf.opts {
        if !k.starts_with("dev") || !k[3..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Some(path) = propstr::parse(propstr::DEV, v)
            .ok()
            .and_then(|p| p.get("path").cloned())
        else {
            return Err(PctErr::Die(format!(
                "Path is not defined for passthrough device {k}"
            )));
        };
        check_device(root, &path).map_err(PctErr::Die)?;
    }
    // LXC (src/lxc/conf.c `mount_entry`) fails a bind entry whose source is missing unless
    // it carries `optional`; with `optional` the entry is skipped and the container starts
    // without the node.
    for (k, v) in &conf.lxc {
        let mut f = v.split_whitespace();
        let (Some(src), Some(dest), Some(_fstype), Some(opts)) =
            (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if k != "lxc.mount.entry"
            || !src.starts_with("/dev/")
            || opts.split(',').any(|o| o == "optional")
            || check_device(root, src).is_ok()
        {
            continue;
        }
        return Err(PctErr::Die(format!(
            "lxc-start: {vmid}: ../src/lxc/conf.c: mount_entry: 2393 No such file or directory - Failed to mount \"{src}\" on \"/usr/lib/x86_64-linux-gnu/lxc/rootfs/{dest}\"\nstartup for container '{vmid}' failed"
        )));
    }
    set_running(root, vmid, true)?;
    drop(lock);
    // The container boots: systemd starts its enabled units.
    crate::systemd::boot(root, vmid);
    Ok(())
}

/// Start container `vmid` for `pve-guests.service` at boot; the error is what `pct start`
/// would print.
pub fn start_for_boot(root: &Root, vmid: u32) -> Result<(), String> {
    start_ct(root, vmid, false).map_err(|e| match e {
        PctErr::Die(m) => m,
        other => format!("{other:?}"),
    })
}

/// Stop a running container as the host's shutdown does (its processes end with it).
pub fn stop_for_shutdown(root: &Root, vmid: u32) -> Result<(), String> {
    let _lock = root.ct_lock(vmid).map_err(|e| e.to_string())?;
    if !container::load_state(root, vmid)
        .map_err(|e| e.to_string())?
        .running
    {
        return Ok(());
    }
    set_running(root, vmid, false).map_err(|e| format!("{e:?}"))?;
    crate::docker::kill_all(root, vmid);
    Ok(())
}

fn stop(root: &Root, rest: &[String]) -> Res {
    let p = parse_n(rest, 1, |o| match o {
        "skiplock" | "overrule-shutdown" => Some(Kind::Bool),
        "timeout" => Some(Kind::Value),
        _ => None,
    })?;
    let vmid = parse_vmid(&p.args[0])?;
    let _lock = root.ct_lock(vmid)?;
    let conf = load(root, vmid)?;
    if !container::load_state(root, vmid)?.running {
        return Err(PctErr::Die(format!("CT {vmid} not running")));
    }
    if p.get("skiplock") != Some("1") {
        check_lock(&conf)?;
    }
    set_running(root, vmid, false)?;
    // Its processes end with it.
    crate::docker::kill_all(root, vmid);
    Ok(0)
}

fn status(root: &Root, rest: &[String], out: &mut Out) -> Res {
    let p = parse_n(rest, 1, |o| (o == "verbose").then_some(Kind::Bool))?;
    let vmid = parse_vmid(&p.args[0])?;
    let conf = load(root, vmid)?;
    let running = container::load_state(root, vmid)?.running;
    let state = if running { "running" } else { "stopped" };
    if p.get("verbose").and_then(opts::parse_bool) == Some(true) {
        let mem: u64 = conf
            .get("memory")
            .and_then(|m| m.parse().ok())
            .unwrap_or(512);
        let swap: u64 = conf.get("swap").and_then(|m| m.parse().ok()).unwrap_or(512);
        let mut lines = vec![
            format!("cpus: {}", conf.get("cores").unwrap_or("1")),
            format!("maxmem: {}", mem << 20),
            format!("maxswap: {}", swap << 20),
            format!("name: {}", conf.get("hostname").unwrap_or("")),
            format!("status: {state}"),
            "type: lxc".to_owned(),
            format!("vmid: {vmid}"),
        ];
        if let Some(l) = conf.get("lock") {
            lines.push(format!("lock: {l}"));
        }
        lines.sort();
        for l in lines {
            out.out(l + "\n");
        }
    } else {
        out.out(format!("status: {state}\n"));
    }
    Ok(0)
}

fn destroy(root: &Root, rest: &[String], out: &mut Out) -> Res {
    let p = parse_n(rest, 1, |o| match o {
        "force" | "purge" | "destroy-unreferenced-disks" => Some(Kind::Bool),
        _ => None,
    })?;
    let vmid = parse_vmid(&p.args[0])?;
    let mut errors = Vec::new();
    for (k, v) in &p.opts {
        if opts::parse_bool(v).is_none() {
            errors.push((
                k.clone(),
                format!("type check ('boolean') failed - got '{v}'"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(PctErr::Param(errors));
    }
    let flag = |k: &str| p.get(k).and_then(opts::parse_bool) == Some(true);
    let _lock = root.ct_lock(vmid)?;
    let conf = load(root, vmid)?;
    if conf.get("protection") == Some("1") {
        return Err(PctErr::Die(format!(
            "can't remove CT {vmid} - protection mode enabled"
        )));
    }
    check_lock(&conf)?;
    if container::load_state(root, vmid)?.running {
        if !flag("force") {
            return Err(PctErr::Die(format!(
                "unable to destroy CT {vmid} - container is running"
            )));
        }
        out.err(format!("forced to stop CT {vmid} before destroying!\n"));
    }
    crate::docker::kill_all(root, vmid);
    free_volumes(root, vmid, &conf, flag("destroy-unreferenced-disks"))?;
    let path = container::conf_path(root, vmid);
    std::fs::remove_file(&path).map_err(|e| RootError::io("remove", &path, e))?;
    let dir = container::ct_dir(root, vmid);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(RootError::io("remove", &dir, e).into());
        }
    }
    if flag("purge") {
        out.out(format!("purging CT {vmid} from related configurations..\n"));
    }
    Ok(0)
}

fn config(root: &Root, rest: &[String], out: &mut Out) -> Res {
    let p = parse_n(rest, 1, |o| match o {
        "current" => Some(Kind::Bool),
        "snapshot" => Some(Kind::Value),
        _ => None,
    })?;
    let vmid = parse_vmid(&p.args[0])?;
    let conf = load(root, vmid)?;
    if let Some(snap) = p.get("snapshot") {
        let header = format!("[{snap}]");
        let Some(pos) = conf.tail.lines().position(|l| l.trim() == header) else {
            return Err(PctErr::Die(format!("snapshot '{snap}' does not exist")));
        };
        let body: String = conf
            .tail
            .lines()
            .skip(pos + 1)
            .take_while(|l| !l.starts_with('['))
            .map(|l| format!("{l}\n"))
            .collect();
        out.out(CtConf::parse(&body).show());
        return Ok(0);
    }
    out.out(conf.show());
    Ok(0)
}

fn set(root: &Root, rest: &[String], out: &mut Out) -> Res {
    let ver = root.pve_version();
    let p = parse_n(rest, 1, |o| {
        conf_type(o, ver).or_else(|| set_extra(o)).map(kind)
    })?;
    let vmid = parse_vmid(&p.args[0])?;
    let mut errors = Vec::new();
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &p.opts {
        if set_extra(k).is_some() {
            continue;
        }
        let vt = conf_type(k, ver).unwrap_or(Vt::Str);
        let checked = if k.starts_with("mp")
            && is_alloc(v.split(',').find(|p| !p.contains('=')).unwrap_or(""))
        {
            propstr::parse(propstr::MP, v).map(|_| v.clone())
        } else {
            check_value(root, k, vt, v)
        };
        match checked {
            Ok(c) => {
                params.insert(k.clone(), c);
            }
            Err(m) => errors.push((k.clone(), m)),
        }
    }
    let delete = p.get("delete").map(split_list).unwrap_or_default();
    for d in &delete {
        if conf_type(d, ver).is_none() {
            errors.push((
                "delete".into(),
                format!("invalid format - unknown option '{d}'"),
            ));
        }
        if params.contains_key(d) {
            errors.push((
                "delete".into(),
                format!("you can't use '-{d}' and -delete {d}' at the same time"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(PctErr::Param(errors));
    }
    let _lock = root.ct_lock(vmid)?;
    let mut conf = load(root, vmid)?;
    check_lock(&conf)?;
    for d in &delete {
        if conf.get(d).is_none() {
            out.err(format!(
                "cannot delete '{d}' - not set in current configuration!\n"
            ));
            continue;
        }
        match d.as_str() {
            "memory" | "rootfs" | "ostype" => {
                return Err(PctErr::Die(format!(
                    "unable to delete required option '{d}'"
                )));
            }
            "unprivileged" => {
                return Err(PctErr::Die(format!(
                    "unable to delete read-only option: '{d}'"
                )));
            }
            _ => {}
        }
        conf.opts.remove(d);
    }
    let mut allocated = Vec::new();
    for (k, v) in params {
        if k == "unprivileged" {
            return Err(PctErr::Die(format!(
                "unable to modify read-only option: '{k}'"
            )));
        }
        let v = if k.starts_with("mp")
            && is_alloc(v.split(',').find(|p| !p.contains('=')).unwrap_or(""))
        {
            alloc_mount(root, vmid, propstr::MP, &v, &mut allocated)?
        } else {
            v
        };
        if k == "description" {
            conf.description = v.split('\n').map(str::to_owned).collect();
        } else {
            conf.opts.insert(k, v);
        }
    }
    container::save_conf(root, vmid, &conf)?;
    Ok(0)
}

/// `--perms`: octal by default, `0x` for hex (Perl's `strtoul($perms, 0)` after PVE
/// prefixes a `0`).
fn parse_perms(perms: &str) -> Option<u32> {
    let p = if perms.starts_with('0') {
        perms.to_owned()
    } else {
        format!("0{perms}")
    };
    if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).ok();
    }
    u32::from_str_radix(&p, 8).ok()
}

fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn push(root: &Root, rest: &[String]) -> Res {
    let p = parse_n(rest, 3, |o| match o {
        "perms" | "user" | "group" => Some(Kind::Value),
        _ => None,
    })?;
    let vmid = parse_vmid(&p.args[0])?;
    let (file, dest) = (&p.args[1], &p.args[2]);
    let _lock = root.ct_lock(vmid)?;
    let running =
        container::conf_path(root, vmid).exists() && container::load_state(root, vmid)?.running;
    if !running {
        return Err(PctErr::Die("can only push files to a running CT".into()));
    }
    let conf = load(root, vmid)?;
    let unprivileged = conf.get("unprivileged") == Some("1");
    let uid = match p.get("user") {
        Some(u) => Some(
            container::lookup_id(root, vmid, "etc/passwd", u)
                .ok_or_else(|| PctErr::Die(format!("failed to get uid for: {u}")))?,
        ),
        None => None,
    };
    let gid = match p.get("group") {
        Some(g) => Some(
            container::lookup_id(root, vmid, "etc/group", g)
                .ok_or_else(|| PctErr::Die(format!("failed to get gid for: {g}")))?,
        ),
        None => None,
    };
    let mode = match p.get("perms") {
        Some(m) => Some(parse_perms(m).ok_or_else(|| PctErr::Die(format!("invalid mode: '{m}'")))?),
        None => None,
    };
    // Streamed, as pct's `copy_file` does: a driver installer is hundreds of megabytes.
    let mut source = std::fs::File::open(file)
        .map_err(|_| PctErr::Die(format!("failed to open {file} for reading")))?;
    let target = container::resolve(root, vmid, &conf, dest);
    // For an unprivileged CT pct enters its user namespace and becomes its root before it
    // creates the file (pve-container `src/PVE/CLI/pct.pm` `push`, 94f5585): below a bind
    // mount whose host directory that root does not own, the create is refused.
    if unprivileged {
        if let Some(source) = container::host_bind_of(&conf, dest) {
            if !crate::hostfs::ct_may_write(root, &conf, &source)? {
                return Err(PctErr::Die(format!(
                    "failed to create file: {dest}: Permission denied"
                )));
            }
        }
    }
    let existed = target.exists();
    let mut sink = std::fs::File::create(&target)
        .map_err(|e| PctErr::Die(format!("failed to create file: {dest}: {}", io_text(&e))))?;
    std::io::copy(&mut source, &mut sink)
        .map_err(|e| PctErr::Die(format!("failed to write {dest}: {}", io_text(&e))))?;
    let mode = mode.unwrap_or(if existed {
        std::fs::metadata(&target).map_or(0o644, |m| m.permissions().mode() & 0o7777)
    } else {
        0o644
    });
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
        .map_err(|e| RootError::io("set the mode of", &target, e))?;
    if (uid.is_some() || gid.is_some()) && nix::unistd::geteuid().is_root() {
        let shift = if unprivileged { 100_000 } else { 0 };
        nix::unistd::chown(
            &target,
            uid.map(|u| nix::unistd::Uid::from_raw(u + shift)),
            gid.map(|g| nix::unistd::Gid::from_raw(g + shift)),
        )
        .map_err(|e| RootError::io("chown", &target, e.into()))?;
    }
    Ok(0)
}

fn exec(root: &Root, rest: &[String], stdin: &[u8], out: &mut Out) -> Res {
    let keep_env_exists = root.pve_version() >= (8, 2, 0);
    let p = opts::parse(rest, |o| {
        (o == "keep-env" && keep_env_exists).then_some(Kind::Bool)
    })
    .map_err(PctErr::Opt)?;
    let Some(vmid) = p.args.first() else {
        return Err(PctErr::Args("not enough arguments"));
    };
    let vmid = parse_vmid(vmid)?;
    if let Some(v) = p.get("keep-env") {
        if opts::parse_bool(v).is_none() {
            return Err(PctErr::Param(vec![(
                "keep-env".into(),
                format!("type check ('boolean') failed - got '{v}'"),
            )]));
        }
    }
    let conf = load(root, vmid)?;
    if !container::load_state(root, vmid)?.running {
        return Err(PctErr::Die(format!("container '{vmid}' not running!")));
    }
    let argv = &p.args[1..];
    if argv.is_empty() {
        return Err(PctErr::Die("missing command".into()));
    }
    Ok(crate::inner::run(root, vmid, &conf, argv, stdin, out))
}

/// `pct unlock`: pve-container `src/PVE/CLI/pct.pm` `unlock` calls pve-guest-common
/// `remove_lock` without a lock name: under the config lock, it dies `no lock found trying
/// to remove any lock` when there is none, else drops the `lock` key and writes the config.
fn unlock(root: &Root, rest: &[String]) -> Res {
    let p = parse_n(rest, 1, |_| None)?;
    let vmid = parse_vmid(&p.args[0])?;
    let _lock = root.ct_lock(vmid)?;
    let mut conf = load(root, vmid)?;
    if conf.opts.remove("lock").is_none() {
        return Err(PctErr::Die(
            "no lock found trying to remove any lock".into(),
        ));
    }
    container::save_conf(root, vmid, &conf)?;
    Ok(0)
}

fn list(root: &Root, rest: &[String], out: &mut Out) -> Res {
    parse_n(rest, 0, |_| None)?;
    let dir = root.join("etc/pve/lxc");
    let mut ids: Vec<u32> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.strip_suffix(".conf")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    if ids.is_empty() {
        return Ok(0);
    }
    out.out(format!(
        "{:<10} {:<10} {:<12} {:<20}\n",
        "VMID", "Status", "Lock", "Name"
    ));
    for id in ids {
        let Some(conf) = container::load_conf(root, id)? else {
            continue;
        };
        let st = if container::load_state(root, id)?.running {
            "running"
        } else {
            "stopped"
        };
        out.out(format!(
            "{:<10} {:<10} {:<12} {:<20}\n",
            id,
            st,
            conf.get("lock").unwrap_or(""),
            conf.get("hostname").unwrap_or("")
        ));
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_table_follows_the_version() {
        assert!(conf_type("dev0", (8, 1, 0)).is_some());
        assert!(conf_type("dev0", (8, 0, 4)).is_none());
        assert!(conf_type("net31", (8, 4, 1)).is_some());
        assert!(conf_type("net32", (8, 4, 1)).is_none());
        assert!(conf_type("mp01", (8, 4, 1)).is_none());
        assert!(conf_type("bogus", (8, 4, 1)).is_none());
    }

    #[test]
    fn perms_are_octal_unless_hex() {
        assert_eq!(parse_perms("0600"), Some(0o600));
        assert_eq!(parse_perms("644"), Some(0o644));
        assert_eq!(parse_perms("0x1a4"), Some(0o644));
        assert_eq!(parse_perms("9"), None);
    }

    #[test]
    fn ostype_from_template() {
        assert_eq!(
            ostype_of("local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"),
            "debian"
        );
        assert_eq!(ostype_of("/tmp/ubuntu-24.04.tar.zst"), "ubuntu");
        assert_eq!(ostype_of("local:vztmpl/custom.tar.gz"), "unmanaged");
    }
}

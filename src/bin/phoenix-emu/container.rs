//! An emulated container: its config file, its state (running, loopback address, users whose
//! password was set) and its files.
//!
//! - config: `$ROOT/etc/pve/lxc/<vmid>.conf` (exists = the container exists);
//! - files: `$ROOT/var/lib/lxc/<vmid>/rootfs/` (PVE's own mount point path, under the root),
//!   seeded at create time with `/etc/{hostname,passwd,group,os-release}` and the usual
//!   top-level directories;
//! - state: `$ROOT/var/lib/lxc/<vmid>/emu-state.json`.
//!
//! Paths inside the container are resolved lexically (`..` stops at `/`). Decisions:
//! a bind mount point (`mpN: /host/path,mp=/ct/path`) maps to `$ROOT/hostfs/host/path`,
//! where emulated ZFS datasets are mounted; a storage-backed mount point maps to
//! `$ROOT/var/lib/lxc/<vmid>/volumes/<mpN>/`; `/dev/X` maps to the root's `dev/X` when the
//! config passes it through (`devN:` or an `lxc.mount.entry` naming it). Symlinks inside the
//! rootfs are not resolved specially: only the emulator writes there.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ctconf::CtConf;
use crate::propstr;
use crate::root::{Root, RootError, read_json, write_json};

/// A container's runtime state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CtState {
    /// Whether it runs.
    pub running: bool,
    /// Its loopback address (`127.A.B.N`), assigned at create time.
    pub address: String,
    /// Users whose password `chpasswd` set (never the password).
    #[serde(default)]
    pub passwords_set: Vec<String>,
    /// Packages (`apt-get`).
    #[serde(default)]
    pub apt: crate::apt::AptState,
    /// Docker's images and containers.
    #[serde(default)]
    pub docker: crate::docker::DockerState,
    /// systemd's units.
    #[serde(default)]
    pub systemd: crate::systemd::SystemdState,
    /// What `nvidia-ctk` configured.
    #[serde(default)]
    pub nvidia_ctk: crate::nvctk::CtkState,
}

/// `etc/pve/lxc/<vmid>.conf`.
pub fn conf_path(root: &Root, vmid: u32) -> PathBuf {
    root.join(&format!("etc/pve/lxc/{vmid}.conf"))
}

/// `var/lib/lxc/<vmid>`.
pub fn ct_dir(root: &Root, vmid: u32) -> PathBuf {
    root.join(&format!("var/lib/lxc/{vmid}"))
}

/// The container's rootfs directory.
pub fn rootfs(root: &Root, vmid: u32) -> PathBuf {
    ct_dir(root, vmid).join("rootfs")
}

/// The config, `None` when the container does not exist.
pub fn load_conf(root: &Root, vmid: u32) -> Result<Option<CtConf>, RootError> {
    let path = conf_path(root, vmid);
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(CtConf::parse(&t))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RootError::io("read", &path, e)),
    }
}

/// Write the config atomically.
pub fn save_conf(root: &Root, vmid: u32, conf: &CtConf) -> Result<(), RootError> {
    crate::root::atomic_write(&conf_path(root, vmid), conf.render().as_bytes())
}

/// The state (default when missing).
pub fn load_state(root: &Root, vmid: u32) -> Result<CtState, RootError> {
    read_json(&ct_dir(root, vmid).join("emu-state.json"))
}

/// Write the state atomically.
pub fn save_state(root: &Root, vmid: u32, st: &CtState) -> Result<(), RootError> {
    write_json(&ct_dir(root, vmid).join("emu-state.json"), st)
}

/// Change the state under PVE's config lock of the container (as `chpasswd` does).
pub fn update_state<T>(
    root: &Root,
    vmid: u32,
    f: impl FnOnce(&mut CtState) -> T,
) -> Result<T, RootError> {
    let _lock = root.ct_lock(vmid)?;
    let mut st = load_state(root, vmid)?;
    let r = f(&mut st);
    save_state(root, vmid, &st)?;
    Ok(r)
}

/// The smallest free address `prefix.N` (N in 2..=254) among this root's containers.
/// Call under the root lock.
pub fn allocate_address(root: &Root) -> Result<Option<String>, RootError> {
    let prefix = root.loopback_prefix();
    let mut used = std::collections::BTreeSet::new();
    let dir = root.join("var/lib/lxc");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let Some(vmid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let st = load_state(root, vmid)?;
            used.insert(st.address);
        }
    }
    Ok((2..=254)
        .map(|n| format!("{prefix}.{n}"))
        .find(|a| !used.contains(a)))
}

/// Seed a fresh rootfs.
pub fn seed_rootfs(root: &Root, vmid: u32, hostname: &str, ostype: &str) -> Result<(), RootError> {
    let fs = rootfs(root, vmid);
    for d in [
        "etc",
        "etc/apt/sources.list.d",
        "etc/systemd/system",
        "lib/systemd/system",
        "root",
        "tmp",
        "usr/bin",
        "usr/local",
        "usr/share/keyrings",
        "var/lib",
        "opt",
        "dev",
        "run",
    ] {
        let p = fs.join(d);
        std::fs::create_dir_all(&p).map_err(|e| RootError::io("create", &p, e))?;
    }
    let (id, pretty) = match ostype {
        "ubuntu" => ("ubuntu", "Ubuntu 24.04 LTS"),
        "alpine" => ("alpine", "Alpine Linux v3.20"),
        _ => ("debian", "Debian GNU/Linux 12 (bookworm)"),
    };
    let files = [
        ("etc/hostname", format!("{hostname}\n")),
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                .to_owned(),
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n".to_owned()),
        (
            "etc/os-release",
            format!("PRETTY_NAME=\"{pretty}\"\nID={id}\n"),
        ),
    ];
    for (rel, text) in files {
        let p = fs.join(rel);
        std::fs::write(&p, text).map_err(|e| RootError::io("write", &p, e))?;
    }
    // Nothing NVIDIA: `ubuntu-24.04-standard` has no nvidia-smi (DESIGN.md §11); the driver
    // userspace comes from an installer or packages (see `nvctk` and `apt`).
    Ok(())
}

/// Normalise a path inside the container to its components (`..` stops at `/`).
pub fn normalize(path: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    parts
}

/// Where a path inside container `vmid` lives under the root.
pub fn resolve(root: &Root, vmid: u32, conf: &CtConf, path: &str) -> PathBuf {
    let parts = normalize(path);
    let joined = format!("/{}", parts.join("/"));
    // Device nodes passed through.
    if parts.len() >= 2 && parts[0] == "dev" && passes_device(conf, &joined) {
        return root.join("dev").join(parts[1..].join("/"));
    }
    // The longest mount point containing the path.
    let mut best: Option<(usize, PathBuf)> = None;
    for (key, value) in &conf.opts {
        if !key.starts_with("mp") || !key[2..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(mp) = propstr::parse(propstr::MP, value) else {
            continue;
        };
        let (Some(volume), Some(target)) = (mp.get("volume"), mp.get("mp")) else {
            continue;
        };
        let target = normalize(target);
        if parts.len() < target.len() || parts[..target.len()] != target[..] {
            continue;
        }
        if best.as_ref().is_some_and(|(n, _)| *n >= target.len()) {
            continue;
        }
        let base = if volume.starts_with('/') {
            root.join("hostfs").join(volume.trim_start_matches('/'))
        } else {
            ct_dir(root, vmid).join("volumes").join(key)
        };
        best = Some((target.len(), base));
    }
    match best {
        Some((n, base)) => parts[n..].iter().fold(base, |p, c| p.join(c)),
        None => parts.iter().fold(rootfs(root, vmid), |p, c| p.join(c)),
    }
}

/// The host directory of the bind mount (`mpN` with an absolute source) that holds
/// `path` inside the container, if one does (the longest mount point wins, as in
/// [`resolve`]).
pub fn host_bind_of(conf: &CtConf, path: &str) -> Option<String> {
    let parts = normalize(path);
    let mut best: Option<(usize, Option<String>)> = None;
    for (key, value) in &conf.opts {
        if !key.starts_with("mp") || !key[2..].chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let Ok(mp) = propstr::parse(propstr::MP, value) else {
            continue;
        };
        let (Some(volume), Some(target)) = (mp.get("volume"), mp.get("mp")) else {
            continue;
        };
        let target = normalize(target);
        if parts.len() < target.len() || parts[..target.len()] != target[..] {
            continue;
        }
        if best.as_ref().is_some_and(|(n, _)| *n >= target.len()) {
            continue;
        }
        best = Some((
            target.len(),
            volume.starts_with('/').then(|| volume.clone()),
        ));
    }
    best.and_then(|(_, source)| source)
}

/// Whether the config passes `/dev/...` through.
fn passes_device(conf: &CtConf, dev: &str) -> bool {
    let by_dev = conf.opts.iter().any(|(k, v)| {
        k.starts_with("dev")
            && propstr::parse(propstr::DEV, v)
                .ok()
                .and_then(|p| p.get("path").cloned())
                .is_some_and(|p| dev == p || dev.starts_with(&format!("{p}/")))
    });
    let by_entry = conf.lxc.iter().any(|(k, v)| {
        k == "lxc.mount.entry"
            && v.split_whitespace()
                .next()
                .is_some_and(|src| dev == src || dev.starts_with(&format!("{src}/")))
    });
    by_dev || by_entry
}

/// A user's uid from the container's `/etc/passwd` (numeric names are uids).
pub fn lookup_id(root: &Root, vmid: u32, file: &str, name: &str) -> Option<u32> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let text = std::fs::read_to_string(rootfs(root, vmid).join(file)).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotdot_stays_inside() {
        assert_eq!(normalize("/../../etc/./passwd"), ["etc", "passwd"]);
        assert_eq!(normalize("a/../b"), ["b"]);
    }
}

//! Setting up the emulated Proxmox host (DESIGN.md §7) for `--host emulated`.
//!
//! [`prepare`] makes `$PHOENIX_EMU_ROOT` an emulated PVE node, idempotently and safely when
//! several phoenix processes prepare the same root at once:
//! - the directories the emulator and the `pve` backend use (`bin/`, `etc/pve/lxc/`,
//!   `etc/systemd/system/`, `run/lock/lxc/`, `var/lib/lxc/`, `hostfs/`);
//! - `bin/{pct,pvesm,pveversion,zfs,nvidia-smi,systemctl,nvidia-modprobe}`: symlinks to the
//!   `phoenix-emu` binary
//!   (found through `PHOENIX_EMU_BIN`, else next to the running executable, else in its
//!   parent directory: cargo's test binaries live in `target/debug/deps`), replaced
//!   atomically when they point elsewhere;
//! - `emu.json`, the emulator's settings: `pve_version` (from `PHOENIX_EMU_PVE_VERSION`; a
//!   version already in the file wins over the built-in default, so a test may pin one),
//!   `loopback_prefix` and `node`; whatever else a test put there (the GPUs, their minor
//!   numbers, MIG, the cgroup mode) is kept and read by the emulator alone.
//!
//! The emulated host's `dev/` (its NVIDIA device nodes) and `sys/` are *not* made here: the
//! emulator creates them when the host boots on its first call, as a real host's kernel
//! and udev do (a device node phoenix made itself would only echo phoenix's beliefs).
//! phoenix reads `dev/` only after asking `nvidia-smi` for the GPUs, which boots the host.
//!
//! Each root gets its own loopback `/24` inside `127.64.0.0/10`: `127.A.B.x` with A in
//! 64..=127 and B from an FNV-1a hash of the root path (the emulator derives the same when
//! the file lacks it); containers get `127.A.B.2`, `.3`, … when created.

use std::path::{Path, PathBuf};

use super::pve::PvePaths;
use super::{HostError, Result};
use crate::settings::{Settings, Source};

/// The tools the emulator plays, as installed under `$ROOT/bin`.
pub const EMU_TOOLS: [&str; 9] = [
    "pct",
    "pvesm",
    "pveversion",
    "zfs",
    "nvidia-smi",
    "systemctl",
    "nvidia-modprobe",
    "stat",
    "chown",
];

/// Environment variable naming the `phoenix-emu` binary explicitly.
pub const EMU_BIN_ENV: &str = "PHOENIX_EMU_BIN";

/// Prepare the emulated host's root (idempotent) and return the PVE paths pointing into it.
pub fn prepare(settings: &Settings) -> Result<PvePaths> {
    // The runs of one `phoenix up` open the host from several threads at once: one at a
    // time re-links the tools and rewrites the settings file (each step is idempotent, but
    // two threads replacing one link at once could see it missing).
    static PREPARING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = PREPARING.lock().unwrap_or_else(|e| e.into_inner());
    let root = settings.emu_root.value.clone();
    for dir in [
        "bin",
        "etc/pve/lxc",
        "etc/systemd/system",
        "run/lock/lxc",
        "var/lib/lxc",
        "hostfs",
    ] {
        let p = root.join(dir);
        std::fs::create_dir_all(&p).map_err(|e| io("create", &p, e))?;
    }
    let emu = find_emu_binary()?;
    let bin = root.join("bin");
    for tool in EMU_TOOLS {
        install_link(&emu, &bin.join(tool))?;
    }
    write_emu_settings(&root, settings)?;
    Ok(PvePaths {
        pct: bin.join("pct"),
        pvesm: bin.join("pvesm"),
        pveversion: bin.join("pveversion"),
        zfs: bin.join("zfs"),
        nvidia_smi: bin.join("nvidia-smi"),
        systemctl: bin.join("systemctl"),
        nvidia_modprobe: bin.join("nvidia-modprobe"),
        stat: bin.join("stat"),
        chown: bin.join("chown"),
        systemd_dir: root.join("etc/systemd/system"),
        sys_dir: root.join("sys"),
        proc_dir: root.join("proc"),
        host_root: root.join("hostfs"),
        lxc_dir: root.join("etc/pve/lxc"),
        dev_dir: root.join("dev"),
        lock_dir: root.join("run/lock/lxc"),
        backup_dir: settings.state_dir.value.join("backups"),
        tmp_dir: settings.state_dir.value.join("tmp"),
    })
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> HostError {
    HostError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The `phoenix-emu` executable.
pub fn find_emu_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(EMU_BIN_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(io(
                "find the emulator binary named by PHOENIX_EMU_BIN at",
                &p,
                std::io::ErrorKind::NotFound.into(),
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| io("locate", Path::new("/proc/self/exe"), e))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        Some(dir.join("phoenix-emu")),
        dir.parent().map(|d| d.join("phoenix-emu")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or_else(|| HostError::EmulatorMissing { exe: exe.clone() })
}

/// Make `link` a symlink to `target`, atomically replacing a different one.
fn install_link(target: &Path, link: &Path) -> Result<()> {
    if std::fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let tmp = link.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| io("create the symlink", &tmp, e))?;
    std::fs::rename(&tmp, link).map_err(|e| io("install the symlink", link, e))
}

/// FNV-1a 64 of `bytes` (stable across Rust releases, unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The loopback prefix `127.A.B` of a root.
pub fn loopback_prefix(root: &Path) -> String {
    let h = fnv1a(root.as_os_str().as_encoded_bytes());
    format!("127.{}.{}", 64 + h % 64, (h >> 8) % 256)
}

/// Write `emu.json` (keeping what a test put there).
fn write_emu_settings(root: &Path, settings: &Settings) -> Result<()> {
    let path = root.join("emu.json");
    let mut obj = match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                return Err(HostError::Parse {
                    command: path.display().to_string(),
                    message: "the emulated host's settings must be a JSON object".into(),
                });
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => return Err(io("read", &path, e)),
    };
    let before = obj.clone();
    let version = &settings.emu_pve_version;
    if version.source != Source::Default || !obj.contains_key("pve_version") {
        obj.insert("pve_version".into(), version.value.clone().into());
    }
    obj.entry("loopback_prefix")
        .or_insert_with(|| loopback_prefix(root).into());
    obj.entry("node").or_insert_with(|| "pve".into());
    if obj != before || !path.exists() {
        let mut text = serde_json::to_vec_pretty(&serde_json::Value::Object(obj)).map_err(|e| {
            HostError::Parse {
                command: path.display().to_string(),
                message: e.to_string(),
            }
        })?;
        text.push(b'\n');
        crate::atomic_file::write(&path, &text, 0o600).map_err(|e| io("write", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_in_range_and_differs_by_root() {
        let a = loopback_prefix(Path::new("/tmp/a/emulated"));
        let b = loopback_prefix(Path::new("/tmp/b/emulated"));
        assert_ne!(a, b);
        let parts: Vec<u32> = a.split('.').map(|p| p.parse().unwrap()).collect();
        assert_eq!(parts[0], 127);
        assert!((64..=127).contains(&parts[1]));
        assert_eq!(a, loopback_prefix(Path::new("/tmp/a/emulated")));
    }
}

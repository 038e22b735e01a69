//! Setting up the emulated Proxmox host (DESIGN.md §7) for `--host emulated`.
//!
//! [`prepare`] makes `$PHOENIX_EMU_ROOT` an emulated PVE node, idempotently and safely when
//! several phoenix processes prepare the same root at once:
//! - the directories the emulator and the `pve` backend use (`bin/`, `dev/`,
//!   `etc/pve/lxc/`, `run/lock/lxc/`, `var/lib/lxc/`, `hostfs/`);
//! - `bin/{pct,pvesm,pveversion,zfs,nvidia-smi}`: symlinks to the `phoenix-emu` binary
//!   (found through `PHOENIX_EMU_BIN`, else next to the running executable, else in its
//!   parent directory: cargo's test binaries live in `target/debug/deps`), replaced
//!   atomically when they point elsewhere;
//! - `emu.json`, the emulator's settings: `pve_version` (from `PHOENIX_EMU_PVE_VERSION`; a
//!   version already in the file wins over the built-in default, so a test may pin one),
//!   `gpus` (`h100x2` unless the file says otherwise), `loopback_prefix` and `node`;
//! - the NVIDIA device nodes with the H100 fixture's numbers (`nvidia0`/`nvidia1` 195:N,
//!   `nvidiactl` 195:255, `nvidia-uvm` 238:0, `nvidia-uvm-tools` 238:1,
//!   `nvidia-caps/nvidia-cap1|2` 241:1|2) made with `mknod`. Where `mknod` is refused
//!   (no `CAP_MKNOD`), each becomes the documented stand-in: a regular file holding
//!   `c MAJOR:MINOR\n`, which the emulator accepts as a device.
//!
//! Each root gets its own loopback `/24` inside `127.64.0.0/10`: `127.A.B.x` with A in
//! 64..=127 and B from an FNV-1a hash of the root path (the emulator derives the same when
//! the file lacks it); containers get `127.A.B.2`, `.3`, … when created.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::pve::PvePaths;
use super::{HostError, Result};
use crate::settings::{Settings, Source};

/// The tools the emulator plays, as installed under `$ROOT/bin`.
pub const EMU_TOOLS: [&str; 5] = ["pct", "pvesm", "pveversion", "zfs", "nvidia-smi"];

/// Environment variable naming the `phoenix-emu` binary explicitly.
pub const EMU_BIN_ENV: &str = "PHOENIX_EMU_BIN";

/// Prepare the emulated host's root (idempotent) and return the PVE paths pointing into it.
pub fn prepare(settings: &Settings) -> Result<PvePaths> {
    let root = settings.emu_root.value.clone();
    for dir in [
        "bin",
        "dev/nvidia-caps",
        "etc/pve/lxc",
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
    let gpus = write_emu_settings(&root, settings)?;
    make_device_nodes(&root.join("dev"), gpus)?;
    Ok(PvePaths {
        pct: bin.join("pct"),
        pvesm: bin.join("pvesm"),
        pveversion: bin.join("pveversion"),
        zfs: bin.join("zfs"),
        nvidia_smi: bin.join("nvidia-smi"),
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

/// Which GPUs the settings file says the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GpuSet {
    Two,
    One,
    Zero,
}

/// Write `emu.json` (keeping what a test put there) and return its GPU set.
fn write_emu_settings(root: &Path, settings: &Settings) -> Result<GpuSet> {
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
    obj.entry("gpus").or_insert_with(|| "h100x2".into());
    obj.entry("loopback_prefix")
        .or_insert_with(|| loopback_prefix(root).into());
    obj.entry("node").or_insert_with(|| "pve".into());
    let gpus = match obj.get("gpus").and_then(|v| v.as_str()) {
        Some("h100x1") => GpuSet::One,
        Some("none") => GpuSet::Zero,
        Some("h100x2") => GpuSet::Two,
        other => {
            return Err(HostError::Parse {
                command: path.display().to_string(),
                message: format!(
                    "`gpus` must be \"h100x2\", \"h100x1\" or \"none\", not {other:?}"
                ),
            });
        }
    };
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
    Ok(gpus)
}

/// `(relative path, major, minor, mode)` of the device nodes for `gpus`.
fn device_nodes(gpus: GpuSet) -> Vec<(String, u64, u64, u32)> {
    let count = match gpus {
        GpuSet::Two => 2,
        GpuSet::One => 1,
        GpuSet::Zero => 0,
    };
    let mut v: Vec<(String, u64, u64, u32)> = (0..count)
        .map(|i| (format!("nvidia{i}"), 195, i, 0o666))
        .collect();
    if count > 0 {
        v.extend([
            ("nvidiactl".to_owned(), 195, 255, 0o666),
            ("nvidia-uvm".to_owned(), 238, 0, 0o666),
            ("nvidia-uvm-tools".to_owned(), 238, 1, 0o666),
            ("nvidia-caps/nvidia-cap1".to_owned(), 241, 1, 0o400),
            ("nvidia-caps/nvidia-cap2".to_owned(), 241, 2, 0o444),
        ]);
    }
    v
}

/// Create the device nodes under `dev` (character devices, or stand-in files where mknod is
/// refused). Existing nodes are left alone.
fn make_device_nodes(dev: &Path, gpus: GpuSet) -> Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    for (rel, major, minor, mode) in device_nodes(gpus) {
        let path = dev.join(&rel);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        let made = mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(mode),
            makedev(major, minor),
        );
        match made {
            Ok(()) => {
                // mknod applies the umask; set the fixture's mode exactly.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io("set the mode of", &path, e))?;
            }
            Err(nix::errno::Errno::EEXIST) => {}
            Err(nix::errno::Errno::EPERM | nix::errno::Errno::EACCES) => {
                std::fs::write(&path, format!("c {major}:{minor}\n"))
                    .map_err(|e| io("write the device stand-in", &path, e))?;
            }
            Err(e) => return Err(io("mknod", &path, e.into())),
        }
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

    #[test]
    fn device_table_follows_the_fixture() {
        let two = device_nodes(GpuSet::Two);
        assert!(two.contains(&("nvidia1".to_owned(), 195, 1, 0o666)));
        assert!(two.contains(&("nvidiactl".to_owned(), 195, 255, 0o666)));
        assert!(two.contains(&("nvidia-uvm-tools".to_owned(), 238, 1, 0o666)));
        assert!(two.contains(&("nvidia-caps/nvidia-cap2".to_owned(), 241, 2, 0o444)));
        assert_eq!(device_nodes(GpuSet::One).len(), 6);
        assert!(device_nodes(GpuSet::Zero).is_empty());
    }

    #[test]
    fn device_nodes_are_made_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("nvidia-caps")).unwrap();
        make_device_nodes(dir.path(), GpuSet::One).unwrap();
        make_device_nodes(dir.path(), GpuSet::One).unwrap();
        let meta = std::fs::metadata(dir.path().join("nvidia0")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_char_device() {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(meta.rdev(), nix::sys::stat::makedev(195, 0));
        } else {
            let text = std::fs::read_to_string(dir.path().join("nvidia0")).unwrap();
            assert_eq!(text, "c 195:0\n");
        }
    }
}

//! Disk sizes of the emulated host, kept as sparse accounting rather than real bytes.
//!
//! A real host has disks of a size: a container's rootfs is a volume of `storage_size_gb`
//! (`rootfs: <storage>:<volume>,size=64G`, pve-container `PVE/LXC/Config.pm`), a model
//! dataset holds what its pool (or `refquota`/`quota`) allows, and a write past the size
//! fails with `ENOSPC`, "No space left on device". What fills them is large (DESIGN.md §11):
//! the `vllm/vllm-openai` image ≈ 29 GB unpacked, a 24B bf16 model ≈ 47 GB. The emulator
//! writes no such bytes: a big file is a small file whose content names its size
//! ([`write_sparse`]), and a filesystem's use is the sum of its files' sizes ([`du`]) plus
//! what its template ships. So the test machines' disks and the suite's file scans stay
//! small, while `du`, downloads, pulls and their failures see the sizes of a real host.
//!
//! Decisions: sizes are decimal (`GB` = 10⁹ bytes, as Hugging Face and Docker show them);
//! a fresh rootfs already holds ≈ 0.5 GB (an unpacked `ubuntu-24.04-standard` template); a
//! bind mount of a path that no emulated dataset holds lives on the host's own disk, nominally
//! 100 GB.

use std::io;
use std::path::{Path, PathBuf};

use crate::container;
use crate::ctconf::CtConf;
use crate::out::Out;
use crate::propstr;
use crate::root::Root;

/// 10⁹ bytes.
pub const GB: u64 = 1_000_000_000;
/// 10⁶ bytes.
pub const MB: u64 = 1_000_000;
/// What the unpacked CT template occupies on a fresh rootfs.
pub const TEMPLATE_BYTES: u64 = GB / 2;
/// The host's own disk, for bind mounts outside every emulated dataset.
pub const HOST_DISK_BYTES: u64 = 100 * GB;
/// A rootfs without a `size=` (PVE's default rootfs is 4 GiB, `pct create` without
/// `--rootfs` on `local`).
const DEFAULT_ROOTFS_BYTES: u64 = 4 << 30;

/// The first bytes of a sparse file.
const MAGIC: &str = "phoenix-emu sparse file: ";

/// The error text of a write past a filesystem's size (`strerror(ENOSPC)`).
pub const ENOSPC: &str = "No space left on device";

/// Write `path` as a file that counts as `bytes` (creating its directory).
pub fn write_sparse(path: &Path, bytes: u64) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{MAGIC}{bytes} bytes\n"))
}

/// The size `path` counts as: a sparse file's declared size, a file's length, a symlink's
/// target length (as `du -b` counts it), 0 for anything else.
pub fn apparent(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.file_type().is_symlink() {
        return std::fs::read_link(path).map_or(0, |t| t.as_os_str().len() as u64);
    }
    if !meta.is_file() {
        return 0;
    }
    if meta.len() < 64 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Some(n) = text
                .strip_prefix(MAGIC)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
            {
                return n;
            }
        }
    }
    meta.len()
}

/// The total size of the files under `dir` (symlinks not followed), as `du -sb` counts.
pub fn du(dir: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return 0;
    };
    if !meta.is_dir() {
        return apparent(dir);
    }
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(_) => total += apparent(&p),
                Err(_) => {}
            }
        }
    }
    total
}

/// One filesystem as a container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fs {
    /// What `df` would call it (the volume id, the dataset, or the host path).
    pub name: String,
    /// The directory under the emulated root that holds its files.
    pub dir: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Bytes in use that no file under `dir` accounts for.
    pub base: u64,
}

impl Fs {
    /// Bytes in use.
    pub fn used(&self) -> u64 {
        du(&self.dir) + self.base
    }

    /// Bytes free.
    pub fn avail(&self) -> u64 {
        self.size.saturating_sub(self.used())
    }
}

/// A volume's `size=` from a `rootfs`/`mpN` value.
fn size_of(format: &'static [propstr::Key], value: &str) -> Option<u64> {
    propstr::parse(format, value)
        .ok()?
        .get("size")
        .and_then(|s| propstr::parse_size(s))
}

/// The filesystem that holds `path` inside container `vmid`: the longest mount point
/// containing it (a bind mount: the emulated dataset mounted there; a storage volume: its
/// `size=`), else the rootfs (its `size=`, the template included).
pub fn fs_of(root: &Root, vmid: u32, conf: &CtConf, path: &str) -> Fs {
    let parts = container::normalize(path);
    let mut best: Option<(usize, Fs)> = None;
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
        let target = container::normalize(target);
        if parts.len() < target.len()
            || parts[..target.len()] != target[..]
            || best.as_ref().is_some_and(|(n, _)| *n >= target.len())
        {
            continue;
        }
        let fs = if volume.starts_with('/') {
            let dir = root.join("hostfs").join(volume.trim_start_matches('/'));
            match crate::zfs::space_for(root, volume) {
                Some((name, size)) => Fs {
                    name,
                    dir,
                    size,
                    base: 0,
                },
                None => Fs {
                    name: volume.clone(),
                    dir,
                    size: HOST_DISK_BYTES,
                    base: 0,
                },
            }
        } else {
            Fs {
                name: volume.clone(),
                dir: container::ct_dir(root, vmid).join("volumes").join(key),
                size: size_of(propstr::MP, value).unwrap_or(DEFAULT_ROOTFS_BYTES),
                base: 0,
            }
        };
        best = Some((target.len(), fs));
    }
    if let Some((_, fs)) = best {
        return fs;
    }
    let rootfs = conf.get("rootfs").unwrap_or_default();
    Fs {
        name: propstr::parse(propstr::ROOTFS, rootfs)
            .ok()
            .and_then(|p| p.get("volume").cloned())
            .unwrap_or_else(|| format!("rootfs of {vmid}")),
        dir: container::rootfs(root, vmid),
        size: size_of(propstr::ROOTFS, rootfs).unwrap_or(DEFAULT_ROOTFS_BYTES),
        base: TEMPLATE_BYTES,
    }
}

/// Grow the sparse file `path` (on `fs`) to `bytes`. When the filesystem cannot hold it,
/// the file grows until the filesystem is full and the error is `ENOSPC`'s text, as a
/// `write(2)` past the end of the space does.
pub fn grow(fs: &Fs, path: &Path, bytes: u64) -> Result<(), String> {
    let have = apparent(path);
    let want = bytes.saturating_sub(have);
    let avail = fs.avail();
    if want > avail {
        write_sparse(path, have + avail).map_err(|e| e.to_string())?;
        return Err(ENOSPC.to_owned());
    }
    write_sparse(path, bytes).map_err(|e| e.to_string())
}

/// `du -s -b PATH…` (also `-sb`, `--summarize`, `--bytes`): GNU du's apparent sizes, one
/// total per path (`SIZE\tPATH`); a missing path is an error (exit 1) after the others.
pub fn du_program(ct: &crate::inner::Ct<'_>, args: &[String], _: &[u8], out: &mut Out) -> i32 {
    let (mut summarize, mut bytes) = (false, false);
    let mut paths = Vec::new();
    for a in args {
        match a.as_str() {
            "-s" | "--summarize" => summarize = true,
            "-b" | "--bytes" => bytes = true,
            "-sb" | "-bs" => (summarize, bytes) = (true, true),
            s if s.starts_with('-') => {
                out.err(format!(
                    "phoenix-emu: `du {s}` is not emulated (only `du -s -b PATH…`)\n"
                ));
                return 1;
            }
            _ => paths.push(a),
        }
    }
    if !summarize || !bytes {
        out.err("phoenix-emu: only `du -s -b PATH…` is emulated\n");
        return 1;
    }
    let mut code = 0;
    for p in paths {
        let host = ct.path(p);
        if std::fs::symlink_metadata(&host).is_err() {
            out.err(format!(
                "du: cannot access '{p}': No such file or directory\n"
            ));
            code = 1;
            continue;
        }
        out.out(format!("{}\t{p}\n", du(&host)));
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_files_count_as_their_declared_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("a/b/weights.safetensors");
        write_sparse(&big, 47 * GB).unwrap();
        assert!(std::fs::metadata(&big).unwrap().len() < 64);
        assert_eq!(apparent(&big), 47 * GB);
        std::fs::write(dir.path().join("a/config.json"), "{}").unwrap();
        std::os::unix::fs::symlink("b/weights.safetensors", dir.path().join("a/link")).unwrap();
        assert_eq!(
            du(dir.path()),
            47 * GB + 2 + "b/weights.safetensors".len() as u64
        );
    }

    #[test]
    fn growing_past_the_size_fills_the_disk_and_fails_with_enospc() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Fs {
            name: "test".into(),
            dir: dir.path().to_path_buf(),
            size: 10 * GB,
            base: GB,
        };
        let f = dir.path().join("blob.incomplete");
        grow(&fs, &f, 4 * GB).unwrap();
        assert_eq!(fs.avail(), 5 * GB);
        assert_eq!(grow(&fs, &f, 12 * GB).unwrap_err(), ENOSPC);
        assert_eq!(apparent(&f), 9 * GB);
        assert_eq!(fs.avail(), 0);
    }
}

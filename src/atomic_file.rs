//! Crash-safe file replacement: the one implementation phoenix uses for every file it
//! replaces (the secret key and store, container configs and their backups, markers).
//!
//! A file is written to a temporary file in the same directory (with its final mode from
//! its creation, so no other user ever sees a partial key), fsynced, renamed over the target
//! and the directory fsynced: after a crash the target holds either the old or the new
//! content, never a mix, and the rename itself is durable. Temporary files are named
//! `.phoenix-*.tmp`, which no secret name or container config can be.
//!
//! The directory fsync is not optional, also on PVE's `/etc/pve` (pmxcfs, a FUSE file
//! system): pmxcfs registers no `fsync`/`fsyncdir` operation (proxmox/pve-cluster,
//! `src/pmxcfs/pmxcfs.c`, `fuse_ops`), libfuse answers ENOSYS and the kernel's FUSE client
//! then reports success (`fs/fuse/file.c`, `fuse_fsync_common`), so a failure here is a
//! real one.
//!
//! The emulated host (`src/bin/phoenix-emu/`) keeps its own small replace-by-rename: it
//! stands in for other programs and deliberately shares no code with this library.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Replace `path` atomically with `bytes`, mode `mode`.
pub(crate) fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, mode, |f| f.write_all(bytes))
}

/// Replace `path` atomically with mode `mode`; `fill` writes the content into the temp file.
pub(crate) fn write_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".phoenix-")
        .suffix(".tmp")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Rename `from` to `to` (same directory) and fsync the directory.
pub(crate) fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(parent(to))
}

/// Remove `path` and fsync its directory.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    std::fs::remove_file(path)?;
    sync_dir(parent(path))
}

/// Overwrite `path` with zeros (its whole length), fsync it, remove it and fsync its
/// directory: the bash suite's base64 files should not stay readable on disk.
pub(crate) fn scrub_and_remove(path: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    let zeros = [0u8; 4096];
    let mut left = len;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    drop(file);
    remove(path)
}

/// Create `dir` (and missing parents) with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn write_replaces_content_with_mode_0600_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.age");
        std::fs::write(&path, b"old").unwrap();
        write(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        write(&path, b"newer", 0o640).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"newer");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.age")]);
    }

    #[test]
    fn failed_fill_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.age");
        std::fs::write(&path, b"old").unwrap();
        let err = write_with(&path, 0o600, |_| Err(io::Error::other("boom"))).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn scrub_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("legacy.conf");
        std::fs::write(&path, vec![b'a'; 10_000]).unwrap();
        scrub_and_remove(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn private_dirs_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        for d in [dir.path().join("a"), nested] {
            assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        }
    }
}

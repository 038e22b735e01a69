//! The emulated host's root directory: its settings file, locks and atomic writes.
//!
//! Layout (created by phoenix's `host::emulated::prepare`, completed lazily here):
//! - `emu.json`: settings (`pve_version`, `gpus`, `loopback_prefix`, `node`, `pools`,
//!   `storages`, `templates`, the `latency` profile ([`crate::latency`]), the kernel's `bridges`, `memory_mib` and `cpus`
//!   ([`crate::kernel`]), and an optional `owner` `{"pid":N,"start":T}` whose end also
//!   ends the emulated vLLM servers);
//! - `.emu-seeded`: marks that the fresh host's template files were written
//!   ([`crate::pvesm::seed`]); `var/lib/vz/…`: the `dir` storages' files;
//! - `bin/`: the tool symlinks; `dev/`: device nodes; `etc/pve/lxc/<vmid>.conf`;
//! - `proc/{meminfo,cpuinfo}`, `sys/class/net/…`: the kernel's view, made at boot;
//! - `var/lib/lxc/<vmid>/rootfs` and `…/emu-state.json`: each container's files and state;
//! - `zfs.json`: the emulated ZFS datasets; `hostfs/`: the host paths datasets mount on;
//! - `run/lock/lxc/pve-config-<vmid>.lock`: PVE's per-container config lock (phoenix takes
//!   the same lock when it edits a config directly); `.emu.lock`: the root lock guarding
//!   root-wide state (`zfs.json`, `faults.json`, address allocation);
//! - `argv.log`, `faults.json`.
//!
//! Every state file is replaced by write-to-temp + rename, so a reader never sees half a file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// Errors reaching the root's files.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A file could not be read or written.
    #[error("cannot {action} {path}")]
    Io {
        /// What the emulator was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file did not parse.
    #[error("cannot parse {path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A lock could not be taken in time (PVE's own wording).
    #[error("can't lock file '{0}' - got timeout")]
    LockTimeout(PathBuf),
}

impl RootError {
    /// An I/O error with its path.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Which GPUs the emulated host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GpuSet {
    /// Two H100s derived from the fixture (the default).
    #[default]
    #[serde(rename = "h100x2")]
    H100x2,
    /// Exactly the single H100 of the fixture.
    #[serde(rename = "h100x1")]
    H100x1,
    /// No GPU (nvidia-smi fails as on a host without the driver loaded).
    #[serde(rename = "none")]
    None,
}

/// The root's settings file, `emu.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The PVE version `pveversion` reports and `pct` behaves as.
    #[serde(default = "default_version")]
    pub pve_version: String,
    /// The GPUs.
    #[serde(default)]
    pub gpus: GpuSet,
    /// `127.A.B`: the loopback /24 this root's containers get addresses in.
    #[serde(default)]
    pub loopback_prefix: Option<String>,
    /// The node name (`nodes/<node>/lxc/…` in PVE's messages).
    #[serde(default = "default_node")]
    pub node: String,
    /// A process whose end also ends the root's emulated vLLM servers (tests write their
    /// own, so a SIGKILLed test, whose temp dir stays, leaves no server behind).
    #[serde(default)]
    pub owner: Option<Owner>,
    /// The host's ZFS pools, made on first use of its ZFS state. Default: `rpool` alone,
    /// as a Proxmox VE installed on ZFS has.
    #[serde(default = "default_pools")]
    pub pools: Vec<String>,
    /// Device minor number of each GPU, by `nvidia-smi` index (default: the index). The
    /// driver numbers GPUs in probe order and `nvidia-smi` in PCI bus order, so the two can
    /// differ on a real host; `[1, 0]` makes GPU 0 `/dev/nvidia1`.
    #[serde(default)]
    pub gpu_minors: Option<Vec<u32>>,
    /// MIG mode is enabled on every GPU (`nvidia-smi -q`: `MIG Mode / Current: Enabled`).
    #[serde(default)]
    pub mig: bool,
    /// The host's Linux bridges (`/sys/class/net/<name>/bridge`), from the next boot
    /// ([`crate::kernel`]). Default: `vmbr0`, the one the Proxmox VE installer makes.
    #[serde(default = "default_bridges")]
    pub bridges: Vec<String>,
    /// Physical memory in MiB (`MemTotal` of `/proc/meminfo`), from the next boot.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    /// Logical CPUs (`/proc/cpuinfo`), from the next boot.
    #[serde(default = "default_cpus")]
    pub cpus: u32,
    /// The cgroup hierarchy the host was booted with (takes effect at the next boot).
    #[serde(default)]
    pub cgroup: CgroupMode,
    /// What the containers' network reaches.
    #[serde(default)]
    pub ct_network: CtNetwork,
    /// The host's storages ([`crate::pvesm`]; default: those of a PVE installed on ZFS).
    #[serde(default = "crate::pvesm::default_storages")]
    pub storages: Vec<crate::pvesm::Storage>,
    /// The container templates a fresh host has (volume ids on a `dir` storage).
    #[serde(default = "crate::pvesm::default_templates")]
    pub templates: Vec<String>,
    /// The latency profile ([`crate::latency`]): how long calls take (default: no delay).
    #[serde(default)]
    pub latency: std::collections::BTreeMap<String, String>,
}

/// What a container can reach over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CtNetwork {
    /// The internet (NVIDIA's servers included).
    #[default]
    #[serde(rename = "internet")]
    Internet,
    /// Only the distribution's archive (a local mirror or proxy): NVIDIA's servers do not
    /// resolve, as on an air-gapped GPU host.
    #[serde(rename = "archive-only")]
    ArchiveOnly,
}

/// How the emulated host mounts cgroups (pve-common `PVE/CGroup.pm` `cgroup_mode`: 2 when
/// `/sys/fs/cgroup` is a `cgroup2` mount, else 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum CgroupMode {
    /// Pure cgroup v2 (`/sys/fs/cgroup` is cgroup2; PVE 7 and later by default).
    #[default]
    #[serde(rename = "v2")]
    V2,
    /// Booted with `systemd.unified_cgroup_hierarchy=0`: the device controller is a v1
    /// hierarchy (`/sys/fs/cgroup/devices`), cgroup2 only at `/sys/fs/cgroup/unified`.
    #[serde(rename = "v1")]
    V1,
}

fn default_bridges() -> Vec<String> {
    vec!["vmbr0".to_owned()]
}

/// A two-GPU H100 server: 256 GiB.
fn default_memory_mib() -> u64 {
    262_144
}

/// One 32-core socket, two threads per core.
fn default_cpus() -> u32 {
    64
}

fn default_pools() -> Vec<String> {
    vec!["rpool".to_owned()]
}

/// A process identified by pid and start time (so a reused pid does not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Its pid.
    pub pid: i32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat` field 22), if known.
    #[serde(default)]
    pub start: Option<u64>,
}

impl Owner {
    /// Whether the process still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        match start_time(self.pid) {
            None => false,
            Some(t) => self.start.is_none_or(|s| s == t),
        }
    }
}

/// A live process's start time (`None`: gone or a zombie).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); starttime is field 22.
    if matches!(fields.first(), Some(&"Z" | &"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

fn default_version() -> String {
    "8.4.1".to_owned()
}

fn default_node() -> String {
    "pve".to_owned()
}

/// The emulated host's root.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    /// Its settings.
    pub settings: Settings,
}

/// A held `flock`; released on drop.
pub struct Lock {
    _lock: Flock<File>,
}

impl Root {
    /// Open the root at `path` and read its settings.
    pub fn open(path: &Path) -> Result<Self, RootError> {
        let file = path.join("emu.json");
        let text = std::fs::read_to_string(&file).map_err(|e| RootError::io("read", &file, e))?;
        let settings: Settings = serde_json::from_str(&text).map_err(|source| RootError::Json {
            path: file.clone(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            settings,
        })
    }

    /// `$ROOT/<rel>`.
    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PVE version as `(major, minor, patch)` (unparsable parts count as 0).
    pub fn pve_version(&self) -> (u32, u32, u32) {
        let mut it = self
            .settings
            .pve_version
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
            it.next().unwrap_or(0),
        )
    }

    /// The loopback prefix `127.A.B` of this root (from the settings, else derived from the
    /// root's path exactly as phoenix derives it).
    pub fn loopback_prefix(&self) -> String {
        self.settings
            .loopback_prefix
            .clone()
            .unwrap_or_else(|| derive_prefix(&self.path))
    }

    /// The root lock (root-wide state), waiting up to 60 s.
    pub fn lock(&self) -> Result<Lock, RootError> {
        lock_file(&self.join(".emu.lock"), Duration::from_secs(60))
    }

    /// PVE's config lock of container `vmid` (`/run/lock/lxc/pve-config-<vmid>.lock`), with
    /// PVE's 10 s timeout.
    pub fn ct_lock(&self, vmid: u32) -> Result<Lock, RootError> {
        lock_file(
            &self.join(&format!("run/lock/lxc/pve-config-{vmid}.lock")),
            Duration::from_secs(10),
        )
    }
}

/// `127.A.B` from a hash of the root's path: A in 64..=127, never `127.0.0.x`.
pub fn derive_prefix(path: &Path) -> String {
    // FNV-1a 64: stable across Rust versions (unlike `DefaultHasher`), and the same
    // function phoenix's `prepare` uses.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in path.as_os_str().as_encoded_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let a = 64 + (h % 64);
    let b = (h >> 8) % 256;
    format!("127.{a}.{b}")
}

/// Take an exclusive `flock` on `path` (created if missing), polling until `timeout`.
pub fn lock_file(path: &Path, timeout: Duration) -> Result<Lock, RootError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| RootError::io("create", dir, e))?;
    }
    let start = Instant::now();
    loop {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| RootError::io("open", path, e))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(Lock { _lock: l }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(RootError::LockTimeout(path.to_path_buf()));
            }
            Err((_, e)) => return Err(RootError::io("lock", path, e.into())),
        }
    }
}

/// Replace `path` with `data` atomically (temp file in the same directory, then rename).
///
/// Not phoenix's `atomic_file`: the emulator stands in for other programs and shares no
/// code with the library, and its state is a test fixture, so it skips the fsyncs.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<(), RootError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| RootError::io("create", dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| RootError::io("create a temp file in", dir, e))?;
    tmp.write_all(data)
        .map_err(|e| RootError::io("write", tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| RootError::io("rename into", path, e.error))?;
    Ok(())
}

/// Read a JSON state file, `T::default()` when absent.
pub fn read_json<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T, RootError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| RootError::Json {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(RootError::io("read", path, e)),
    }
}

/// Write a JSON state file atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RootError> {
    let mut data = serde_json::to_vec_pretty(value).map_err(|source| RootError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    data.push(b'\n');
    atomic_write(path, &data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_stable_and_in_range() {
        let p = derive_prefix(Path::new("/tmp/emu-a"));
        assert_eq!(p, derive_prefix(Path::new("/tmp/emu-a")));
        let parts: Vec<u32> = p.split('.').map(|x| x.parse().unwrap()).collect();
        assert_eq!(parts[0], 127);
        assert!((64..=127).contains(&parts[1]), "{p}");
        assert_ne!(p, derive_prefix(Path::new("/tmp/emu-b")));
    }

    #[test]
    fn owner_is_alive_only_with_its_start_time() {
        let me = i32::try_from(std::process::id()).unwrap();
        let start = start_time(me).unwrap();
        let owner = |start| Owner { pid: me, start };
        assert!(owner(Some(start)).alive());
        assert!(owner(None).alive());
        assert!(!owner(Some(start + 1)).alive(), "a reused pid");
        assert!(
            !Owner {
                pid: i32::MAX,
                start: None
            }
            .alive()
        );
    }

    #[test]
    fn lock_times_out_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l");
        let _held = lock_file(&path, Duration::from_secs(1)).unwrap();
        // flock locks belong to the open file description: a second open conflicts.
        let err = lock_file(&path, Duration::from_millis(50)).err().unwrap();
        assert!(err.to_string().starts_with("can't lock file"), "{err}");
    }
}

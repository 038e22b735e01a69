//! Host backends: the one trait every primitive talks to.
//!
//! A [`Host`] is what phoenix can do to a machine: containers, files inside them, ZFS
//! datasets, GPUs. Backends:
//! - [`pve::PveHost`] drives `pct`, `pvesm`, `pveversion`, `zfs`, `nvidia-smi` by absolute
//!   path. `--host emulated` is the *same* backend pointed at the emulated host's
//!   executables and directories ([`emulated`]), so the tests exercise the production path.
//! - `lxc` (plain LXC hosts) implements the same trait.
//!
//! Backends own argv construction and output parsing; journaling, ownership checks and
//! idempotence live in the primitives (`api/`), so every backend gets them for free.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use zeroize::Zeroizing;

use crate::exec::{CommandOutput, ExecError};
use crate::settings::HostKind;
use crate::types::{AbsPath, DatasetName, PropKey, PropValue, StorageId, Vmid};

pub mod emulated;
pub mod facts;
pub mod lxc;
pub mod pve;

/// The tag phoenix puts on everything it creates.
pub const OWNER_TAG: &str = "phoenix";
/// The ZFS user property that marks a phoenix-owned dataset.
pub const ZFS_OWNER_PROP: &str = "phoenix:owner";
/// The ZFS user property holding the run that created a dataset.
pub const ZFS_RUN_PROP: &str = "phoenix:run";

/// Errors of host operations.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A host command failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A host command's output could not be understood.
    #[error("cannot parse the output of `{command}`: {message}")]
    Parse {
        /// The command.
        command: String,
        /// What was wrong.
        message: String,
    },
    /// File access on the host failed.
    #[error("{action} {path}")]
    Io {
        /// What phoenix was doing.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The container does not exist.
    #[error("container {0} does not exist")]
    NoSuchContainer(Vmid),
    /// A container exists but was not created by phoenix.
    #[error(
        "container {0} exists but is not tagged `phoenix`: phoenix never changes or destroys a container it did not create"
    )]
    NotOwned(Vmid),
    /// A dataset exists but was not created by phoenix.
    #[error(
        "dataset {0} exists but has no `phoenix:owner` property of its own (an inherited one does not count): phoenix never changes or destroys a dataset it did not create"
    )]
    DatasetNotOwned(DatasetName),
    /// The container config holds a `lock:` entry.
    #[error(
        "container {vmid} is locked by Proxmox (`lock: {lock}`); wait for the operation or run `pct unlock {vmid}`"
    )]
    ConfigLocked {
        /// The container.
        vmid: Vmid,
        /// The lock's reason.
        lock: String,
    },
    /// Waiting for a state timed out.
    #[error("container {vmid} did not reach `{state}` within {waited:?}")]
    WaitTimeout {
        /// The container.
        vmid: Vmid,
        /// The awaited state.
        state: &'static str,
        /// How long phoenix waited.
        waited: Duration,
    },
    /// The backend cannot do this.
    #[error("the {backend} host cannot {what}")]
    Unsupported {
        /// The backend.
        backend: HostKind,
        /// The operation.
        what: &'static str,
    },
    /// The host has no address for the container.
    #[error("container {vmid} has no IPv4 address on {iface} (is it running, is DHCP done?)")]
    NoAddress {
        /// The container.
        vmid: Vmid,
        /// The interface.
        iface: String,
    },
    /// A GPU device node is missing or wrong.
    #[error("{0}")]
    Device(String),
    /// Interrupted by a signal.
    #[error("interrupted")]
    Interrupted,
    /// `--host pve` on a machine without Proxmox VE's `pct`.
    #[error(
        "this is not a Proxmox VE host: {} does not exist. Install phoenix on a Proxmox VE node, or try it here with `--host emulated` (an emulated Proxmox host; nothing leaves this machine)",
        pct.display()
    )]
    NotProxmox {
        /// Where `pct` was looked for.
        pct: PathBuf,
    },
    /// `--host lxc` on a machine without LXC's tools.
    #[error(
        "LXC is not installed: {} does not exist (install the `lxc` package, or use --host pve|emulated)",
        tool.display()
    )]
    NoLxc {
        /// The missing tool.
        tool: PathBuf,
    },
    /// No NVIDIA driver on the host.
    #[error(
        "no NVIDIA driver on this host: {} does not exist (install the NVIDIA driver on the host, or try phoenix with `--host emulated`)",
        nvidia_smi.display()
    )]
    NoNvidiaDriver {
        /// Where `nvidia-smi` was looked for.
        nvidia_smi: PathBuf,
    },
    /// `--host emulated` without the emulator binary.
    #[error(
        "the emulated host needs the `phoenix-emu` binary next to {}: build both with `cargo build --release` (`cargo run` builds only phoenix), or set PHOENIX_EMU_BIN",
        exe.display()
    )]
    EmulatorMissing {
        /// The running phoenix.
        exe: PathBuf,
    },
}

/// Result of host operations.
pub type Result<T, E = HostError> = std::result::Result<T, E>;

/// Everything `pct create` needs, already validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSpec {
    /// The container id.
    pub vmid: Vmid,
    /// Its config entry.
    pub entry: crate::config::LxcConfig,
    /// The run creating it (recorded in a tag).
    pub run_id: String,
}

/// A container's state as the host reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CtStatus {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Not there.
    Absent,
}

impl std::fmt::Display for CtStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Absent => "absent",
        })
    }
}

/// A container config as ordered `key: value` lines (the part before any `[snapshot]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CtConfig {
    /// `(key, value)` in file order; raw `lxc.*` keys may repeat.
    pub entries: Vec<(String, String)>,
}

impl CtConfig {
    /// Parse PVE's `<vmid>.conf` text: `key: value` lines up to the first `[section]`;
    /// comments (`#`) and blank lines skipped.
    pub fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim_end();
            if line.starts_with('[') {
                break;
            }
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once(':') {
                entries.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        Self { entries }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key` (raw `lxc.*` keys repeat).
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `tags` list (PVE separates with `;`, `,` or spaces).
    pub fn tags(&self) -> Vec<String> {
        self.get("tags")
            .map(|t| {
                t.split([';', ',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether phoenix created this container.
    pub fn is_owned(&self) -> bool {
        self.tags().iter().any(|t| t == OWNER_TAG)
    }

    /// The smallest free `prefixN` key (`mp`, `dev`).
    pub fn free_slot(&self, prefix: &str) -> u32 {
        (0..)
            .find(|i| self.get(&format!("{prefix}{i}")).is_none())
            .unwrap_or(0)
    }
}

/// One GPU as `nvidia-smi` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gpu {
    /// `nvidia-smi` index.
    pub index: u32,
    /// PCI bus id (`00000000:00:06.0`).
    pub pci_bus_id: String,
    /// `GPU-…` UUID.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Driver version.
    pub driver_version: String,
    /// Device minor number (`/dev/nvidiaN`), from `nvidia-smi -q`.
    pub minor: Option<u32>,
    /// MIG mode is enabled (`nvidia-smi -q`: `MIG Mode` / `Current : Enabled`).
    pub mig: bool,
}

/// The cgroup hierarchy a host was booted with, which decides the key of raw device rules
/// (`lxc.cgroup.devices.allow` on v1, `lxc.cgroup2.devices.allow` on v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// The device controller is a cgroup v1 hierarchy (legacy or hybrid boot).
    V1,
    /// Pure cgroup v2 (`/sys/fs/cgroup` is a cgroup2 mount).
    V2,
}

impl CgroupMode {
    /// Read the mode from sysfs under `sys_dir`: cgroup v2 when `fs/cgroup` is a cgroup2
    /// mount, whose root holds `cgroup.controllers`; v1 when `fs/cgroup` exists otherwise.
    /// This is pve-common's test (`src/PVE/CGroup.pm` `cgroup_mode`: 2 when
    /// `/sys/fs/cgroup` is mounted as `cgroup2`, else 1) read through sysfs, so a test can
    /// fake it with a directory.
    pub fn detect(sys_dir: &Path) -> Result<Self> {
        let cg = sys_dir.join("fs/cgroup");
        if cg.join("cgroup.controllers").is_file() {
            Ok(Self::V2)
        } else if cg.is_dir() {
            Ok(Self::V1)
        } else {
            Err(HostError::Device(format!(
                "cannot tell the host's cgroup mode: {} does not exist",
                cg.display()
            )))
        }
    }

    /// The raw LXC key that allows a device on this hierarchy.
    pub fn allow_key(self) -> &'static str {
        match self {
            Self::V1 => "lxc.cgroup.devices.allow",
            Self::V2 => "lxc.cgroup2.devices.allow",
        }
    }
}

/// A request to run argv inside a container.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// Program and arguments (argv\[0\] is not a shell: checked by the primitive).
    pub argv: Vec<String>,
    /// Bytes for stdin (may hold a secret).
    pub stdin: Option<Zeroizing<Vec<u8>>>,
    /// Kill after this long.
    pub timeout: Option<Duration>,
    /// Exit codes that count as success (empty = only 0).
    pub ok_codes: Vec<i32>,
    /// The command only reads: `--dry-run` runs it for real instead of recording it.
    pub read_only: bool,
}

impl ExecRequest {
    /// `cmd` (a backend's prefix that enters the container, e.g. `pct exec <vmid> --`) with
    /// this request's argv, stdin, timeout, accepted exit codes and read-only flag: the one
    /// mapping every backend uses.
    pub fn apply_to(&self, cmd: crate::exec::HostCommand) -> crate::exec::HostCommand {
        let mut cmd = cmd.args(&self.argv);
        if let Some(stdin) = &self.stdin {
            cmd = cmd.stdin(stdin.clone());
        }
        if let Some(t) = self.timeout {
            cmd = cmd.timeout(t);
        }
        if !self.ok_codes.is_empty() {
            cmd = cmd.ok_codes(self.ok_codes.clone());
        }
        if !self.read_only {
            cmd = cmd.mutating();
        }
        cmd
    }
}

/// A device node a container needs, read from the live `/dev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    /// Host path as PVE and LXC see it (`/dev/nvidia0`), never the `PHOENIX_DEV_DIR` path.
    pub path: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

/// What a machine can do for phoenix. Implementations run every command through the one
/// [`crate::exec::Runner`].
pub trait Host: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> HostKind;
    /// The config of container `vmid`, or `None` when it does not exist.
    fn ct_config(&self, vmid: Vmid) -> Result<Option<CtConfig>>;
    /// Create a container (tagged as phoenix's).
    fn ct_create(&self, spec: &CreateSpec) -> Result<()>;
    /// Destroy a container (stopped first when running).
    fn ct_destroy(&self, vmid: Vmid) -> Result<()>;
    /// Remove the container's config lock (`pct unlock`): only for a create that phoenix
    /// started and that never finished ([`crate::ownership`]).
    fn ct_unlock(&self, vmid: Vmid) -> Result<()>;
    /// The volume ids of `vmid`'s disks on `storage` (`pvesm list STORAGE --vmid VMID`), a
    /// read-only query.
    fn storage_volumes(&self, storage: &StorageId, vmid: Vmid) -> Result<Vec<String>>;
    /// Free a storage volume (`pvesm free VOLID`).
    fn free_volume(&self, volid: &str) -> Result<()>;
    /// Start a container (returns once the start command returns).
    fn ct_start(&self, vmid: Vmid) -> Result<()>;
    /// Stop a container.
    fn ct_stop(&self, vmid: Vmid) -> Result<()>;
    /// A container's state, asked of the host now. Waits and health checks use this.
    fn ct_status(&self, vmid: Vmid) -> Result<CtStatus>;
    /// A container's state as this backend last saw it: read by [`Host::ct_status`] or left
    /// by its own create, start, stop or destroy; asked of the host when it has not seen it.
    /// For the checks before a change (is it running before a push, an exec, a probe): on a
    /// real host every `pct status` starts a Perl interpreter, and a run that started the
    /// container itself need not ask again. A container stopped behind phoenix's back makes
    /// the next command fail with the host's own error.
    fn ct_status_known(&self, vmid: Vmid) -> Result<CtStatus> {
        self.ct_status(vmid)
    }
    /// Whether this backend created container `vmid` itself (a `pct create` of this process
    /// that succeeded, not destroyed since). Its rootfs then holds only the template's files:
    /// nothing of phoenix's is there to read back before a write, and any undo of a write
    /// ends with the container's own removal. `false` when unknown.
    fn ct_created_here(&self, vmid: Vmid) -> bool {
        let _ = vmid;
        false
    }
    /// Whether this backend pushed `path` into container `vmid`, one it created
    /// ([`Host::ct_created_here`]): on such a container's rootfs, a phoenix file that was
    /// not pushed by this process is not there. `false` when unknown.
    fn ct_pushed_here(&self, vmid: Vmid, path: &AbsPath) -> bool {
        let _ = (vmid, path);
        false
    }
    /// Run argv inside a running container, no shell, minimal environment.
    fn ct_exec(&self, vmid: Vmid, req: &ExecRequest) -> Result<CommandOutput>;
    /// Write `content` to `dest` inside the container with `mode`.
    fn ct_push(&self, vmid: Vmid, content: &[u8], dest: &AbsPath, mode: u32) -> Result<()>;
    /// Set config options (`pct set --mp0 …`): `(key, value)` pairs, values pre-validated.
    fn ct_set(&self, vmid: Vmid, options: &[(String, String)]) -> Result<()>;
    /// Delete config keys (`pct set --delete k1,k2`).
    fn ct_delete_keys(&self, vmid: Vmid, keys: &[String]) -> Result<()>;
    /// Append raw config lines (legacy GPU passthrough) under the config lock, after saving
    /// a backup to `backup`. Lines already present are not added twice.
    fn ct_append_lines(&self, vmid: Vmid, lines: &[(String, String)], backup: &Path) -> Result<()>;
    /// Put back the config saved at `backup`.
    fn ct_restore_config(&self, vmid: Vmid, backup: &Path) -> Result<()>;
    /// The container's IPv4 address on `iface`, as the host reports it.
    fn ct_address(&self, vmid: Vmid, iface: &str) -> Result<Ipv4Addr>;
    /// The properties of a dataset, or `None` when it does not exist.
    fn zfs_get(&self, name: &DatasetName) -> Result<Option<BTreeMap<String, String>>>;
    /// Create a dataset with properties.
    fn zfs_create(&self, name: &DatasetName, props: &[(PropKey, PropValue)]) -> Result<()>;
    /// Destroy a dataset.
    fn zfs_destroy(&self, name: &DatasetName) -> Result<()>;
    /// The properties set on the dataset itself (`zfs get -s local`), or `None` when it
    /// does not exist. User properties inherit, so ownership is read from these.
    fn zfs_local_props(&self, name: &DatasetName) -> Result<Option<BTreeMap<String, String>>>;
    /// The dataset's mountpoint on the host.
    fn zfs_mountpoint(&self, name: &DatasetName) -> Result<Option<String>>;
    /// The owner `(uid, gid)` of a host path (`stat -c %u:%g`), `None` when it does not
    /// exist (a read-only query).
    fn host_path_owner(&self, path: &AbsPath) -> Result<Option<(u32, u32)>>;
    /// Give a host path to `uid:gid` (`chown`): the root directory of a dataset an
    /// unprivileged container mounts.
    fn host_chown(&self, path: &AbsPath, uid: u32, gid: u32) -> Result<()>;
    /// The names of the host's ZFS pools (a read-only query).
    fn zfs_pools(&self) -> Result<Vec<String>>;
    /// The datasets directly below `name` (empty when it has none or does not exist).
    fn zfs_children(&self, name: &DatasetName) -> Result<Vec<DatasetName>>;
    /// The GPUs of this host.
    fn gpus(&self) -> Result<Vec<Gpu>>;
    /// The PVE version `(major, minor, patch)`, `None` for non-PVE hosts.
    fn pve_version(&self) -> Result<Option<(u32, u32, u32)>>;
    /// The directory holding device nodes (`PHOENIX_DEV_DIR`).
    fn dev_dir(&self) -> &Path;
    /// Where phoenix keeps config backups for this host.
    fn backup_dir(&self) -> PathBuf;
    /// The cgroup hierarchy the host runs.
    fn cgroup_mode(&self) -> Result<CgroupMode>;
    /// Every container id on this host (its configs).
    fn ct_ids(&self) -> Result<Vec<Vmid>> {
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "list its containers",
        })
    }
    /// The absolute path of host tool `name` (`pct`, `pveversion`, `zfs`, …) this backend
    /// runs; `None` when it runs no such tool. Only the path: whether it exists is the
    /// caller's question (the preflight's).
    fn tool_path(&self, name: &str) -> Option<PathBuf> {
        let _ = name;
        None
    }
    /// The host's size (memory, CPUs), read from procfs: a read-only query.
    fn resources(&self) -> Result<facts::Resources> {
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "report its memory and CPUs",
        })
    }
    /// What the network interface `name` is on the host (sysfs): a read-only query.
    fn net_iface(&self, name: &str) -> Result<facts::NetIface> {
        let _ = name;
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "report its network bridges",
        })
    }
    /// The host's storages (`pvesm status`, only those holding `content` when given): a
    /// read-only query.
    fn storages(&self, content: Option<&str>) -> Result<Vec<facts::StorageStatus>> {
        let _ = content;
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "list storages",
        })
    }
    /// The volume ids of `content` on `storage` (`pvesm list STORAGE --content CONTENT`): a
    /// read-only query.
    fn storage_content(&self, storage: &StorageId, content: &str) -> Result<Vec<String>> {
        let _ = (storage, content);
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "list storage content",
        })
    }
    /// Whether the host file `path` (an absolute template path) is a regular file: a
    /// read-only query.
    fn host_file_exists(&self, path: &AbsPath) -> Result<bool> {
        let _ = path;
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "look up host files",
        })
    }
    /// A guest with id `vmid` that is not one of this node's containers (a VM, or a guest
    /// of another cluster node), in words; ask only when [`Host::ct_config`] found no
    /// container `vmid`.
    fn other_guest(&self, vmid: Vmid) -> Result<Option<String>> {
        let _ = vmid;
        Ok(None)
    }
    /// Push the host file `src` to `dest` inside the container with `mode`, without reading
    /// it into memory (`pct push` streams it). `src` comes from settings, never a recipe.
    fn ct_push_file(&self, vmid: Vmid, src: &Path, dest: &AbsPath, mode: u32) -> Result<()> {
        let _ = (vmid, src, dest, mode);
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "push a host file into a container",
        })
    }
    /// `nvidia-modprobe` as a host systemd unit names it; `None` where phoenix manages no
    /// host units (the plain `lxc` backend).
    fn nvidia_modprobe(&self) -> Option<PathBuf> {
        None
    }
    /// The text of the host's systemd unit `name`, `None` when there is none.
    fn unit_text(&self, name: &str) -> Result<Option<String>> {
        let _ = name;
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "manage host systemd units",
        })
    }
    /// Whether the host unit `name` is enabled (`systemctl is-enabled --quiet`).
    fn unit_enabled(&self, name: &str) -> Result<bool> {
        let _ = name;
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "manage host systemd units",
        })
    }
    /// Write the host unit `name` (0644, atomically).
    fn unit_write(&self, name: &str, text: &str) -> Result<()> {
        let _ = (name, text);
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "manage host systemd units",
        })
    }
    /// Make the unit `name` just written run now and at every boot: a new unit is enabled
    /// with `--now`; a `replaced` one is enabled (it may have been disabled) and restarted.
    fn unit_start(&self, name: &str, replaced: bool) -> Result<()> {
        let _ = (name, replaced);
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "manage host systemd units",
        })
    }
    /// Disable and remove the host unit `name` (nothing to do when it is absent).
    fn unit_remove(&self, name: &str) -> Result<()> {
        let _ = name;
        Err(HostError::Unsupported {
            backend: self.kind(),
            what: "manage host systemd units",
        })
    }
}

/// Run `cmd` through `runner`, turning a signal's kill into [`HostError::Interrupted`]
/// (every backend maps runner errors this way).
pub fn run_cmd(
    runner: &dyn crate::exec::Runner,
    cmd: &crate::exec::HostCommand,
) -> Result<CommandOutput> {
    runner.run(cmd).map_err(from_exec)
}

/// A runner's error as the host's: a signal's kill is [`HostError::Interrupted`].
fn from_exec(e: ExecError) -> HostError {
    match e {
        ExecError::Interrupted { .. } => HostError::Interrupted,
        other => HostError::Exec(other),
    }
}

/// How many times a container command is tried when `lxc-attach` fails to start
/// ([`is_transient_attach_failure`]).
pub const ATTACH_TRIES: u32 = 4;

/// Run `cmd`, a command that enters a container through `lxc-attach` (`pct exec` or a
/// plain `lxc-attach`), trying again up to [`ATTACH_TRIES`] times in all while
/// `lxc-attach` fails to start for a passing reason ([`is_transient_attach_failure`]):
/// nothing ran inside the container then, so another try cannot do anything twice. A
/// signal to stop ends the tries. Other outcomes are [`run_cmd`]'s.
pub fn run_attach(
    runner: &dyn crate::exec::Runner,
    cmd: &crate::exec::HostCommand,
) -> Result<CommandOutput> {
    let mut tried = 1;
    loop {
        let outcome = runner.run(cmd);
        // Looked at in place: an answer with any stdout is never copied.
        let transient = match &outcome {
            Ok(out) => {
                out.stdout.is_empty()
                    && is_transient_attach_failure("", &String::from_utf8_lossy(&out.stderr))
            }
            Err(ExecError::Status { stdout, stderr, .. }) => {
                is_transient_attach_failure(stdout, stderr)
            }
            Err(_) => false,
        };
        if transient && tried < ATTACH_TRIES && crate::signal::received().is_none() {
            tracing::warn!(
                command = %cmd,
                tried,
                "lxc-attach could not re-execute itself from a sealed memfd (EBUSY or EAGAIN); \
                 nothing ran in the container, trying again"
            );
            std::thread::sleep(Duration::from_millis(50 * u64::from(tried)));
            tried += 1;
            continue;
        }
        return outcome.map_err(from_exec);
    }
}

/// Whether a container command's output is `lxc-attach` failing, before it attached, for
/// a reason that passes.
///
/// LXC's `lxc-attach` re-executes itself from a sealed memfd before `main` runs
/// (CVE-2019-5736; lxc 5.0.2, `src/lxc/tools/lxc_attach.c` `lxc_attach_rexec`, a
/// constructor). In `src/lxc/rexec.c` `lxc_rexec` prints `"<strerror> - Failed to rexec
/// as memfd"` when that fails, then exits 1, or aborts (exit 134) in its own clean-up on
/// lxc 5.0.2. `pct exec` runs `lxc-attach` with `exec` (pve-container
/// `src/PVE/CLI/pct.pm`, 94f5585), so its status and stderr are `lxc-attach`'s. The
/// seal (`F_ADD_SEALS` with `F_SEAL_WRITE`) is refused with `EBUSY` while the kernel
/// still holds a passing reference to a page just copied in, which happens on a loaded
/// host: that, and `EAGAIN`, pass; other reasons (`EPERM` under a sandboxed service)
/// do not. Children run with `LC_ALL=C`, so the text is strerror's English.
pub fn is_transient_attach_failure(stdout: &str, stderr: &str) -> bool {
    const PASSING: [&str; 2] = [
        "Device or resource busy",
        "Resource temporarily unavailable",
    ];
    let first = stderr.trim_start().lines().next().unwrap_or_default();
    stdout.is_empty()
        && first
            .strip_suffix(" - Failed to rexec as memfd")
            .is_some_and(|why| PASSING.contains(&why))
}

/// Read the config file of container `vmid` at `path`; a missing file is
/// [`HostError::NoSuchContainer`].
pub fn read_ct_file(path: &Path, vmid: Vmid) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(HostError::NoSuchContainer(vmid)),
        Err(source) => Err(HostError::Io {
            action: "read container config",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replace the host file `path` atomically with `bytes` and mode `mode`
/// ([`crate::atomic_file`]): container configs and their backups on every backend.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    crate::atomic_file::write(path, bytes, mode).map_err(|source| HostError::Io {
        action: "replace",
        path: path.to_owned(),
        source,
    })
}

/// Before the first edit of a container config in a run, save its text to `backup` (0600,
/// its directory created): a later edit of the same run keeps the first backup, so
/// `RestoreConfig` puts back the config as it was before the run.
pub fn backup_once(backup: &Path, text: &str) -> Result<()> {
    if backup.exists() {
        return Ok(());
    }
    if let Some(dir) = backup.parent() {
        std::fs::create_dir_all(dir).map_err(|source| HostError::Io {
            action: "create backup directory",
            path: dir.to_owned(),
            source,
        })?;
    }
    write_file(backup, text.as_bytes(), 0o600)
}

/// `dir`, created 0700 when missing (phoenix's private files live there).
pub fn private_dir(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| HostError::Io {
                action: "create",
                path: dir.to_owned(),
                source,
            })?;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(dir.to_owned())
}

/// Remove the push files (`phoenix-push-<pid>-…`) of phoenix processes that no longer run,
/// overwriting them with zeros first: a SIGKILL between writing one and `pct push`
/// returning must not leave a secret on disk. Returns how many were removed.
pub fn sweep_push_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("phoenix-push-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        // A file that cannot be zeroed is still removed.
        if crate::atomic_file::scrub_and_remove(&path).is_ok()
            || std::fs::remove_file(&path).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Take an exclusive `flock` on `path` (created 0600), held until the guard drops: the
/// per-container config locks of both backends.
pub fn lock_file(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| HostError::Io {
            action: "open config lock",
            path: path.to_owned(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
        HostError::Io {
            action: "lock",
            path: path.to_owned(),
            source: e.into(),
        }
    })
}

impl HostError {
    /// Whether this error means the host is not the kind `--host` says (checked before
    /// anything is created, exit 2), rather than an operation that failed.
    pub fn is_wrong_host(&self) -> bool {
        matches!(
            self,
            Self::NotProxmox { .. }
                | Self::NoLxc { .. }
                | Self::NoNvidiaDriver { .. }
                | Self::EmulatorMissing { .. }
        )
    }
}

/// Check, before anything is created, that this machine has the backend `settings` ask
/// for: `pct` for `pve`, the `phoenix-emu` binary for `emulated`, `lxc-start` for `lxc`.
pub fn check_tools(settings: &crate::settings::Settings) -> Result<()> {
    match settings.host.value {
        HostKind::Pve => {
            let pct = settings.tool("pct");
            if pct.exists() {
                Ok(())
            } else {
                Err(HostError::NotProxmox { pct })
            }
        }
        HostKind::Emulated => emulated::find_emu_binary().map(drop),
        HostKind::Lxc => {
            let tool = settings.tool("lxc-start");
            if tool.exists() {
                Ok(())
            } else {
                Err(HostError::NoLxc { tool })
            }
        }
    }
}

/// The backend `settings` ask for, running every command through `runner`.
///
/// `emulated` sets up the emulated host's root first (idempotent) and then is the `pve`
/// backend with the emulated executables and directories.
pub fn open(
    settings: &crate::settings::Settings,
    runner: std::sync::Arc<dyn crate::exec::Runner>,
) -> Result<std::sync::Arc<dyn Host>> {
    open_shared(settings, runner, &std::sync::Arc::default())
}

/// [`open`], sharing the host facts no run changes (the PVE version, the GPUs) with the
/// other backends of one command, so that each is asked once: `phoenix up` opens one
/// backend for its preflight and one per container.
pub fn open_shared(
    settings: &crate::settings::Settings,
    runner: std::sync::Arc<dyn crate::exec::Runner>,
    facts: &std::sync::Arc<pve::Facts>,
) -> Result<std::sync::Arc<dyn Host>> {
    match settings.host.value {
        HostKind::Pve => Ok(std::sync::Arc::new(
            pve::PveHost::new(pve::PvePaths::from_settings(settings), runner)
                .with_facts(std::sync::Arc::clone(facts))
                .with_lifecycle_timeout(settings.lifecycle_timeout.value),
        )),
        HostKind::Emulated => {
            let paths = emulated::prepare(settings)?;
            Ok(std::sync::Arc::new(
                pve::PveHost::new(paths, runner)
                    .with_kind(HostKind::Emulated)
                    .with_facts(std::sync::Arc::clone(facts))
                    .with_lifecycle_timeout(settings.lifecycle_timeout.value),
            ))
        }
        HostKind::Lxc => Ok(std::sync::Arc::new(lxc::LxcHost::new(
            lxc::LxcPaths::from_settings(settings),
            runner,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::HostCommand;
    use std::os::unix::fs::MetadataExt;

    /// `run_attach` of one `pct exec` whose `lxc-attach` answers `code`/`stderr`/`stdout`
    /// every time: how many times it ran, and the outcome.
    fn attach_outcome(
        code: i32,
        stdout: &'static str,
        stderr: &'static str,
        ok_codes: &[i32],
    ) -> (usize, Result<CommandOutput>) {
        let runner = crate::exec::RecordingRunner::new(move |_| CommandOutput {
            code,
            stdout: stdout.into(),
            stderr: stderr.into(),
        });
        let cmd = HostCommand::new("/usr/sbin/pct")
            .args(["exec", "901", "--", "cat", "/etc/hostname"])
            .ok_codes(ok_codes.to_vec());
        let outcome = run_attach(&runner, &cmd);
        let calls = runner.calls();
        assert!(calls.iter().all(|c| c.argv() == cmd.argv()), "{calls:?}");
        (calls.len(), outcome)
    }

    #[test]
    fn only_an_lxc_attach_that_failed_to_start_for_a_passing_reason_is_tried_again() {
        use crate::test_support::{ATTACH_EBUSY, attach_fails_first};
        // Fails twice, then attaches: the third try's output, the same argv each time.
        let runner = attach_fails_first("exec", 2, "ct\n", |_| "");
        let cmd = HostCommand::new("/usr/sbin/pct").args(["exec", "901", "--", "hostname"]);
        let out = run_attach(runner.as_ref(), &cmd).unwrap();
        assert_eq!(out.stdout_text(), "ct\n");
        assert_eq!(runner.calls().len(), 3);

        // Always busy: ATTACH_TRIES tries, then lxc-attach's own error, its text kept.
        let (tries, outcome) = attach_outcome(134, "", ATTACH_EBUSY, &[0]);
        assert_eq!(tries, ATTACH_TRIES as usize);
        let err = outcome.unwrap_err().to_string();
        assert!(
            err.contains("exit 134") && err.contains("Failed to rexec as memfd"),
            "{err}"
        );
        // The exit-1 form (`lxc_attach_rexec`'s `_exit(EXIT_FAILURE)`) is tried again even
        // where the request accepts exit 1: it is no answer from the container.
        let rexec_exit_1 = "Resource temporarily unavailable - Failed to rexec as memfd\n\
                            Failed to re-execute lxc-attach via memory file descriptor\n";
        let (tries, outcome) = attach_outcome(1, "", rexec_exit_1, &[0, 1]);
        assert_eq!(tries, ATTACH_TRIES as usize);
        assert_eq!(outcome.unwrap().code, 1);

        // Not tried again: a reason that stays (a sandboxed service), a command in the
        // container that printed the text after other output, or any stdout.
        let eperm = "Permission denied - Failed to rexec as memfd\n";
        assert_eq!(attach_outcome(134, "", eperm, &[0]).0, 1);
        let later = "warming up\nDevice or resource busy - Failed to rexec as memfd\n";
        assert_eq!(attach_outcome(1, "", later, &[0]).0, 1);
        assert_eq!(attach_outcome(134, "partial", ATTACH_EBUSY, &[0]).0, 1);
        assert_eq!(attach_outcome(2, "", "cat: no such file\n", &[0]).0, 1);
        assert_eq!(attach_outcome(0, "ct\n", "", &[0]).0, 1);
    }

    #[test]
    fn an_exec_request_maps_onto_the_backends_prefix() {
        let prefix = HostCommand::new("/usr/sbin/pct").args(["exec", "901", "--"]);
        let req = ExecRequest {
            argv: vec!["cat".into(), "a b".into()],
            stdin: Some(Zeroizing::new(b"12345".to_vec())),
            timeout: Some(Duration::from_secs(7)),
            ok_codes: vec![0, 3],
            read_only: false,
        };
        let cmd = req.apply_to(prefix.clone());
        assert_eq!(
            cmd.argv(),
            ["/usr/sbin/pct", "exec", "901", "--", "cat", "a b"]
        );
        assert_eq!(cmd.stdin_len(), 5);
        assert_eq!(cmd.timeout_value(), Some(Duration::from_secs(7)));
        assert!(cmd.accepts(3) && cmd.accepts(0) && !cmd.accepts(1));
        assert!(cmd.is_mutating());
        // A read-only request with defaults: no stdin, no timeout, only 0, not mutating.
        let q = ExecRequest {
            argv: vec!["true".into()],
            read_only: true,
            ..ExecRequest::default()
        }
        .apply_to(prefix);
        assert_eq!(q.stdin_len(), 0);
        assert_eq!(q.timeout_value(), None);
        assert!(q.accepts(0) && !q.accepts(3));
        assert!(!q.is_mutating());
    }

    #[test]
    fn the_first_backup_of_a_run_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let backup = dir.path().join("backups/r1/901.conf");
        backup_once(&backup, "before\n").unwrap();
        backup_once(&backup, "after the first edit\n").unwrap();
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), "before\n");
        assert_eq!(std::fs::metadata(&backup).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn write_file_names_the_path_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing/901.conf");
        let err = write_file(&path, b"x", 0o640).unwrap_err();
        assert!(
            matches!(&err, HostError::Io { action: "replace", path: p, .. } if *p == path),
            "{err:?}"
        );
    }
}

//! The plain-LXC backend (`--host lxc`): the [`Host`] trait over LXC 5's `lxc-*` tools.
//!
//! Every command goes through the one [`Runner`], by absolute path (`settings.tool(…)`),
//! with `-P <lxc path>` on every `lxc-*` call so the backend never depends on LXC's global
//! default path. Decisions where DESIGN.md is silent:
//!
//! - **Creation without `lxc-create`.** LXC 5 has no `none` template, and `lxc-create` copies
//!   `/etc/lxc/default.conf`, which on Debian adds a veth on `lxcbr0`: a network phoenix must
//!   never give a container. So phoenix writes `$lxc_path/<vmid>/config` itself and fills
//!   `$lxc_path/<vmid>/rootfs` from the entry's `template`, which for this backend is an
//!   absolute path to a root file system: a directory (copied with `cp -a`) or a tarball
//!   (unpacked with `tar -xp --numeric-owner`; tar detects the compression). PVE volume ids
//!   (`local:vztmpl/…`) are refused. The config is written *before* the rootfs is filled, so
//!   a creation killed half-way leaves a container that carries phoenix's marker and that
//!   `destroy` removes.
//! - **No network.** Every container gets `lxc.net.0.type = empty` (loopback only), whatever
//!   the entry's `network_config` says: this backend serves single-host setups and tests,
//!   and `empty` is the only network type that can never touch the host's interfaces.
//!   [`Host::ct_address`] therefore fails with [`HostError::Unsupported`].
//! - **Ownership marker.** The config's first line is `# phoenix:owner=<run id>`. LXC
//!   ignores comments; [`parse_config`] maps the marker to a `tags: phoenix;phoenix-run-<id>`
//!   entry so [`CtConfig::is_owned`] works as on PVE. `ct_destroy` refuses a container
//!   without it.
//! - **PVE keys over LXC keys.** [`parse_config`] also reports `hostname`, `memory`,
//!   `cores`, `onboot` and each bind mount `mpN` (recorded as a `# phoenix:mpN=<value>`
//!   comment right before its `lxc.mount.entry`), so primitives read one vocabulary.
//! - **Devices: deny-all first.** The config includes LXC's `common.conf` (seccomp, dropped
//!   capabilities) when present, then restates a deny-all device rule with the standard
//!   allows (`/dev/null`, ttys, …) in phoenix's own block, for cgroup v1 *and* v2 (a hybrid
//!   host enforces v1 rules and ignores v2 keys, a pure v2 host the opposite). GPU lines from
//!   [`Host::ct_append_lines`] come after that block; every `devices.allow` is written under
//!   both keys. That call accepts device rules and `lxc.mount.entry` only (no hooks,
//!   includes or network keys) and refuses values with a newline or NUL.
//! - **Privileged only.** Unprivileged containers need an id map and a shifted rootfs; this
//!   backend refuses `unprivileged: true` with a clear error instead of half-doing it.
//! - **Stop is a hard stop** (`lxc-stop -k`), like `pct stop`.
//! - **Files are pushed from the host side** with `openat2(RESOLVE_IN_ROOT)`, so a symlink
//!   planted inside the container can never make phoenix write a host file. A running
//!   container is entered through `/proc/<init pid>/root`, which sees its bind mounts; a
//!   stopped one is written in its rootfs directory.
//! - **Locks.** Config edits take an exclusive `flock` on `$lxc_path/<vmid>/phoenix.lock`.
//! - ZFS is not available through this backend ([`HostError::Unsupported`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use super::{
    CgroupMode, CreateSpec, CtConfig, CtStatus, ExecRequest, Gpu, Host, HostError, OWNER_TAG,
    Result,
};
use crate::exec::{CommandOutput, HostCommand, Runner};
use crate::settings::{HostKind, Settings};
use crate::types::{AbsPath, DatasetName, PropKey, PropValue, StorageId, Vmid};

/// The first line of every config phoenix writes; the run id follows the `=`.
pub const OWNER_MARKER: &str = "# phoenix:owner=";
/// Prefix of the comment that records a bind mount's PVE-style value (`# phoenix:mp0=…`).
const MP_MARKER: &str = "# phoenix:";
/// Header of the device block (deny-all, then the standard allows).
const DEVICE_HEADER: &str = "# phoenix: device rules (deny-all first, then allows)";
/// LXC's shared defaults, included when the host has them.
const COMMON_CONF: &str = "/usr/share/lxc/config/common.conf";
/// LXC's nesting defaults (`features.nesting`).
const NESTING_CONF: &str = "/usr/share/lxc/config/nesting.conf";
/// The device nodes every container may use (LXC's `common.conf` list).
const BASELINE_ALLOWS: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 136:* rwm",
    "c 10:229 rwm",
];
/// The raw keys [`Host::ct_append_lines`] accepts.
const APPEND_KEYS: &[&str] = &[
    "lxc.cgroup.devices.allow",
    "lxc.cgroup2.devices.allow",
    "lxc.cgroup.devices.deny",
    "lxc.cgroup2.devices.deny",
    "lxc.mount.entry",
];

const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
const LIFECYCLE_TIMEOUT: Duration = Duration::from_secs(120);
const CREATE_TIMEOUT: Duration = Duration::from_secs(1800);

/// Where the LXC backend finds its tools and files.
#[derive(Debug, Clone)]
pub struct LxcPaths {
    /// LXC's container directory (`-P`), `/var/lib/lxc` by default.
    pub lxc_path: PathBuf,
    /// `lxc-start`.
    pub lxc_start: PathBuf,
    /// `lxc-stop`.
    pub lxc_stop: PathBuf,
    /// `lxc-attach`.
    pub lxc_attach: PathBuf,
    /// `lxc-info`.
    pub lxc_info: PathBuf,
    /// `lxc-wait`.
    pub lxc_wait: PathBuf,
    /// `lxc-destroy`.
    pub lxc_destroy: PathBuf,
    /// `cp` (filling a rootfs from a directory).
    pub cp: PathBuf,
    /// `tar` (filling a rootfs from a tarball).
    pub tar: PathBuf,
    /// `nvidia-smi`.
    pub nvidia_smi: PathBuf,
    /// `/dev`.
    pub dev_dir: PathBuf,
    /// Where phoenix keeps config backups (`$PHOENIX_STATE_DIR/backups`).
    pub backup_dir: PathBuf,
}

impl LxcPaths {
    /// The paths from settings.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            lxc_path: s.lxc_path.value.clone(),
            lxc_start: s.tool("lxc-start"),
            lxc_stop: s.tool("lxc-stop"),
            lxc_attach: s.tool("lxc-attach"),
            lxc_info: s.tool("lxc-info"),
            lxc_wait: s.tool("lxc-wait"),
            lxc_destroy: s.tool("lxc-destroy"),
            cp: s.tool("cp"),
            tar: s.tool("tar"),
            nvidia_smi: s.tool("nvidia-smi"),
            dev_dir: s.dev_dir.value.clone(),
            backup_dir: s.state_dir.value.join("backups"),
        }
    }
}

/// The plain-LXC backend.
pub struct LxcHost {
    paths: LxcPaths,
    runner: Arc<dyn Runner>,
}

impl std::fmt::Debug for LxcHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LxcHost")
            .field("paths", &self.paths)
            .finish()
    }
}

impl LxcHost {
    /// A backend with `paths`, running commands through `runner`.
    pub fn new(paths: LxcPaths, runner: Arc<dyn Runner>) -> Self {
        Self { paths, runner }
    }

    /// The container's directory, `$lxc_path/<vmid>`.
    pub fn ct_dir(&self, vmid: Vmid) -> PathBuf {
        self.paths.lxc_path.join(vmid.to_string())
    }

    /// The container's config file.
    pub fn config_path(&self, vmid: Vmid) -> PathBuf {
        self.ct_dir(vmid).join("config")
    }

    /// The container's root file system directory.
    pub fn rootfs_path(&self, vmid: Vmid) -> PathBuf {
        self.ct_dir(vmid).join("rootfs")
    }

    /// `<tool> -n <vmid> -P <lxc path>`.
    fn lxc(&self, tool: &Path, vmid: Vmid) -> HostCommand {
        HostCommand::new(tool)
            .arg("-n")
            .arg(vmid.to_string())
            .arg("-P")
            .arg(&self.paths.lxc_path)
    }

    fn run(&self, cmd: &HostCommand) -> Result<CommandOutput> {
        super::run_cmd(self.runner.as_ref(), cmd)
    }

    fn read_config(&self, vmid: Vmid) -> Result<String> {
        super::read_ct_file(&self.config_path(vmid), vmid)
    }

    fn write_config(&self, vmid: Vmid, text: &str) -> Result<()> {
        super::write_file(&self.config_path(vmid), text.as_bytes(), 0o640)
    }

    /// Take phoenix's config lock of `vmid` for the life of the returned guard.
    fn config_lock(&self, vmid: Vmid) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let dir = self.ct_dir(vmid);
        if !dir.is_dir() {
            return Err(HostError::NoSuchContainer(vmid));
        }
        let path = dir.join("phoenix.lock");
        super::lock_file(&path)
    }

    /// The pid of the container's init on the host, when it runs.
    fn init_pid(&self, vmid: Vmid) -> Result<u32> {
        let cmd = self
            .lxc(&self.paths.lxc_info, vmid)
            .args(["-p", "-H"])
            .timeout(QUERY_TIMEOUT);
        let out = self.run(&cmd)?;
        let text = out.stdout_text();
        text.trim().parse().map_err(|_| HostError::Parse {
            command: cmd.to_string(),
            message: format!("expected the init pid, got {:?}", text.trim()),
        })
    }

    /// Fill the rootfs from the template (a directory or a tarball).
    fn fill_rootfs(&self, spec: &CreateSpec, rootfs: &Path) -> Result<()> {
        let src = Path::new(spec.entry.template.as_str());
        let meta = std::fs::metadata(src).map_err(|source| HostError::Io {
            action: "read template",
            path: src.to_owned(),
            source,
        })?;
        let cmd = if meta.is_dir() {
            HostCommand::new(&self.paths.cp)
                .arg("-a")
                .arg("--")
                .arg(src.join("."))
                .arg(rootfs)
        } else {
            HostCommand::new(&self.paths.tar)
                .args(["-x", "-p", "--numeric-owner", "-f"])
                .arg(src)
                .arg("-C")
                .arg(rootfs)
        };
        self.run(&cmd.timeout(CREATE_TIMEOUT).mutating()).map(drop)
    }
}

/// The config text phoenix writes for a new container.
pub fn config_text(
    spec: &CreateSpec,
    rootfs: &Path,
    common_conf: Option<&str>,
    nesting_conf: Option<&str>,
) -> String {
    let e = &spec.entry;
    let mut out = format!("{OWNER_MARKER}{}\n", spec.run_id);
    out.push_str("# Written by phoenix (lxc backend). Edit with care: phoenix parses it.\n");
    if let Some(c) = common_conf {
        out.push_str(&format!("lxc.include = {c}\n"));
    }
    if let (true, Some(c)) = (e.features.nesting, nesting_conf) {
        out.push_str(&format!("lxc.include = {c}\n"));
    }
    out.push_str(&format!("lxc.uts.name = {}\n", e.name));
    out.push_str(&format!("lxc.rootfs.path = dir:{}\n", rootfs.display()));
    out.push_str("lxc.net.0.type = empty\n");
    out.push_str(&format!(
        "lxc.start.auto = {}\n",
        if e.onboot { 1 } else { 0 }
    ));
    let mem = u64::from(e.memory_mb);
    let cores = u64::from(e.cores.max(1));
    out.push_str(&format!("lxc.cgroup.memory.limit_in_bytes = {mem}M\n"));
    out.push_str(&format!("lxc.cgroup2.memory.max = {mem}M\n"));
    out.push_str(&format!("lxc.cgroup2.memory.swap.max = {}M\n", e.swap_mb));
    out.push_str("lxc.cgroup.cpu.cfs_period_us = 100000\n");
    out.push_str(&format!(
        "lxc.cgroup.cpu.cfs_quota_us = {}\n",
        cores * 100_000
    ));
    out.push_str(&format!(
        "lxc.cgroup2.cpu.max = {} 100000\n",
        cores * 100_000
    ));
    out.push_str(&device_block());
    if e.features.fuse {
        out.push_str("lxc.mount.entry = /dev/fuse dev/fuse none bind,create=file,optional 0 0\n");
    }
    out
}

/// The deny-all rule and the standard allows, for cgroup v1 and v2.
fn device_block() -> String {
    let mut out = format!("{DEVICE_HEADER}\n");
    out.push_str("lxc.cgroup.devices.deny = a\n");
    out.push_str("lxc.cgroup2.devices.deny = a\n");
    for a in BASELINE_ALLOWS {
        out.push_str(&format!("lxc.cgroup.devices.allow = {a}\n"));
        out.push_str(&format!("lxc.cgroup2.devices.allow = {a}\n"));
    }
    out
}

/// Parse an LXC config (`key = value` lines) into the PVE-shaped [`CtConfig`] primitives
/// read: raw `lxc.*` keys in file order, plus `tags` (from the owner marker), `hostname`,
/// `memory`, `cores`, `onboot` and `mpN` (from phoenix's mount comments).
pub fn parse_config(text: &str) -> CtConfig {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(run) = line.strip_prefix(OWNER_MARKER) {
            entries.push((
                "tags".to_owned(),
                format!("{OWNER_TAG};phoenix-run-{}", run.trim()),
            ));
            continue;
        }
        if let Some((k, v)) = mp_comment(line) {
            entries.push((k.to_owned(), v.to_owned()));
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        match k {
            "lxc.uts.name" => entries.push(("hostname".to_owned(), v.to_owned())),
            "lxc.start.auto" => entries.push(("onboot".to_owned(), v.to_owned())),
            "lxc.cgroup2.memory.max" => {
                if let Some(m) = v.strip_suffix('M') {
                    entries.push(("memory".to_owned(), m.to_owned()));
                }
            }
            "lxc.cgroup2.cpu.max" => {
                let mut it = v.split_whitespace().map(str::parse::<u64>);
                if let (Some(Ok(q)), Some(Ok(p))) = (it.next(), it.next()) {
                    if let Some(cores) = q.checked_div(p) {
                        entries.push(("cores".to_owned(), cores.to_string()));
                    }
                }
            }
            _ => {}
        }
        entries.push((k.to_owned(), v.to_owned()));
    }
    CtConfig { entries }
}

/// `# phoenix:mp0=/host,mp=/ct` → `("mp0", "/host,mp=/ct")`.
fn mp_comment(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix(MP_MARKER)?;
    let (k, v) = rest.split_once('=')?;
    let n = k.strip_prefix("mp")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some((k, v))
}

/// A bind mount from a PVE `mpN` value (`/host,mp=/ct[,ro=1][,…]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The host path.
    pub host: AbsPath,
    /// The path inside the container.
    pub ct: AbsPath,
    /// Read-only.
    pub read_only: bool,
}

impl BindMount {
    /// Parse a PVE `mpN` value; only host paths (no storage volumes) are accepted.
    pub fn parse(value: &str) -> std::result::Result<Self, String> {
        // The whole value is also recorded in a comment line: a newline would start a new
        // config line (an `lxc.hook.*` runs as root on the host).
        if value.contains(['\n', '\r', '\0']) {
            return Err(format!("mount value {value:?} contains a newline or NUL"));
        }
        let mut parts = value.split(',');
        let host = parts.next().unwrap_or_default();
        if !host.starts_with('/') {
            return Err(format!(
                "{host:?} is not an absolute host path (the lxc host binds directories, not storage volumes)"
            ));
        }
        let host = AbsPath::new(host).map_err(|e| e.to_string())?;
        let mut ct = None;
        let mut read_only = false;
        for p in parts {
            match p.split_once('=') {
                Some(("mp", v)) => ct = Some(AbsPath::new(v).map_err(|e| e.to_string())?),
                Some(("ro", v)) => read_only = v == "1",
                // PVE-only options (backup, size, …) mean nothing to plain LXC.
                Some(_) => {}
                None => return Err(format!("unexpected {p:?} in mount value {value:?}")),
            }
        }
        let ct = ct.ok_or_else(|| format!("mount value {value:?} has no `mp=<path>`"))?;
        Ok(Self {
            host,
            ct,
            read_only,
        })
    }

    /// The `lxc.mount.entry` value (`create=dir` for a directory, `create=file` otherwise).
    pub fn entry(&self, host_is_dir: bool) -> String {
        format!(
            "{} {} none bind,create={}{} 0 0",
            self.host,
            self.ct.as_str().trim_start_matches('/'),
            if host_is_dir { "dir" } else { "file" },
            if self.read_only { ",ro" } else { "" }
        )
    }
}

/// Remove `mpN`'s comment and the mount entry that follows it.
fn remove_mp(text: &str, key: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut skip_next = false;
    for line in text.lines() {
        if skip_next {
            skip_next = false;
            if line.trim_start().starts_with("lxc.mount.entry") {
                continue;
            }
        }
        if mp_comment(line.trim()).is_some_and(|(k, _)| k == key) {
            skip_next = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The LXC lines for PVE-style `(key, value)` pairs: every `devices.allow` under both the
/// cgroup v1 and v2 keys. Refuses newlines, NUL and keys other than device rules and
/// mount entries.
pub fn lxc_lines(lines: &[(String, String)]) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (k, v) in lines {
        if [k, v].iter().any(|s| s.contains(['\n', '\r', '\0'])) {
            return Err(format!(
                "refusing config line {k:?} = {v:?}: a newline or NUL could add another key"
            ));
        }
        // Only what GPU passthrough needs: a hook, an include or a network key written here
        // would run code on the host or break the `empty` network rule.
        if !APPEND_KEYS.contains(&k.as_str()) {
            return Err(format!(
                "refusing config key {k:?}: the lxc host appends only {}",
                APPEND_KEYS.join(", ")
            ));
        }
        let v = v.trim();
        match k.as_str() {
            "lxc.cgroup2.devices.allow" | "lxc.cgroup.devices.allow" => {
                out.push(format!("lxc.cgroup.devices.allow = {v}"));
                out.push(format!("lxc.cgroup2.devices.allow = {v}"));
            }
            "lxc.cgroup2.devices.deny" | "lxc.cgroup.devices.deny" => {
                out.push(format!("lxc.cgroup.devices.deny = {v}"));
                out.push(format!("lxc.cgroup2.devices.deny = {v}"));
            }
            _ => out.push(format!("{k} = {v}")),
        }
    }
    Ok(out)
}

/// Append `new` lines not already present; when an allow is added and the config has no
/// deny-all rule yet, the device block goes first. Returns `None` when nothing changes.
pub fn append_lines(text: &str, new: &[String]) -> Option<String> {
    let existing: Vec<&str> = text.lines().map(str::trim).collect();
    let mut add: Vec<&str> = Vec::new();
    for l in new {
        if !existing.contains(&l.as_str()) && !add.contains(&l.as_str()) {
            add.push(l);
        }
    }
    if add.is_empty() {
        return None;
    }
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let has_deny = [
        "lxc.cgroup.devices.deny = a",
        "lxc.cgroup2.devices.deny = a",
    ]
    .iter()
    .all(|d| existing.contains(d));
    if !has_deny && add.iter().any(|l| l.contains("devices.allow")) {
        out.push_str(&device_block());
    }
    for l in add {
        out.push_str(l);
        out.push('\n');
    }
    Some(out)
}

/// Write `content` to `dest` beneath the directory `root` (the container's `/`), never
/// leaving it: every lookup uses `RESOLVE_IN_ROOT`, so absolute symlinks and `..` stay
/// inside. Missing parent directories are created (0755); the file is replaced atomically
/// and gets exactly `mode`.
pub fn push_beneath(root: &Path, dest: &AbsPath, content: &[u8], mode: u32) -> Result<()> {
    let io = |action: &'static str, path: &Path, e: nix::errno::Errno| HostError::Io {
        action,
        path: path.to_owned(),
        source: e.into(),
    };
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open container root", root, e))?;
    let dest_path = Path::new(dest.as_str());
    let name = dest_path
        .file_name()
        .ok_or_else(|| HostError::Device(format!("push destination {dest} names no file")))?;
    // Walk (and create) the parent directories one component at a time, inside the root.
    let mut parent = PathBuf::from("/");
    let mut parent_fd: OwnedFd = open_in_root(&root_fd, &parent)
        .map_err(|e| io("open directory in container", &parent, e))?;
    for comp in dest_path
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .skip(1)
    {
        parent.push(comp);
        match nix::sys::stat::mkdirat(
            &parent_fd,
            comp.as_os_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(io("create directory in container", &parent, e)),
        }
        parent_fd = open_in_root(&root_fd, &parent)
            .map_err(|e| io("open directory in container", &parent, e))?;
    }
    let (tmp_name, fd) =
        create_temp_in(&parent_fd).map_err(|e| io("create file in container", dest_path, e))?;
    let mut file = std::fs::File::from(fd);
    let written = file
        .write_all(content)
        .and_then(|()| {
            nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(mode))
                .map_err(std::io::Error::from)
        })
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = nix::unistd::unlinkat(
            &parent_fd,
            tmp_name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        return Err(HostError::Io {
            action: "write file in container",
            path: dest_path.to_owned(),
            source,
        });
    }
    nix::fcntl::renameat(&parent_fd, tmp_name.as_str(), &parent_fd, name).map_err(|e| {
        let _ = nix::unistd::unlinkat(
            &parent_fd,
            tmp_name.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        io("replace file in container", dest_path, e)
    })
}

/// A fresh 0600 temp file in `dir` (name from pid and clock; retried on a clash).
fn create_temp_in(dir: &OwnedFd) -> nix::Result<(String, OwnedFd)> {
    let mut last = nix::errno::Errno::EEXIST;
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(".phoenix-push-{}-{nanos}-{attempt}", std::process::id());
        match nix::fcntl::openat(
            dir,
            name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => return Ok((name, fd)),
            Err(e) if e == nix::errno::Errno::EEXIST => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn open_in_root(root: &OwnedFd, path: &Path) -> nix::Result<OwnedFd> {
    nix::fcntl::openat2(
        root,
        path,
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS),
    )
}

fn unsupported(what: &'static str) -> HostError {
    HostError::Unsupported {
        backend: HostKind::Lxc,
        what,
    }
}

impl Host for LxcHost {
    fn kind(&self) -> HostKind {
        HostKind::Lxc
    }

    fn ct_config(&self, vmid: Vmid) -> Result<Option<CtConfig>> {
        match self.read_config(vmid) {
            Ok(t) => Ok(Some(parse_config(&t))),
            Err(HostError::NoSuchContainer(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn ct_create(&self, spec: &CreateSpec) -> Result<()> {
        if spec.entry.unprivileged {
            return Err(unsupported(
                "create unprivileged containers (set \"unprivileged\": false for this backend)",
            ));
        }
        if !spec.entry.template.as_str().starts_with('/') {
            return Err(unsupported(
                "use a PVE volume id as template (give an absolute path to a rootfs directory or tarball)",
            ));
        }
        let run_ok = !spec.run_id.is_empty()
            && spec
                .run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.+:".contains(c));
        if !run_ok {
            return Err(HostError::Device(format!(
                "run id {:?} cannot be recorded in an LXC config comment",
                spec.run_id
            )));
        }
        let dir = self.ct_dir(spec.vmid);
        let rootfs = self.rootfs_path(spec.vmid);
        if rootfs.to_string_lossy().contains(['\n', '\r', '\0']) {
            return Err(HostError::Device(format!(
                "lxc path {:?} contains a newline or NUL and cannot go into a config line",
                self.paths.lxc_path
            )));
        }
        std::fs::create_dir_all(&self.paths.lxc_path).map_err(|source| HostError::Io {
            action: "create lxc path",
            path: self.paths.lxc_path.clone(),
            source,
        })?;
        // `create_dir` (not `_all`): an existing directory is someone's container.
        std::fs::create_dir(&dir).map_err(|source| HostError::Io {
            action: "create container directory (does the container exist already?)",
            path: dir.clone(),
            source,
        })?;
        std::fs::create_dir(&rootfs).map_err(|source| HostError::Io {
            action: "create rootfs directory",
            path: rootfs.clone(),
            source,
        })?;
        let existing = |p: &'static str| Path::new(p).exists().then_some(p);
        let text = config_text(spec, &rootfs, existing(COMMON_CONF), existing(NESTING_CONF));
        // Config (with the owner marker) first: a creation killed while the rootfs is copied
        // leaves a container phoenix recognises as its own and can destroy.
        self.write_config(spec.vmid, &text)?;
        self.fill_rootfs(spec, &rootfs)
    }

    fn ct_destroy(&self, vmid: Vmid) -> Result<()> {
        let Some(conf) = self.ct_config(vmid)? else {
            // Already gone (or never created): destroy is idempotent.
            return Ok(());
        };
        if !conf.is_owned() {
            return Err(HostError::NotOwned(vmid));
        }
        if self.ct_status(vmid)? == CtStatus::Running {
            self.ct_stop(vmid)?;
        }
        let _lock = self.config_lock(vmid)?;
        self.run(
            &self
                .lxc(&self.paths.lxc_destroy, vmid)
                .timeout(LIFECYCLE_TIMEOUT)
                .mutating(),
        )
        .map(drop)
    }

    fn ct_start(&self, vmid: Vmid) -> Result<()> {
        if !self.config_path(vmid).exists() {
            return Err(HostError::NoSuchContainer(vmid));
        }
        let log = self.ct_dir(vmid).join("lxc-start.log");
        self.run(
            &self
                .lxc(&self.paths.lxc_start, vmid)
                .arg("-o")
                .arg(&log)
                .args(["-l", "WARN"])
                .timeout(LIFECYCLE_TIMEOUT)
                .mutating(),
        )?;
        self.run(
            &self
                .lxc(&self.paths.lxc_wait, vmid)
                .args(["-s", "RUNNING", "-t", "60"])
                .timeout(LIFECYCLE_TIMEOUT),
        )
        .map(drop)
    }

    fn ct_stop(&self, vmid: Vmid) -> Result<()> {
        match self.ct_status(vmid)? {
            CtStatus::Absent => Err(HostError::NoSuchContainer(vmid)),
            CtStatus::Stopped => Ok(()),
            CtStatus::Running => self
                .run(
                    &self
                        .lxc(&self.paths.lxc_stop, vmid)
                        .arg("-k")
                        .timeout(LIFECYCLE_TIMEOUT)
                        .mutating(),
                )
                .map(drop),
        }
    }

    fn ct_status(&self, vmid: Vmid) -> Result<CtStatus> {
        if !self.config_path(vmid).exists() {
            return Ok(CtStatus::Absent);
        }
        let cmd = self
            .lxc(&self.paths.lxc_info, vmid)
            .args(["-s", "-H"])
            .timeout(QUERY_TIMEOUT);
        let out = self.run(&cmd)?;
        let text = out.stdout_text();
        match text.trim() {
            "RUNNING" | "FROZEN" | "FREEZING" | "THAWED" | "STOPPING" => Ok(CtStatus::Running),
            "STOPPED" | "STARTING" | "ABORTING" => Ok(CtStatus::Stopped),
            other => Err(HostError::Parse {
                command: cmd.to_string(),
                message: format!("expected an LXC state such as RUNNING, got {other:?}"),
            }),
        }
    }

    fn ct_exec(&self, vmid: Vmid, req: &ExecRequest) -> Result<CommandOutput> {
        // `--clear-env`: nothing from phoenix's environment enters the container; LXC sets
        // a default PATH and `container=lxc`.
        let prefix = self
            .lxc(&self.paths.lxc_attach, vmid)
            .arg("--clear-env")
            .arg("--");
        super::run_attach(self.runner.as_ref(), &req.apply_to(prefix))
    }

    fn ct_push(&self, vmid: Vmid, content: &[u8], dest: &AbsPath, mode: u32) -> Result<()> {
        let root = match self.ct_status(vmid)? {
            CtStatus::Absent => return Err(HostError::NoSuchContainer(vmid)),
            // The running container's own view of `/`, bind mounts included.
            CtStatus::Running => PathBuf::from(format!("/proc/{}/root", self.init_pid(vmid)?)),
            CtStatus::Stopped => {
                let conf = self
                    .ct_config(vmid)?
                    .ok_or(HostError::NoSuchContainer(vmid))?;
                conf.get("lxc.rootfs.path")
                    .map(|p| PathBuf::from(p.strip_prefix("dir:").unwrap_or(p)))
                    .unwrap_or_else(|| self.rootfs_path(vmid))
            }
        };
        push_beneath(&root, dest, content, mode)
    }

    fn ct_set(&self, vmid: Vmid, options: &[(String, String)]) -> Result<()> {
        let mut mounts = Vec::new();
        for (k, v) in options {
            let is_mp = k
                .strip_prefix("mp")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if !is_mp {
                return Err(HostError::Device(format!(
                    "the lxc host cannot set `{k}` (it sets bind mounts `mpN` only)"
                )));
            }
            let m = BindMount::parse(v)
                .map_err(|m| HostError::Device(format!("{k} for container {vmid}: {m}")))?;
            mounts.push((k.as_str(), v.as_str(), m));
        }
        let _lock = self.config_lock(vmid)?;
        let mut text = self.read_config(vmid)?;
        for (k, v, m) in mounts {
            text = remove_mp(&text, k);
            let host_is_dir = Path::new(m.host.as_str()).is_dir();
            text.push_str(&format!(
                "{MP_MARKER}{k}={v}\nlxc.mount.entry = {}\n",
                m.entry(host_is_dir)
            ));
        }
        self.write_config(vmid, &text)
    }

    fn ct_delete_keys(&self, vmid: Vmid, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let _lock = self.config_lock(vmid)?;
        let before = self.read_config(vmid)?;
        let mut text = before.clone();
        for k in keys {
            text = remove_mp(&text, k);
        }
        if text == before {
            return Ok(());
        }
        self.write_config(vmid, &text)
    }

    fn ct_append_lines(&self, vmid: Vmid, lines: &[(String, String)], backup: &Path) -> Result<()> {
        let new = lxc_lines(lines).map_err(HostError::Device)?;
        let _lock = self.config_lock(vmid)?;
        let text = self.read_config(vmid)?;
        let Some(updated) = append_lines(&text, &new) else {
            return Ok(());
        };
        super::backup_once(backup, &text)?;
        self.write_config(vmid, &updated)
    }

    fn ct_restore_config(&self, vmid: Vmid, backup: &Path) -> Result<()> {
        let saved = std::fs::read_to_string(backup).map_err(|source| HostError::Io {
            action: "read config backup",
            path: backup.to_owned(),
            source,
        })?;
        if !self.config_path(vmid).exists() {
            // The container is gone: nothing to restore into.
            return Ok(());
        }
        let _lock = self.config_lock(vmid)?;
        self.write_config(vmid, &saved)
    }

    fn ct_address(&self, _vmid: Vmid, _iface: &str) -> Result<Ipv4Addr> {
        Err(unsupported(
            "report a container address: its containers have no network (`lxc.net.0.type = empty`, loopback only)",
        ))
    }

    fn zfs_get(&self, _name: &DatasetName) -> Result<Option<BTreeMap<String, String>>> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn zfs_local_props(&self, _name: &DatasetName) -> Result<Option<BTreeMap<String, String>>> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn zfs_create(&self, _name: &DatasetName, _props: &[(PropKey, PropValue)]) -> Result<()> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn zfs_destroy(&self, _name: &DatasetName) -> Result<()> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn zfs_mountpoint(&self, _name: &DatasetName) -> Result<Option<String>> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn ct_unlock(&self, _vmid: Vmid) -> Result<()> {
        Err(unsupported(
            "unlock a container config (plain LXC has no config lock)",
        ))
    }

    fn storage_volumes(&self, _storage: &StorageId, _vmid: Vmid) -> Result<Vec<String>> {
        // Plain LXC keeps a container's files in its own directory: no storage volumes.
        Ok(Vec::new())
    }

    fn free_volume(&self, _volid: &str) -> Result<()> {
        Err(unsupported("free storage volumes"))
    }

    fn host_path_owner(&self, _path: &AbsPath) -> Result<Option<(u32, u32)>> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn host_chown(&self, _path: &AbsPath, _uid: u32, _gid: u32) -> Result<()> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn zfs_pools(&self) -> Result<Vec<String>> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn zfs_children(&self, _name: &DatasetName) -> Result<Vec<DatasetName>> {
        Err(unsupported(
            "manage ZFS datasets (bind-mount an existing host directory instead)",
        ))
    }

    fn gpus(&self) -> Result<Vec<Gpu>> {
        if !self.paths.nvidia_smi.exists() {
            return Ok(Vec::new());
        }
        super::pve::query_gpus(&self.paths.nvidia_smi, |cmd| self.run(cmd))
    }

    fn pve_version(&self) -> Result<Option<(u32, u32, u32)>> {
        Ok(None)
    }

    fn cgroup_mode(&self) -> Result<CgroupMode> {
        // This backend writes every device rule under both keys (`lxc.cgroup.devices.*` and
        // `lxc.cgroup2.devices.*`), so the mode only decides which one phoenix names.
        CgroupMode::detect(Path::new("/sys"))
    }

    fn dev_dir(&self) -> &Path {
        &self.paths.dev_dir
    }

    fn backup_dir(&self) -> PathBuf {
        self.paths.backup_dir.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Features, IpConfig, LxcConfig, Network};
    use crate::exec::RecordingRunner;
    use crate::types::{BridgeName, Hostname, IfaceName, StorageId, Template};

    fn entry(vmid: Vmid, template: &str) -> LxcConfig {
        LxcConfig {
            vmid,
            name: Hostname::new("gpu-a").unwrap(),
            memory_mb: 2048,
            swap_mb: 512,
            cores: 4,
            template: Template::new(template).unwrap(),
            storage_pool: StorageId::new("local").unwrap(),
            storage_size_gb: 8,
            network: Network {
                name: IfaceName::new("eth0").unwrap(),
                bridge: BridgeName::new("vmbr0").unwrap(),
                ip: IpConfig::Dhcp,
                gw: None,
                dns: Vec::new(),
                mac: None,
                vlan: None,
            },
            features: Features::default(),
            unprivileged: false,
            onboot: false,
            gpus: None,
            vllm: None,
            recipe: None,
            portainer_role: None,
            openai_backend: None,
            gpu_exclusive: false,
            after: Vec::new(),
            packages: Vec::new(),
        }
    }

    fn spec(vmid: u64, template: &str) -> CreateSpec {
        let vmid = Vmid::new(vmid).unwrap();
        CreateSpec {
            vmid,
            entry: entry(vmid, template),
            run_id: "r42".into(),
        }
    }

    fn host(dir: &Path, runner: Arc<dyn Runner>) -> LxcHost {
        let bin = Path::new("/opt/lxc/bin");
        LxcHost::new(
            LxcPaths {
                lxc_path: dir.join("lxc"),
                lxc_start: bin.join("lxc-start"),
                lxc_stop: bin.join("lxc-stop"),
                lxc_attach: bin.join("lxc-attach"),
                lxc_info: bin.join("lxc-info"),
                lxc_wait: bin.join("lxc-wait"),
                lxc_destroy: bin.join("lxc-destroy"),
                cp: bin.join("cp"),
                tar: bin.join("tar"),
                nvidia_smi: dir.join("nvidia-smi"),
                dev_dir: dir.join("dev"),
                backup_dir: dir.join("backups"),
            },
            runner,
        )
    }

    fn answering(state: &'static str) -> Arc<RecordingRunner> {
        Arc::new(RecordingRunner::new(move |c| CommandOutput {
            code: 0,
            stdout: if c.argv().iter().any(|a| a == "-s") && c.program().ends_with("lxc-info") {
                format!("{state}\n").into_bytes()
            } else {
                Vec::new()
            },
            stderr: Vec::new(),
        }))
    }

    #[test]
    fn config_has_marker_empty_network_and_deny_before_allows() {
        let s = spec(901, "/srv/rootfs");
        let text = config_text(&s, Path::new("/l/901/rootfs"), Some(COMMON_CONF), None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "# phoenix:owner=r42");
        assert!(lines.contains(&"lxc.net.0.type = empty"));
        assert!(
            !text.contains("type = none") && !text.contains("veth"),
            "{text}"
        );
        assert!(lines.contains(&"lxc.rootfs.path = dir:/l/901/rootfs"));
        assert!(lines.contains(&"lxc.uts.name = gpu-a"));
        let pos = |l: &str| lines.iter().position(|x| *x == l).unwrap();
        let include = pos("lxc.include = /usr/share/lxc/config/common.conf");
        for deny in [
            "lxc.cgroup.devices.deny = a",
            "lxc.cgroup2.devices.deny = a",
        ] {
            assert!(pos(deny) > include);
            assert!(pos(deny) < pos("lxc.cgroup.devices.allow = c 1:3 rwm"));
            assert!(pos(deny) < pos("lxc.cgroup2.devices.allow = c 1:3 rwm"));
        }
    }

    #[test]
    fn parsed_config_is_owned_and_speaks_pve_keys() {
        let s = spec(901, "/srv/rootfs");
        let mut text = config_text(&s, Path::new("/l/901/rootfs"), None, None);
        text.push_str("# phoenix:mp0=/srv/models,mp=/models\n");
        text.push_str("lxc.mount.entry = /srv/models models none bind,create=dir 0 0\n");
        let conf = parse_config(&text);
        assert!(conf.is_owned());
        assert_eq!(conf.tags(), ["phoenix", "phoenix-run-r42"]);
        assert_eq!(conf.get("hostname"), Some("gpu-a"));
        assert_eq!(conf.get("memory"), Some("2048"));
        assert_eq!(conf.get("cores"), Some("4"));
        assert_eq!(conf.get("onboot"), Some("0"));
        assert_eq!(conf.get("mp0"), Some("/srv/models,mp=/models"));
        assert_eq!(conf.free_slot("mp"), 1);
        assert_eq!(conf.get("lxc.net.0.type"), Some("empty"));
        // A foreign container (no marker) is not phoenix's.
        let foreign = parse_config("lxc.uts.name = web\n# phoenix is great\n");
        assert!(!foreign.is_owned());
    }

    #[test]
    fn mounts_become_bind_entries() {
        let m = BindMount::parse("/srv/models,mp=/root/.cache/hf,backup=0").unwrap();
        assert_eq!(
            m.entry(true),
            "/srv/models root/.cache/hf none bind,create=dir 0 0"
        );
        let ro = BindMount::parse("/srv/token,mp=/run/token,ro=1").unwrap();
        assert_eq!(
            ro.entry(false),
            "/srv/token run/token none bind,create=file,ro 0 0"
        );
        assert!(
            BindMount::parse("local-zfs:subvol-1,mp=/x")
                .unwrap_err()
                .contains("storage")
        );
        assert!(BindMount::parse("/srv/x").unwrap_err().contains("mp="));
        crate::test_support::refused(
            BindMount::parse("/srv/x,mp=/a b"),
            "contains ' '; allowed: no `,` `;` `=` quotes, backslash or spaces",
        );
        crate::test_support::refused(
            BindMount::parse("/srv/x,mp=/a\nlxc.hook.pre-start = /x"),
            "contains a newline or NUL",
        );
        // An option PVE-only options would ignore must not smuggle a line into the config.
        let err = BindMount::parse("/srv/x,mp=/a,backup=0\nlxc.hook.pre-start = /x").unwrap_err();
        assert!(err.contains("newline"), "{err}");
    }

    #[test]
    fn gpu_lines_get_both_cgroup_keys_and_refuse_newlines() {
        let pairs = vec![
            (
                "lxc.cgroup2.devices.allow".to_owned(),
                "c 195:* rwm".to_owned(),
            ),
            (
                "lxc.mount.entry".to_owned(),
                "/dev/nvidia0 dev/nvidia0 none bind,optional,create=file".to_owned(),
            ),
        ];
        assert_eq!(
            lxc_lines(&pairs).unwrap(),
            [
                "lxc.cgroup.devices.allow = c 195:* rwm",
                "lxc.cgroup2.devices.allow = c 195:* rwm",
                "lxc.mount.entry = /dev/nvidia0 dev/nvidia0 none bind,optional,create=file",
            ]
        );
        let evil = vec![(
            "lxc.mount.entry".to_owned(),
            "/dev/x dev/x none bind 0 0\nlxc.hook.pre-start = /tmp/pwn".to_owned(),
        )];
        assert!(lxc_lines(&evil).unwrap_err().contains("newline"));
        let nul = vec![("lxc.mount.entry".to_owned(), "/dev/x\0".to_owned())];
        assert!(lxc_lines(&nul).unwrap_err().contains("NUL"));
        let pve = vec![("dev0".to_owned(), "/dev/nvidia0".to_owned())];
        assert!(lxc_lines(&pve).unwrap_err().contains("dev0"));
        for key in ["lxc.hook.pre-start", "lxc.include", "lxc.net.0.type"] {
            let line = vec![(key.to_owned(), "veth".to_owned())];
            assert!(lxc_lines(&line).unwrap_err().contains(key), "{key}");
        }
    }

    #[test]
    fn append_is_idempotent_and_adds_deny_all_when_missing() {
        let new = vec![
            "lxc.cgroup.devices.allow = c 195:* rwm".to_owned(),
            "lxc.cgroup2.devices.allow = c 195:* rwm".to_owned(),
        ];
        let base = "lxc.uts.name = x\n";
        let once = append_lines(base, &new).unwrap();
        let lines: Vec<&str> = once.lines().collect();
        let deny = lines
            .iter()
            .position(|l| *l == "lxc.cgroup.devices.deny = a")
            .unwrap();
        let allow = lines.iter().position(|l| *l == new[0]).unwrap();
        assert!(deny < allow, "{once}");
        assert_eq!(append_lines(&once, &new), None);
        // With the device block already there, only the new allows are appended.
        let with_block = format!("{base}{}", device_block());
        let twice = append_lines(&with_block, &new).unwrap();
        assert_eq!(twice, format!("{with_block}{}\n{}\n", new[0], new[1]));
    }

    #[test]
    fn remove_mp_drops_comment_and_entry_only() {
        let text = "a = 1\n# phoenix:mp0=/x,mp=/y\nlxc.mount.entry = /x y none bind,create=dir 0 0\n\
                    # phoenix:mp1=/p,mp=/q\nlxc.mount.entry = /p q none bind,create=dir 0 0\n";
        assert_eq!(
            remove_mp(text, "mp0"),
            "a = 1\n# phoenix:mp1=/p,mp=/q\nlxc.mount.entry = /p q none bind,create=dir 0 0\n"
        );
        assert_eq!(remove_mp(text, "mp7"), text);
    }

    #[test]
    fn exec_is_tried_again_while_lxc_attach_fails_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let runner = crate::test_support::attach_fails_first("--clear-env", 1, "hi\n", |_| "");
        let h = host(dir.path(), runner.clone());
        let req = ExecRequest {
            argv: vec!["busybox".into(), "echo".into(), "hi".into()],
            ..ExecRequest::default()
        };
        let out = h.ct_exec(Vmid::new(901).unwrap(), &req).unwrap();
        assert_eq!(out.stdout_text(), "hi\n");
        let calls: Vec<Vec<String>> = runner.calls().iter().map(HostCommand::argv).collect();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0], calls[1]);
        assert!(calls[0][0].ends_with("lxc-attach"), "{calls:?}");
    }

    #[test]
    fn lifecycle_argv() {
        let dir = tempfile::tempdir().unwrap();
        let runner = answering("RUNNING");
        let h = host(dir.path(), runner.clone());
        let src = dir.path().join("rootfs-src");
        std::fs::create_dir(&src).unwrap();
        h.ct_create(&spec(901, src.to_str().unwrap())).unwrap();
        h.ct_start(Vmid::new(901).unwrap()).unwrap();
        let req = ExecRequest {
            argv: vec!["busybox".into(), "echo".into(), "a; rm -rf /".into()],
            ..ExecRequest::default()
        };
        h.ct_exec(Vmid::new(901).unwrap(), &req).unwrap();
        h.ct_stop(Vmid::new(901).unwrap()).unwrap();
        let lxc = dir.path().join("lxc");
        let p = lxc.to_str().unwrap();
        let calls: Vec<Vec<String>> = runner.calls().iter().map(HostCommand::argv).collect();
        let rootfs = lxc.join("901/rootfs");
        assert_eq!(
            calls,
            vec![
                vec![
                    "/opt/lxc/bin/cp".to_owned(),
                    "-a".into(),
                    "--".into(),
                    format!("{}/.", src.display()),
                    rootfs.display().to_string(),
                ],
                ["/opt/lxc/bin/lxc-start", "-n", "901", "-P", p, "-o"]
                    .map(str::to_owned)
                    .into_iter()
                    .chain([lxc.join("901/lxc-start.log").display().to_string()])
                    .chain(["-l".into(), "WARN".into()])
                    .collect(),
                [
                    "/opt/lxc/bin/lxc-wait",
                    "-n",
                    "901",
                    "-P",
                    p,
                    "-s",
                    "RUNNING",
                    "-t",
                    "60"
                ]
                .map(str::to_owned)
                .to_vec(),
                [
                    "/opt/lxc/bin/lxc-attach",
                    "-n",
                    "901",
                    "-P",
                    p,
                    "--clear-env",
                    "--",
                    "busybox",
                    "echo",
                    "a; rm -rf /",
                ]
                .map(str::to_owned)
                .to_vec(),
                ["/opt/lxc/bin/lxc-info", "-n", "901", "-P", p, "-s", "-H"]
                    .map(str::to_owned)
                    .to_vec(),
                ["/opt/lxc/bin/lxc-stop", "-n", "901", "-P", p, "-k"]
                    .map(str::to_owned)
                    .to_vec(),
            ]
        );
        let conf = h.ct_config(Vmid::new(901).unwrap()).unwrap().unwrap();
        assert!(conf.is_owned());
    }

    #[test]
    fn create_refuses_unprivileged_volume_ids_and_existing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let runner = answering("STOPPED");
        let h = host(dir.path(), runner.clone());
        let mut s = spec(902, "/srv/rootfs");
        s.entry.unprivileged = true;
        assert!(
            h.ct_create(&s)
                .unwrap_err()
                .to_string()
                .contains("unprivileged")
        );
        let s = spec(902, "local:vztmpl/debian.tar.zst");
        assert!(
            h.ct_create(&s)
                .unwrap_err()
                .to_string()
                .contains("rootfs directory or tarball")
        );
        std::fs::create_dir_all(dir.path().join("lxc/903")).unwrap();
        let err = h.ct_create(&spec(903, "/srv/rootfs")).unwrap_err();
        assert!(err.to_string().contains("exist"), "{err}");
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn destroy_refuses_foreign_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let runner = answering("STOPPED");
        let h = host(dir.path(), runner.clone());
        let ct = dir.path().join("lxc/904");
        std::fs::create_dir_all(&ct).unwrap();
        std::fs::write(ct.join("config"), "lxc.uts.name = web\n").unwrap();
        let err = h.ct_destroy(Vmid::new(904).unwrap()).unwrap_err();
        assert!(matches!(err, HostError::NotOwned(_)), "{err}");
        h.ct_destroy(Vmid::new(905).unwrap()).unwrap();
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn set_and_delete_mounts_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), answering("STOPPED"));
        let src = dir.path().join("rootfs-src");
        std::fs::create_dir(&src).unwrap();
        let vmid = Vmid::new(906).unwrap();
        h.ct_create(&spec(906, src.to_str().unwrap())).unwrap();
        let before = std::fs::read_to_string(h.config_path(vmid)).unwrap();
        let host_dir = dir.path().join("models");
        std::fs::create_dir(&host_dir).unwrap();
        let value = format!("{},mp=/models", host_dir.display());
        h.ct_set(vmid, &[("mp0".into(), value.clone())]).unwrap();
        // Setting the same key again replaces it rather than adding a second entry.
        h.ct_set(vmid, &[("mp0".into(), value.clone())]).unwrap();
        let conf = h.ct_config(vmid).unwrap().unwrap();
        assert_eq!(conf.get("mp0"), Some(value.as_str()));
        assert_eq!(
            conf.all("lxc.mount.entry"),
            [format!(
                "{} models none bind,create=dir 0 0",
                host_dir.display()
            )]
        );
        let err = h
            .ct_set(vmid, &[("hostname".into(), "x".into())])
            .unwrap_err();
        assert!(err.to_string().contains("`hostname`"), "{err}");
        h.ct_delete_keys(vmid, &["mp0".into()]).unwrap();
        assert_eq!(
            std::fs::read_to_string(h.config_path(vmid)).unwrap(),
            before
        );
    }

    #[test]
    fn append_lines_backs_up_and_restore_puts_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), answering("STOPPED"));
        let src = dir.path().join("rootfs-src");
        std::fs::create_dir(&src).unwrap();
        let vmid = Vmid::new(907).unwrap();
        h.ct_create(&spec(907, src.to_str().unwrap())).unwrap();
        let before = std::fs::read_to_string(h.config_path(vmid)).unwrap();
        let backup = dir.path().join("backups/907.conf");
        let lines = vec![(
            "lxc.cgroup2.devices.allow".to_owned(),
            "c 195:* rwm".to_owned(),
        )];
        h.ct_append_lines(vmid, &lines, &backup).unwrap();
        let after = std::fs::read_to_string(h.config_path(vmid)).unwrap();
        assert!(after.ends_with(
            "lxc.cgroup.devices.allow = c 195:* rwm\nlxc.cgroup2.devices.allow = c 195:* rwm\n"
        ));
        assert_eq!(std::fs::read_to_string(&backup).unwrap(), before);
        h.ct_append_lines(vmid, &lines, &backup).unwrap();
        assert_eq!(std::fs::read_to_string(h.config_path(vmid)).unwrap(), after);
        let bad = vec![(
            "lxc.mount.entry".to_owned(),
            "a\nlxc.hook.mount = /x".to_owned(),
        )];
        crate::test_support::refused(
            h.ct_append_lines(vmid, &bad, &backup),
            "a newline or NUL could add another key",
        );
        assert_eq!(std::fs::read_to_string(h.config_path(vmid)).unwrap(), after);
        h.ct_restore_config(vmid, &backup).unwrap();
        assert_eq!(
            std::fs::read_to_string(h.config_path(vmid)).unwrap(),
            before
        );
    }

    #[test]
    fn push_stays_inside_the_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        // A container could plant an absolute symlink pointing at a host directory.
        std::os::unix::fs::symlink(&outside, root.join("etc/evil")).unwrap();
        std::os::unix::fs::symlink("/../../..", root.join("up")).unwrap();
        let dest = AbsPath::new("/etc/evil/token").unwrap();
        // The link resolves inside the root, where its target does not exist: refused.
        match push_beneath(&root, &dest, b"secret", 0o600) {
            Err(HostError::Io {
                action,
                path,
                source,
            }) => {
                assert_eq!(
                    (action, path.as_path()),
                    ("open directory in container", Path::new("/etc/evil"))
                );
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound, "{source}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // Once the target exists inside the root, the file lands there, never outside.
        let inside = root.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        push_beneath(&root, &dest, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        let landed = inside.join("token");
        assert_eq!(std::fs::read(&landed).unwrap(), b"secret");
        let dest = AbsPath::new("/up/etc/phoenix/unit.service").unwrap();
        push_beneath(&root, &dest, b"[Unit]\n", 0o644).unwrap();
        let f = root.join("etc/phoenix/unit.service");
        assert_eq!(std::fs::read(&f).unwrap(), b"[Unit]\n");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        // No temp file is left behind.
        assert_eq!(
            std::fs::read_dir(root.join("etc/phoenix")).unwrap().count(),
            1
        );
    }

    #[test]
    fn address_and_zfs_are_unsupported_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), answering("RUNNING"));
        let err = h.ct_address(Vmid::new(901).unwrap(), "eth0").unwrap_err();
        assert!(err.to_string().contains("lxc.net.0.type = empty"), "{err}");
        let err = h
            .zfs_get(&DatasetName::new("rpool/phoenix/models").unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("the lxc host cannot manage ZFS"),
            "{err}"
        );
        assert_eq!(h.pve_version().unwrap(), None);
    }

    #[test]
    fn gpus_empty_without_nvidia_smi_and_parsed_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let h = host(dir.path(), answering("RUNNING"));
        assert!(h.gpus().unwrap().is_empty());
        std::fs::write(dir.path().join("nvidia-smi"), "").unwrap();
        let runner = Arc::new(RecordingRunner::new(|c| CommandOutput {
            code: 0,
            stdout: if c.argv().iter().any(|a| a == "-q") {
                b"GPU 00000000:00:06.0\n    Minor Number                          : 3\n".to_vec()
            } else {
                b"0, 00000000:00:06.0, GPU-abc, NVIDIA H100 80GB HBM3, 81559, 580.65.06\n".to_vec()
            },
            stderr: Vec::new(),
        }));
        let h = host(dir.path(), runner.clone());
        let gpus = h.gpus().unwrap();
        assert_eq!(gpus.len(), 1);
        assert_eq!(gpus[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(gpus[0].memory_mib, 81559);
        assert_eq!(gpus[0].minor, Some(3));
        assert_eq!(
            runner.calls()[0].argv()[1..],
            [
                super::super::pve::GPU_QUERY,
                "--format=csv,noheader,nounits"
            ]
        );
    }
}

//! The Proxmox VE backend: `pct`, `pvesm`, `pveversion`, `zfs`, `nvidia-smi` by absolute
//! path, through the one runner.
//!
//! Formats follow the PVE sources (`pve-container`: `PVE/LXC/Config.pm` for `netN`, `mpN`,
//! `devN`, `features`, `tags`; `PVE/CLI/pct.pm` for `exec`, `status`, `push`):
//! - container configs are read straight from `/etc/pve/lxc/<vmid>.conf` (the file PVE
//!   itself reads), never parsed from a human listing;
//! - raw `lxc.*` lines (legacy GPU passthrough) are written under PVE's per-container
//!   config lock (`/run/lock/lxc/pve-config-<vmid>.lock`), before any `[snapshot]` section,
//!   atomically (temp file + rename), after a backup; a config with a `lock:` entry is refused;
//! - `pct exec --keep-env 0` is passed only from PVE 8.2 on (older `pct` lacks the option);
//!   phoenix's children get a minimal environment anyway.
//!
//! `--host emulated` is this same backend with the emulated host's paths
//! ([`super::emulated::prepare`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{
    CgroupMode, CreateSpec, CtConfig, CtStatus, ExecRequest, Gpu, Host, HostError, Result,
};
use crate::config::IpConfig;
use crate::exec::{CommandOutput, ExecError, HostCommand, Runner};
use crate::settings::{HostKind, Settings};
use crate::types::{AbsPath, DatasetName, PropKey, PropValue, StorageId, Vmid};

/// First PVE release whose `pct exec` knows `--keep-env` (pve-container 5.0.9, shipped
/// after PVE 8.1's 5.0.8).
pub const KEEP_ENV_SINCE: (u32, u32) = (8, 2);
/// First PVE release with `devN` passthrough entries.
pub const DEV_ENTRIES_SINCE: (u32, u32) = (8, 1);

/// How long `pct create` may take (template unpacking on slow storage).
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long pushing a host file may take (a driver installer is ≈ 400 MB).
const PUSH_FILE_TIMEOUT: Duration = Duration::from_secs(900);

/// The `nvidia-smi` query phoenix uses (DESIGN.md §2).
pub const GPU_QUERY: &str = "--query-gpu=index,pci.bus_id,uuid,name,memory.total,driver_version";

/// Where the PVE backend finds its tools and files.
#[derive(Debug, Clone)]
pub struct PvePaths {
    /// `pct`.
    pub pct: PathBuf,
    /// `pvesm`.
    pub pvesm: PathBuf,
    /// `pveversion`.
    pub pveversion: PathBuf,
    /// `zfs`.
    pub zfs: PathBuf,
    /// `nvidia-smi`.
    pub nvidia_smi: PathBuf,
    /// `systemctl` (the host's systemd).
    pub systemctl: PathBuf,
    /// `nvidia-modprobe` (named in the boot-time unit phoenix installs).
    pub nvidia_modprobe: PathBuf,
    /// `stat` (the owner of a dataset's directory).
    pub stat: PathBuf,
    /// `chown` (a dataset an unprivileged container writes).
    pub chown: PathBuf,
    /// The host's systemd unit directory (`/etc/systemd/system`).
    pub systemd_dir: PathBuf,
    /// sysfs (`/sys`), where the cgroup mode and the network bridges are read.
    pub sys_dir: PathBuf,
    /// procfs (`/proc`), where the host's memory and CPUs are read.
    pub proc_dir: PathBuf,
    /// Where the host's own files are (`/`; the emulated host's `hostfs/`): an absolute
    /// template path is looked up below it.
    pub host_root: PathBuf,
    /// `/etc/pve/lxc`.
    pub lxc_dir: PathBuf,
    /// `/dev`.
    pub dev_dir: PathBuf,
    /// PVE's config lock directory (`/run/lock/lxc`).
    pub lock_dir: PathBuf,
    /// Where phoenix keeps config backups (`$PHOENIX_STATE_DIR/backups`).
    pub backup_dir: PathBuf,
    /// Private directory (0700) for the 0600 files `pct push` sends
    /// (`$PHOENIX_STATE_DIR/tmp`), swept by [`super::sweep_push_files`].
    pub tmp_dir: PathBuf,
}

impl PvePaths {
    /// A real node's tool paths with container configs in `lxc_dir` and every other
    /// directory absent (`/nonexistent/…`): for unit tests whose runner answers the tools.
    #[cfg(test)]
    pub(crate) fn for_tests(lxc_dir: PathBuf) -> Self {
        let p = PathBuf::from;
        Self {
            pct: p("/usr/sbin/pct"),
            pvesm: p("/usr/sbin/pvesm"),
            pveversion: p("/usr/bin/pveversion"),
            zfs: p("/usr/sbin/zfs"),
            nvidia_smi: p("/usr/bin/nvidia-smi"),
            systemctl: p("/usr/bin/systemctl"),
            nvidia_modprobe: p("/usr/bin/nvidia-modprobe"),
            stat: p("/usr/bin/stat"),
            chown: p("/usr/bin/chown"),
            systemd_dir: p("/nonexistent/systemd"),
            sys_dir: p("/nonexistent/sys"),
            proc_dir: p("/nonexistent/proc"),
            host_root: p("/nonexistent/hostfs"),
            lxc_dir,
            dev_dir: p("/dev"),
            lock_dir: p("/nonexistent/lock"),
            backup_dir: p("/nonexistent/backups"),
            tmp_dir: p("/nonexistent/tmp"),
        }
    }

    /// The paths of a real PVE node, from settings.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            pct: s.tool("pct"),
            pvesm: s.tool("pvesm"),
            pveversion: s.tool("pveversion"),
            zfs: s.tool("zfs"),
            nvidia_smi: s.tool("nvidia-smi"),
            systemctl: s.tool("systemctl"),
            nvidia_modprobe: s.tool("nvidia-modprobe"),
            stat: s.tool("stat"),
            chown: s.tool("chown"),
            systemd_dir: s.systemd_dir.value.clone(),
            sys_dir: s.sys_dir.value.clone(),
            proc_dir: s.proc_dir.value.clone(),
            host_root: PathBuf::from("/"),
            lxc_dir: s.pve_lxc_dir.value.clone(),
            dev_dir: s.dev_dir.value.clone(),
            lock_dir: PathBuf::from("/run/lock/lxc"),
            backup_dir: s.state_dir.value.join("backups"),
            tmp_dir: s.state_dir.value.join("tmp"),
        }
    }
}

/// Host facts no run changes under itself: the PVE version and the GPUs. Asked once and
/// shared by every backend of one command ([`super::open_shared`]): `phoenix up` opens one
/// backend for its preflight and one per container, and each `pveversion` or `nvidia-smi`
/// on a real host is a process start (`pveversion` a Perl interpreter). Also what the
/// backends learned of things every container shares, each dropped by the change of any of
/// them that makes it stale: the host units found enabled or enabled (each GPU container
/// of an `up` needs the GPU nodes unit) and the datasets that are there (the models'
/// parents are every container's).
#[derive(Debug, Default)]
pub struct Facts {
    version: OnceLock<Option<(u32, u32, u32)>>,
    gpus: OnceLock<Vec<Gpu>>,
    units_on: Mutex<BTreeSet<String>>,
    datasets: Mutex<HashMap<String, DatasetProps>>,
    /// Datasets the backends of this command created (and have not destroyed).
    created: Mutex<BTreeSet<String>>,
    /// Each storage's volumes with their guests, as one `pvesm list STORAGE` showed them.
    volumes: Mutex<HashMap<String, Volumes>>,
    /// Containers whose volumes a backend of this command may have changed (a create or
    /// destroy began): the listing above no longer speaks for them.
    touched: Mutex<BTreeSet<Vmid>>,
    /// Held while a storage is listed for `volumes`.
    listing: Mutex<()>,
}

impl Facts {
    fn datasets(&self) -> std::sync::MutexGuard<'_, HashMap<String, DatasetProps>> {
        self.datasets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn volumes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Volumes>> {
        self.volumes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn touched(&self) -> std::sync::MutexGuard<'_, BTreeSet<Vmid>> {
        self.touched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn created(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Dataset `name` was just created with `props` set on it: what `zfs get` would show of
    /// it is known without asking when its parent's mountpoint is. A new dataset has the
    /// properties given to `zfs create -o` as its own (source `local`) and inherits the
    /// rest; its inherited `mountpoint` is the parent's with its own name appended, or the
    /// parent's `none`/`legacy` as it is (OpenZFS lib/libzfs/libzfs_dataset.c `zfs_prop_get`,
    /// case `ZFS_PROP_MOUNTPOINT`: "for inherited mountpoints, … take everything after our
    /// ancestor and append it to the inherited value", zfs-2.4.99-966-gbe7657e3f2).
    /// `mountpoint` itself is never among `props`: the boundary refuses it.
    fn just_created(&self, name: &DatasetName, props: &[(PropKey, PropValue)]) {
        self.created().insert(name.as_str().to_owned());
        let Some((parent, leaf)) = name.as_str().rsplit_once('/') else {
            return;
        };
        let mut datasets = self.datasets();
        let Some(parent_mp) = datasets
            .get(parent)
            .and_then(|d| d.values.get("mountpoint"))
            .cloned()
        else {
            return;
        };
        let mountpoint = if parent_mp.starts_with('/') {
            format!("{}/{leaf}", parent_mp.trim_end_matches('/'))
        } else {
            parent_mp
        };
        let mut known = DatasetProps::default();
        for (k, v) in props {
            known
                .values
                .insert(k.as_str().to_owned(), v.as_str().to_owned());
            known.local.insert(k.as_str().to_owned());
        }
        known.values.insert("mountpoint".to_owned(), mountpoint);
        datasets.insert(name.as_str().to_owned(), known);
    }

    /// Whether `name` is known to be absent: its parent was created by this command and
    /// it was not (nothing else makes datasets below a dataset phoenix just made).
    fn absent_below_created(&self, name: &DatasetName) -> bool {
        let created = self.created();
        name.as_str()
            .rsplit_once('/')
            .is_some_and(|(parent, _)| created.contains(parent))
            && !created.contains(name.as_str())
    }

    fn units_on(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.units_on
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A dataset as one `zfs get -o property,value,source all` shows it.
#[derive(Debug, Clone, Default)]
struct DatasetProps {
    /// Every property's value.
    values: BTreeMap<String, String>,
    /// The properties set on the dataset itself (source `local`).
    local: BTreeSet<String>,
}

/// What one backend learned by asking, or left by its own changes: container states and
/// addresses (datasets are shared: [`Facts`]). Each entry is dropped (or set) by the change
/// that makes it stale, so a backend never answers from what it knows to be out of date.
#[derive(Debug, Default)]
struct Known {
    status: HashMap<Vmid, CtStatus>,
    address: HashMap<(Vmid, String), Ipv4Addr>,
    /// Containers this backend created (and has not destroyed).
    created: std::collections::HashSet<Vmid>,
    /// Files this backend pushed into containers it created: `(vmid, path)`.
    pushed: std::collections::HashSet<(Vmid, String)>,
}

/// The PVE backend.
pub struct PveHost {
    paths: PvePaths,
    runner: Arc<dyn Runner>,
    kind: HostKind,
    facts: Arc<Facts>,
    known: Mutex<Known>,
    lifecycle_timeout: Duration,
}

impl std::fmt::Debug for PveHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveHost")
            .field("paths", &self.paths)
            .finish()
    }
}

impl PveHost {
    /// A backend with `paths`, running commands through `runner`.
    pub fn new(paths: PvePaths, runner: Arc<dyn Runner>) -> Self {
        Self {
            paths,
            runner,
            kind: HostKind::Pve,
            facts: Arc::default(),
            known: Mutex::default(),
            lifecycle_timeout: Duration::from_secs(180),
        }
    }

    /// Share `facts` with the other backends of this command.
    #[must_use]
    pub fn with_facts(mut self, facts: Arc<Facts>) -> Self {
        self.facts = facts;
        self
    }

    /// What this backend knows, to read or change (a poisoned lock only means another
    /// thread panicked while holding it: the maps stay usable).
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forget what a change to container `vmid` may have made stale; `status` is what the
    /// change left (`None`: unknown).
    fn changed_ct(&self, vmid: Vmid, status: Option<CtStatus>) {
        let mut k = self.known();
        match status {
            Some(s) => k.status.insert(vmid, s),
            None => k.status.remove(&vmid),
        };
        k.address.retain(|(v, _), _| *v != vmid);
    }

    /// Forget dataset `name` and those below it (after a create or destroy).
    fn changed_dataset(&self, name: &DatasetName) {
        let below = format!("{name}/");
        let stale = |n: &String| n == name.as_str() || n.starts_with(&below);
        self.facts.datasets().retain(|n, _| !stale(n));
        self.facts.created().retain(|n| !stale(n));
    }

    /// Dataset `name` as one `zfs get` shows it (`None`: absent), asked once (while it is
    /// there) by the backends of this command until a change of theirs makes it stale. `-o property,value,source`: the source tells what
    /// is set on the dataset itself (`local`) from what it inherits (`inherited from …`,
    /// OpenZFS cmd/zfs/zfs_main.c `get_callback`), so one call answers both
    /// [`Host::zfs_get`] and [`Host::zfs_local_props`].
    fn dataset(&self, name: &DatasetName) -> Result<Option<DatasetProps>> {
        if let Some(d) = self.facts.datasets().get(name.as_str()) {
            return Ok(Some(d.clone()));
        }
        if self.facts.absent_below_created(name) {
            return Ok(None);
        }
        let cmd = self
            .zfs()
            .args([
                "get",
                "-H",
                "-o",
                "property,value,source",
                "all",
                name.as_str(),
            ])
            .timeout(QUERY_TIMEOUT);
        let found = match self.runner.run(&cmd) {
            Ok(out) => Some(parse_zfs_get(&out.stdout_text())),
            Err(ExecError::Status { stderr, .. }) if stderr.contains("does not exist") => None,
            Err(ExecError::Interrupted { .. }) => return Err(HostError::Interrupted),
            Err(e) => return Err(e.into()),
        };
        // Only a dataset that is there is kept: one that is absent may be created by another
        // run of the same `up` at any moment (the runs take turns on each name,
        // `zfs.dataset`), and each must then find it.
        if let Some(d) = &found {
            self.facts
                .datasets()
                .insert(name.as_str().to_owned(), d.clone());
        }
        Ok(found)
    }

    /// Kill `pct start|stop|destroy` after `timeout` (settings: `lifecycle_timeout`).
    pub fn with_lifecycle_timeout(mut self, timeout: Duration) -> Self {
        self.lifecycle_timeout = timeout;
        self
    }

    /// The same backend, reporting itself as `kind` (the emulated host).
    pub fn with_kind(mut self, kind: HostKind) -> Self {
        self.kind = kind;
        self
    }

    fn pct(&self) -> HostCommand {
        HostCommand::new(&self.paths.pct)
    }

    fn zfs(&self) -> HostCommand {
        HostCommand::new(&self.paths.zfs)
    }

    fn run(&self, cmd: &HostCommand) -> Result<CommandOutput> {
        super::run_cmd(self.runner.as_ref(), cmd)
    }

    fn conf_path(&self, vmid: Vmid) -> PathBuf {
        self.paths.lxc_dir.join(format!("{vmid}.conf"))
    }

    /// `pct exec <vmid> [--keep-env 0] --` prefix.
    fn exec_prefix(&self, vmid: Vmid) -> Result<HostCommand> {
        let mut cmd = self.pct().arg("exec").arg(vmid.to_string());
        if self
            .pve_version()?
            .is_some_and(|(a, b, _)| (a, b) >= KEEP_ENV_SINCE)
        {
            cmd = cmd.args(["--keep-env", "0"]);
        }
        Ok(cmd.arg("--"))
    }

    /// The exact `pct create` argv for `spec` (also used by golden tests).
    pub fn create_command(&self, spec: &CreateSpec) -> Result<HostCommand> {
        let e = &spec.entry;
        let net0 =
            net0_value(e).map_err(|m| HostError::Device(format!("net0 for {}: {m}", spec.vmid)))?;
        let mut cmd = self
            .pct()
            .arg("create")
            .arg(spec.vmid.to_string())
            .arg(e.template.as_str())
            .args(["--hostname", e.name.as_str()])
            .args(["--memory", &e.memory_mb.to_string()])
            .args(["--swap", &e.swap_mb.to_string()])
            .args(["--cores", &e.cores.to_string()])
            .arg("--rootfs")
            .arg(format!("{}:{}", e.storage_pool, e.storage_size_gb))
            .arg("--net0")
            .arg(net0);
        if !e.network.dns.is_empty() {
            let dns: Vec<String> = e.network.dns.iter().map(ToString::to_string).collect();
            cmd = cmd.arg("--nameserver").arg(dns.join(" "));
        }
        if let Some(f) = e.features.to_pve() {
            cmd = cmd.arg("--features").arg(f);
        }
        let tag = run_tag(&spec.run_id).ok_or_else(|| {
            HostError::Device(format!("run id {:?} is not a valid PVE tag", spec.run_id))
        })?;
        Ok(cmd
            .args(["--unprivileged", if e.unprivileged { "1" } else { "0" }])
            .args(["--onboot", if e.onboot { "1" } else { "0" }])
            .arg("--tags")
            .arg(format!("{};{tag}", super::OWNER_TAG))
            .timeout(CREATE_TIMEOUT)
            .mutating())
    }

    /// Take PVE's config lock of `vmid` for the life of the returned guard.
    fn config_lock(&self, vmid: Vmid) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let dir = &self.paths.lock_dir;
        std::fs::create_dir_all(dir).map_err(|source| HostError::Io {
            action: "create lock directory",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(format!("pve-config-{vmid}.lock"));
        super::lock_file(&path)
    }

    fn read_conf(&self, vmid: Vmid) -> Result<String> {
        super::read_ct_file(&self.conf_path(vmid), vmid)
    }

    fn write_conf(&self, vmid: Vmid, text: &str) -> Result<()> {
        super::write_file(&self.conf_path(vmid), text.as_bytes(), 0o640)
    }

    /// The path of host unit `name` (a plain `*.service` file name).
    fn unit_path(&self, name: &str) -> Result<PathBuf> {
        let ok = name.ends_with(".service")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@._-".contains(c));
        if !ok {
            return Err(HostError::Device(format!(
                "{name:?} is not a systemd service name phoenix writes"
            )));
        }
        Ok(self.paths.systemd_dir.join(name))
    }
}

/// `phoenix-run-<id>` when the id is a valid PVE tag (`[a-z0-9_][a-z0-9_+.-]*`).
pub fn run_tag(run_id: &str) -> Option<String> {
    let ok = !run_id.is_empty()
        && run_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_+.-".contains(c));
    ok.then(|| format!("phoenix-run-{run_id}"))
}

/// Builds PVE composite values (`k=v,k=v`), refusing separators inside values.
#[derive(Debug, Default)]
pub struct Composite {
    parts: Vec<String>,
}

impl Composite {
    /// An empty value.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `key=value`; the value must not contain `,` `=` `;` newline or NUL.
    pub fn kv(mut self, key: &str, value: &str) -> std::result::Result<Self, String> {
        PropValue::new(value).map_err(|e| format!("{key}: {}", e.reason))?;
        self.parts.push(format!("{key}={value}"));
        Ok(self)
    }

    /// Add a bare first element (a volume or path); same rules as a value.
    pub fn bare(mut self, value: &str) -> std::result::Result<Self, String> {
        PropValue::new(value).map_err(|e| e.reason)?;
        self.parts.push(value.to_owned());
        Ok(self)
    }

    /// The finished value.
    pub fn build(self) -> String {
        self.parts.join(",")
    }
}

fn net0_value(e: &crate::config::LxcConfig) -> std::result::Result<String, String> {
    let n = &e.network;
    let mut c = Composite::new()
        .kv("name", n.name.as_str())?
        .kv("bridge", n.bridge.as_str())?
        .kv("ip", &n.ip.to_string())?;
    if let (IpConfig::Static(_), Some(gw)) = (&n.ip, n.gw) {
        c = c.kv("gw", &gw.to_string())?;
    }
    if let Some(mac) = &n.mac {
        c = c.kv("hwaddr", &mac.as_str().to_ascii_uppercase())?;
    }
    if let Some(tag) = n.vlan {
        c = c.kv("tag", &tag.to_string())?;
    }
    Ok(c.build())
}

/// Insert `lines` (as `key: value`) before the first `[section]`, skipping lines already
/// present. Returns the new text and whether anything changed.
pub fn insert_config_lines(text: &str, lines: &[(String, String)]) -> (String, bool) {
    let existing: Vec<String> = text
        .lines()
        .take_while(|l| !l.starts_with('['))
        .map(|l| l.trim_end().to_owned())
        .collect();
    let new: Vec<String> = lines
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .filter(|l| !existing.contains(l))
        .collect::<Vec<_>>();
    let mut dedup: Vec<String> = Vec::new();
    for l in new {
        if !dedup.contains(&l) {
            dedup.push(l);
        }
    }
    if dedup.is_empty() {
        return (text.to_owned(), false);
    }
    let split = text
        .find("\n[")
        .map(|i| i + 1)
        .or_else(|| text.starts_with('[').then_some(0));
    let (head, tail) = match split {
        Some(i) => text.split_at(i),
        None => (text, ""),
    };
    let mut out = head.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for l in &dedup {
        out.push_str(l);
        out.push('\n');
    }
    if !tail.is_empty() {
        out.push('\n');
        out.push_str(tail.trim_start_matches('\n'));
    }
    (out, true)
}

/// The GPUs `nvidia_smi` reports (the CSV query, then `-q` for each one's minor number),
/// each command run through `run`. Shared by every backend.
pub fn query_gpus(
    nvidia_smi: &Path,
    run: impl Fn(&HostCommand) -> Result<CommandOutput>,
) -> Result<Vec<Gpu>> {
    let cmd = HostCommand::new(nvidia_smi)
        .args([GPU_QUERY, "--format=csv,noheader,nounits"])
        .timeout(QUERY_TIMEOUT);
    let out = run(&cmd)?;
    let mut gpus = parse_gpu_csv(&out.stdout_text()).map_err(|message| HostError::Parse {
        command: cmd.to_string(),
        message,
    })?;
    let q = run(&HostCommand::new(nvidia_smi)
        .arg("-q")
        .timeout(QUERY_TIMEOUT))?;
    let minors = parse_minors(&q.stdout_text());
    let mig = parse_mig(&q.stdout_text());
    for g in &mut gpus {
        let bus = g.pci_bus_id.to_ascii_lowercase();
        g.minor = minors.get(&bus).copied();
        g.mig = mig.get(&bus).copied().unwrap_or(false);
    }
    Ok(gpus)
}

/// Whether MIG mode is enabled, by PCI bus id, from `nvidia-smi -q` text (the `MIG Mode`
/// block's `Current` line: `Enabled`, `Disabled`, or `N/A` on GPUs without MIG).
pub fn parse_mig(text: &str) -> BTreeMap<String, bool> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut in_mig = false;
    for line in text.lines() {
        if let Some(bus) = line.strip_prefix("GPU ") {
            current = Some(bus.trim().to_ascii_lowercase());
            in_mig = false;
            continue;
        }
        let trimmed = line.trim();
        if trimmed == "MIG Mode" {
            in_mig = true;
            continue;
        }
        if let (true, Some((k, v))) = (in_mig, trimmed.split_once(':')) {
            if k.trim() == "Current" {
                if let Some(bus) = &current {
                    out.insert(bus.clone(), v.trim() == "Enabled");
                }
                in_mig = false;
            }
        }
    }
    out
}

/// Parse `nvidia-smi --query-gpu=… --format=csv,noheader,nounits` output.
pub fn parse_gpu_csv(text: &str) -> std::result::Result<Vec<Gpu>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 6 {
            return Err(format!(
                "line {}: expected 6 fields, found {}",
                i + 1,
                f.len()
            ));
        }
        out.push(Gpu {
            index: f[0]
                .parse()
                .map_err(|_| format!("line {}: bad index {:?}", i + 1, f[0]))?,
            pci_bus_id: f[1].to_owned(),
            uuid: f[2].to_owned(),
            name: f[3].to_owned(),
            memory_mib: f[4]
                .parse()
                .map_err(|_| format!("line {}: bad memory {:?}", i + 1, f[4]))?,
            driver_version: f[5].to_owned(),
            minor: None,
            mig: false,
        });
    }
    Ok(out)
}

/// Minor numbers by PCI bus id from `nvidia-smi -q` text (`GPU 00000000:00:06.0` headers,
/// `Minor Number : 0` lines).
pub fn parse_minors(text: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(bus) = line.strip_prefix("GPU ") {
            current = Some(bus.trim().to_ascii_lowercase());
        } else if let Some((k, v)) = line.split_once(':') {
            if k.trim() == "Minor Number" {
                if let (Some(bus), Ok(m)) = (&current, v.trim().parse()) {
                    out.insert(bus.clone(), m);
                }
            }
        }
    }
    out
}

/// The volume ids of `pvesm list` output (pve-storage `src/PVE/CLI/pvesm.pm`
/// `print_content`: a `Volid Format Type Size VMID` header, then one volume a line).
pub fn parse_volume_list(text: &str) -> std::result::Result<Vec<String>, String> {
    Ok(parse_volume_owners(text)?
        .into_iter()
        .map(|(volid, _)| volid)
        .collect())
}

/// A storage's volumes, each with the guest it belongs to ([`parse_volume_owners`]).
type Volumes = Vec<(String, Option<u32>)>;

/// The volume ids of `vmid`'s volumes in a listing of [`parse_volume_owners`].
fn volumes_of(all: &[(String, Option<u32>)], vmid: Vmid) -> Vec<String> {
    all.iter()
        .filter(|(_, owner)| *owner == Some(vmid.get()))
        .map(|(volid, _)| volid.clone())
        .collect()
}

/// Each volume of `pvesm list` output with the guest it belongs to: `print_content`
/// (pve-storage `src/PVE/CLI/pvesm.pm`, 0c56bad) prints the VMID column only for a volume
/// that has one (`next if !$info->{vmid}` in its first loop; templates and ISOs follow
/// without it).
fn parse_volume_owners(text: &str) -> std::result::Result<Volumes, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h.split_whitespace().next() == Some("Volid") => {}
        None => return Ok(Vec::new()),
        Some(h) => return Err(format!("expected the `Volid …` header, got {h:?}")),
    }
    let mut out = Vec::new();
    for l in lines.filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = l.split_whitespace().collect();
        let volid = fields.first().copied().unwrap_or_default();
        if !volid.contains(':') {
            return Err(format!("expected `STORAGE:VOLUME`, got {volid:?}"));
        }
        let vmid = if fields.len() >= 5 {
            let v = fields[fields.len() - 1];
            Some(
                v.parse()
                    .map_err(|_| format!("expected a VMID after {volid:?}, got {v:?}"))?,
            )
        } else {
            None
        };
        out.push((volid.to_owned(), vmid));
    }
    Ok(out)
}

/// Parse `pveversion` output (`pve-manager/8.4.1/…`).
pub fn parse_pveversion(text: &str) -> Option<(u32, u32, u32)> {
    let v = text
        .trim()
        .strip_prefix("pve-manager/")?
        .split('/')
        .next()?;
    let mut it = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    Some((it.next()??, it.next()??, it.next().flatten().unwrap_or(0)))
}

/// `zfs get -H -o property,value,source` lines: every value, and which are `local`. A
/// value may hold a tab (a user property's), so the property is what comes before the
/// first tab and the source what comes after the last.
fn parse_zfs_get(text: &str) -> DatasetProps {
    let mut d = DatasetProps::default();
    for line in text.lines() {
        let Some((prop, rest)) = line.split_once('\t') else {
            continue;
        };
        let (value, source) = rest.rsplit_once('\t').unwrap_or((rest, ""));
        if source == "local" {
            d.local.insert(prop.to_owned());
        }
        d.values.insert(prop.to_owned(), value.to_owned());
    }
    d
}

/// Parse `ip -j -4 addr show dev IFACE` output: the first IPv4 address.
pub fn parse_ip_json(text: &str) -> Option<Ipv4Addr> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    v.as_array()?.iter().find_map(|iface| {
        iface.get("addr_info")?.as_array()?.iter().find_map(|a| {
            (a.get("family")?.as_str()? == "inet")
                .then(|| a.get("local")?.as_str()?.parse().ok())
                .flatten()
        })
    })
}

impl Host for PveHost {
    fn kind(&self) -> HostKind {
        self.kind
    }

    fn ct_config(&self, vmid: Vmid) -> Result<Option<CtConfig>> {
        match self.read_conf(vmid) {
            Ok(t) => Ok(Some(CtConfig::parse(&t))),
            Err(HostError::NoSuchContainer(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn ct_create(&self, spec: &CreateSpec) -> Result<()> {
        self.facts.touched().insert(spec.vmid);
        let r = self.run(&self.create_command(spec)?).map(drop);
        // `pct create` leaves the container stopped (it has no `--start` here).
        self.changed_ct(spec.vmid, r.is_ok().then_some(CtStatus::Stopped));
        if r.is_ok() {
            self.known().created.insert(spec.vmid);
        }
        r
    }

    fn ct_destroy(&self, vmid: Vmid) -> Result<()> {
        self.facts.touched().insert(vmid);
        if self.ct_status(vmid)? == CtStatus::Running {
            self.ct_stop(vmid)?;
        }
        let r = self
            .run(
                &self
                    .pct()
                    .args(["destroy", &vmid.to_string(), "--purge", "1"])
                    .timeout(self.lifecycle_timeout)
                    .mutating(),
            )
            .map(drop);
        self.changed_ct(vmid, None);
        let mut k = self.known();
        k.created.remove(&vmid);
        k.pushed.retain(|(v, _)| *v != vmid);
        drop(k);
        r
    }

    fn ct_unlock(&self, vmid: Vmid) -> Result<()> {
        self.run(
            &self
                .pct()
                .args(["unlock", &vmid.to_string()])
                .timeout(QUERY_TIMEOUT)
                .mutating(),
        )
        .map(drop)
    }

    fn storage_volumes(&self, storage: &StorageId, vmid: Vmid) -> Result<Vec<String>> {
        // One listing of the whole storage answers every container of the command whose
        // volumes no backend of it has changed since (each container's create asks this
        // first: on a real host each `pvesm` call starts a Perl interpreter).
        let fresh = !self.facts.touched().contains(&vmid);
        // Backends asking at once take turns, so the first one's listing serves the rest.
        let _turn = fresh.then(|| {
            self.facts
                .listing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        });
        if fresh {
            if let Some(all) = self.facts.volumes().get(storage.as_str()) {
                return Ok(volumes_of(all, vmid));
            }
        }
        let mut cmd = HostCommand::new(&self.paths.pvesm).args(["list", storage.as_str()]);
        if !fresh {
            cmd = cmd.args(["--vmid", &vmid.to_string()]);
        }
        let cmd = cmd.timeout(QUERY_TIMEOUT);
        let out = self.run(&cmd)?;
        let all = parse_volume_owners(&out.stdout_text()).map_err(|message| HostError::Parse {
            command: cmd.to_string(),
            message,
        })?;
        let mine = volumes_of(&all, vmid);
        if fresh {
            self.facts
                .volumes()
                .insert(storage.as_str().to_owned(), all);
        }
        Ok(mine)
    }

    fn free_volume(&self, volid: &str) -> Result<()> {
        if let Some((storage, _)) = volid.split_once(':') {
            self.facts.volumes().remove(storage);
        }
        self.run(
            &HostCommand::new(&self.paths.pvesm)
                .args(["free", volid])
                .timeout(self.lifecycle_timeout)
                .mutating(),
        )
        .map(drop)
    }

    fn ct_start(&self, vmid: Vmid) -> Result<()> {
        let r = self.run(
            &self
                .pct()
                .args(["start", &vmid.to_string()])
                .timeout(self.lifecycle_timeout)
                .mutating(),
        );
        // `pct start` returns once the container runs: pve-container `vm_start`
        // (`src/PVE/LXC.pm`, 94f5585) waits on LXC's monitor socket for the RUNNING state
        // and dies on ABORTING/STOPPING/STOPPED. Only when the socket fails does it go on
        // unconfirmed ("problem with monitor socket, but continuing anyway"); then, as after
        // a failed start, the state is unknown and is asked. Its address may be new.
        let confirmed = r
            .as_ref()
            .is_ok_and(|o| !o.stderr_text().contains("problem with monitor socket"));
        self.changed_ct(vmid, confirmed.then_some(CtStatus::Running));
        r.map(drop)
    }

    fn ct_stop(&self, vmid: Vmid) -> Result<()> {
        let r = self
            .run(
                &self
                    .pct()
                    .args(["stop", &vmid.to_string()])
                    .timeout(self.lifecycle_timeout)
                    .mutating(),
            )
            .map(drop);
        self.changed_ct(vmid, r.is_ok().then_some(CtStatus::Stopped));
        r
    }

    fn ct_created_here(&self, vmid: Vmid) -> bool {
        self.known().created.contains(&vmid)
    }

    fn ct_pushed_here(&self, vmid: Vmid, path: &AbsPath) -> bool {
        self.known()
            .pushed
            .contains(&(vmid, path.as_str().to_owned()))
    }

    fn ct_status(&self, vmid: Vmid) -> Result<CtStatus> {
        if !self.conf_path(vmid).exists() {
            return Ok(CtStatus::Absent);
        }
        let cmd = self
            .pct()
            .args(["status", &vmid.to_string()])
            .timeout(QUERY_TIMEOUT);
        let out = self.run(&cmd)?;
        let text = out.stdout_text();
        let status = match text.trim().strip_prefix("status:").map(str::trim) {
            Some("running") => CtStatus::Running,
            Some("stopped") => CtStatus::Stopped,
            _ => {
                return Err(HostError::Parse {
                    command: cmd.to_string(),
                    message: format!("expected `status: running|stopped`, got {:?}", text.trim()),
                });
            }
        };
        self.known().status.insert(vmid, status);
        Ok(status)
    }

    fn ct_status_known(&self, vmid: Vmid) -> Result<CtStatus> {
        if !self.conf_path(vmid).exists() {
            return Ok(CtStatus::Absent);
        }
        let known = self.known().status.get(&vmid).copied();
        match known {
            Some(s) => Ok(s),
            None => self.ct_status(vmid),
        }
    }

    fn ct_exec(&self, vmid: Vmid, req: &ExecRequest) -> Result<CommandOutput> {
        // `pct exec` is `lxc-attach` (pct.pm `exec`).
        super::run_attach(self.runner.as_ref(), &req.apply_to(self.exec_prefix(vmid)?))
    }

    fn ct_push(&self, vmid: Vmid, content: &[u8], dest: &AbsPath, mode: u32) -> Result<()> {
        // A 0600 file in phoenix's own 0700 directory, removed as soon as `pct push`
        // returns (drop); one left by a killed phoenix is swept by the next run or destroy.
        let dir = super::private_dir(&self.paths.tmp_dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!("phoenix-push-{}-", std::process::id()))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(&dir)
            .map_err(|source| HostError::Io {
                action: "create temp file for push",
                path: dir.clone(),
                source,
            })?;
        // No fsync: `pct push` reads the file through the page cache right away, and it is
        // removed once it returns; nothing needs it to outlive a crash.
        tmp.write_all(content)
            .and_then(|()| tmp.flush())
            .map_err(|source| HostError::Io {
                action: "write temp file",
                path: tmp.path().to_owned(),
                source,
            })?;
        let cmd = self
            .pct()
            .arg("push")
            .arg(vmid.to_string())
            .arg(tmp.path())
            .arg(dest.as_str())
            .arg("--perms")
            .arg(format!("{mode:04o}"))
            .timeout(QUERY_TIMEOUT)
            .mutating();
        self.run(&cmd)?;
        let mut k = self.known();
        if k.created.contains(&vmid) {
            k.pushed.insert((vmid, dest.as_str().to_owned()));
        }
        Ok(())
    }

    fn ct_set(&self, vmid: Vmid, options: &[(String, String)]) -> Result<()> {
        let mut cmd = self.pct().arg("set").arg(vmid.to_string());
        for (k, v) in options {
            cmd = cmd.arg(format!("--{k}")).arg(v);
        }
        self.run(&cmd.timeout(QUERY_TIMEOUT).mutating()).map(drop)
    }

    fn ct_delete_keys(&self, vmid: Vmid, keys: &[String]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let cmd = self
            .pct()
            .arg("set")
            .arg(vmid.to_string())
            .arg("--delete")
            .arg(keys.join(","))
            .timeout(QUERY_TIMEOUT)
            .mutating();
        self.run(&cmd).map(drop)
    }

    fn ct_append_lines(&self, vmid: Vmid, lines: &[(String, String)], backup: &Path) -> Result<()> {
        for (k, v) in lines {
            if [k, v].iter().any(|s| s.contains(['\n', '\r', '\0'])) || k.contains(':') {
                return Err(HostError::Device(format!(
                    "refusing config line {k:?}: {v:?} (newline, NUL or `:` in a key)"
                )));
            }
        }
        let _lock = self.config_lock(vmid)?;
        let text = self.read_conf(vmid)?;
        let conf = CtConfig::parse(&text);
        if let Some(lock) = conf.get("lock") {
            return Err(HostError::ConfigLocked {
                vmid,
                lock: lock.to_owned(),
            });
        }
        let (new, changed) = insert_config_lines(&text, lines);
        if !changed {
            return Ok(());
        }
        super::backup_once(backup, &text)?;
        self.write_conf(vmid, &new)
    }

    fn ct_restore_config(&self, vmid: Vmid, backup: &Path) -> Result<()> {
        let _lock = self.config_lock(vmid)?;
        let saved = std::fs::read_to_string(backup).map_err(|source| HostError::Io {
            action: "read config backup",
            path: backup.to_owned(),
            source,
        })?;
        if !self.conf_path(vmid).exists() {
            // The container is gone: nothing to restore into.
            return Ok(());
        }
        self.write_conf(vmid, &saved)
    }

    fn ct_address(&self, vmid: Vmid, iface: &str) -> Result<Ipv4Addr> {
        // Asked once per start: the address a container got stays until it stops.
        let key = (vmid, iface.to_owned());
        if let Some(a) = self.known().address.get(&key) {
            return Ok(*a);
        }
        let req = ExecRequest {
            argv: ["ip", "-j", "-4", "addr", "show", "dev", iface]
                .map(str::to_owned)
                .to_vec(),
            timeout: Some(QUERY_TIMEOUT),
            read_only: true,
            ..ExecRequest::default()
        };
        let out = self.ct_exec(vmid, &req)?;
        let addr = parse_ip_json(&out.stdout_text()).ok_or_else(|| HostError::NoAddress {
            vmid,
            iface: iface.to_owned(),
        })?;
        self.known().address.insert(key, addr);
        Ok(addr)
    }

    fn zfs_get(&self, name: &DatasetName) -> Result<Option<BTreeMap<String, String>>> {
        Ok(self.dataset(name)?.map(|d| d.values))
    }

    fn zfs_local_props(&self, name: &DatasetName) -> Result<Option<BTreeMap<String, String>>> {
        // Only what is set on the dataset itself: a user property set on a parent shows as
        // `inherited from …`, so a dataset someone made below a phoenix dataset would look
        // phoenix's in the values alone.
        Ok(self.dataset(name)?.map(|d| {
            d.values
                .into_iter()
                .filter(|(k, _)| d.local.contains(k))
                .collect()
        }))
    }

    fn zfs_create(&self, name: &DatasetName, props: &[(PropKey, PropValue)]) -> Result<()> {
        let mut cmd = self.zfs().arg("create");
        for (k, v) in props {
            cmd = cmd.arg("-o").arg(format!("{k}={v}"));
        }
        let r = self
            .run(&cmd.arg(name.as_str()).timeout(QUERY_TIMEOUT).mutating())
            .map(drop);
        self.changed_dataset(name);
        if r.is_ok() {
            self.facts.just_created(name, props);
        }
        r
    }

    fn zfs_destroy(&self, name: &DatasetName) -> Result<()> {
        let r = self
            .run(
                &self
                    .zfs()
                    .args(["destroy", name.as_str()])
                    .timeout(QUERY_TIMEOUT)
                    .mutating(),
            )
            .map(drop);
        self.changed_dataset(name);
        r
    }

    fn zfs_mountpoint(&self, name: &DatasetName) -> Result<Option<String>> {
        Ok(self
            .zfs_get(name)?
            .and_then(|p| p.get("mountpoint").cloned())
            .filter(|m| m.starts_with('/')))
    }

    fn host_path_owner(&self, path: &AbsPath) -> Result<Option<(u32, u32)>> {
        let cmd = HostCommand::new(&self.paths.stat)
            .args(["-c", "%u:%g", path.as_str()])
            .timeout(QUERY_TIMEOUT);
        let out = match self.runner.run(&cmd) {
            Ok(out) => out,
            // GNU stat: `stat: cannot statx 'PATH': No such file or directory`.
            Err(ExecError::Status { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                return Ok(None);
            }
            Err(ExecError::Interrupted { .. }) => return Err(HostError::Interrupted),
            Err(e) => return Err(e.into()),
        };
        let text = out.stdout_text();
        text.trim()
            .split_once(':')
            .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
            .map(Some)
            .ok_or_else(|| HostError::Parse {
                command: cmd.to_string(),
                message: format!("expected `UID:GID`, got {:?}", text.trim()),
            })
    }

    fn host_chown(&self, path: &AbsPath, uid: u32, gid: u32) -> Result<()> {
        self.run(
            &HostCommand::new(&self.paths.chown)
                .arg(format!("{uid}:{gid}"))
                .arg(path.as_str())
                .timeout(QUERY_TIMEOUT)
                .mutating(),
        )
        .map(drop)
    }

    fn zfs_pools(&self) -> Result<Vec<String>> {
        // With no dataset operand `zfs list` starts at each pool's root dataset, and a
        // depth of 0 stops there (OpenZFS cmd/zfs/zfs_iter.c `zfs_for_each`): one line
        // per pool, without needing `zpool`.
        let out = self.run(
            &self
                .zfs()
                .args(["list", "-H", "-o", "name", "-d", "0"])
                .timeout(QUERY_TIMEOUT),
        )?;
        Ok(out
            .stdout_text()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn zfs_children(&self, name: &DatasetName) -> Result<Vec<DatasetName>> {
        // `-d 1` lists the dataset and the datasets one level below it (OpenZFS
        // cmd/zfs/zfs_main.c `zfs_do_list`); `-t filesystem,volume` leaves out snapshots
        // even on a pool with `listsnapshots=on`.
        let cmd = self
            .zfs()
            .args([
                "list",
                "-H",
                "-o",
                "name",
                "-t",
                "filesystem,volume",
                "-d",
                "1",
            ])
            .arg(name.as_str())
            .timeout(QUERY_TIMEOUT);
        let out = match self.runner.run(&cmd) {
            Ok(out) => out,
            Err(ExecError::Status { stderr, .. }) if stderr.contains("does not exist") => {
                return Ok(Vec::new());
            }
            Err(ExecError::Interrupted { .. }) => return Err(HostError::Interrupted),
            Err(e) => return Err(e.into()),
        };
        out.stdout_text()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != name.as_str())
            .map(|l| {
                DatasetName::new(l).map_err(|e| HostError::Parse {
                    command: cmd.to_string(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    fn gpus(&self) -> Result<Vec<Gpu>> {
        if let Some(g) = self.facts.gpus.get() {
            return Ok(g.clone());
        }
        let g = query_gpus(&self.paths.nvidia_smi, |cmd| self.run(cmd))?;
        Ok(self.facts.gpus.get_or_init(|| g).clone())
    }

    fn pve_version(&self) -> Result<Option<(u32, u32, u32)>> {
        if let Some(v) = self.facts.version.get() {
            return Ok(*v);
        }
        let cmd = HostCommand::new(&self.paths.pveversion).timeout(QUERY_TIMEOUT);
        let out = self.run(&cmd)?;
        let v = parse_pveversion(&out.stdout_text()).ok_or_else(|| HostError::Parse {
            command: cmd.to_string(),
            message: format!(
                "expected `pve-manager/X.Y.Z/…`, got {:?}",
                out.stdout_text().trim()
            ),
        })?;
        Ok(*self.facts.version.get_or_init(|| Some(v)))
    }

    fn dev_dir(&self) -> &Path {
        &self.paths.dev_dir
    }

    fn backup_dir(&self) -> PathBuf {
        self.paths.backup_dir.clone()
    }

    fn cgroup_mode(&self) -> Result<CgroupMode> {
        CgroupMode::detect(&self.paths.sys_dir)
    }

    fn ct_ids(&self) -> Result<Vec<Vmid>> {
        let dir = &self.paths.lxc_dir;
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(HostError::Io {
                    action: "list container configs in",
                    path: dir.clone(),
                    source,
                });
            }
        };
        let mut ids: Vec<Vmid> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let id = name.to_str()?.strip_suffix(".conf")?.parse::<u64>().ok()?;
                Vmid::new(id).ok()
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn tool_path(&self, name: &str) -> Option<PathBuf> {
        let p = &self.paths;
        Some(
            match name {
                "pct" => &p.pct,
                "pvesm" => &p.pvesm,
                "pveversion" => &p.pveversion,
                "zfs" => &p.zfs,
                "nvidia-smi" => &p.nvidia_smi,
                "systemctl" => &p.systemctl,
                "nvidia-modprobe" => &p.nvidia_modprobe,
                _ => return None,
            }
            .clone(),
        )
    }

    fn resources(&self) -> Result<super::facts::Resources> {
        super::facts::read_resources(&self.paths.proc_dir)
    }

    fn net_iface(&self, name: &str) -> Result<super::facts::NetIface> {
        super::facts::read_net_iface(&self.paths.sys_dir, name)
    }

    fn storages(&self, content: Option<&str>) -> Result<Vec<super::facts::StorageStatus>> {
        let mut cmd = HostCommand::new(&self.paths.pvesm).arg("status");
        if let Some(c) = content {
            cmd = cmd.args(["--content", c]);
        }
        let cmd = cmd.timeout(QUERY_TIMEOUT);
        let out = self.run(&cmd)?;
        super::facts::parse_pvesm_status(&out.stdout_text()).map_err(|message| HostError::Parse {
            command: cmd.to_string(),
            message,
        })
    }

    fn storage_content(&self, storage: &StorageId, content: &str) -> Result<Vec<String>> {
        let cmd = HostCommand::new(&self.paths.pvesm)
            .args(["list", storage.as_str(), "--content", content])
            .timeout(QUERY_TIMEOUT);
        let out = self.run(&cmd)?;
        parse_volume_list(&out.stdout_text()).map_err(|message| HostError::Parse {
            command: cmd.to_string(),
            message,
        })
    }

    fn host_file_exists(&self, path: &AbsPath) -> Result<bool> {
        let p = self
            .paths
            .host_root
            .join(path.as_str().trim_start_matches('/'));
        Ok(p.is_file())
    }

    fn other_guest(&self, vmid: Vmid) -> Result<Option<String>> {
        // `/etc/pve/lxc` is this node's `nodes/<node>/lxc`; its parent is `/etc/pve`.
        Ok(self
            .paths
            .lxc_dir
            .parent()
            .and_then(|pve| super::facts::other_guest(pve, vmid)))
    }

    fn ct_push_file(&self, vmid: Vmid, src: &Path, dest: &AbsPath, mode: u32) -> Result<()> {
        // Only a regular file is pushed (a FIFO or a device would block or never end).
        let meta = std::fs::metadata(src).map_err(|source| HostError::Io {
            action: "read the host file to push",
            path: src.to_owned(),
            source,
        })?;
        if !meta.is_file() {
            return Err(HostError::Device(format!(
                "{} is not a regular file; only regular files are pushed into containers",
                src.display()
            )));
        }
        let cmd = self
            .pct()
            .arg("push")
            .arg(vmid.to_string())
            .arg(src)
            .arg(dest.as_str())
            .arg("--perms")
            .arg(format!("{mode:04o}"))
            .timeout(PUSH_FILE_TIMEOUT)
            .mutating();
        self.run(&cmd).map(drop)
    }

    fn nvidia_modprobe(&self) -> Option<PathBuf> {
        Some(self.paths.nvidia_modprobe.clone())
    }

    fn unit_text(&self, name: &str) -> Result<Option<String>> {
        let path = self.unit_path(name)?;
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HostError::Io {
                action: "read host unit",
                path,
                source,
            }),
        }
    }

    fn unit_enabled(&self, name: &str) -> Result<bool> {
        self.unit_path(name)?;
        if self.facts.units_on().contains(name) {
            return Ok(true);
        }
        let cmd = HostCommand::new(&self.paths.systemctl)
            .args(["is-enabled", "--quiet", name])
            .ok_codes((0..=255).collect::<Vec<i32>>())
            .timeout(QUERY_TIMEOUT);
        let on = self.run(&cmd)?.code == 0;
        if on {
            self.facts.units_on().insert(name.to_owned());
        }
        Ok(on)
    }

    fn unit_write(&self, name: &str, text: &str) -> Result<()> {
        let path = self.unit_path(name)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HostError::Io {
                action: "create the unit directory",
                path: dir.to_owned(),
                source,
            })?;
        }
        super::write_file(&path, text.as_bytes(), 0o644)
    }

    fn unit_start(&self, name: &str, replaced: bool) -> Result<()> {
        self.unit_path(name)?;
        // `systemctl enable` "implicitly reloads the system manager configuration after
        // completing the operation" (systemctl(1)); `--now` also starts the unit. A unit
        // that was replaced is enabled (it may have been disabled) and restarted, so its
        // new commands run now.
        let systemctl = |args: &[&str]| {
            self.run(
                &HostCommand::new(&self.paths.systemctl)
                    .args(args)
                    .timeout(QUERY_TIMEOUT)
                    .mutating(),
            )
            .map(drop)
        };
        // Until it is known to be done, a unit being (re)started is not known enabled.
        self.facts.units_on().remove(name);
        if replaced {
            systemctl(&["enable", name])?;
            systemctl(&["restart", name])?;
        } else {
            systemctl(&["enable", "--now", name])?;
        }
        self.facts.units_on().insert(name.to_owned());
        Ok(())
    }

    fn unit_remove(&self, name: &str) -> Result<()> {
        let path = self.unit_path(name)?;
        self.facts.units_on().remove(name);
        if !path.exists() {
            return Ok(());
        }
        let systemctl = |args: &[&str]| {
            self.run(
                &HostCommand::new(&self.paths.systemctl)
                    .args(args)
                    .timeout(QUERY_TIMEOUT)
                    .mutating(),
            )
            .map(drop)
        };
        systemctl(&["disable", "--now", name])?;
        std::fs::remove_file(&path).map_err(|source| HostError::Io {
            action: "remove host unit",
            path: path.clone(),
            source,
        })?;
        systemctl(&["daemon-reload"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_refuses_separators() {
        crate::test_support::refused(
            Composite::new().kv("name", "eth0,bridge=x"),
            "name: contains ','; allowed: no `,` `;` `=` newline or NUL",
        );
        crate::test_support::refused(
            Composite::new().kv("name", "eth0\nlxc.hook.x: /bin/x"),
            "name: contains the control or format character U+000A",
        );
        assert_eq!(
            Composite::new()
                .kv("a", "1")
                .unwrap()
                .kv("b", "2")
                .unwrap()
                .build(),
            "a=1,b=2"
        );
    }

    #[test]
    fn insert_lines_goes_before_snapshot_and_is_idempotent() {
        let text = "arch: amd64\nhostname: x\n\n[snap1]\narch: amd64\n";
        let lines = vec![(
            "lxc.cgroup2.devices.allow".to_owned(),
            "c 195:* rwm".to_owned(),
        )];
        let (new, changed) = insert_config_lines(text, &lines);
        assert!(changed);
        assert_eq!(
            new,
            "arch: amd64\nhostname: x\n\nlxc.cgroup2.devices.allow: c 195:* rwm\n\n[snap1]\narch: amd64\n"
        );
        let (again, changed) = insert_config_lines(&new, &lines);
        assert!(!changed);
        assert_eq!(again, new);
    }

    /// A backend on a scratch `/etc/pve/lxc` with container 901, whose runner answers as a
    /// PVE host would and records every call.
    fn scripted() -> (
        tempfile::TempDir,
        PveHost,
        Arc<crate::exec::RecordingRunner>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let lxc = dir.path().join("lxc");
        std::fs::create_dir_all(&lxc).unwrap();
        std::fs::write(lxc.join("901.conf"), "hostname: a\ntags: phoenix\n").unwrap();
        std::fs::write(lxc.join("903.conf"), "hostname: c\ntags: phoenix\n").unwrap();
        let runner = Arc::new(crate::exec::RecordingRunner::new(|cmd| {
            let argv = cmd.argv();
            let has = |w: &str| argv.iter().any(|a| a == w);
            let (code, out, err) = if argv[0].ends_with("pveversion") {
                (
                    0,
                    "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-4-pve)\n",
                    "",
                )
            } else if has("start") && has("903") {
                // vm_start's warning when LXC's monitor socket fails (pve-container
                // `src/PVE/LXC.pm` `monitor_start`).
                (
                    0,
                    "",
                    "problem with monitor socket, but continuing anyway: monitor socket: got EOF\n",
                )
            } else if argv[0].ends_with("pveversion") {
                (
                    0,
                    "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-4-pve)\n",
                    "",
                )
            } else if has("status") {
                (0, "status: stopped\n", "")
            } else if has("ip") {
                (
                    0,
                    r#"[{"addr_info":[{"family":"inet","local":"127.77.0.9","prefixlen":8}]}]"#,
                    "",
                )
            } else if argv[0].ends_with("pvesm") && has("list") {
                // pve-storage `print_content`: disks with their VMID, then the rest.
                (
                    0,
                    "Volid                       Format  Type           Size VMID\n\
                     local-zfs:subvol-901-disk-0 subvol  rootdir  8589934592 901\n\
                     local-zfs:subvol-902-disk-1 subvol  rootdir  8589934592 902\n\
                     local-zfs:vztmpl/t.tar.zst  tzst    vztmpl    135000000\n",
                    "",
                )
            } else if has("tank/a") {
                (
                    0,
                    "mountpoint\t/tank/a\tdefault\nphoenix:owner\tphoenix\tlocal\nphoenix:note\tx\ty\tinherited from tank\n",
                    "",
                )
            } else if has("get") {
                (1, "", "cannot open 'tank/b': dataset does not exist\n")
            } else {
                (0, "", "")
            };
            CommandOutput {
                code,
                stdout: out.as_bytes().to_vec(),
                stderr: err.as_bytes().to_vec(),
            }
        }));
        let paths = PvePaths::for_tests(lxc);
        let host = PveHost::new(paths, runner.clone());
        (dir, host, runner)
    }

    #[test]
    fn pct_exec_is_tried_again_while_lxc_attach_fails_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let runner = crate::test_support::attach_fails_first("exec", 2, "ct\n", |argv| {
            if argv[0].ends_with("pveversion") {
                "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-4-pve)\n"
            } else {
                ""
            }
        });
        let host = PveHost::new(PvePaths::for_tests(dir.path().join("lxc")), runner.clone());
        let req = ExecRequest {
            argv: vec!["hostname".into()],
            ..ExecRequest::default()
        };
        let out = host.ct_exec(Vmid::new(901).unwrap(), &req).unwrap();
        assert_eq!(out.stdout_text(), "ct\n");
        let execs: Vec<Vec<String>> = runner
            .calls()
            .iter()
            .map(HostCommand::argv)
            .filter(|a| a.iter().any(|w| w == "exec"))
            .collect();
        assert_eq!(execs.len(), 3, "{execs:?}");
        assert!(execs.iter().all(|a| a == &execs[0]), "{execs:?}");
        assert_eq!(
            &execs[0][1..],
            ["exec", "901", "--keep-env", "0", "--", "hostname"]
        );
    }

    /// Two backends of one command (as `phoenix up` opens them) on the scripted host,
    /// sharing one [`Facts`].
    fn two_backends() -> (
        tempfile::TempDir,
        PveHost,
        PveHost,
        Arc<crate::exec::RecordingRunner>,
    ) {
        let (dir, _, runner) = scripted();
        let facts = Arc::new(Facts::default());
        let backend = || {
            PveHost::new(PvePaths::for_tests(dir.path().join("lxc")), runner.clone())
                .with_facts(Arc::clone(&facts))
        };
        let (a, b) = (backend(), backend());
        (dir, a, b, runner)
    }

    /// What the backend ran: `pct status 901`, `zfs create tank/b`.
    fn ran(runner: &crate::exec::RecordingRunner) -> Vec<String> {
        runner
            .calls()
            .iter()
            .map(|c| {
                let argv = c.argv();
                let tool = argv[0].rsplit('/').next().unwrap_or_default().to_owned();
                std::iter::once(tool)
                    .chain(argv[1..].iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    #[test]
    fn a_status_the_backend_left_or_read_is_not_asked_again_until_it_changes() {
        let (_dir, host, runner) = scripted();
        let v = Vmid::new(901).unwrap();
        // Not seen yet: asked; then known.
        assert_eq!(host.ct_status_known(v).unwrap(), CtStatus::Stopped);
        assert_eq!(host.ct_status_known(v).unwrap(), CtStatus::Stopped);
        assert_eq!(ran(&runner), ["pct status 901"]);
        // Its own start leaves it running, without asking; a fresh read still asks.
        host.ct_start(v).unwrap();
        assert_eq!(host.ct_status_known(v).unwrap(), CtStatus::Running);
        assert_eq!(ran(&runner), ["pct status 901", "pct start 901"]);
        assert_eq!(host.ct_status(v).unwrap(), CtStatus::Stopped);
        assert_eq!(host.ct_status_known(v).unwrap(), CtStatus::Stopped);
        assert_eq!(
            ran(&runner),
            ["pct status 901", "pct start 901", "pct status 901"]
        );
        // A container with no config is absent, whatever was known.
        assert_eq!(
            host.ct_status_known(Vmid::new(902).unwrap()).unwrap(),
            CtStatus::Absent
        );
        // A start PVE could not confirm (its monitor socket failed) leaves the state to ask.
        let c = Vmid::new(903).unwrap();
        host.ct_start(c).unwrap();
        assert_eq!(host.ct_status_known(c).unwrap(), CtStatus::Stopped);
        assert_eq!(ran(&runner)[3..], ["pct start 903", "pct status 903"]);
    }

    /// `phoenix up` opens a backend per container on one [`Facts`]: a dataset one of them
    /// found, or a unit one found enabled, is not asked again by another, until a change by
    /// any of them drops it.
    #[test]
    fn backends_of_one_command_share_datasets_and_enabled_units() {
        let (_dir, a, b, runner) = two_backends();
        let ds = DatasetName::new("tank/a").unwrap();
        assert!(a.zfs_get(&ds).unwrap().is_some());
        assert!(b.zfs_get(&ds).unwrap().is_some());
        assert_eq!(
            ran(&runner),
            ["zfs get -H -o property,value,source all tank/a"]
        );
        b.zfs_destroy(&ds).unwrap();
        a.zfs_get(&ds).unwrap();
        assert_eq!(
            ran(&runner)[1..],
            [
                "zfs destroy tank/a",
                "zfs get -H -o property,value,source all tank/a"
            ]
        );
        let unit = "phoenix-nvidia-nodes.service";
        assert!(a.unit_enabled(unit).unwrap());
        assert!(b.unit_enabled(unit).unwrap());
        assert_eq!(
            ran(&runner)[3..],
            [format!("systemctl is-enabled --quiet {unit}")]
        );
        b.unit_remove(unit).unwrap();
        assert!(a.unit_enabled(unit).unwrap());
        assert_eq!(ran(&runner).len(), 5, "{:?}", ran(&runner));
    }

    #[test]
    fn an_address_is_asked_once_per_start() {
        let (_dir, host, runner) = scripted();
        let v = Vmid::new(901).unwrap();
        let want = Ipv4Addr::new(127, 77, 0, 9);
        assert_eq!(host.ct_address(v, "eth0").unwrap(), want);
        assert_eq!(host.ct_address(v, "eth0").unwrap(), want);
        assert_eq!(
            ran(&runner),
            [
                "pveversion",
                "pct exec 901 --keep-env 0 -- ip -j -4 addr show dev eth0"
            ]
        );
        host.ct_stop(v).unwrap();
        host.ct_start(v).unwrap();
        assert_eq!(host.ct_address(v, "eth0").unwrap(), want);
        assert_eq!(
            ran(&runner).iter().filter(|c| c.contains(" ip ")).count(),
            2,
            "{:?}",
            ran(&runner)
        );
    }

    #[test]
    fn one_zfs_get_answers_values_and_local_properties_until_a_change() {
        let (_dir, host, runner) = scripted();
        let a = DatasetName::new("tank/a").unwrap();
        let values = host.zfs_get(&a).unwrap().unwrap();
        // A user property's value may hold a tab: the source is after the last one.
        assert_eq!(values["phoenix:note"], "x\ty");
        assert_eq!(values["mountpoint"], "/tank/a");
        let local = host.zfs_local_props(&a).unwrap().unwrap();
        assert_eq!(local.keys().collect::<Vec<_>>(), ["phoenix:owner"]);
        assert_eq!(host.zfs_mountpoint(&a).unwrap().as_deref(), Some("/tank/a"));
        assert_eq!(
            ran(&runner),
            ["zfs get -H -o property,value,source all tank/a"]
        );
        // Absence is asked again every time: another run may create it meanwhile.
        let b = DatasetName::new("tank/b").unwrap();
        assert!(host.zfs_get(&b).unwrap().is_none());
        assert!(host.zfs_local_props(&b).unwrap().is_none());
        assert_eq!(
            ran(&runner),
            [
                "zfs get -H -o property,value,source all tank/a",
                "zfs get -H -o property,value,source all tank/b",
                "zfs get -H -o property,value,source all tank/b",
            ]
        );
        // Destroying a dataset forgets it and what is below it.
        host.zfs_destroy(&DatasetName::new("tank").unwrap())
            .unwrap();
        host.zfs_get(&a).unwrap();
        assert_eq!(
            ran(&runner)[3..],
            [
                "zfs destroy tank",
                "zfs get -H -o property,value,source all tank/a"
            ]
        );
    }

    /// A dataset a backend of this command created is known to the others without a
    /// `zfs get`: the properties it was created with are its own, its mountpoint is its
    /// parent's plus its name; nothing is below it unless this command made it. A destroy
    /// forgets all of it.
    #[test]
    fn a_dataset_created_here_is_known_without_asking() {
        let (_dir, a, b, runner) = two_backends();
        let parent = DatasetName::new("tank/a").unwrap();
        a.zfs_get(&parent).unwrap();
        let m = DatasetName::new("tank/a/m").unwrap();
        let props = [
            (
                PropKey::new("compression").unwrap(),
                PropValue::new("lz4").unwrap(),
            ),
            (
                PropKey::new("phoenix:owner").unwrap(),
                PropValue::new("phoenix").unwrap(),
            ),
        ];
        a.zfs_create(&m, &props).unwrap();
        assert_eq!(b.zfs_mountpoint(&m).unwrap().as_deref(), Some("/tank/a/m"));
        let local = b.zfs_local_props(&m).unwrap().unwrap();
        assert_eq!(
            local.into_iter().collect::<Vec<_>>(),
            [
                ("compression".to_owned(), "lz4".to_owned()),
                ("phoenix:owner".to_owned(), "phoenix".to_owned())
            ]
        );
        let below = DatasetName::new("tank/a/m/x").unwrap();
        assert!(b.zfs_get(&below).unwrap().is_none());
        assert_eq!(
            ran(&runner),
            [
                "zfs get -H -o property,value,source all tank/a",
                "zfs create -o compression=lz4 -o phoenix:owner=phoenix tank/a/m",
            ]
        );
        // Below a dataset created here, one this command created is not "absent".
        b.zfs_create(&below, &props).unwrap();
        assert_eq!(
            a.zfs_mountpoint(&below).unwrap().as_deref(),
            Some("/tank/a/m/x")
        );
        assert_eq!(ran(&runner).len(), 3);
        // A parent whose mountpoint is not known: the new dataset is asked about.
        let c = DatasetName::new("tank/c").unwrap();
        a.zfs_create(&c, &props).unwrap();
        b.zfs_get(&c).unwrap();
        assert_eq!(
            ran(&runner)[3..],
            [
                "zfs create -o compression=lz4 -o phoenix:owner=phoenix tank/c",
                "zfs get -H -o property,value,source all tank/c",
            ]
        );
        // Destroyed: neither known nor known absent below.
        b.zfs_destroy(&m).unwrap();
        a.zfs_get(&m).unwrap();
        a.zfs_get(&below).unwrap();
        assert_eq!(
            ran(&runner)[5..],
            [
                "zfs destroy tank/a/m",
                "zfs get -H -o property,value,source all tank/a/m",
                "zfs get -H -o property,value,source all tank/a/m/x",
            ]
        );
    }

    /// One `pvesm list STORAGE` answers each container's "volumes before the create" for
    /// every backend of the command, until a backend creates or destroys that container.
    #[test]
    fn one_storage_listing_answers_each_container_until_it_changes() {
        let (_dir, a, b, runner) = two_backends();
        let st = StorageId::new("local-zfs").unwrap();
        let v = |n| Vmid::new(n).unwrap();
        assert_eq!(
            a.storage_volumes(&st, v(901)).unwrap(),
            ["local-zfs:subvol-901-disk-0"]
        );
        assert_eq!(
            b.storage_volumes(&st, v(902)).unwrap(),
            ["local-zfs:subvol-902-disk-1"]
        );
        assert!(b.storage_volumes(&st, v(905)).unwrap().is_empty());
        assert_eq!(ran(&runner), ["pvesm list local-zfs"]);
        // A destroy of 902 (begun by either backend): its volumes are asked again.
        a.ct_destroy(v(902)).unwrap();
        let n = ran(&runner).len();
        b.storage_volumes(&st, v(902)).unwrap();
        b.storage_volumes(&st, v(901)).unwrap();
        assert_eq!(ran(&runner)[n..], ["pvesm list local-zfs --vmid 902"]);
        // Freeing a volume drops the listing of its storage.
        a.free_volume("local-zfs:subvol-901-disk-0").unwrap();
        b.storage_volumes(&st, v(901)).unwrap();
        assert_eq!(
            ran(&runner)[n + 1..],
            [
                "pvesm free local-zfs:subvol-901-disk-0",
                "pvesm list local-zfs"
            ]
        );
    }

    #[test]
    fn parses_versions_ips_and_gpus() {
        assert_eq!(
            parse_pveversion("pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-4-pve)\n"),
            Some((8, 4, 1))
        );
        assert_eq!(parse_pveversion("nope"), None);
        let ip = r#"[{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"127.77.0.2","prefixlen":8}]}]"#;
        assert_eq!(parse_ip_json(ip), Some(Ipv4Addr::new(127, 77, 0, 2)));
        assert_eq!(parse_ip_json("[]"), None);
        let csv = "0, 00000000:00:06.0, GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n";
        let g = parse_gpu_csv(csv).unwrap();
        assert_eq!(g[0].index, 0);
        assert_eq!(g[0].memory_mib, 81559);
        assert_eq!(g[0].name, "NVIDIA H100 80GB HBM3");
        crate::test_support::refused(
            parse_gpu_csv("0, x\n"),
            "line 1: expected 6 fields, found 2",
        );
    }

    #[test]
    fn minors_from_the_real_fixture() {
        let q = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gpu/h100-driver580/nvidia-smi-q.txt"
        ));
        // The fixture is copied into the repo with the emulator; fall back to shared/.
        let q = q.or_else(|_| {
            std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/fixtures/gpu/h100-driver580/nvidia-smi-q.txt"
            ))
        });
        let m = parse_minors(&q.unwrap());
        assert_eq!(m.get("00000000:00:06.0"), Some(&0));
    }

    #[test]
    fn run_tags_are_pve_tags() {
        assert_eq!(run_tag("18c1-2f").as_deref(), Some("phoenix-run-18c1-2f"));
        assert_eq!(run_tag("A;b"), None);
        assert_eq!(run_tag(""), None);
    }
}

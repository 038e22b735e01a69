//! The `gpu` family: list the host's GPUs and pass them through to a container.
//!
//! `gpu.attach` resolves a selector (indices, UUIDs, PCI bus ids, or `all`) against
//! `nvidia-smi`, then collects every node a CUDA process needs: `nvidiaN` for each selected
//! GPU (N is the GPU's *minor number*, not its index), `nvidiactl`, `nvidia-uvm`,
//! `nvidia-uvm-tools`, `nvidia-modeset` when present, and — only when MIG is in use on a
//! selected GPU (`nvidia-smi -q`: `MIG Mode` / `Current : Enabled`) — everything in
//! `nvidia-caps/`. Majors and minors are read from the live device nodes under
//! `PHOENIX_DEV_DIR`, never hard-coded (on a real H100 `nvidia-uvm` is 238 and
//! `nvidia-caps` 241).
//!
//! - PVE ≥ 8.1 on a cgroup v2 host: one `devN: /dev/…` entry per node through `pct set`
//!   (undo: delete them).
//! - Older PVE, or a host booted with cgroup v1: one device allow rule per major plus one
//!   `lxc.mount.entry` per node, written under the config lock after a backup (undo: restore
//!   the backup). The rule's key follows the host's hierarchy: `lxc.cgroup.devices.allow`
//!   on v1, `lxc.cgroup2.devices.allow` on v2 (LXC ignores the other kind). A v1 host gets
//!   these lines even on PVE ≥ 8.1 because the allow rules PVE generates for `devN` entries
//!   are cgroup2 rules only (pve-container `src/PVE/LXC.pm` `update_lxc_config`, 6.1.10):
//!   on v1 the device would stay denied.
//!
//! **Surviving a reboot.** `nvidia-uvm`, `nvidia-uvm-tools` and `nvidia-caps/*` exist only
//! after `nvidia-modprobe` made them, and PVE refuses to start a container whose `devN` path
//! is missing (pve-container `src/PVE/LXC.pm` `vm_start` → `update_lxc_config` →
//! `PVE::LXC::Tools::get_device_mode_and_rdev`: "Device … does not exist"; again in
//! `src/lxc-pve-prestart-hook`). So before it reads the nodes, `gpu.attach` makes sure the
//! host has [`NODES_UNIT`], a oneshot unit ordered `Before=pve-guests.service` that runs
//! `nvidia-modprobe` for every GPU minor and `nvidiactl`, `-u -c=0` for the UVM nodes and,
//! with MIG, `-f …/capabilities/mig/{config,monitor}`; installing it runs it at once
//! (`systemctl enable --now`). The unit is a journaled step whose undo,
//! [`UndoStep::ReleaseNodesUnit`], removes it only when phoenix wrote it (its first line)
//! and no other container on the host still passes NVIDIA nodes: several GPU containers
//! share it, and each one that attaches GPUs records its claim. A unit of the same name that
//! phoenix did not write is left alone. Backends without host units (`lxc`) skip this.
//! Limitation: MIG GPU/compute instances (and their `nvidia-cap*` nodes) do not survive a
//! reboot; the host's MIG setup must recreate them before `pve-guests.service`.
//!
//! Config lines always name host paths (`/dev/nvidia0`), never `PHOENIX_DEV_DIR`. Attaching
//! the same GPUs again changes nothing.
//!
//! Device-node stand-in: where the emulated host cannot `mknod`, a node may be a regular
//! file holding `c MAJOR:MINOR`; it is read as that device.

use std::path::Path;

use rhai::{Array, Dynamic, Engine, FuncRegistration, Map};

use super::support::{step, to_dynamic, vmid_of};
use super::{ApiError, script_error};
use crate::host::{CgroupMode, CtConfig, DeviceNode, Gpu, Host, HostError};
use crate::journal::UndoStep;
use crate::runtime::Runtime;
use crate::types::{AbsPath, GpuRef, GpuSelector, Vmid};

crate::api::handle!(
    /// The `gpu` object recipes call methods on.
    GpuApi
);

type RhaiResult<T> = Result<T, Box<rhai::EvalAltResult>>;

/// Pick the GPUs `selector` names from `gpus`.
pub fn select(gpus: &[Gpu], selector: &GpuSelector) -> Result<Vec<Gpu>, ApiError> {
    const CALL: &str = "gpu.attach";
    match selector {
        GpuSelector::All => {
            if gpus.is_empty() {
                return Err(ApiError::spec(CALL, "the host has no NVIDIA GPU"));
            }
            Ok(gpus.to_vec())
        }
        GpuSelector::List(refs) => refs
            .iter()
            .map(|r| {
                gpus.iter()
                    .find(|g| match r {
                        GpuRef::Index(i) => g.index == *i,
                        GpuRef::Uuid(u) => g.uuid.eq_ignore_ascii_case(u),
                        GpuRef::Pci(p) => pci_eq(&g.pci_bus_id, p),
                    })
                    .cloned()
                    .ok_or_else(|| {
                        let have: Vec<String> = gpus
                            .iter()
                            .map(|g| format!("{} ({}, {})", g.index, g.uuid, g.pci_bus_id))
                            .collect();
                        ApiError::spec(
                            CALL,
                            format!(
                                "no GPU {r} on this host; it has: {}",
                                if have.is_empty() {
                                    "none".to_owned()
                                } else {
                                    have.join(", ")
                                }
                            ),
                        )
                    })
            })
            .collect(),
    }
}

/// PCI ids compare without the domain's width (`0000:00:06.0` = `00000000:00:06.0`).
fn pci_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        let s = s.to_ascii_lowercase();
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [dom, bus, devfn] => format!("{:0>8}:{bus}:{devfn}", dom.trim_start_matches('0')),
            [bus, devfn] => format!("00000000:{bus}:{devfn}"),
            _ => s.clone(),
        }
    };
    norm(a) == norm(b)
}

/// Read one node's major:minor from the live `/dev` (or the documented stand-in).
pub fn read_node(dev_dir: &Path, rel: &str) -> Result<Option<DeviceNode>, HostError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let path = dev_dir.join(rel);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(HostError::Io {
                action: "stat device node",
                path,
                source,
            });
        }
    };
    let host_path = format!("/dev/{rel}");
    if meta.file_type().is_char_device() {
        let rdev = meta.rdev();
        return Ok(Some(DeviceNode {
            path: host_path,
            major: nix::sys::stat::major(rdev) as u32,
            minor: nix::sys::stat::minor(rdev) as u32,
        }));
    }
    if meta.is_file() && meta.len() < 64 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some((ma, mi)) = text
            .trim()
            .strip_prefix("c ")
            .and_then(|r| r.split_once(':'))
        {
            if let (Ok(major), Ok(minor)) = (ma.parse(), mi.parse()) {
                return Ok(Some(DeviceNode {
                    path: host_path,
                    major,
                    minor,
                }));
            }
        }
    }
    Err(HostError::Device(format!(
        "{} is not a character device",
        path.display()
    )))
}

/// Every node the selected GPUs need, in a stable order; `nvidia-caps/*` only with `mig`.
pub fn nodes_for(dev_dir: &Path, gpus: &[Gpu], mig: bool) -> Result<Vec<DeviceNode>, HostError> {
    let mut nodes = Vec::new();
    for g in gpus {
        let minor = g.minor.ok_or_else(|| {
            HostError::Device(format!(
                "GPU {} ({}) has no minor number in `nvidia-smi -q`; cannot tell its /dev/nvidiaN node",
                g.index, g.pci_bus_id
            ))
        })?;
        let rel = format!("nvidia{minor}");
        nodes.push(read_node(dev_dir, &rel)?.ok_or_else(|| {
            HostError::Device(format!(
                "{} is missing for GPU {} (minor {minor}); is the NVIDIA driver loaded?",
                dev_dir.join(&rel).display(),
                g.index
            ))
        })?);
    }
    let ctl = read_node(dev_dir, "nvidiactl")?.ok_or_else(|| {
        HostError::Device(format!(
            "{} is missing; is the NVIDIA driver loaded?",
            dev_dir.join("nvidiactl").display()
        ))
    })?;
    nodes.push(ctl);
    for rel in ["nvidia-uvm", "nvidia-uvm-tools"] {
        nodes.push(read_node(dev_dir, rel)?.ok_or_else(|| {
            HostError::Device(format!(
                "{} is missing: CUDA needs it. Create it on the host with `nvidia-modprobe -u -c=0` (and make it persistent)",
                dev_dir.join(rel).display()
            ))
        })?);
    }
    if let Some(n) = read_node(dev_dir, "nvidia-modeset")? {
        nodes.push(n);
    }
    let caps = dev_dir.join("nvidia-caps");
    if mig && caps.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(&caps)
            .map_err(|source| HostError::Io {
                action: "list",
                path: caps.clone(),
                source,
            })?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            if let Some(n) = read_node(dev_dir, &format!("nvidia-caps/{name}"))? {
                nodes.push(n);
            }
        }
    }
    Ok(nodes)
}

/// The legacy config lines for `nodes`: one device allow rule per major (sorted) under the
/// key of the host's cgroup hierarchy, then one bind entry per node.
pub fn legacy_lines(nodes: &[DeviceNode], cgroup: CgroupMode) -> Vec<(String, String)> {
    let mut majors: Vec<u32> = nodes.iter().map(|n| n.major).collect();
    majors.sort_unstable();
    majors.dedup();
    let mut lines: Vec<(String, String)> = majors
        .iter()
        .map(|m| (cgroup.allow_key().to_owned(), format!("c {m}:* rwm")))
        .collect();
    for n in nodes {
        let target = n.path.trim_start_matches('/');
        lines.push((
            "lxc.mount.entry".to_owned(),
            format!("{} {target} none bind,optional,create=file", n.path),
        ));
    }
    lines
}

/// `gpu.list()`.
pub fn list(rt: &Runtime) -> Result<Vec<Gpu>, ApiError> {
    Ok(rt.host.gpus()?)
}

/// The host unit that creates the NVIDIA device nodes at boot.
pub const NODES_UNIT: &str = "phoenix-nvidia-nodes.service";

/// The first line of every unit phoenix writes to the host: its ownership mark.
const UNIT_OWNER_LINE: &str = "# phoenix:owner=phoenix";

/// The text of [`NODES_UNIT`]: `modprobe` is the host's `nvidia-modprobe`, `minors` the
/// minor numbers of every GPU of the host, `mig` whether MIG is in use on one of them.
pub fn nodes_unit_text(modprobe: &Path, minors: &[u32], mig: bool) -> Result<String, HostError> {
    // A word of `ExecStart=` is split on whitespace and expands `%` specifiers and `$`
    // variables (systemd.service(5), "Command lines"): only a plain absolute path is written.
    let prog = modprobe
        .to_str()
        .filter(|p| {
            p.starts_with('/')
                && p.chars()
                    .all(|c| c.is_ascii_graphic() && !"\"'\\%$;".contains(c))
        })
        .ok_or_else(|| {
            HostError::Device(format!(
                "the nvidia-modprobe path {} cannot be written into a systemd unit (spaces, quotes, `%`, `$`, `;` or `\\`)",
                modprobe.display()
            ))
        })?;
    let mut ms: Vec<u32> = minors.to_vec();
    ms.sort_unstable();
    ms.dedup();
    let mut gpu_line = prog.to_owned();
    for m in ms.iter().chain(std::iter::once(&255)) {
        gpu_line.push_str(&format!(" -c={m}"));
    }
    let mut text = format!(
        "{UNIT_OWNER_LINE}\n\
         # Written by phoenix: the NVIDIA device nodes GPU containers pass through, made before\n\
         # PVE starts its guests (a container whose devN node is missing does not start).\n\
         # `phoenix destroy` removes it once no container on this host passes NVIDIA nodes.\n\
         [Unit]\n\
         Description=NVIDIA device nodes for GPU containers (phoenix)\n\
         Before=pve-guests.service\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart={gpu_line}\n\
         ExecStart={prog} -u -c=0\n"
    );
    if mig {
        text.push_str(&format!(
            "ExecStart={prog} -f /proc/driver/nvidia/capabilities/mig/config -f /proc/driver/nvidia/capabilities/mig/monitor\n"
        ));
    }
    text.push_str("\n[Install]\nWantedBy=multi-user.target\n");
    Ok(text)
}

/// Whether a unit's text says phoenix wrote it.
pub fn is_phoenix_unit(text: &str) -> bool {
    text.lines().next() == Some(UNIT_OWNER_LINE)
}

/// Whether a container config passes an NVIDIA device node through (`devN`, or a bind
/// `lxc.mount.entry`).
pub fn passes_nvidia(conf: &CtConfig) -> bool {
    conf.entries.iter().any(|(k, v)| {
        let dev = k
            .strip_prefix("dev")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        let source = if dev {
            v.split(',').next()
        } else if k == "lxc.mount.entry" {
            v.split_whitespace().next()
        } else {
            None
        };
        source.is_some_and(|s| s.starts_with("/dev/nvidia"))
    })
}

/// Undo of the nodes unit for container `vmid` (see the module docs).
pub fn release_nodes_unit(
    host: &dyn Host,
    vmid: Vmid,
    unit: &str,
) -> Result<super::undo::Outcome, HostError> {
    use super::undo::Outcome;
    let Some(text) = host.unit_text(unit)? else {
        return Ok(Outcome::AlreadyGone);
    };
    if !is_phoenix_unit(&text) {
        return Ok(Outcome::NotOurs(format!(
            "host unit {unit} was not written by phoenix"
        )));
    }
    for id in host.ct_ids()? {
        if id == vmid {
            continue;
        }
        if host.ct_config(id)?.is_some_and(|c| passes_nvidia(&c)) {
            return Ok(Outcome::NotOurs(format!(
                "container {id} still passes NVIDIA device nodes and needs {unit} at boot"
            )));
        }
    }
    host.unit_remove(unit)?;
    Ok(Outcome::Undone)
}

/// Make sure the host has [`NODES_UNIT`] for container `vmid` (journaled; see the module
/// docs). `all` are the host's GPUs; `claim` says the container does not pass NVIDIA nodes
/// yet, so this attach records its claim even when the unit is already in place.
fn ensure_nodes_unit(rt: &Runtime, vmid: Vmid, all: &[Gpu], claim: bool) -> Result<(), ApiError> {
    let Some(modprobe) = rt.host.nvidia_modprobe() else {
        return Ok(());
    };
    let minors: Vec<u32> = all.iter().filter_map(|g| g.minor).collect();
    let want = nodes_unit_text(&modprobe, &minors, all.iter().any(|g| g.mig))?;
    // The unit is the host's, shared by every GPU container: the runs of one `phoenix up`
    // (and a rollback releasing it, [`crate::lifecycle`]) take turns, so one writes and
    // enables it and the others find it in place. A dry run changes nothing.
    let _turn = if rt.dry_run {
        None
    } else {
        Some(crate::journal::ResourceLock::acquire(
            &rt.settings.state_dir.value,
            "host-unit",
            NODES_UNIT,
        )?)
    };
    let have = rt.host.unit_text(NODES_UNIT)?;
    let name = format!("gpu.nodes_unit:{vmid}");
    let undo = UndoStep::ReleaseNodesUnit {
        vmid,
        unit: NODES_UNIT.to_owned(),
    };
    match have {
        Some(text) if !is_phoenix_unit(&text) => {
            tracing::warn!(
                unit = NODES_UNIT,
                "the host has a unit of this name that phoenix did not write: left alone"
            );
            Ok(())
        }
        // In place: make sure it is enabled too (a run killed between writing it and
        // `systemctl enable` left it disabled), and record this container's claim.
        Some(text) if text == want => {
            if !rt.host.unit_enabled(NODES_UNIT)? {
                step(rt, &name, undo, || start_unit(rt, &modprobe, false))?;
            } else if claim {
                step(rt, &name, undo, || Ok(()))?;
            }
            Ok(())
        }
        have => step(rt, &name, undo, || {
            // In a dry run the file is a plan line; the systemctl commands are recorded by
            // the dry run's runner like every other change.
            if rt.dry_run {
                rt.note(
                    crate::plan::Action::Create,
                    format!("write host unit {NODES_UNIT}"),
                );
            } else {
                rt.host.unit_write(NODES_UNIT, &want)?;
            }
            start_unit(rt, &modprobe, have.is_some())
        }),
    }
}

/// Start [`NODES_UNIT`]; when that fails because the host has no `nvidia-modprobe`, say so.
fn start_unit(rt: &Runtime, modprobe: &Path, replaced: bool) -> Result<(), ApiError> {
    rt.host.unit_start(NODES_UNIT, replaced).map_err(|e| {
        if rt.host.kind() == crate::settings::HostKind::Pve && !modprobe.exists() {
            HostError::Device(format!(
                "{e}; {} does not exist on this host: install nvidia-modprobe (NVIDIA's driver installer puts it there; Debian and Ubuntu package it as nvidia-modprobe) or point PHOENIX_BIN_DIR at it",
                modprobe.display()
            ))
            .into()
        } else {
            e.into()
        }
    })
}

/// `gpu.attach(ct, selector)`: returns the attached GPUs.
pub fn attach(rt: &Runtime, vmid: Vmid, selector: &GpuSelector) -> Result<Vec<Gpu>, ApiError> {
    const CALL: &str = "gpu.attach";
    // Selected for this run and phoenix's (empty in a dry run before creation).
    let conf = rt
        .boundary()
        .container(CALL, vmid, crate::boundary::Access::Change)?
        .unwrap_or_default();
    let all = rt.host.gpus()?;
    let gpus = select(&all, selector)?;
    let mig = gpus.iter().any(|g| g.mig);
    ensure_nodes_unit(rt, vmid, &all, !passes_nvidia(&conf))?;
    let nodes = match nodes_for(rt.host.dev_dir(), &gpus, mig) {
        Ok(n) => n,
        // A dry run did not run the unit that makes the lazy nodes.
        Err(e) if rt.dry_run => {
            rt.note(
                crate::plan::Action::Change,
                format!("gpu.attach:{vmid}: planned once the device nodes exist ({e})"),
            );
            return Ok(gpus);
        }
        Err(e) => return Err(e.into()),
    };
    let step_name = format!("gpu.attach:{vmid}");
    let cgroup = rt.host.cgroup_mode()?;
    let devn = cgroup == CgroupMode::V2
        && rt
            .host
            .pve_version()?
            .is_some_and(|(a, b, _)| (a, b) >= crate::host::pve::DEV_ENTRIES_SINCE);
    if devn {
        let present: Vec<&str> = conf
            .entries
            .iter()
            .filter(|(k, _)| k.starts_with("dev"))
            .filter_map(|(_, v)| v.split(',').next())
            .collect();
        let mut next = 0u32;
        let mut options = Vec::new();
        for n in nodes.iter().filter(|n| !present.contains(&n.path.as_str())) {
            while conf.get(&format!("dev{next}")).is_some() {
                next += 1;
            }
            let value = crate::host::pve::Composite::new()
                .bare(&n.path)
                .map_err(|m| ApiError::spec(CALL, m))?
                .build();
            options.push((format!("dev{next}"), value));
            next += 1;
        }
        if options.is_empty() {
            return Ok(gpus);
        }
        let keys = options.iter().map(|(k, _)| k.clone()).collect();
        step(
            rt,
            &step_name,
            UndoStep::DeleteConfigKeys { vmid, keys },
            || Ok(rt.host.ct_set(vmid, &options)?),
        )?;
    } else {
        let lines = legacy_lines(&nodes, cgroup);
        let (_, changed) = crate::host::pve::insert_config_lines(
            &conf
                .entries
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect::<String>(),
            &lines,
        );
        if !changed {
            return Ok(gpus);
        }
        let backup = rt
            .host
            .backup_dir()
            .join(format!("{vmid}.{}.conf", rt.run_id));
        step(
            rt,
            &step_name,
            UndoStep::RestoreConfig {
                vmid,
                backup: backup.clone(),
            },
            || {
                if rt.dry_run {
                    for (k, v) in &lines {
                        rt.note(
                            crate::plan::Action::Change,
                            format!("append to {vmid}.conf: {k}: {v}"),
                        );
                    }
                    return Ok(());
                }
                Ok(rt.host.ct_append_lines(vmid, &lines, &backup)?)
            },
        )?;
    }
    Ok(gpus)
}

/// The host-side NVIDIA sources the settings name (`PHOENIX_NVIDIA_INSTALLER`,
/// `PHOENIX_NVIDIA_DEBS`), checked: only regular files are pushed (a FIFO or a device would
/// block or never end), and the paths come from settings alone, never from a recipe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverSources {
    /// The `.run` installer.
    pub installer: Option<std::path::PathBuf>,
    /// The `.deb` files of the directory, by name.
    pub debs: Vec<std::path::PathBuf>,
}

/// The host driver version a userspace must match.
fn host_driver(rt: &Runtime, call: &'static str) -> Result<String, ApiError> {
    rt.host
        .gpus()?
        .first()
        .map(|g| g.driver_version.clone())
        .ok_or_else(|| ApiError::spec(call, "the host has no NVIDIA GPU (nvidia-smi lists none)"))
}

/// Read and check the sources in the settings.
pub fn driver_sources(rt: &Runtime) -> Result<DriverSources, ApiError> {
    const CALL: &str = "gpu.driver_sources";
    let mut out = DriverSources::default();
    if let Some(path) = &rt.settings.nvidia_installer.value {
        regular_file(CALL, "PHOENIX_NVIDIA_INSTALLER", path)?;
        installer_version(path).ok_or_else(|| {
            ApiError::spec(
                CALL,
                format!(
                    "PHOENIX_NVIDIA_INSTALLER must name NVIDIA's NVIDIA-Linux-<arch>-<version>.run installer, not {}",
                    path.display()
                ),
            )
        })?;
        out.installer = Some(path.clone());
    }
    if let Some(dir) = &rt.settings.nvidia_debs.value {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ApiError::spec(
                CALL,
                format!(
                    "PHOENIX_NVIDIA_DEBS {} cannot be listed: {e}",
                    dir.display()
                ),
            )
        })?;
        for e in entries {
            let e = e.map_err(|e| ApiError::spec(CALL, format!("{}: {e}", dir.display())))?;
            let path = e.path();
            if path.extension().is_some_and(|x| x == "deb") {
                regular_file(CALL, "PHOENIX_NVIDIA_DEBS", &path)?;
                out.debs.push(path);
            }
        }
        out.debs.sort();
        if out.debs.is_empty() {
            return Err(ApiError::spec(
                CALL,
                format!("PHOENIX_NVIDIA_DEBS {} holds no .deb file", dir.display()),
            ));
        }
    }
    Ok(out)
}

fn regular_file(call: &'static str, setting: &str, path: &Path) -> Result<(), ApiError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(ApiError::spec(
            call,
            format!("{setting}: {} is not a regular file", path.display()),
        )),
        Err(e) => Err(ApiError::spec(
            call,
            format!("{setting}: {} cannot be read: {e}", path.display()),
        )),
    }
}

/// The driver version in an installer's name (`NVIDIA-Linux-x86_64-580.159.04.run`).
pub fn installer_version(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("NVIDIA-Linux-")?.strip_suffix(".run")?;
    let (_arch, version) = rest.split_once('-')?;
    (!version.is_empty() && version.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .then(|| version.to_owned())
}

/// The driver version a driver-userspace `.deb` carries
/// (`nvidia-utils-580_580.159.04-0ubuntu1_amd64.deb` → `580.159.04`); `None` for other
/// packages (the toolkit's have their own versions).
pub fn deb_driver_version(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let mut f = name.split('_');
    let package = f.next()?;
    let version = f.next()?;
    let driver_package = ["nvidia-utils-", "libnvidia-compute-"]
        .iter()
        .any(|p| package.starts_with(p));
    driver_package.then(|| version.split('-').next().unwrap_or(version).to_owned())
}

/// Push the host file `src` into `dir` of container `vmid` as a journaled step; the path
/// inside the container.
fn push_host_file(
    rt: &Runtime,
    vmid: Vmid,
    src: &Path,
    dir: &AbsPath,
    mode: u32,
) -> Result<AbsPath, ApiError> {
    const CALL: &str = "gpu.push";
    let name = src
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ApiError::spec(CALL, format!("{} has no file name", src.display())))?;
    let dest = AbsPath::new(format!("{}/{name}", dir.as_str().trim_end_matches('/')))
        .map_err(|source| ApiError::Type { call: CALL, source })?;
    step(
        rt,
        &format!("gpu.push:{vmid}:{dest}"),
        UndoStep::RemoveFile {
            vmid,
            path: dest.clone(),
        },
        || Ok(rt.host.ct_push_file(vmid, src, &dest, mode)?),
    )?;
    Ok(dest)
}

/// `gpu.push_installer(ct, dir)`: push PHOENIX_NVIDIA_INSTALLER into `dir` (0755) after
/// checking that its version is the host driver's.
pub fn push_installer(rt: &Runtime, vmid: Vmid, dir: &AbsPath) -> Result<AbsPath, ApiError> {
    const CALL: &str = "gpu.push_installer";
    rt.boundary()
        .container(CALL, vmid, crate::boundary::Access::Change)?;
    let Some(src) = driver_sources(rt)?.installer else {
        return Err(ApiError::spec(
            CALL,
            "no installer on the host: set PHOENIX_NVIDIA_INSTALLER",
        ));
    };
    let want = host_driver(rt, CALL)?;
    let have = installer_version(&src).unwrap_or_default();
    if have != want {
        return Err(ApiError::spec(
            CALL,
            format!(
                "PHOENIX_NVIDIA_INSTALLER {} is driver {have} but the host runs {want}: the container's userspace must match the host exactly",
                src.display()
            ),
        ));
    }
    push_host_file(rt, vmid, &src, dir, 0o755)
}

/// `gpu.push_debs(ct, dir)`: push every `.deb` of PHOENIX_NVIDIA_DEBS into `dir` (0644)
/// after checking that driver-userspace packages carry the host driver's version.
pub fn push_debs(rt: &Runtime, vmid: Vmid, dir: &AbsPath) -> Result<Vec<AbsPath>, ApiError> {
    const CALL: &str = "gpu.push_debs";
    rt.boundary()
        .container(CALL, vmid, crate::boundary::Access::Change)?;
    let debs = driver_sources(rt)?.debs;
    if debs.is_empty() {
        return Err(ApiError::spec(
            CALL,
            "no .deb files on the host: set PHOENIX_NVIDIA_DEBS",
        ));
    }
    let want = host_driver(rt, CALL)?;
    for d in &debs {
        if let Some(v) = deb_driver_version(d).filter(|v| *v != want) {
            return Err(ApiError::spec(
                CALL,
                format!(
                    "{} is driver {v} but the host runs {want}: the container's userspace must match the host exactly",
                    d.display()
                ),
            ));
        }
    }
    debs.iter()
        .map(|d| push_host_file(rt, vmid, d, dir, 0o644))
        .collect()
}

/// A selector from a recipe value: a string (`"0,1"`, `"all"`, a UUID), an index, or an
/// array of those.
pub fn selector_of(call: &'static str, v: &Dynamic) -> Result<GpuSelector, ApiError> {
    let text = if let Some(arr) = v.read_lock::<rhai::Array>() {
        arr.iter()
            .map(|x| {
                if let Ok(i) = x.as_int() {
                    Ok(i.to_string())
                } else {
                    x.clone()
                        .into_immutable_string()
                        .map(|s| s.to_string())
                        .map_err(|t| {
                            ApiError::spec(
                                call,
                                format!(
                                    "GPU selector element must be an index or a string, found {t}"
                                ),
                            )
                        })
                }
            })
            .collect::<Result<Vec<_>, _>>()?
            .join(",")
    } else if let Ok(i) = v.as_int() {
        i.to_string()
    } else {
        v.clone()
            .into_immutable_string()
            .map(|s| s.to_string())
            .map_err(|t| {
                ApiError::spec(
                    call,
                    format!("GPU selector must be a string, an index or an array, found {t}"),
                )
            })?
    };
    text.parse()
        .map_err(|source| ApiError::Type { call, source })
}

/// Register the `gpu` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<GpuApi>("Gpu");

    FuncRegistration::new("list")
        .with_params_info(["gpu: Gpu", "Array"])
        .with_comments([
            "/// The host's GPUs from `nvidia-smi`: an array of",
            "/// `#{index, pci_bus_id, uuid, name, memory_mib, driver_version, minor, mig}`.",
        ])
        .register_into_engine(engine, |api: GpuApi| -> RhaiResult<Array> {
            let gpus = list(&api.rt).map_err(script_error)?;
            Ok(gpus.iter().map(to_dynamic).collect())
        });

    FuncRegistration::new("driver_sources")
        .with_params_info(["gpu: Gpu", "Map"])
        .with_comments([
            "/// The NVIDIA sources on the host that settings name: `#{installer, debs}`, the file",
            "/// name of PHOENIX_NVIDIA_INSTALLER (or `()`) and those of the `.deb` files in",
            "/// PHOENIX_NVIDIA_DEBS (or `[]`). Names only: host paths never reach a recipe.",
        ])
        .register_into_engine(engine, |api: GpuApi| -> RhaiResult<Map> {
            let s = driver_sources(&api.rt).map_err(script_error)?;
            let name = |p: &std::path::PathBuf| -> Dynamic {
                p.file_name()
                    .map_or(Dynamic::UNIT, |n| n.to_string_lossy().into_owned().into())
            };
            let mut m = Map::new();
            m.insert(
                "installer".into(),
                s.installer.as_ref().map_or(Dynamic::UNIT, name),
            );
            m.insert(
                "debs".into(),
                Dynamic::from_array(s.debs.iter().map(name).collect()),
            );
            Ok(m)
        });

    FuncRegistration::new("push_installer")
        .with_params_info(["gpu: Gpu", "ct: Map|int", "dir: String", "String"])
        .with_comments([
            "/// Push the host's NVIDIA `.run` installer (PHOENIX_NVIDIA_INSTALLER) into the",
            "/// directory `dir` of the container (0755), after checking that it is the host",
            "/// driver's version. Returns its path in the container. Undo: remove it.",
        ])
        .register_into_engine(
            engine,
            |api: GpuApi, ct: Dynamic, dir: &str| -> RhaiResult<String> {
                const CALL: &str = "gpu.push_installer";
                let vmid = vmid_of(CALL, &ct).map_err(script_error)?;
                let dir = AbsPath::new(dir)
                    .map_err(|source| script_error(ApiError::Type { call: CALL, source }))?;
                push_installer(&api.rt, vmid, &dir)
                    .map(|p| p.to_string())
                    .map_err(script_error)
            },
        );

    FuncRegistration::new("push_debs")
        .with_params_info(["gpu: Gpu", "ct: Map|int", "dir: String", "Array"])
        .with_comments([
            "/// Push every `.deb` of the host directory PHOENIX_NVIDIA_DEBS into the directory",
            "/// `dir` of the container (0644), after checking that driver-userspace packages",
            "/// carry the host driver's version. Returns their paths. Undo: remove them.",
        ])
        .register_into_engine(
            engine,
            |api: GpuApi, ct: Dynamic, dir: &str| -> RhaiResult<Array> {
                const CALL: &str = "gpu.push_debs";
                let vmid = vmid_of(CALL, &ct).map_err(script_error)?;
                let dir = AbsPath::new(dir)
                    .map_err(|source| script_error(ApiError::Type { call: CALL, source }))?;
                push_debs(&api.rt, vmid, &dir)
                    .map(|v| v.iter().map(|p| Dynamic::from(p.to_string())).collect())
                    .map_err(script_error)
            },
        );

    FuncRegistration::new("attach")
        .with_params_info(["gpu: Gpu", "ct: Map|int", "selector: String|int|Array", "Array"])
        .with_comments([
            "/// Pass GPUs through to the container: indices (`\"0,1\"`, `[0, 1]`), UUIDs, PCI",
            "/// bus ids or `\"all\"`. PVE ≥ 8.1 on cgroup v2 gets `devN:` entries, older PVE or a",
            "/// cgroup v1 host device allow rules (`lxc.cgroup.devices.allow` on v1) and bind mounts;",
            "/// `nvidia-caps` only with MIG. Installs the host unit that recreates the lazy nodes",
            "/// at boot. Re-attaching changes nothing. Returns the attached GPUs.",
            "/// Undo: remove the entries / restore the saved config; release the unit.",
        ])
        .register_into_engine(engine, |api: GpuApi, ct: Dynamic, selector: Dynamic| -> RhaiResult<Array> {
            let vmid = vmid_of("gpu.attach", &ct).map_err(script_error)?;
            let sel = selector_of("gpu.attach", &selector).map_err(script_error)?;
            let gpus = attach(&api.rt, vmid, &sel).map_err(script_error)?;
            Ok(gpus.iter().map(to_dynamic).collect())
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(index: u32, bus: &str, minor: u32) -> Gpu {
        Gpu {
            index,
            pci_bus_id: bus.into(),
            uuid: format!("GPU-{index:08x}-0000-0000-0000-000000000000"),
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_mib: 81559,
            driver_version: "580.159.04".into(),
            minor: Some(minor),
            mig: false,
        }
    }

    #[test]
    fn select_by_index_uuid_pci() {
        let gpus = vec![gpu(0, "00000000:00:06.0", 0), gpu(1, "00000000:00:07.0", 1)];
        let s = |t: &str| select(&gpus, &t.parse().unwrap()).unwrap();
        assert_eq!(s("1")[0].index, 1);
        assert_eq!(s("0000:00:07.0")[0].index, 1);
        assert_eq!(s("GPU-00000000-0000-0000-0000-000000000000")[0].index, 0);
        assert_eq!(s("all").len(), 2);
        let err = select(&gpus, &"2".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no GPU 2 on this host"), "{err}");
    }

    #[test]
    fn nodes_follow_minor_numbers_and_standin_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("nvidia-caps")).unwrap();
        for (rel, dev) in [
            ("nvidia3", "c 195:3"),
            ("nvidiactl", "c 195:255"),
            ("nvidia-uvm", "c 238:0"),
            ("nvidia-uvm-tools", "c 238:1"),
            ("nvidia-caps/nvidia-cap1", "c 241:1"),
            ("nvidia-caps/nvidia-cap2", "c 241:2"),
        ] {
            std::fs::write(d.join(rel), format!("{dev}\n")).unwrap();
        }
        // Index 0 but minor 3: the node is nvidia3. Without MIG no capability node.
        let plain = nodes_for(d, &[gpu(0, "00000000:00:06.0", 3)], false).unwrap();
        assert!(
            plain.iter().all(|n| !n.path.contains("nvidia-caps")),
            "{plain:?}"
        );
        assert_eq!(plain.len(), 4);
        let nodes = nodes_for(d, &[gpu(0, "00000000:00:06.0", 3)], true).unwrap();
        let paths: Vec<&str> = nodes.iter().map(|n| n.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/dev/nvidia3",
                "/dev/nvidiactl",
                "/dev/nvidia-uvm",
                "/dev/nvidia-uvm-tools",
                "/dev/nvidia-caps/nvidia-cap1",
                "/dev/nvidia-caps/nvidia-cap2"
            ]
        );
        let lines = legacy_lines(&nodes, CgroupMode::V2);
        assert_eq!(lines[0].0, "lxc.cgroup2.devices.allow");
        assert_eq!(lines[0].1, "c 195:* rwm");
        assert_eq!(lines[1].1, "c 238:* rwm");
        assert_eq!(lines[2].1, "c 241:* rwm");
        assert_eq!(
            lines[3].1,
            "/dev/nvidia3 dev/nvidia3 none bind,optional,create=file"
        );
        assert_eq!(lines.len(), 3 + 6);
        // A host booted with cgroup v1 gets the v1 key for every rule, the same binds.
        let v1 = legacy_lines(&nodes, CgroupMode::V1);
        let keys: Vec<&str> = v1.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys[..3], ["lxc.cgroup.devices.allow"; 3]);
        assert_eq!(v1[3..], lines[3..]);
    }

    #[test]
    fn nodes_unit_runs_modprobe_for_every_minor_and_mig_only_with_mig() {
        let text =
            nodes_unit_text(Path::new("/usr/bin/nvidia-modprobe"), &[1, 0, 1], false).unwrap();
        assert!(is_phoenix_unit(&text));
        let exec: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ExecStart="))
            .collect();
        assert_eq!(
            exec,
            [
                "/usr/bin/nvidia-modprobe -c=0 -c=1 -c=255",
                "/usr/bin/nvidia-modprobe -u -c=0"
            ]
        );
        assert!(text.contains("\nBefore=pve-guests.service\n"));
        assert!(
            text.contains("\nType=oneshot\n") && text.contains("\nWantedBy=multi-user.target\n")
        );
        let mig = nodes_unit_text(Path::new("/usr/bin/nvidia-modprobe"), &[0], true).unwrap();
        assert!(mig.contains("ExecStart=/usr/bin/nvidia-modprobe -f /proc/driver/nvidia/capabilities/mig/config -f /proc/driver/nvidia/capabilities/mig/monitor\n"));
        let err =
            nodes_unit_text(Path::new("/opt/my tools/nvidia-modprobe"), &[0], false).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot be written into a systemd unit"),
            "{err}"
        );
        assert!(!is_phoenix_unit("[Unit]\n"));
    }

    #[test]
    fn versions_come_from_the_file_names() {
        let v = |p: &str| installer_version(Path::new(p));
        assert_eq!(
            v("/srv/NVIDIA-Linux-x86_64-580.159.04.run").as_deref(),
            Some("580.159.04")
        );
        assert_eq!(
            v("/srv/NVIDIA-Linux-aarch64-570.86.15.run").as_deref(),
            Some("570.86.15")
        );
        assert_eq!(v("/srv/driver.run"), None);
        assert_eq!(v("/srv/NVIDIA-Linux-x86_64-.run"), None);
        let d = |p: &str| deb_driver_version(Path::new(p));
        assert_eq!(
            d("/d/nvidia-utils-580_580.159.04-0ubuntu1_amd64.deb").as_deref(),
            Some("580.159.04")
        );
        assert_eq!(
            d("/d/libnvidia-compute-580_580.159.04-1_amd64.deb").as_deref(),
            Some("580.159.04")
        );
        assert_eq!(d("/d/nvidia-container-toolkit_1.17.8-1_amd64.deb"), None);
    }

    #[test]
    fn nvidia_passthrough_is_seen_in_both_forms() {
        let c = |t: &str| CtConfig::parse(t);
        assert!(passes_nvidia(&c("dev0: /dev/nvidia0\n")));
        assert!(passes_nvidia(&c("dev3: /dev/nvidia-uvm,mode=0666\n")));
        assert!(passes_nvidia(&c(
            "lxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file\n"
        )));
        assert!(!passes_nvidia(&c(
            "dev0: /dev/fuse\nmp0: /dev/nvidia0,mp=/x\n"
        )));
    }

    #[test]
    fn missing_uvm_suggests_nvidia_modprobe() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nvidia0"), "c 195:0").unwrap();
        std::fs::write(dir.path().join("nvidiactl"), "c 195:255").unwrap();
        let err = nodes_for(dir.path(), &[gpu(0, "00000000:00:06.0", 0)], false).unwrap_err();
        assert!(err.to_string().contains("nvidia-modprobe -u -c=0"), "{err}");
    }
}

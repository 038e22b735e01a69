//! The preflight's checks, one function each, in the order of [`super`]'s module docs.
//! Each one asks the host read-only questions and appends findings; none fails.

use std::collections::BTreeMap;

use super::{Check, Finding};
use crate::config::{Config, LxcConfig};
use crate::host::facts::NetIface;
use crate::host::{Host, HostError};
use crate::settings::{HostKind, Settings};
use crate::types::{AbsPath, StorageId, Vmid};

/// What every check reads.
pub(super) struct Ctx<'a> {
    /// Resolved settings (the models parent may come from them).
    pub(super) settings: &'a Settings,
    /// The config.
    pub(super) config: &'a Config,
    /// The selected entries.
    pub(super) entries: &'a [&'a LxcConfig],
    /// The host, asked read-only.
    pub(super) host: &'a dyn Host,
}

impl Ctx<'_> {
    fn config_path(&self) -> String {
        self.config.path.display().to_string()
    }
}

/// Every check, in order.
pub(super) fn run(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    if !proxmox(ctx, &mut out) {
        return out;
    }
    let to_create = vmids(ctx, &mut out);
    storages(ctx, &to_create, &mut out);
    templates(ctx, &to_create, &mut out);
    bridges(ctx, &mut out);
    resources(ctx, &mut out);
    gpus(ctx, &mut out);
    models_dataset(ctx, &mut out);
    out
}

/// A backend that cannot answer this kind of question at all (skip the check).
fn unsupported(e: &HostError) -> bool {
    matches!(e, HostError::Unsupported { .. })
}

/// `901, 902`.
fn ids(entries: &[&LxcConfig]) -> String {
    entries
        .iter()
        .map(|e| e.vmid.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one entry of `entries`, when there is one (a finding about it names it).
fn only(entries: &[&LxcConfig]) -> Option<Vmid> {
    match entries {
        [one] => Some(one.vmid),
        _ => None,
    }
}

fn gib(kib: u64) -> String {
    format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
}

/// `pct`, `pvesm`, `pveversion` and the version. `false` when this is no Proxmox VE host
/// (nothing else is worth asking then).
fn proxmox(ctx: &Ctx<'_>, out: &mut Vec<Finding>) -> bool {
    let host = ctx.host;
    if host.kind() == HostKind::Lxc {
        return true;
    }
    let missing: Vec<(&str, std::path::PathBuf)> = ["pct", "pvesm", "pveversion"]
        .into_iter()
        .filter_map(|t| host.tool_path(t).map(|p| (t, p)))
        .filter(|(_, p)| !p.exists())
        .collect();
    if let Some((_, pct)) = missing.iter().find(|(t, _)| *t == "pct") {
        let f = if host.kind() == HostKind::Pve {
            Finding::error(
                Check::Proxmox,
                format!(
                    "this is not a Proxmox VE host: {} does not exist",
                    pct.display()
                ),
            )
            .fix(
                "install phoenix on a Proxmox VE node, or try it here on an emulated Proxmox host: phoenix doctor --host emulated",
            )
        } else {
            Finding::error(
                Check::Proxmox,
                format!("the emulated host has no {}", pct.display()),
            )
            .fix("build the emulator next to phoenix: cargo build (or set PHOENIX_EMU_BIN)")
        };
        out.push(f.subject(pct.display().to_string()));
        return false;
    }
    for (tool, path) in &missing {
        out.push(
            Finding::error(
                Check::Proxmox,
                format!(
                    "{} does not exist ({tool} is part of Proxmox VE)",
                    path.display()
                ),
            )
            .subject(path.display().to_string())
            .fix("repair the Proxmox VE installation: apt install --reinstall proxmox-ve"),
        );
    }
    match host.pve_version() {
        Ok(Some((a, b, c))) => {
            let gpu_mode = if (a, b) >= crate::host::pve::DEV_ENTRIES_SINCE {
                "GPUs pass through as devN entries"
            } else {
                "GPUs pass through as raw lxc lines (devN entries need 8.1)"
            };
            out.push(
                Finding::ok(
                    Check::Proxmox,
                    format!("Proxmox VE {a}.{b}.{c} ({gpu_mode})"),
                )
                .subject(format!("{a}.{b}.{c}")),
            );
        }
        Ok(None) => out.push(Finding::error(
            Check::Proxmox,
            "the host reports no Proxmox VE version",
        )),
        Err(e) => out.push(
            Finding::error(Check::Proxmox, format!("cannot read the version: {e}"))
                .fix("check the installation: pveversion -v"),
        ),
    }
    true
}

/// Each entry's id: free, or a container phoenix made. Returns the entries to create.
fn vmids<'a>(ctx: &Ctx<'a>, out: &mut Vec<Finding>) -> Vec<&'a LxcConfig> {
    let mut create = Vec::new();
    for e in ctx.entries {
        let v = e.vmid;
        match ctx.host.ct_config(v) {
            Ok(None) => match ctx.host.other_guest(v) {
                Ok(Some(what)) => out.push(
                    Finding::error(Check::Vmid, format!("the id is taken by {what}"))
                        .vmid(v)
                        .fix(format!(
                            "give this entry a free id in {} (`pvesh get /cluster/nextid` prints one)",
                            ctx.config_path()
                        )),
                ),
                Ok(None) => {
                    out.push(Finding::ok(Check::Vmid, "the id is free: phoenix creates the container").vmid(v));
                    create.push(*e);
                }
                Err(err) => out.push(
                    Finding::error(Check::Vmid, format!("cannot look for other guests: {err}"))
                        .vmid(v),
                ),
            },
            Ok(Some(conf)) => {
                use crate::ownership::Container;
                // The journal is read only for a container without the tag: it proves an
                // interrupted create of phoenix's (DESIGN.md §11).
                let whose = if crate::ownership::is_tagged(&conf) {
                    Ok(Container::Tagged)
                } else {
                    crate::journal::read(&crate::journal::Journal::path_in(
                        &ctx.settings.state_dir.value,
                    ))
                    .map(|records| crate::ownership::container(Some(&conf), &records, v))
                };
                match whose {
                    Ok(Container::Tagged) => match conf.get("lock") {
                        Some(lock) => out.push(
                            Finding::warning(
                                Check::Vmid,
                                format!("phoenix's container is locked by Proxmox (`lock: {lock}`): phoenix changes nothing in it until the lock is gone"),
                            )
                            .vmid(v)
                            .fix(format!("wait for that operation to end; if none runs: pct unlock {v}")),
                        ),
                        None => out.push(
                            Finding::ok(Check::Vmid, "the container exists and is phoenix's: it is reused")
                                .vmid(v),
                        ),
                    },
                    Ok(Container::InterruptedCreate(_)) => {
                        out.push(
                            Finding::ok(
                                Check::Vmid,
                                "the container is what phoenix's interrupted create left (`lock: create`, proven by the journal): it is removed and created again",
                            )
                            .vmid(v),
                        );
                        create.push(*e);
                    }
                    Ok(Container::Absent | Container::Foreign) => {
                        let what = if crate::ownership::is_create_stub(&conf) {
                            "a container with this id is being created (`lock: create`) by something other than phoenix (its journal has no such create)"
                        } else {
                            "a container with this id exists and is not phoenix's (no `phoenix` tag): phoenix never changes or destroys it"
                        };
                        out.push(
                            Finding::error(Check::Vmid, what).vmid(v).fix(format!(
                                "give this entry a free id in {} (`pvesh get /cluster/nextid` prints one), or remove that container yourself if it is unused: pct destroy {v}",
                                ctx.config_path()
                            )),
                        );
                    }
                    Err(err) => out.push(
                        Finding::error(Check::Vmid, format!("cannot read phoenix's journal: {err}"))
                            .vmid(v),
                    ),
                }
            }
            Err(err) => out.push(
                Finding::error(Check::Vmid, format!("cannot read the container's config: {err}"))
                    .vmid(v),
            ),
        }
    }
    create
}

/// The storages of the entries to create: there, active, for container disks, with room.
fn storages(ctx: &Ctx<'_>, create: &[&LxcConfig], out: &mut Vec<Finding>) {
    if create.is_empty() {
        return;
    }
    // The storages for container disks first: when every entry's storage is one of them,
    // that one `pvesm status` (a Perl start on a real host) answers everything; only
    // otherwise are all storages listed, to say whether one is missing or only lacks
    // `rootdir`.
    let for_disks = match ctx.host.storages(Some("rootdir")) {
        Ok(s) => s,
        Err(e) if unsupported(&e) => return,
        Err(e) => {
            out.push(Finding::error(
                Check::Storage,
                format!("cannot list the storages for container disks: {e}"),
            ));
            return;
        }
    };
    let rootdir: Vec<String> = for_disks.iter().map(|s| s.name.clone()).collect();
    let all = if create
        .iter()
        .all(|e| rootdir.iter().any(|r| r == e.storage_pool.as_str()))
    {
        for_disks
    } else {
        match ctx.host.storages(None) {
            Ok(s) => s,
            Err(e) => {
                out.push(Finding::error(
                    Check::Storage,
                    format!("cannot list the host's storages: {e}"),
                ));
                return;
            }
        }
    };
    let mut by_storage: BTreeMap<&str, Vec<&LxcConfig>> = BTreeMap::new();
    for e in create {
        by_storage
            .entry(e.storage_pool.as_str())
            .or_default()
            .push(e);
    }
    let usable = if rootdir.is_empty() {
        "none".to_owned()
    } else {
        rootdir.join(", ")
    };
    for (sid, es) in by_storage {
        let with = |f: Finding| {
            let f = f.subject(sid);
            match only(&es) {
                Some(v) => f.vmid(v),
                None => f,
            }
        };
        let Some(st) = all.iter().find(|s| s.name == sid) else {
            let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
            out.push(with(
                Finding::error(
                    Check::Storage,
                    format!(
                        "storage {sid} (for {}) does not exist on this host; it has: {}",
                        ids(&es),
                        names.join(", ")
                    ),
                )
                .fix(format!(
                    "set `storage_pool` to a storage for container disks ({usable}) in {}",
                    ctx.config_path()
                )),
            ));
            continue;
        };
        if !st.is_active() {
            let fix = if st.status == "disabled" {
                format!("enable it: pvesm set {sid} --disable 0")
            } else {
                format!(
                    "bring it online (`pvesm status --storage {sid}` says why), or use another storage ({usable})"
                )
            };
            out.push(with(
                Finding::error(
                    Check::Storage,
                    format!("storage {sid} (for {}) is {}", ids(&es), st.status),
                )
                .fix(fix),
            ));
            continue;
        }
        if !rootdir.iter().any(|r| r == sid) {
            out.push(with(
                Finding::error(
                    Check::Storage,
                    format!(
                        "storage {sid} ({}) cannot hold container disks: its content types lack `rootdir`",
                        st.kind
                    ),
                )
                .fix(format!(
                    "use a storage for container disks ({usable}) in {}, or add rootdir to {sid}'s content types: pvesm set {sid} --content rootdir,<its current types>",
                    ctx.config_path()
                )),
            ));
            continue;
        }
        let need: u64 = es
            .iter()
            .map(|e| u64::from(e.storage_size_gb) * 1024 * 1024)
            .sum();
        if need > st.available_kib {
            out.push(with(
                Finding::error(
                    Check::Storage,
                    format!(
                        "storage {sid} has {} available; {} need {}",
                        gib(st.available_kib),
                        ids(&es),
                        gib(need)
                    ),
                )
                .fix(format!(
                    "free space on {sid}, lower `storage_size_gb`, or put some containers on another storage ({usable})"
                )),
            ));
        } else {
            out.push(with(Finding::ok(
                Check::Storage,
                format!(
                    "storage {sid} ({}, active): {} available, {} need {}",
                    st.kind,
                    gib(st.available_kib),
                    ids(&es),
                    gib(need)
                ),
            )));
        }
    }
}

/// The templates of the entries to create.
fn templates(ctx: &Ctx<'_>, create: &[&LxcConfig], out: &mut Vec<Finding>) {
    let mut by_template: BTreeMap<&str, Vec<&LxcConfig>> = BTreeMap::new();
    for e in create {
        by_template.entry(e.template.as_str()).or_default().push(e);
    }
    // One `pvesm list` per storage.
    let mut listed: BTreeMap<String, Result<Vec<String>, String>> = BTreeMap::new();
    for (t, es) in by_template {
        let with = |f: Finding| {
            let f = f.subject(t);
            match only(&es) {
                Some(v) => f.vmid(v),
                None => f,
            }
        };
        if t.starts_with('/') {
            let found = AbsPath::new(t)
                .map_err(|e| HostError::Device(e.to_string()))
                .and_then(|p| ctx.host.host_file_exists(&p));
            match found {
                Ok(true) => out.push(with(Finding::ok(
                    Check::Template,
                    format!("{t} is there (for {})", ids(&es)),
                ))),
                Ok(false) => out.push(with(
                    Finding::error(
                        Check::Template,
                        format!("template {t} (for {}) is not a file on this host", ids(&es)),
                    )
                    .fix("put the template there, or name one from a storage (`pveam list local`)"),
                )),
                Err(e) if unsupported(&e) => {}
                Err(e) => out.push(with(Finding::error(
                    Check::Template,
                    format!("cannot look for template {t}: {e}"),
                ))),
            }
            continue;
        }
        let Some((sid, volume)) = t.split_once(':') else {
            continue;
        };
        let Ok(storage) = StorageId::new(sid) else {
            continue;
        };
        let list = listed.entry(sid.to_owned()).or_insert_with(|| {
            ctx.host.storage_content(&storage, "vztmpl").map_err(|e| {
                if unsupported(&e) {
                    String::new()
                } else {
                    e.to_string()
                }
            })
        });
        match list {
            Err(e) if e.is_empty() => {}
            Err(e) => out.push(with(
                Finding::error(
                    Check::Template,
                    format!("cannot list the templates on storage {sid}: {e}"),
                )
                .fix("name a template on a storage with `vztmpl` content (`pvesm status --content vztmpl` lists them; usually local)"),
            )),
            Ok(vols) if vols.iter().any(|v| v == t) => out.push(with(Finding::ok(
                Check::Template,
                format!("{t} is on storage {sid} (for {})", ids(&es)),
            ))),
            Ok(_) => {
                let fix = match volume.strip_prefix("vztmpl/") {
                    Some(name) => format!("pveam update && pveam download {sid} {name}"),
                    None => format!(
                        "name a template volume (`{sid}:vztmpl/<file>`; `pveam available --section system` lists them)"
                    ),
                };
                out.push(with(
                    Finding::error(
                        Check::Template,
                        format!("template {t} (for {}) is not on storage {sid}", ids(&es)),
                    )
                    .fix(fix),
                ));
            }
        }
    }
}

/// Every selected entry's bridge.
fn bridges(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let mut by_bridge: BTreeMap<&str, Vec<&LxcConfig>> = BTreeMap::new();
    for e in ctx.entries {
        by_bridge
            .entry(e.network.bridge.as_str())
            .or_default()
            .push(e);
    }
    for (b, es) in by_bridge {
        let with = |f: Finding| {
            let f = f.subject(b);
            match only(&es) {
                Some(v) => f.vmid(v),
                None => f,
            }
        };
        match ctx.host.net_iface(b) {
            Ok(NetIface::LinuxBridge) => out.push(with(Finding::ok(
                Check::Bridge,
                format!("{b} is a Linux bridge (for {})", ids(&es)),
            ))),
            Ok(NetIface::Other) => out.push(with(
                Finding::warning(
                    Check::Bridge,
                    format!("{b} (for {}) exists but is not a Linux bridge; an Open vSwitch bridge works too", ids(&es)),
                )
                .fix(format!("check it: `ovs-vsctl br-exists {b}` exits 0 for an Open vSwitch bridge; otherwise set `network_config.bridge` to a bridge")),
            )),
            Ok(NetIface::Missing) => out.push(with(
                Finding::error(
                    Check::Bridge,
                    format!("bridge {b} (for {}) does not exist on this host", ids(&es)),
                )
                .fix(format!(
                    "create it (web UI: node → System → Network → Create → Linux Bridge, then Apply; or add `auto {b}` / `iface {b} inet manual` / `bridge-ports none` / `bridge-stp off` / `bridge-fd 0` to /etc/network/interfaces and run `ifreload -a`), or set `network_config.bridge` to an existing bridge in {}",
                    ctx.config_path()
                )),
            )),
            Err(e) if unsupported(&e) => {}
            Err(e) => out.push(with(Finding::error(
                Check::Bridge,
                format!("cannot look for bridge {b}: {e}"),
            ))),
        }
    }
}

/// Memory and cores against the host's.
fn resources(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if ctx.entries.is_empty() {
        return;
    }
    let r = match ctx.host.resources() {
        Ok(r) => r,
        Err(e) if unsupported(&e) => return,
        Err(e) => {
            out.push(Finding::error(
                Check::Memory,
                format!("cannot read the host's memory and CPUs: {e}"),
            ));
            return;
        }
    };
    let asked: u64 = ctx.entries.iter().map(|e| u64::from(e.memory_mb)).sum();
    let total = r.memory_mib().max(1);
    let pct = asked as f64 * 100.0 / total as f64;
    let what = format!(
        "containers {} ask for {asked} MiB of memory, {pct:.0} % of the host's {total} MiB",
        ids(ctx.entries)
    );
    let fix = format!(
        "lower `memory_mb` in {}, or run fewer containers on this host (`--lxc`)",
        ctx.config_path()
    );
    out.push(if asked > total {
        Finding::error(Check::Memory, format!("{what}: more than it has")).fix(fix)
    } else if asked * 5 > total * 4 {
        Finding::warning(
            Check::Memory,
            format!("{what}: over 80 %, leaving little for the host itself and ZFS's cache"),
        )
        .fix(fix)
    } else {
        Finding::ok(Check::Memory, what)
    });
    let cpus = r.cpus;
    for e in ctx.entries.iter().filter(|e| e.cores > cpus) {
        out.push(
            Finding::warning(
                Check::Cores,
                format!(
                    "asks for {} cores; the host has {cpus} CPUs, so the container gets all {cpus}",
                    e.cores
                ),
            )
            .vmid(e.vmid)
            .fix(format!("set `cores` of {} to at most {cpus}", e.vmid)),
        );
    }
    let cores: u64 = ctx.entries.iter().map(|e| u64::from(e.cores)).sum();
    let msg = format!(
        "containers {} ask for {cores} cores; the host has {cpus} CPUs",
        ids(ctx.entries)
    );
    out.push(if cores > u64::from(cpus) {
        Finding::warning(
            Check::Cores,
            format!("{msg}: they share them and slow each other down when busy at once"),
        )
        .fix(format!(
            "lower `cores` in {} if they run busy at once",
            ctx.config_path()
        ))
    } else {
        Finding::ok(Check::Cores, msg)
    });
}

/// The driver, the GPUs the entries name, and the device nodes they need.
fn gpus(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let wanting: Vec<(&LxcConfig, &crate::types::GpuSelector)> = ctx
        .entries
        .iter()
        .filter_map(|e| e.gpus.as_ref().map(|g| (*e, g)))
        .collect();
    if wanting.is_empty() {
        return;
    }
    let host = ctx.host;
    let install = "install the NVIDIA driver on the host (NVIDIA's .run installer, or the distribution's driver packages), then check with `nvidia-smi`";
    if host.kind() == HostKind::Pve {
        if let Some(smi) = host.tool_path("nvidia-smi").filter(|p| !p.exists()) {
            out.push(
                Finding::error(
                    Check::Driver,
                    format!(
                        "no NVIDIA driver on this host: {} does not exist (containers {} ask for GPUs)",
                        smi.display(),
                        wanting.iter().map(|(e, _)| e.vmid.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                )
                .subject(smi.display().to_string())
                .fix(install),
            );
            return;
        }
    }
    let all = match host.gpus() {
        Ok(g) if g.is_empty() => {
            out.push(Finding::error(Check::Driver, "nvidia-smi lists no GPU").fix(install));
            return;
        }
        Ok(g) => g,
        Err(e) => {
            out.push(
                Finding::error(
                    Check::Driver,
                    format!("the NVIDIA driver does not answer (is it loaded?): {e}"),
                )
                .fix(install),
            );
            return;
        }
    };
    out.push(
        Finding::ok(
            Check::Driver,
            format!(
                "NVIDIA driver {}, {} GPU(s): {}",
                all[0].driver_version,
                all.len(),
                all.iter()
                    .map(|g| format!("{} {}", g.index, g.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .subject(all[0].driver_version.clone()),
    );
    let mut chosen: Vec<crate::host::Gpu> = Vec::new();
    for (e, sel) in wanting {
        match crate::api::gpu::select(&all, sel) {
            Ok(gs) => {
                out.push(
                    Finding::ok(
                        Check::Gpu,
                        format!(
                            "GPU(s) {}",
                            gs.iter()
                                .map(|g| g.index.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .vmid(e.vmid),
                );
                for g in gs {
                    if !chosen.iter().any(|c| c.index == g.index) {
                        chosen.push(g);
                    }
                }
            }
            Err(err) => out.push(
                Finding::error(
                    Check::Gpu,
                    err.to_string()
                        .trim_start_matches("gpu.attach: ")
                        .to_owned(),
                )
                .vmid(e.vmid)
                .fix(format!(
                    "set `gpu_assignment` of {} in {} to GPUs the host has (`phoenix gpu list`)",
                    e.vmid,
                    ctx.config_path()
                )),
            ),
        }
    }
    if !chosen.is_empty() {
        chosen.sort_by_key(|g| g.index);
        device_nodes(ctx, &chosen, out);
    }
}

/// The nodes `gpu.attach` passes for `gpus`: an error when one is missing and nothing will
/// make it; a warning when `nvidia-modprobe` (run by the nodes unit) will.
fn device_nodes(ctx: &Ctx<'_>, gpus: &[crate::host::Gpu], out: &mut Vec<Finding>) {
    use crate::api::gpu::{NODES_UNIT, is_phoenix_unit, read_node};
    let dev = ctx.host.dev_dir();
    let mut present = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    // What makes the missing nodes: `nvidia-modprobe -c=N` per GPU node and the control
    // node, `-u -c=0` for the UVM pair, `-f …` for the MIG capabilities (one run each:
    // `-u` switches a run to the UVM module).
    let mut minors: Vec<u32> = Vec::new();
    let mut uvm = false;
    let mut caps = false;
    let mut look = |rel: &str, out: &mut Vec<Finding>| match read_node(dev, rel) {
        Ok(Some(_)) => {
            present.push(format!("/dev/{rel}"));
            false
        }
        Ok(None) => {
            missing.push(format!("/dev/{rel}"));
            true
        }
        Err(e) => {
            out.push(
                Finding::error(Check::DeviceNodes, e.to_string())
                    .subject(format!("/dev/{rel}"))
                    .fix(format!(
                        "remove /dev/{rel} and let the driver make it again (a reboot, or nvidia-modprobe)"
                    )),
            );
            false
        }
    };
    for g in gpus {
        let Some(minor) = g.minor else {
            out.push(Finding::error(
                Check::DeviceNodes,
                format!(
                    "GPU {} ({}) has no minor number in `nvidia-smi -q`: its /dev/nvidiaN node is unknown",
                    g.index, g.pci_bus_id
                ),
            ));
            continue;
        };
        if look(&format!("nvidia{minor}"), out) {
            minors.push(minor);
        }
    }
    if look("nvidiactl", out) {
        minors.push(255);
    }
    for rel in ["nvidia-uvm", "nvidia-uvm-tools"] {
        uvm |= look(rel, out);
    }
    if gpus.iter().any(|g| g.mig) {
        let dir = dev.join("nvidia-caps");
        if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
            present.push("/dev/nvidia-caps/*".to_owned());
        } else {
            missing.push("/dev/nvidia-caps/*".to_owned());
            caps = true;
        }
    }
    if missing.is_empty() {
        out.push(Finding::ok(
            Check::DeviceNodes,
            format!("present: {}", present.join(", ")),
        ));
        return;
    }
    let now = |prog: &str| {
        let mut cmds = Vec::new();
        if !minors.is_empty() {
            let args: Vec<String> = minors.iter().map(|m| format!("-c={m}")).collect();
            cmds.push(format!("{prog} {}", args.join(" ")));
        }
        if uvm {
            cmds.push(format!("{prog} -u -c=0"));
        }
        if caps {
            cmds.push(format!(
                "{prog} -f /proc/driver/nvidia/capabilities/mig/config -f /proc/driver/nvidia/capabilities/mig/monitor"
            ));
        }
        cmds.join(" && ")
    };
    let modprobe = ctx.host.nvidia_modprobe();
    let foreign_unit =
        matches!(ctx.host.unit_text(NODES_UNIT), Ok(Some(t)) if !is_phoenix_unit(&t));
    match modprobe {
        Some(p) if p.exists() && !foreign_unit => out.push(
            Finding::warning(
                Check::DeviceNodes,
                format!(
                    "{} missing: nvidia-modprobe makes them on demand, and gpu.attach installs {NODES_UNIT}, which makes them before the container starts and at every boot",
                    missing.join(", ")
                ),
            )
            .subject(missing.join(" "))
            .fix(format!(
                "nothing to do; to make them now: {}",
                now(&p.display().to_string())
            )),
        ),
        Some(p) if p.exists() => out.push(
            Finding::warning(
                Check::DeviceNodes,
                format!(
                    "{} missing, and the host has a {NODES_UNIT} that phoenix did not write (phoenix leaves it alone): it must make them before the containers start",
                    missing.join(", ")
                ),
            )
            .subject(missing.join(" "))
            .fix(format!(
                "check that unit, or make them now: {}",
                now(&p.display().to_string())
            )),
        ),
        Some(p) => out.push(
            Finding::error(
                Check::DeviceNodes,
                format!(
                    "{} missing, and nothing will make them: {} does not exist",
                    missing.join(", "),
                    p.display()
                ),
            )
            .subject(missing.join(" "))
            .fix(format!(
                "install nvidia-modprobe (NVIDIA's driver installer puts it there; Debian and Ubuntu package it as nvidia-modprobe), then: {}",
                now(&p.display().to_string())
            )),
        ),
        None => out.push(
            Finding::error(
                Check::DeviceNodes,
                format!("{} missing", missing.join(", ")),
            )
            .subject(missing.join(" "))
            .fix(format!(
                "make them on the host, and at every boot: {}",
                now("nvidia-modprobe")
            )),
        ),
    }
}

/// The models parent of vLLM entries: exists, or can be made under an existing pool.
fn models_dataset(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if !ctx.entries.iter().any(|e| e.vllm.is_some()) {
        return;
    }
    let how = format!(
        "set `\"models_dataset\": \"<pool>/phoenix/models\"` in {}, or --models-dataset / PHOENIX_MODELS_DATASET",
        ctx.config_path()
    );
    let set = match crate::datasets::resolve(ctx.settings, ctx.config, ctx.host) {
        Ok(s) => s,
        Err(crate::datasets::DatasetsError::Host { source, .. }) if unsupported(&source) => {
            return;
        }
        Err(e) => {
            out.push(Finding::error(Check::ModelsDataset, e.to_string()).fix(how));
            return;
        }
    };
    let parent = set.value.dataset();
    let from = match set.source {
        crate::settings::Source::Host => "derived from the host's one ZFS pool".to_owned(),
        crate::settings::Source::Config => format!("from {}", ctx.config_path()),
        s => format!("from the setting ({s})"),
    };
    match ctx.host.zfs_get(&parent) {
        Ok(Some(_)) => out.push(
            Finding::ok(Check::ModelsDataset, format!("{parent} exists ({from})"))
                .subject(parent.to_string()),
        ),
        Ok(None) => {
            let pool = parent.as_str().split('/').next().unwrap_or_default();
            // A parent derived from the host names its one pool: no need to ask again.
            let pools = if set.source == crate::settings::Source::Host {
                Ok(vec![pool.to_owned()])
            } else {
                ctx.host.zfs_pools()
            };
            match pools {
                Ok(pools) if pools.iter().any(|p| p == pool) => out.push(
                    Finding::ok(
                        Check::ModelsDataset,
                        format!(
                            "{parent} ({from}) does not exist yet: zfs.dataset creates it and its missing parents in pool {pool}, each owned by phoenix"
                        ),
                    )
                    .subject(parent.to_string()),
                ),
                Ok(pools) => out.push(
                    Finding::error(
                        Check::ModelsDataset,
                        format!(
                            "{parent} ({from}) cannot be created: the host has no ZFS pool {pool} (it has: {})",
                            if pools.is_empty() { "none".to_owned() } else { pools.join(", ") }
                        ),
                    )
                    .subject(parent.to_string())
                    .fix(match pools.first() {
                        Some(p) => format!("use a dataset in one of the host's pools, such as {p}/phoenix/models: {how}"),
                        None => "create a ZFS pool for the model weights (zpool create …), then set models_dataset".to_owned(),
                    }),
                ),
                Err(e) => out.push(
                    Finding::error(
                        Check::ModelsDataset,
                        format!("cannot list the host's ZFS pools: {e}"),
                    )
                    .subject(parent.to_string()),
                ),
            }
        }
        Err(e) => out.push(
            Finding::error(
                Check::ModelsDataset,
                format!("cannot look for {parent}: {e}"),
            )
            .subject(parent.to_string()),
        ),
    }
}

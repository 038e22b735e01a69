//! The `gpu` family: list the host's GPUs and pass them through to a container.
//!
//! `gpu.attach` resolves a selector (indices, UUIDs, PCI bus ids, or `all`) against
//! `nvidia-smi`, then collects every node a CUDA process needs: `nvidiaN` for each selected
//! GPU (N is the GPU's *minor number*, not its index), `nvidiactl`, `nvidia-uvm`,
//! `nvidia-uvm-tools`, everything in `nvidia-caps/`, and `nvidia-modeset` when present.
//! Majors and minors are read from the live device nodes under `PHOENIX_DEV_DIR`, never
//! hard-coded (on a real H100 `nvidia-uvm` is 238 and `nvidia-caps` 241).
//!
//! - PVE ≥ 8.1: one `devN: /dev/…` entry per node through `pct set` (undo: delete them).
//! - Older PVE: `lxc.cgroup2.devices.allow: c MAJOR:* rwm` per major plus one
//!   `lxc.mount.entry` per node, written under the config lock after a backup (undo: restore
//!   the backup).
//!
//! Config lines always name host paths (`/dev/nvidia0`), never `PHOENIX_DEV_DIR`. Attaching
//! the same GPUs again changes nothing.
//!
//! Device-node stand-in: where the emulated host cannot `mknod`, a node may be a regular
//! file holding `c MAJOR:MINOR`; it is read as that device.

use std::path::Path;

use rhai::{Array, Dynamic, Engine, FuncRegistration};

use super::support::{step, to_dynamic, vmid_of};
use super::{ApiError, script_error};
use crate::host::{DeviceNode, Gpu, HostError};
use crate::journal::UndoStep;
use crate::runtime::Runtime;
use crate::types::{GpuRef, GpuSelector, Vmid};

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

/// Every node the selected GPUs need, in a stable order.
pub fn nodes_for(dev_dir: &Path, gpus: &[Gpu]) -> Result<Vec<DeviceNode>, HostError> {
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
    if caps.is_dir() {
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

/// The legacy config lines for `nodes`: one cgroup allow per major (sorted), then one bind
/// entry per node.
pub fn legacy_lines(nodes: &[DeviceNode]) -> Vec<(String, String)> {
    let mut majors: Vec<u32> = nodes.iter().map(|n| n.major).collect();
    majors.sort_unstable();
    majors.dedup();
    let mut lines: Vec<(String, String)> = majors
        .iter()
        .map(|m| {
            (
                "lxc.cgroup2.devices.allow".to_owned(),
                format!("c {m}:* rwm"),
            )
        })
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

/// `gpu.attach(ct, selector)`: returns the attached GPUs.
pub fn attach(rt: &Runtime, vmid: Vmid, selector: &GpuSelector) -> Result<Vec<Gpu>, ApiError> {
    const CALL: &str = "gpu.attach";
    // Selected for this run and phoenix's (empty in a dry run before creation).
    let conf = rt
        .boundary()
        .container(CALL, vmid, crate::boundary::Access::Change)?
        .unwrap_or_default();
    let gpus = select(&rt.host.gpus()?, selector)?;
    let nodes = nodes_for(rt.host.dev_dir(), &gpus)?;
    let step_name = format!("gpu.attach:{vmid}");
    let devn = rt
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
        let lines = legacy_lines(&nodes);
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
                        rt.note(format!("append to {vmid}.conf: {k}: {v}"));
                    }
                    return Ok(());
                }
                Ok(rt.host.ct_append_lines(vmid, &lines, &backup)?)
            },
        )?;
    }
    Ok(gpus)
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
            "/// `#{index, pci_bus_id, uuid, name, memory_mib, driver_version, minor}`.",
        ])
        .register_into_engine(engine, |api: GpuApi| -> RhaiResult<Array> {
            let gpus = list(&api.rt).map_err(script_error)?;
            Ok(gpus.iter().map(to_dynamic).collect())
        });

    FuncRegistration::new("attach")
        .with_params_info(["gpu: Gpu", "ct: Map|int", "selector: String|int|Array", "Array"])
        .with_comments([
            "/// Pass GPUs through to the container: indices (`\"0,1\"`, `[0, 1]`), UUIDs, PCI",
            "/// bus ids or `\"all\"`. PVE ≥ 8.1 gets `devN:` entries, older PVE cgroup allow rules",
            "/// and bind mounts. Re-attaching changes nothing. Returns the attached GPUs.",
            "/// Undo: remove the entries / restore the saved config.",
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
        // Index 0 but minor 3: the node is nvidia3.
        let nodes = nodes_for(d, &[gpu(0, "00000000:00:06.0", 3)]).unwrap();
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
        let lines = legacy_lines(&nodes);
        assert_eq!(lines[0].1, "c 195:* rwm");
        assert_eq!(lines[1].1, "c 238:* rwm");
        assert_eq!(lines[2].1, "c 241:* rwm");
        assert_eq!(
            lines[3].1,
            "/dev/nvidia3 dev/nvidia3 none bind,optional,create=file"
        );
        assert_eq!(lines.len(), 3 + 6);
    }

    #[test]
    fn missing_uvm_suggests_nvidia_modprobe() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("nvidia0"), "c 195:0").unwrap();
        std::fs::write(dir.path().join("nvidiactl"), "c 195:255").unwrap();
        let err = nodes_for(dir.path(), &[gpu(0, "00000000:00:06.0", 0)]).unwrap_err();
        assert!(err.to_string().contains("nvidia-modprobe -u -c=0"), "{err}");
    }
}

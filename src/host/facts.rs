//! Read-only facts about a host, for the preflight ([`crate::doctor`]): its size (procfs),
//! its network interfaces (sysfs), its storages and templates (`pvesm`), and the guests it
//! knows besides phoenix's containers.
//!
//! Each reader follows the file or tool the Proxmox VE host itself reads, and takes its
//! root as a parameter so tests (and the emulated host) answer from a directory:
//! - memory is `MemTotal` of `/proc/meminfo`, in kB (pve-common `src/PVE/ProcFSTools.pm`
//!   `read_meminfo`, at f665029: `^(\S+):\s+(\d+)\s*kB`);
//! - CPUs are the `processor : N` lines of `/proc/cpuinfo` (the same file's
//!   `read_cpuinfo`, which counts them as `cpus`);
//! - a bridge exists when `/sys/class/net/<name>` does, and is a Linux bridge when it has a
//!   `bridge/` directory (pve-common `src/PVE/Network.pm` `is_linux_bridge`: `-l
//!   /sys/class/net/$name`, then `-d …/bridge`); anything else may still be an Open vSwitch
//!   bridge, which only `ovs-vsctl br-exists` can tell;
//! - storages are `pvesm status` rows (pve-storage `src/PVE/CLI/pvesm.pm` `$print_status`, at
//!   0c56bad: `Name Type Status Total Used Available %`, sizes in KiB; `(KiB)` in the headings
//!   since libpve-storage-perl 9.0.14); volumes are read with
//!   [`super::pve::parse_volume_list`];
//! - guests other than containers: `/etc/pve/qemu-server/<vmid>.conf` (this node's VMs) and
//!   `/etc/pve/nodes/<node>/{lxc,qemu-server}/<vmid>.conf` (every node of a cluster: pmxcfs
//!   keeps each node's guests there, and `/etc/pve/lxc` is this node's `nodes/<node>/lxc`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{HostError, Result};
use crate::types::Vmid;

/// The size of a host, from procfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Resources {
    /// `MemTotal` in KiB.
    pub memory_kib: u64,
    /// Logical CPUs (`processor` lines).
    pub cpus: u32,
}

impl Resources {
    /// Memory in MiB.
    pub fn memory_mib(&self) -> u64 {
        self.memory_kib / 1024
    }
}

/// What sysfs says about a network interface name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetIface {
    /// No interface of that name.
    Missing,
    /// A Linux bridge (`/sys/class/net/<name>/bridge/` exists).
    LinuxBridge,
    /// An interface that is not a Linux bridge (a NIC, a bond, or an Open vSwitch bridge).
    Other,
}

/// One row of `pvesm status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageStatus {
    /// The storage id (`local-zfs`).
    pub name: String,
    /// Its type (`dir`, `zfspool`, `lvmthin`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// `active`, `inactive` or `disabled`.
    pub status: String,
    /// Size in KiB.
    pub total_kib: u64,
    /// Used KiB.
    pub used_kib: u64,
    /// Available KiB.
    pub available_kib: u64,
}

impl StorageStatus {
    /// Whether the storage is enabled and online.
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

/// Read `<proc_dir>/meminfo` and `<proc_dir>/cpuinfo`.
pub fn read_resources(proc_dir: &Path) -> Result<Resources> {
    let read = |name: &str| {
        let path = proc_dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| HostError::Io {
            action: "read",
            path,
            source,
        })
    };
    let meminfo = read("meminfo")?;
    let memory_kib = parse_meminfo(&meminfo).ok_or_else(|| HostError::Parse {
        command: proc_dir.join("meminfo").display().to_string(),
        message: "no `MemTotal: N kB` line".into(),
    })?;
    let cpus = parse_cpuinfo(&read("cpuinfo")?);
    if cpus == 0 {
        return Err(HostError::Parse {
            command: proc_dir.join("cpuinfo").display().to_string(),
            message: "no `processor : N` line".into(),
        });
    }
    Ok(Resources { memory_kib, cpus })
}

/// `MemTotal` in kB from `/proc/meminfo` text.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let mut it = rest.split_whitespace();
        let n = it.next()?.parse().ok()?;
        it.next()
            .filter(|u| u.eq_ignore_ascii_case("kB"))
            .map(|_| n)
    })
}

/// The number of `processor : N` lines in `/proc/cpuinfo` text.
pub fn parse_cpuinfo(text: &str) -> u32 {
    let count = text
        .lines()
        .filter(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("processor") && v.trim().parse::<u32>().is_ok()
            })
        })
        .count();
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// What `<sys_dir>/class/net/<name>` is. `name` must be a plain interface name (no `/`).
pub fn read_net_iface(sys_dir: &Path, name: &str) -> Result<NetIface> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(HostError::Device(format!(
            "{name:?} is not a network interface name"
        )));
    }
    let path = sys_dir.join("class/net").join(name);
    match std::fs::symlink_metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NetIface::Missing),
        Err(source) => {
            return Err(HostError::Io {
                action: "read",
                path,
                source,
            });
        }
    }
    Ok(if path.join("bridge").is_dir() {
        NetIface::LinuxBridge
    } else {
        NetIface::Other
    })
}

/// Rows of `pvesm status` output.
pub fn parse_pvesm_status(text: &str) -> std::result::Result<Vec<StorageStatus>, String> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next() {
        None => return Ok(Vec::new()),
        Some(h) if h.split_whitespace().next() == Some("Name") => {}
        Some(h) => {
            return Err(format!(
                "expected the `Name Type Status …` heading, got {h:?}"
            ));
        }
    }
    let mut out = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [name, kind, status, total, used, avail, ..] = f.as_slice() else {
            return Err(format!("expected 7 columns, got {l:?}"));
        };
        let num = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("expected a size in KiB, got {s:?} in {l:?}"))
        };
        out.push(StorageStatus {
            name: (*name).to_owned(),
            kind: (*kind).to_owned(),
            status: (*status).to_owned(),
            total_kib: num(total)?,
            used_kib: num(used)?,
            available_kib: num(avail)?,
        });
    }
    Ok(out)
}

/// A guest with id `vmid` that is not a container of this node: a VM of this node, or a
/// guest of any node of the cluster, read from the PVE config tree at `pve_dir`
/// (`/etc/pve`). Returns what it is, in words.
pub fn other_guest(pve_dir: &Path, vmid: Vmid) -> Option<String> {
    let file = format!("{vmid}.conf");
    if pve_dir.join("qemu-server").join(&file).exists() {
        return Some(format!("a virtual machine (/etc/pve/qemu-server/{file})"));
    }
    let nodes = pve_dir.join("nodes");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&nodes)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    for node in names {
        let name = node
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (dir, what) in [("lxc", "a container"), ("qemu-server", "a virtual machine")] {
            if node.join(dir).join(&file).exists() {
                return Some(format!(
                    "{what} on node {name} (/etc/pve/nodes/{name}/{dir}/{file})"
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_cpuinfo_as_the_kernel_prints_them() {
        // linux fs/proc/meminfo.c: the label padded to 16 columns, the value 8 wide, ` kB`.
        let mem = "MemTotal:       263855464 kB\nMemFree:        259113412 kB\n";
        assert_eq!(parse_meminfo(mem), Some(263_855_464));
        assert_eq!(parse_meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 12 MB\n"), None);
        // arch/x86/kernel/cpu/proc.c `show_cpuinfo`: `processor\t: N` opens each block.
        let cpu = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\n\
                   processor\t: 1\nvendor_id\t: AuthenticAMD\n\n";
        assert_eq!(parse_cpuinfo(cpu), 2);
        assert_eq!(parse_cpuinfo("vendor_id\t: x\n"), 0);
    }

    #[test]
    fn resources_name_the_file_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_resources(dir.path()).unwrap_err();
        assert!(
            matches!(&err, HostError::Io { path, .. } if path.ends_with("meminfo")),
            "{err:?}"
        );
        std::fs::write(dir.path().join("meminfo"), "MemTotal:  2048 kB\n").unwrap();
        std::fs::write(dir.path().join("cpuinfo"), "flags : x\n").unwrap();
        assert_eq!(
            read_resources(dir.path()).unwrap_err().to_string(),
            format!(
                "cannot parse the output of `{}`: no `processor : N` line",
                dir.path().join("cpuinfo").display()
            )
        );
        std::fs::write(dir.path().join("cpuinfo"), "processor : 0\n").unwrap();
        assert_eq!(
            read_resources(dir.path()).unwrap(),
            Resources {
                memory_kib: 2048,
                cpus: 1
            }
        );
    }

    #[test]
    fn bridges_are_told_from_other_interfaces() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("class/net");
        std::fs::create_dir_all(net.join("vmbr0/bridge")).unwrap();
        std::fs::create_dir_all(net.join("eno1")).unwrap();
        assert_eq!(
            read_net_iface(dir.path(), "vmbr0").unwrap(),
            NetIface::LinuxBridge
        );
        assert_eq!(read_net_iface(dir.path(), "eno1").unwrap(), NetIface::Other);
        assert_eq!(
            read_net_iface(dir.path(), "vmbr9").unwrap(),
            NetIface::Missing
        );
        assert_eq!(
            read_net_iface(dir.path(), "../x").unwrap_err().to_string(),
            "\"../x\" is not a network interface name"
        );
    }

    #[test]
    fn pvesm_tables_parse_with_and_without_units() {
        let old = "Name         Type     Status           Total            Used       Available        %\n\
                   local         dir     active        98497780        12582912        85914868   12.77%\n\
                   nfs           nfs   disabled               0               0               0      N/A\n";
        let rows = parse_pvesm_status(old).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "local");
        assert_eq!(rows[0].available_kib, 85_914_868);
        assert!(rows[0].is_active());
        assert!(!rows[1].is_active());
        let new = "Name Type Status Total (KiB) Used (KiB) Available (KiB) %\n\
                   local-zfs zfspool active 942931968 104857600 838074368 11.12%\n";
        let rows = parse_pvesm_status(new).unwrap();
        assert_eq!(rows[0].kind, "zfspool");
        assert_eq!(rows[0].total_kib, 942_931_968);
        assert_eq!(
            parse_pvesm_status("Name Type\nlocal dir\n").unwrap_err(),
            "expected 7 columns, got \"local dir\""
        );
        assert_eq!(
            parse_pvesm_status("storage 'x' does not exist\n").unwrap_err(),
            "expected the `Name Type Status …` heading, got \"storage 'x' does not exist\""
        );
    }

    #[test]
    fn other_guests_are_found_on_this_node_and_the_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let pve = dir.path();
        let v = |n| Vmid::new(n).unwrap();
        assert_eq!(other_guest(pve, v(901)), None);
        std::fs::create_dir_all(pve.join("qemu-server")).unwrap();
        std::fs::write(pve.join("qemu-server/901.conf"), "").unwrap();
        assert_eq!(
            other_guest(pve, v(901)).unwrap(),
            "a virtual machine (/etc/pve/qemu-server/901.conf)"
        );
        std::fs::create_dir_all(pve.join("nodes/pve2/lxc")).unwrap();
        std::fs::write(pve.join("nodes/pve2/lxc/902.conf"), "").unwrap();
        assert_eq!(
            other_guest(pve, v(902)).unwrap(),
            "a container on node pve2 (/etc/pve/nodes/pve2/lxc/902.conf)"
        );
    }
}

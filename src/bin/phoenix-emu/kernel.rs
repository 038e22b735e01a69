//! What the emulated host's kernel shows: `/proc/meminfo`, `/proc/cpuinfo` and the network
//! interfaces under `/sys/class/net`, made at every boot from the root's settings
//! (`memory_mib`, `cpus`, `bridges`), as a real kernel shows its hardware and the bridges
//! `ifupdown2` brought up. phoenix reads these files (never writes them); a test changes the
//! settings before the host's first call, or reboots it (`systemctl reboot`).
//!
//! Formats, from the kernel's sources (torvalds/linux, v6.8, the Proxmox VE 8 kernel):
//! - `fs/proc/meminfo.c` `meminfo_proc_show` → `show_val_kb`: a label padded to 16 columns,
//!   the value right-aligned in 8, then ` kB`. `MemTotal` is the settings' memory exactly
//!   (a real kernel reports a little less than the DIMMs: firmware and kernel reserve some);
//!   nothing runs on the emulated host, so `MemAvailable` is close to it.
//! - `arch/x86/kernel/cpu/proc.c` `show_cpuinfo`: one block per logical CPU opened by
//!   `processor\t: N`, `key\t: value` lines, a blank line after each block. One socket; two
//!   threads per core.
//! - `/sys/class/net/<name>` is a symlink into `/sys/devices` (`net/core/net-sysfs.c`
//!   registers each netdev in the `net` class): `devices/virtual/net/<name>` for software
//!   interfaces (`lo`, bridges), `devices/pci…/net/<name>` for the NIC. A bridge's directory
//!   holds `bridge/` (`net/bridge/br_sysfs_br.c`, with `vlan_filtering`); every interface
//!   has `mtu`. pve-common reads exactly these (`src/PVE/Network.pm` `is_linux_bridge`,
//!   `read_bridge_mtu`, at f665029).
//!
//! The host always has `lo` and one NIC, `eno1`, the port of the first bridge (the Proxmox
//! VE installer bridges the NIC it installed over into `vmbr0`).

use std::path::Path;

use crate::root::{Root, RootError};

/// The host's NIC (the first bridge's port).
pub const NIC: &str = "eno1";
/// Where the NIC sits in `/sys/devices`.
const NIC_DEVICE: &str = "devices/pci0000:00/0000:00:03.0";

/// Make `/proc/{meminfo,cpuinfo}` and `/sys/class/net` from the settings (at boot).
pub fn boot(root: &Root) -> Result<(), RootError> {
    let s = &root.settings;
    write(root, "proc/meminfo", &meminfo(s.memory_mib))?;
    write(root, "proc/cpuinfo", &cpuinfo(s.cpus))?;
    net(root)
}

fn write(root: &Root, rel: &str, text: &str) -> Result<(), RootError> {
    crate::root::atomic_write(&root.join(rel), text.as_bytes())
}

/// `/proc/meminfo` of a host with `mib` MiB and nothing running.
pub fn meminfo(mib: u64) -> String {
    let total = mib * 1024;
    let line = |label: &str, kb: u64| format!("{:<16}{kb:>8} kB\n", format!("{label}:"));
    [
        line("MemTotal", total),
        line("MemFree", total / 100 * 98),
        line("MemAvailable", total / 100 * 97),
        line("Buffers", 2_048),
        line("Cached", total / 100),
        line("SwapCached", 0),
        line("SwapTotal", 8_388_604),
        line("SwapFree", 8_388_604),
    ]
    .concat()
}

/// `/proc/cpuinfo` of a host with `n` logical CPUs.
pub fn cpuinfo(n: u32) -> String {
    let cores = n.div_ceil(2).max(1);
    (0..n)
        .map(|i| {
            format!(
                "processor\t: {i}\n\
                 vendor_id\t: AuthenticAMD\n\
                 cpu family\t: 25\n\
                 model\t\t: 1\n\
                 model name\t: AMD EPYC 7543 32-Core Processor\n\
                 physical id\t: 0\n\
                 siblings\t: {n}\n\
                 core id\t\t: {}\n\
                 cpu cores\t: {cores}\n\
                 \n",
                i % cores
            )
        })
        .collect()
}

/// An interface name the kernel accepts (`dev_valid_name`: 1–15 bytes, no `/`, `:` or
/// whitespace, not `.` or `..`).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// `/sys/class/net` and the device directories behind it, rebuilt.
fn net(root: &Root) -> Result<(), RootError> {
    for rel in ["class/net", "devices/virtual/net", NIC_DEVICE] {
        let p = root.join("sys").join(rel);
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| RootError::io("remove", &p, e))?;
        }
    }
    let class = root.join("sys/class/net");
    std::fs::create_dir_all(&class).map_err(|e| RootError::io("create", &class, e))?;
    let mut ifaces: Vec<(String, String, bool)> = vec![
        ("lo".into(), "devices/virtual/net/lo".into(), false),
        (NIC.into(), format!("{NIC_DEVICE}/net/{NIC}"), false),
    ];
    for b in &root.settings.bridges {
        if !valid_name(b) || ifaces.iter().any(|(n, _, _)| n == b) {
            return Err(RootError::io(
                "make the bridge (invalid or duplicate interface name) named in",
                &root.join("emu.json"),
                std::io::ErrorKind::InvalidInput.into(),
            ));
        }
        ifaces.push((b.clone(), format!("devices/virtual/net/{b}"), true));
    }
    for (name, dev, bridge) in &ifaces {
        let dir = root.join("sys").join(dev);
        std::fs::create_dir_all(&dir).map_err(|e| RootError::io("create", &dir, e))?;
        let mtu = if name == "lo" { "65536\n" } else { "1500\n" };
        file(&dir.join("mtu"), mtu)?;
        if *bridge {
            let br = dir.join("bridge");
            std::fs::create_dir_all(&br).map_err(|e| RootError::io("create", &br, e))?;
            file(&br.join("vlan_filtering"), "0\n")?;
        }
        let link = class.join(name);
        std::os::unix::fs::symlink(Path::new("../..").join(dev), &link)
            .map_err(|e| RootError::io("link", &link, e))?;
    }
    Ok(())
}

fn file(path: &Path, text: &str) -> Result<(), RootError> {
    std::fs::write(path, text).map_err(|e| RootError::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_lines_have_the_kernels_columns() {
        let m = meminfo(262_144);
        assert!(m.starts_with("MemTotal:       268435456 kB\n"), "{m}");
        assert!(meminfo(1).starts_with("MemTotal:           1024 kB\n"));
    }

    #[test]
    fn cpuinfo_has_one_block_per_cpu() {
        let c = cpuinfo(4);
        assert_eq!(c.matches("processor\t: ").count(), 4);
        assert!(c.contains("processor\t: 3\n"));
        assert!(c.ends_with("\n\n"));
    }

    #[test]
    fn interface_names_follow_the_kernel() {
        assert!(valid_name("vmbr0"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
        assert!(!valid_name("vmbr0123456789ab"));
        assert!(!valid_name(".."));
    }
}

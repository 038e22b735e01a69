//! Setting up the emulated Proxmox host (DESIGN.md §7) for `--host emulated`.

use super::Result;
use super::pve::PvePaths;
use crate::settings::Settings;

/// Prepare the emulated host's root (idempotent) and return the PVE paths pointing into it.
pub fn prepare(settings: &Settings) -> Result<PvePaths> {
    let root = settings.emu_root.value.clone();
    let bin = root.join("bin");
    Ok(PvePaths {
        pct: bin.join("pct"),
        pvesm: bin.join("pvesm"),
        pveversion: bin.join("pveversion"),
        zfs: bin.join("zfs"),
        nvidia_smi: bin.join("nvidia-smi"),
        lxc_dir: root.join("etc/pve/lxc"),
        dev_dir: root.join("dev"),
        lock_dir: root.join("run/lock/lxc"),
        backup_dir: settings.state_dir.value.join("backups"),
    })
}

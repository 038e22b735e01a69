//! The Proxmox VE backend: `pct`, `pvesm`, `pveversion`, `zfs`, `nvidia-smi` by absolute
//! path, through the one runner.

use std::path::PathBuf;
use std::sync::Arc;

use crate::exec::Runner;
use crate::settings::Settings;

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
    /// `/etc/pve/lxc`.
    pub lxc_dir: PathBuf,
    /// `/dev`.
    pub dev_dir: PathBuf,
    /// PVE's config lock directory (`/run/lock/lxc`).
    pub lock_dir: PathBuf,
    /// Where phoenix keeps config backups (`$PHOENIX_STATE_DIR/backups`).
    pub backup_dir: PathBuf,
}

impl PvePaths {
    /// The paths of a real PVE node, from settings.
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            pct: s.tool("pct"),
            pvesm: s.tool("pvesm"),
            pveversion: s.tool("pveversion"),
            zfs: s.tool("zfs"),
            nvidia_smi: s.tool("nvidia-smi"),
            lxc_dir: s.pve_lxc_dir.value.clone(),
            dev_dir: s.dev_dir.value.clone(),
            lock_dir: PathBuf::from("/run/lock/lxc"),
            backup_dir: s.state_dir.value.join("backups"),
        }
    }
}

/// The PVE backend.
pub struct PveHost {
    paths: PvePaths,
    runner: Arc<dyn Runner>,
}

impl PveHost {
    /// A backend with `paths`, running commands through `runner`.
    pub fn new(paths: PvePaths, runner: Arc<dyn Runner>) -> Self {
        Self { paths, runner }
    }
}

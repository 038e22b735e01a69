//! The host preflight: `phoenix doctor`, also run by `phoenix up` before anything is
//! touched (issue 14).
//!
//! [`check`] asks the host, read-only, whether it can take the selected config entries and
//! returns a [`Report`] of [`Finding`]s, each with a [`Severity`], what it found and, when
//! something is wrong, how to fix it (the command to run, or the config field to change).
//! It never changes anything: every question is a read-only [`Host`] query (`pveversion`,
//! `pvesm status|list`, `nvidia-smi`, `zfs get|list`) or a file read (procfs, sysfs,
//! `/dev`, `/etc/pve`). Callers pass a host whose runner refuses mutating commands
//! (`phoenix doctor` does); the integration tests also read the emulator's `argv.log`.
//!
//! The checks, in order ([`checks`]):
//! 1. **proxmox**: `pct`, `pvesm`, `pveversion` exist and the version parses. On a host
//!    without `pct` nothing else is asked: the one finding says to install phoenix on a
//!    Proxmox VE node or to try it with `--host emulated`.
//! 2. **vmid**: each entry's id is free (no container, no VM, no guest of another cluster
//!    node) or a container phoenix created (then it is reused and needs no template,
//!    storage room or creation).
//! 3. **storage**: each storage named by an entry still to be created exists, is active,
//!    holds container disks (`rootdir` content), and has room for the entries' disks
//!    (the sum of their `storage_size_gb` against its available space).
//! 4. **template**: each template of an entry still to be created is on its storage
//!    (`pvesm list STORAGE --content vztmpl`), or, as an absolute path, is a file.
//! 5. **bridge**: each entry's bridge exists and is a Linux bridge (sysfs); an interface
//!    that is not one may be an Open vSwitch bridge, a warning.
//! 6. **memory** and **cores**: the sum of the entries' `memory_mb` against the host's
//!    `MemTotal` (a warning above 80 %, an error above 100 %), their `cores` against its
//!    CPUs (a warning: CPU time is shared, and a container asking for more cores than the
//!    host has gets them all).
//! 7. **gpu**, **driver**, **device-nodes** (only when an entry names GPUs): `nvidia-smi`
//!    answers (the driver is loaded), every GPU an entry names exists, and the device nodes
//!    `gpu.attach` passes through exist. The nodes `nvidia-modprobe` makes lazily
//!    (`nvidia-uvm`, `nvidia-uvm-tools`, `nvidia-caps/*` with MIG: DESIGN.md §11) are a
//!    warning, not an error, when the host has `nvidia-modprobe`: `gpu.attach` installs
//!    `phoenix-nvidia-nodes.service`, which makes them before the container starts and at
//!    every boot.
//! 8. **models-dataset** (only when an entry runs vLLM): the models parent resolves
//!    ([`crate::datasets::resolve`]) and exists, or its pool exists, in which case
//!    `zfs.dataset` creates it and its missing ancestors, each owned by phoenix.
//!
//! Decisions: memory counts the selected entries against `MemTotal` (issue 14: a warning
//! over 80 %; the seed requirements say nothing more); other guests' memory is not
//! subtracted (a host's free memory moves, and PVE itself lets memory be overcommitted),
//! and a container that already exists still counts, since it will run.
//! Storage room counts only the entries still to be created. A check that cannot be
//! asked (a query failed) is an error naming the query, since the preflight cannot vouch
//! for the host then; a backend that cannot answer a question at all (the plain `lxc`
//! backend has no storages) skips it.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::host::Host;
use crate::settings::{HostKind, Settings};
use crate::types::Vmid;

mod checks;
#[cfg(test)]
mod tests;

/// The version of the `--json` document.
pub const JSON_VERSION: u32 = 1;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Checked and fine.
    Ok,
    /// Works, but worth knowing (over 80 % of memory, lazily made device nodes).
    Warning,
    /// phoenix would fail on this host as it is: `up` stops before touching anything.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// Which question a finding answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Proxmox VE's tools and version.
    Proxmox,
    /// The container id is free or phoenix's.
    Vmid,
    /// The storage exists, is active, holds container disks and has room.
    Storage,
    /// The OS template is there.
    Template,
    /// The network bridge exists.
    Bridge,
    /// Memory asked for against the host's.
    Memory,
    /// Cores asked for against the host's CPUs.
    Cores,
    /// The NVIDIA driver answers.
    Driver,
    /// The GPUs an entry names exist.
    Gpu,
    /// The NVIDIA device nodes exist.
    DeviceNodes,
    /// The models parent dataset exists or can be created.
    ModelsDataset,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Proxmox => "proxmox",
            Self::Vmid => "vmid",
            Self::Storage => "storage",
            Self::Template => "template",
            Self::Bridge => "bridge",
            Self::Memory => "memory",
            Self::Cores => "cores",
            Self::Driver => "driver",
            Self::Gpu => "gpu",
            Self::DeviceNodes => "device-nodes",
            Self::ModelsDataset => "models-dataset",
        })
    }
}

/// One answer of the preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The question.
    pub check: Check,
    /// How bad.
    pub severity: Severity,
    /// The config entry it is about, when it is about one.
    pub vmid: Option<Vmid>,
    /// What it is about (`local-zfs`, `vmbr1`, `/dev/nvidia-uvm`), when it is a thing.
    pub subject: Option<String>,
    /// What was found, in words.
    pub message: String,
    /// How to fix it: the command to run or the field to change; `None` when fine.
    pub fix: Option<String>,
}

impl Finding {
    fn new(check: Check, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            check,
            severity,
            vmid: None,
            subject: None,
            message: message.into(),
            fix: None,
        }
    }

    fn ok(check: Check, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Ok, message)
    }

    fn warning(check: Check, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Warning, message)
    }

    fn error(check: Check, message: impl Into<String>) -> Self {
        Self::new(check, Severity::Error, message)
    }

    fn vmid(mut self, vmid: Vmid) -> Self {
        self.vmid = Some(vmid);
        self
    }

    fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// Everything the preflight found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The backend asked.
    pub host: HostKind,
    /// The config file.
    pub config: PathBuf,
    /// The entries checked.
    pub containers: Vec<Vmid>,
    /// Every finding, in check order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The findings of `severity`.
    pub fn with(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity == severity)
    }

    /// How many errors.
    pub fn errors(&self) -> usize {
        self.with(Severity::Error).count()
    }

    /// How many warnings.
    pub fn warnings(&self) -> usize {
        self.with(Severity::Warning).count()
    }

    /// Whether phoenix may go on (no error).
    pub fn passed(&self) -> bool {
        self.errors() == 0
    }

    /// The error that stops a command when the preflight failed (exit 2), `None` when it
    /// passed.
    pub fn failure(&self) -> Option<crate::Error> {
        (!self.passed()).then(|| crate::Error::Preflight {
            errors: self.errors(),
            warnings: self.warnings(),
        })
    }

    /// The report for a person: one line per finding (`all`: the passed checks too, else
    /// only warnings and errors), the fix under each, then a summary line.
    pub fn render(&self, all: bool) -> String {
        let mut out = String::new();
        let ids: Vec<String> = self.containers.iter().map(ToString::to_string).collect();
        out.push_str(&format!(
            "host preflight: {} host, {} (containers {})\n",
            self.host,
            self.config.display(),
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        ));
        let width = self
            .findings
            .iter()
            .map(|f| f.check.to_string().len())
            .max()
            .unwrap_or(0);
        for f in &self.findings {
            if !all && f.severity == Severity::Ok {
                continue;
            }
            let about = f.vmid.map(|v| format!("{v}: ")).unwrap_or_default();
            out.push_str(&format!(
                "  {:<7}  {:<width$}  {about}{}\n",
                f.severity.to_string(),
                f.check.to_string(),
                f.message
            ));
            if let Some(fix) = &f.fix {
                out.push_str(&format!("  {:<7}  {:<width$}  fix: {fix}\n", "", ""));
            }
        }
        let (e, w) = (self.errors(), self.warnings());
        out.push_str(&match (e, w) {
            (0, 0) => "passed: this host can take these containers\n".to_owned(),
            (0, w) => format!("passed with {w} warning(s)\n"),
            (e, w) => format!(
                "{e} error(s), {w} warning(s): nothing was changed; fix the errors and run `phoenix doctor` again\n"
            ),
        });
        out
    }

    /// The `--json` document (see docs/json.md).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": JSON_VERSION,
            "ok": self.passed(),
            "host": self.host,
            "config": self.config,
            "containers": self.containers,
            "errors": self.errors(),
            "warnings": self.warnings(),
            "findings": self.findings,
        })
    }
}

/// Check whether `host` can take the entries `selection` of `config` (empty: every
/// entry), read-only. Never fails: a question that cannot be answered is an error
/// finding.
pub fn check(settings: &Settings, config: &Config, selection: &[Vmid], host: &dyn Host) -> Report {
    let containers: Vec<Vmid> = if selection.is_empty() {
        config.lxc.keys().copied().collect()
    } else {
        let mut s = selection.to_vec();
        s.sort();
        s.dedup();
        s
    };
    let entries: Vec<&crate::config::LxcConfig> =
        containers.iter().filter_map(|v| config.get(*v)).collect();
    let findings = checks::run(&checks::Ctx {
        settings,
        config,
        entries: &entries,
        host,
    });
    Report {
        host: host.kind(),
        config: config.path.clone(),
        containers,
        findings,
    }
}

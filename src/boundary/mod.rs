//! The boundary: what a recipe may touch (DESIGN.md §12). One choke point, owned by the
//! run's [`crate::runtime::Runtime`], that every primitive asks before it acts.
//!
//! Recipes are written by operators and reviewed less than code. Inside the containers it
//! was selected for a recipe may do anything (it is root there); it must not reach the
//! host or anything phoenix does not own. The rules, each a [`Rule`] named in every
//! refusal together with the call (`lxc.mount: refused by the boundary (host paths): …`):
//! - **Containers** ([`Boundary::container`]): changes (exec, push, mount, set, start,
//!   stop, GPUs, services, undo steps) only on config entries selected for this run, and
//!   only if phoenix created them (the `phoenix` tag) or the journal proves it (an
//!   outstanding `DestroyContainer` intent: a create interrupted before PVE wrote the tag).
//!   Read-only queries (status, address) on any phoenix-owned entry of the loaded config.
//!   Never a container outside the config.
//! - **Datasets** ([`datasets`]): only strictly below the configured models parent, created
//!   by phoenix; properties from an allow-list.
//! - **Host paths** ([`paths`]): bind mounts only from phoenix-owned datasets or from
//!   directories inside the mount roots listed in settings (default none), canonicalised,
//!   never a protected host, PVE or phoenix directory.
//! - **Network** ([`net`]): `http.probe` and the readiness ladder only to the address the
//!   host reports for a phoenix-owned container of the config.
//! - **Shell** ([`argv`]): no shell as argv\[0\]; in `--dry-run` only the built-in read-only
//!   probes run.
//! - **Values** ([`values`]): file modes, control characters in secrets written into line
//!   formats, bidi/invisible characters in unit files; dataset names that a long host name
//!   would push past ZFS's limit ([`Boundary::preflight`], before anything is created).
//! - **Limits** ([`limits`]): the script's CPU time and memory, input file sizes and
//!   types.
//! - **Undo steps** are checked when a recipe pushes one ([`Boundary::undo_push`]) and again
//!   when `destroy` or a rollback carries one out ([`undo_may_run`]): a journal edited by
//!   hand cannot run a command in a foreign container either.
//!
//! The boundary sits below `api/` and `script/` and imports neither. It is a view over the
//! run's state (config, selection, settings, host, journal), all `Send + Sync`, so several
//! runs in one process (`phoenix up`) each ask their own.
//!
//! Static checks come first, so a refused call issues no host command at all; ownership
//! then asks the host read-only (`<vmid>.conf`, `zfs get`, the container's address).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::config::Config;
use crate::host::{CtConfig, CtStatus, Host, HostError};
use crate::journal::{Journal, Outstanding, UndoStep};
use crate::types::{AbsPath, DatasetName, PropKey, PropValue, Vmid};

pub mod argv;
pub mod datasets;
pub mod limits;
pub mod net;
pub mod paths;
pub mod values;

/// The models parent known without asking the host: the setting `models_dataset` (or
/// what `recipe run` resolved into it), else the config's `models_dataset`
/// ([`crate::datasets::configured`]).
pub fn known_models_parent(
    settings: &crate::settings::Settings,
    config: &Config,
) -> Option<DatasetName> {
    crate::datasets::configured(settings, Some(config))
        .value
        .map(|p| p.dataset())
}

/// phoenix's own directories (state, secrets, key, logs, markers, PVE's container
/// configs), which no bind mount may expose.
pub fn own_dirs(s: &crate::settings::Settings) -> Vec<PathBuf> {
    let mut dirs = vec![
        s.state_dir.value.clone(),
        s.secrets_dir.value.clone(),
        s.log_dir.value.clone(),
        s.marker_dir.value.clone(),
        s.pve_lxc_dir.value.clone(),
    ];
    dirs.extend(
        s.secret_key
            .value
            .parent()
            .map(std::path::Path::to_path_buf),
    );
    dirs
}

/// Which rule of DESIGN.md §12 refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The container is not an entry of the loaded config, or not selected for this run.
    Selection,
    /// The container or dataset exists but phoenix did not create it.
    Ownership,
    /// The dataset is not below the models parent (or not a dataset name).
    Datasets,
    /// A dataset property outside the allow-list.
    DatasetProperties,
    /// A bind mount source outside the mount roots or inside a protected directory.
    HostPaths,
    /// A URL that is not a phoenix-owned container's address.
    Network,
    /// A shell, an empty argv or NUL in argv.
    Shell,
    /// A mode, secret or unit-file value that cannot be written safely.
    Values,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Selection => "container selection",
            Self::Ownership => "ownership",
            Self::Datasets => "datasets",
            Self::DatasetProperties => "dataset properties",
            Self::HostPaths => "host paths",
            Self::Network => "network",
            Self::Shell => "shell",
            Self::Values => "values",
        })
    }
}

/// A call the boundary refused: which call, which rule, and what exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call}: refused by the boundary ({rule}): {detail}")]
pub struct Refusal {
    /// The primitive (`lxc.mount`).
    pub call: &'static str,
    /// The rule.
    pub rule: Rule,
    /// What was refused and what is allowed instead.
    pub detail: String,
}

impl Refusal {
    /// A refusal of `call` under `rule`.
    pub fn new(call: &'static str, rule: Rule, detail: impl Into<String>) -> Self {
        Self {
            call,
            rule,
            detail: detail.into(),
        }
    }
}

/// What asking the boundary can end in: a refusal, or the host failing to answer.
#[derive(Debug, thiserror::Error)]
pub enum BoundaryError {
    /// The boundary refused the call.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The host could not answer an ownership question.
    #[error(transparent)]
    Host(#[from] HostError),
}

/// What a primitive wants to do with a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create it (`lxc.create`): selected; absent, or phoenix's.
    Create,
    /// Change it or run something in it: selected and phoenix's.
    Change,
    /// Read its status or address: in the config and phoenix's (or absent).
    Read,
}

/// Where a bind mount comes from ([`Boundary::mount_source`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSource {
    /// The host path written into the container's config.
    pub path: AbsPath,
    /// The phoenix dataset mounted there, when the source is one (a plain host path below
    /// a mount root is not).
    pub dataset: Option<DatasetName>,
}

/// The boundary of one run: a view over its config, selection, settings, host and journal.
pub struct Boundary<'a> {
    /// The loaded config.
    pub config: &'a Config,
    /// The entries selected for this run (`--lxc`, else the default target; may be empty).
    pub selected: Vec<Vmid>,
    /// Datasets are created and mounted only below this one; `None` until known (then it
    /// is derived from the host's one pool when a dataset rule needs it).
    pub models_parent: Option<DatasetName>,
    /// The mount roots and the protected directories, resolved when a rule first needs
    /// them.
    pub paths: HostPaths,
    /// The host, for ownership questions.
    pub host: &'a dyn Host,
    /// The journal, whose intents prove what phoenix created.
    pub journal: &'a Journal,
    /// `--dry-run`: containers of earlier recorded steps do not exist yet.
    pub dry_run: bool,
}

impl std::fmt::Debug for Boundary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Boundary")
            .field("selected", &self.selected)
            .field("models_parent", &self.models_parent)
            .field("paths", &self.paths)
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// The host directories of the path rule ([`paths`]): the mount roots bind mounts may come
/// from and the protected directories, phoenix's own included. Resolving them canonicalises
/// a few dozen paths on the host, and most primitive calls never need them: they are
/// resolved on the first question, once per [`Boundary`].
pub struct HostPaths {
    own: Vec<PathBuf>,
    roots: Vec<PathBuf>,
    resolved: OnceLock<(Vec<PathBuf>, Vec<PathBuf>)>,
}

impl HostPaths {
    /// Protected: the built-in directories and `own` (phoenix's, [`own_dirs`]); mount
    /// roots: those of `roots` (settings) that resolve and touch nothing protected.
    pub fn new(own: Vec<PathBuf>, roots: Vec<PathBuf>) -> Self {
        Self {
            own,
            roots,
            resolved: OnceLock::new(),
        }
    }

    fn resolved(&self) -> &(Vec<PathBuf>, Vec<PathBuf>) {
        self.resolved.get_or_init(|| {
            let protected = paths::protected_set(&self.own);
            let roots = self
                .roots
                .iter()
                .filter_map(|r| paths::check_roots(std::slice::from_ref(r), &protected).ok())
                .flatten()
                .collect();
            (protected, roots)
        })
    }

    /// Protected directories ([`paths::protected_set`]), phoenix's own included.
    pub fn protected(&self) -> &[PathBuf] {
        &self.resolved().0
    }

    /// Canonical directories bind mounts may come from (settings; default none).
    pub fn mount_roots(&self) -> &[PathBuf] {
        &self.resolved().1
    }
}

impl std::fmt::Debug for HostPaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPaths")
            .field("own", &self.own)
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

fn ids(vmids: impl Iterator<Item = Vmid>) -> String {
    let v: Vec<String> = vmids.map(|v| v.to_string()).collect();
    if v.is_empty() {
        "none".to_owned()
    } else {
        v.join(", ")
    }
}

/// Whether the outstanding steps prove that phoenix created container `vmid` (an intent
/// to destroy it was written before `pct create` ran, and not undone since).
pub fn proves_created(outstanding: &[Outstanding], vmid: Vmid) -> bool {
    outstanding
        .iter()
        .any(|o| matches!(o.undo, UndoStep::DestroyContainer { vmid: v, .. } if v == vmid))
}

impl Boundary<'_> {
    /// Whether the journal proves phoenix created `vmid` (read only when asked: the tag is
    /// the usual proof).
    fn journal_proves(&self, vmid: Vmid) -> bool {
        let records = if self.journal.path() == std::path::Path::new("(dry run)") {
            self.journal.memory()
        } else {
            crate::journal::read(self.journal.path()).unwrap_or_default()
        };
        proves_created(&crate::journal::outstanding(&records), vmid)
    }

    /// May `call` do `access` to container `vmid`? Returns its config when it exists.
    pub fn container(
        &self,
        call: &'static str,
        vmid: Vmid,
        access: Access,
    ) -> Result<Option<CtConfig>, BoundaryError> {
        if self.config.get(vmid).is_none() {
            return Err(Refusal::new(
                call,
                Rule::Selection,
                format!(
                    "container {vmid} is not an entry of {} (entries: {}): a recipe reaches only the containers of its config",
                    self.config.path.display(),
                    ids(self.config.lxc.keys().copied())
                ),
            )
            .into());
        }
        if access != Access::Read && !self.selected.contains(&vmid) {
            return Err(Refusal::new(
                call,
                Rule::Selection,
                format!(
                    "container {vmid} is not selected for this run (selected: {}): a recipe changes only the entries it serves; select it with --lxc {vmid}",
                    ids(self.selected.iter().copied())
                ),
            )
            .into());
        }
        match self.host.ct_config(vmid)? {
            Some(conf) if conf.is_owned() || self.journal_proves(vmid) => Ok(Some(conf)),
            Some(_) => Err(Refusal::new(
                call,
                Rule::Ownership,
                format!(
                    "container {vmid} exists but phoenix did not create it (no `phoenix` tag, no journal record of its creation): phoenix never touches a container it does not own"
                ),
            )
            .into()),
            None => match access {
                Access::Create | Access::Read => Ok(None),
                // In a dry run the container of an earlier (recorded) step does not exist.
                Access::Change if self.dry_run => Ok(None),
                Access::Change => Err(HostError::NoSuchContainer(vmid).into()),
            },
        }
    }

    /// The models parent ([`crate::datasets`]): known, or derived from the host's pools.
    pub fn models_parent(&self, call: &'static str) -> Result<DatasetName, BoundaryError> {
        if let Some(p) = &self.models_parent {
            return Ok(p.clone());
        }
        let pools = self.host.zfs_pools()?;
        crate::datasets::derive(&pools)
            .map(|p| p.dataset())
            .map_err(|found| {
                Refusal::new(
                    call,
                    Rule::Datasets,
                    format!(
                        "no models dataset is set and {found}: set `models_dataset` in the config or the settings; datasets are created and mounted only below it"
                    ),
                )
                .into()
            })
    }

    /// Check the name of a dataset `call` creates (the models parent or below it).
    pub fn dataset_name(
        &self,
        call: &'static str,
        name: &str,
    ) -> Result<DatasetName, BoundaryError> {
        let parent = self.models_parent(call)?;
        Ok(datasets::check_name(call, name, &parent, true)?)
    }

    /// Check the properties a recipe asks for (allow-list).
    pub fn dataset_props(
        &self,
        call: &'static str,
        props: &[(PropKey, PropValue)],
    ) -> Result<(), Refusal> {
        datasets::check_props(call, props)
    }

    /// The host path of a bind mount `source` (a dataset name or an absolute host path).
    /// A dataset must be below the models parent and phoenix's; a path inside a mount
    /// root and nowhere protected. Returns the path written into the container's config,
    /// and the dataset when the source is one of phoenix's (by name or by mountpoint).
    pub fn mount_source(
        &self,
        call: &'static str,
        source: &str,
    ) -> Result<MountSource, BoundaryError> {
        let as_abs = |p: String| {
            AbsPath::new(p).map_err(|e| Refusal::new(call, Rule::HostPaths, e.to_string()))
        };
        if source.starts_with('/') {
            if let Some(found) = self.dataset_mountpoint(call, source)? {
                return Ok(found);
            }
            let real = paths::check_host_path(
                call,
                source,
                self.paths.mount_roots(),
                self.paths.protected(),
            )?;
            return Ok(MountSource {
                path: as_abs(real.display().to_string())?,
                dataset: None,
            });
        }
        self.dataset_source(call, source)
    }

    /// A host path that is the mountpoint `zfs.dataset` returned for a phoenix-owned
    /// dataset below the models parent (ZFS's default mountpoint `/<name>`, inherited
    /// from the pool): that dataset's mountpoint, else `None` (the path rule applies).
    fn dataset_mountpoint(
        &self,
        call: &'static str,
        source: &str,
    ) -> Result<Option<MountSource>, BoundaryError> {
        let lex = paths::lexical(std::path::Path::new(source));
        if let Some(p) = paths::protected_by(&lex, self.paths.protected()) {
            return Err(Refusal::new(
                call,
                Rule::HostPaths,
                format!(
                    "{} (resolved: {}) {}; a container must never see the host's system, Proxmox VE's or phoenix's own files",
                    crate::types::show(source),
                    lex.display(),
                    if p.as_os_str() == "/" {
                        "is the host's root directory".to_owned()
                    } else if lex.starts_with(p) {
                        format!("is inside the protected host directory {}", p.display())
                    } else {
                        format!("contains the protected host directory {}", p.display())
                    }
                ),
            )
            .into());
        }
        let Some(name) = lex
            .to_str()
            .and_then(|s| DatasetName::new(s.trim_start_matches('/')).ok())
        else {
            return Ok(None);
        };
        if !datasets::below(&name, &self.models_parent(call)?) {
            return Ok(None);
        }
        let source = match self.dataset_source(call, name.as_str()) {
            Ok(mp) => mp,
            // Not a phoenix dataset after all: the host path rule decides.
            Err(BoundaryError::Refused(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok((source.path.as_str() == lex.as_os_str()).then_some(source))
    }

    /// The mountpoint of dataset `source` (below the models parent, phoenix's).
    fn dataset_source(
        &self,
        call: &'static str,
        source: &str,
    ) -> Result<MountSource, BoundaryError> {
        let as_abs = |p: String| {
            AbsPath::new(p).map_err(|e| Refusal::new(call, Rule::HostPaths, e.to_string()))
        };
        let parent = self.models_parent(call)?;
        let ds = datasets::check_name(call, source, &parent, false)?;
        // Only a `phoenix:owner` the dataset sets itself counts: user properties inherit
        // ([`crate::ownership::dataset`]).
        let Some(local) = self.host.zfs_local_props(&ds)? else {
            if self.dry_run {
                // Created by an earlier (recorded) step: its mountpoint is a placeholder.
                return Ok(MountSource {
                    path: as_abs(format!("/{ds}"))?,
                    dataset: Some(ds),
                });
            }
            return Err(Refusal::new(
                call,
                Rule::Datasets,
                format!("dataset {ds} does not exist: create it with zfs.dataset first"),
            )
            .into());
        };
        if !datasets::owned(&local) {
            return Err(Refusal::new(
                call,
                Rule::Ownership,
                format!(
                    "dataset {ds} exists but has no `phoenix:owner` property of its own (an inherited one does not count): phoenix mounts only datasets it created"
                ),
            )
            .into());
        }
        let Some(mp) = self
            .host
            .zfs_mountpoint(&ds)?
            .filter(|m| m.starts_with('/'))
        else {
            return Err(Refusal::new(
                call,
                Rule::Datasets,
                format!("dataset {ds} has no mountpoint on the host"),
            )
            .into());
        };
        // Even a phoenix dataset's mountpoint (inherited from the parent) must not be a
        // protected directory.
        let lex = paths::lexical(std::path::Path::new(&mp));
        if let Some(p) = paths::protected_by(&lex, self.paths.protected()) {
            return Err(Refusal::new(
                call,
                Rule::HostPaths,
                format!(
                    "dataset {ds} is mounted at {mp}, which is or touches the protected host directory {}",
                    p.display()
                ),
            )
            .into());
        }
        Ok(MountSource {
            path: as_abs(lex.display().to_string())?,
            dataset: Some(ds),
        })
    }

    /// May a recipe record `step` with `undo.push`? Only a command for a container it may
    /// change, and never a shell.
    pub fn undo_push(&self, call: &'static str, step: &UndoStep) -> Result<(), BoundaryError> {
        match step {
            UndoStep::Exec { vmid, argv } => {
                argv::check_exec(call, argv)?;
                self.container(call, *vmid, Access::Change)?;
                Ok(())
            }
            other => Err(Refusal::new(
                call,
                Rule::Shell,
                format!("a recipe records only commands (`#{{ct, argv}}`), not {other:?}"),
            )
            .into()),
        }
    }

    /// May a request go to the IPv4 `url`? Its form must pass [`net::check_form`] and its
    /// address must be the one the host reports for a phoenix-owned container of the
    /// config. Returns the checked URL and the container it belongs to.
    pub fn network(
        &self,
        call: &'static str,
        url: &str,
    ) -> Result<(net::Checked, Vmid), BoundaryError> {
        let checked = net::check_form(call, url)?;
        let mut seen: Vec<String> = Vec::new();
        // The selected containers first: a recipe's requests go to its own containers, and
        // each other one asked costs host commands (`pct status`, `ip addr` in it): in a
        // `phoenix up` of N servers, config order would make every wait ask the addresses
        // of all containers before its own. The others are asked only when it is none of
        // these (to name whose address it is).
        let order = self
            .selected
            .iter()
            .filter_map(|v| self.config.lxc.get_key_value(v))
            .chain(
                self.config
                    .lxc
                    .iter()
                    .filter(|(v, _)| !self.selected.contains(v)),
            );
        for (vmid, entry) in order {
            let Some(conf) = self.host.ct_config(*vmid)? else {
                continue;
            };
            if !(conf.is_owned() || self.journal_proves(*vmid)) {
                continue;
            }
            if self.host.ct_status_known(*vmid)? != CtStatus::Running {
                continue;
            }
            let addr: Ipv4Addr = match self.host.ct_address(*vmid, entry.network.name.as_str()) {
                Ok(a) => a,
                Err(HostError::NoAddress { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            if addr == checked.addr {
                return Ok((checked, *vmid));
            }
            seen.push(format!("{vmid}: {addr}"));
        }
        if self.dry_run && checked.addr.is_unspecified() {
            // The placeholder address of a container a dry run has not created: nothing
            // connects in a dry run.
            if let Some(v) = self.selected.first() {
                return Ok((checked, *v));
            }
        }
        Err(Refusal::new(
            call,
            Rule::Network,
            format!(
                "{} is not the address of a running phoenix-owned container of {} (the host reports: {}): a recipe connects only to its own containers",
                checked.addr,
                self.config.path.display(),
                if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
            ),
        )
        .into())
    }
}

/// Checks on the selected entries that must pass before anything is created: the model
/// dataset a recipe makes for an entry (`<models parent>/<name>`) fits ZFS's 255-byte
/// limit (`ZFS_MAX_DATASET_NAME_LEN` is 256 with the NUL).
pub fn preflight(
    config: &Config,
    selected: &[Vmid],
    models_parent: &DatasetName,
) -> Result<(), Refusal> {
    for vmid in selected {
        let Some(entry) = config.get(*vmid) else {
            continue;
        };
        let name = format!("{models_parent}/{}", entry.name);
        if name.len() > 255 {
            return Err(Refusal::new(
                "preflight",
                Rule::Values,
                format!(
                    "the model dataset of container {vmid} would be {} bytes long ({}/<name>, name {} bytes): ZFS allows 255; shorten `name` or the models parent",
                    name.len(),
                    models_parent,
                    entry.name.as_str().len()
                ),
            ));
        }
    }
    Ok(())
}

/// May `destroy` or a rollback carry out `step`? Checked again at execution, since the
/// journal is a file: a command or change only in a container that is phoenix's (tag) or
/// whose creation the outstanding steps prove, and never a shell. `DestroyContainer`,
/// `DestroyDataset` and `RestoreDatasetOwner` check their own tags when executed.
pub fn undo_may_run(
    host: &dyn Host,
    step: &UndoStep,
    outstanding: &[Outstanding],
) -> Result<(), BoundaryError> {
    const CALL: &str = "undo";
    if let UndoStep::Exec { argv, .. } = step {
        argv::check_exec(CALL, argv)?;
    }
    let vmid = match step {
        UndoStep::DestroyContainer { .. }
        | UndoStep::DestroyDataset { .. }
        | UndoStep::RestoreDatasetOwner { .. } => return Ok(()),
        other => other.vmid(),
    };
    let Some(vmid) = vmid else { return Ok(()) };
    match host.ct_config(vmid)? {
        Some(conf) if !conf.is_owned() && !proves_created(outstanding, vmid) => Err(Refusal::new(
            CALL,
            Rule::Ownership,
            format!(
                "container {vmid} is not phoenix's (no `phoenix` tag, no journal record of its creation): its undo step is left alone"
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::exec::{CommandOutput, RecordingRunner};
    use crate::host::pve::{PveHost, PvePaths};

    const CONFIG: &str = include_str!("../../recipes/phoenix_lxc_configs.json");

    struct Fixture {
        config: Config,
        host: PveHost,
        runner: Arc<RecordingRunner>,
        journal: Journal,
        _dir: tempfile::TempDir,
    }

    /// CT 901 (phoenix's, running at 127.77.0.1), CT 902 (phoenix's), CT 100 (foreign;
    /// not in the config) and CT 903 when `foreign_in_config` (untagged) on a PVE backend
    /// whose `zfs get` answers for `tank/models/mine` (owned) and `tank/models/theirs`.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let lxc = dir.path().join("lxc");
        std::fs::create_dir_all(&lxc).unwrap();
        std::fs::write(
            lxc.join("901.conf"),
            "hostname: drdevstral\ntags: phoenix\n",
        )
        .unwrap();
        std::fs::write(lxc.join("902.conf"), "hostname: b\ntags: phoenix\n").unwrap();
        std::fs::write(lxc.join("100.conf"), "hostname: other\n").unwrap();
        let runner = Arc::new(RecordingRunner::new(|cmd| {
            let argv = cmd.argv();
            let out = |code: i32, text: &str| CommandOutput {
                code,
                stdout: text.as_bytes().to_vec(),
                stderr: Vec::new(),
            };
            let has = |w: &str| argv.iter().any(|a| a == w);
            if argv[0].ends_with("pveversion") {
                out(
                    0,
                    "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-4-pve)\n",
                )
            } else if has("status") {
                out(0, "status: running\n")
            } else if has("ip") {
                let ip = if has("901") {
                    "127.77.0.1"
                } else {
                    "127.77.0.2"
                };
                out(
                    0,
                    &format!(
                        r#"[{{"addr_info":[{{"family":"inet","local":"{ip}","prefixlen":8}}]}}]"#
                    ),
                )
            } else if has("tank/models/mine") && has("all") {
                out(
                    0,
                    "phoenix:owner\tphoenix\tlocal\nmountpoint\t/tank/models/mine\tlocal\n",
                )
            } else if has("tank/models/mine") {
                out(0, "/tank/models/mine\n")
            } else if has("tank/models/theirs") {
                out(0, "mountpoint\t/tank/models/theirs\tlocal\n")
            } else {
                out(1, "")
            }
        }));
        let paths = PvePaths::for_tests(lxc);
        let host = PveHost::new(paths, runner.clone());
        let mut text: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
        text["lxc_configs"]["903"] = text["lxc_configs"]["902"].clone();
        text["lxc_configs"]["903"]["name"] = "c".into();
        text["lxc_configs"]["903"]["network_config"]["ip"] = "10.0.0.113/24".into();
        std::fs::write(dir.path().join("lxc/903.conf"), "hostname: c\n").unwrap();
        let config = crate::config::load_str(Path::new("lxc.json"), &text.to_string()).unwrap();
        Fixture {
            config,
            host,
            runner,
            journal: Journal::in_memory("r1"),
            _dir: dir,
        }
    }

    fn boundary<'a>(f: &'a Fixture, selected: &[u64]) -> Boundary<'a> {
        Boundary {
            config: &f.config,
            selected: selected.iter().map(|v| Vmid::new(*v).unwrap()).collect(),
            models_parent: Some(DatasetName::new("tank/models").unwrap()),
            paths: HostPaths::new(Vec::new(), Vec::new()),
            host: &f.host,
            journal: &f.journal,
            dry_run: false,
        }
    }

    fn v(n: u64) -> Vmid {
        Vmid::new(n).unwrap()
    }

    fn refusal(e: BoundaryError) -> Refusal {
        match e {
            BoundaryError::Refused(r) => r,
            BoundaryError::Host(h) => panic!("host error {h}"),
        }
    }

    #[test]
    fn a_container_outside_the_config_is_refused_without_a_host_command() {
        let f = fixture();
        let b = boundary(&f, &[901]);
        for access in [Access::Read, Access::Change, Access::Create] {
            let r = refusal(b.container("lxc.exec", v(100), access).unwrap_err());
            assert_eq!(
                r.to_string(),
                "lxc.exec: refused by the boundary (container selection): container 100 is not an entry of lxc.json (entries: 901, 902, 903): a recipe reaches only the containers of its config"
            );
        }
        assert!(f.runner.calls().is_empty(), "{:?}", f.runner.calls());
    }

    #[test]
    fn changes_need_selection_and_ownership_reads_only_ownership() {
        let f = fixture();
        let b = boundary(&f, &[901]);
        b.container("lxc.exec", v(901), Access::Change)
            .unwrap()
            .unwrap();
        let r = refusal(b.container("lxc.push", v(902), Access::Change).unwrap_err());
        assert_eq!(r.rule, Rule::Selection);
        assert!(r.detail.ends_with("(selected: 901): a recipe changes only the entries it serves; select it with --lxc 902"), "{r}");
        // Reading another phoenix container of the config is allowed.
        b.container("lxc.address", v(902), Access::Read)
            .unwrap()
            .unwrap();
        // An untagged container of the config: neither read nor changed.
        let b = boundary(&f, &[903]);
        for access in [Access::Read, Access::Change, Access::Create] {
            let r = refusal(b.container("lxc.start", v(903), access).unwrap_err());
            assert_eq!(r.rule, Rule::Ownership, "{r}");
        }
    }

    #[test]
    fn the_journal_proves_an_interrupted_create() {
        let f = fixture();
        f.journal
            .intent(
                "lxc.create:903",
                UndoStep::DestroyContainer {
                    vmid: v(903),
                    storage: None,
                    volumes_before: Vec::new(),
                },
            )
            .unwrap();
        let b = boundary(&f, &[903]);
        b.container("lxc.start", v(903), Access::Change)
            .unwrap()
            .unwrap();
    }

    #[test]
    fn mount_sources_outside_the_parent_or_foreign_are_refused() {
        let f = fixture();
        let b = boundary(&f, &[901]);
        let r = refusal(
            b.mount_source("lxc.mount", "rpool/lxc-disks/subvol-100-disk-0")
                .unwrap_err(),
        );
        assert_eq!(r.rule, Rule::Datasets);
        let r = refusal(b.mount_source("lxc.mount", "/").unwrap_err());
        assert_eq!(r.rule, Rule::HostPaths);
        let r = refusal(b.mount_source("lxc.mount", "/etc/pve").unwrap_err());
        assert_eq!(r.rule, Rule::HostPaths);
        assert!(f.runner.calls().is_empty(), "{:?}", f.runner.calls());
        let r = refusal(
            b.mount_source("lxc.mount", "tank/models/theirs")
                .unwrap_err(),
        );
        assert_eq!(r.rule, Rule::Ownership, "{r}");
        assert_eq!(
            b.mount_source("lxc.mount", "tank/models/mine").unwrap(),
            MountSource {
                path: AbsPath::new("/tank/models/mine".to_owned()).unwrap(),
                dataset: Some(DatasetName::new("tank/models/mine").unwrap()),
            }
        );
    }

    #[test]
    fn undo_steps_are_checked_when_pushed_and_when_run() {
        let f = fixture();
        let b = boundary(&f, &[901]);
        let step = |n: u64, argv: &[&str]| UndoStep::Exec {
            vmid: v(n),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        };
        let r = refusal(
            b.undo_push("undo.push", &step(100, &["rm", "-rf", "/"]))
                .unwrap_err(),
        );
        assert_eq!(r.rule, Rule::Selection);
        let r = refusal(
            b.undo_push("undo.push", &step(901, &["sh", "-c", "x"]))
                .unwrap_err(),
        );
        assert_eq!(r.rule, Rule::Shell);
        b.undo_push("undo.push", &step(901, &["systemctl", "disable", "x"]))
            .unwrap();
        // At execution: a foreign container is left alone, a shell never runs.
        let r = refusal(undo_may_run(&f.host, &step(100, &["id"]), &[]).unwrap_err());
        assert_eq!(
            r.to_string(),
            "undo: refused by the boundary (ownership): container 100 is not phoenix's (no `phoenix` tag, no journal record of its creation): its undo step is left alone"
        );
        let r = refusal(undo_may_run(&f.host, &step(901, &["bash"]), &[]).unwrap_err());
        assert_eq!(r.rule, Rule::Shell);
        undo_may_run(&f.host, &step(901, &["systemctl", "disable", "x"]), &[]).unwrap();
        assert!(
            !f.runner
                .calls()
                .iter()
                .any(|c| c.argv().iter().any(|a| a == "exec")),
            "{:?}",
            f.runner.calls()
        );
    }

    /// A run's own (selected) containers are asked first: the address of 902, selected,
    /// is found without asking 901, earlier in the config, anything.
    #[test]
    fn network_asks_the_selected_containers_first() {
        let f = fixture();
        let b = boundary(&f, &[902]);
        let (_, vmid) = b
            .network("vllm.wait_ready", "http://127.77.0.2:8000/v1/models")
            .unwrap();
        assert_eq!(vmid, v(902));
        let asked: Vec<String> = f
            .runner
            .calls()
            .iter()
            .filter(|c| c.argv().iter().any(|a| a == "901"))
            .map(|c| c.argv().join(" "))
            .collect();
        assert_eq!(asked, [] as [String; 0]);
    }

    #[test]
    fn network_reaches_only_owned_containers_addresses() {
        let f = fixture();
        let b = boundary(&f, &[901]);
        let (c, vmid) = b
            .network("http.probe", "http://127.77.0.2:8000/health")
            .unwrap();
        assert_eq!((vmid, c.port), (v(902), 8000));
        let r = refusal(
            b.network("http.probe", "http://127.0.0.1:8000/")
                .unwrap_err(),
        );
        assert_eq!(
            r.to_string(),
            "http.probe: refused by the boundary (network): 127.0.0.1 is not the address of a running phoenix-owned container of lxc.json (the host reports: 901: 127.77.0.1, 902: 127.77.0.2): a recipe connects only to its own containers"
        );
        let before = f.runner.calls().len();
        let r = refusal(
            b.network("http.probe", "http://u:p@127.77.0.1/")
                .unwrap_err(),
        );
        assert_eq!(r.rule, Rule::Network);
        assert_eq!(
            f.runner.calls().len(),
            before,
            "a malformed URL asks the host nothing"
        );
    }

    #[test]
    fn preflight_catches_a_dataset_name_a_long_hostname_would_make() {
        let f = fixture();
        let long = DatasetName::new(format!("tank/{}", "m".repeat(240))).unwrap();
        let r = preflight(&f.config, &[v(901)], &long).unwrap_err();
        assert!(r.to_string().starts_with("preflight: refused by the boundary (values): the model dataset of container 901 would be 256 bytes long"), "{r}");
        preflight(
            &f.config,
            &[v(901)],
            &DatasetName::new("tank/models").unwrap(),
        )
        .unwrap();
    }
}

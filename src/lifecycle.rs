//! What happens around a run: rollback, `destroy`, `status`, markers and dry-run plans
//! (DESIGN.md §1, §6; seed REQ-003).
//!
//! - [`undo_outstanding`] carries out undo steps newest first through
//!   [`crate::api::undo::execute`], records `undone` for each one that is gone afterwards,
//!   continues past failures and reports every one. It serves `recipe run
//!   --rollback-on-failure` (this run's steps) and `phoenix destroy` (every run's, optionally
//!   filtered by container).
//! - Each step is undone on the host backend of the run that recorded it (the journal's
//!   `run` record), so a `destroy` after an emulated run drives the emulated host.
//! - A dataset that a container the journal records still mounts when its turn comes is
//!   left alone and stays outstanding (a model cache two servers share: `destroy --lxc`,
//!   or the rollback of a run whose dataset another run adopted meanwhile).
//! - A dataset that still has child datasets when its turn comes, all of them datasets the
//!   journal records for other containers (the models parent, when other containers' model
//!   datasets are below it), is left alone and stays outstanding: rolling back one container
//!   of a `phoenix up`, or `destroy --lxc` of one, never fails on the shared parent; a later
//!   `destroy` that finds it without children removes it. A child phoenix does not record
//!   (someone else's dataset) still makes the undo fail, so `destroy` exits 3 and says so.
//! - Markers ([`crate::markers`]): `destroy` removes the markers of what it removed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::api::undo::{Outcome, execute};
use crate::host::Host;
use crate::journal::{self, Journal, Outstanding, Record, UndoStep};
pub use crate::markers::{has_marker, marker_path, remove_marker, remove_markers, write_marker};
use crate::settings::Settings;
use crate::types::Vmid;

/// What an undo pass did.
#[derive(Debug, Default, Serialize)]
pub struct UndoReport {
    /// Steps whose effect was removed.
    pub undone: Vec<String>,
    /// Steps whose effect was already gone.
    pub already_gone: Vec<String>,
    /// Steps whose resource exists but is not phoenix's (or not that run's): left alone.
    pub left_alone: Vec<String>,
    /// Steps that could not be undone, with the reason.
    pub failed: Vec<(String, String)>,
}

impl UndoReport {
    /// Whether everything is gone.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// Human lines for the report.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(self.undone.iter().map(|s| format!("undone        {s}")));
        out.extend(
            self.already_gone
                .iter()
                .map(|s| format!("already gone  {s}")),
        );
        out.extend(self.left_alone.iter().map(|s| format!("left alone    {s}")));
        out.extend(
            self.failed
                .iter()
                .map(|(s, e)| format!("FAILED        {s}: {e}")),
        );
        out
    }
}

/// Gives the host backend of the run with the given id.
pub type HostOf<'a> = dyn Fn(&str) -> Result<Arc<dyn Host>, crate::host::HostError> + 'a;

/// Undo `items` newest first. `host_of(run)` gives the backend of the run that wrote an
/// item. A dataset that one of the containers `watch` still mounts when its turn comes is
/// left alone and stays outstanding (another server's model cache: `destroy --lxc`, or a
/// rollback while another run adopted the dataset). A dataset whose remaining children
/// are all datasets the journal records (`recorded`) outside `items` — other containers'
/// model datasets below the shared parent — is left alone too; a child phoenix does not
/// record (someone else's) makes its undo fail as before, so the parent stays reported. A step found gone afterwards loses its
/// marker in `marker_dir` (when that run wrote it), so a rollback leaves no marker claiming
/// it is done. With `dry_run`, nothing is executed or recorded; the report lists what would
/// be undone. Each step executed shows as progress on `progress` (`undo destroy
/// container 901`: `pct destroy` can take a while).
// Eight inputs, each a different concern of the caller (rollback, destroy, `up`); a struct
// bundling them would only move the list.
#[allow(clippy::too_many_arguments)]
pub fn undo_outstanding(
    journal: &Journal,
    items: &[Outstanding],
    host_of: &HostOf<'_>,
    watch: &[Vmid],
    recorded: &BTreeSet<crate::types::DatasetName>,
    marker_dir: &Path,
    dry_run: bool,
    progress: &crate::progress::Tracker,
) -> UndoReport {
    let mut report = UndoReport::default();
    // A dry run removes no mount: it ignores those of the containers it would undo.
    let watch: Vec<Vmid> = if dry_run {
        let undone: BTreeSet<Vmid> = items.iter().filter_map(|o| o.undo.vmid()).collect();
        watch
            .iter()
            .copied()
            .filter(|v| !undone.contains(v))
            .collect()
    } else {
        watch.to_vec()
    };
    // In a dry run nothing is destroyed: a child that this pass would undo does not count.
    let undone_datasets: BTreeSet<&crate::types::DatasetName> = items
        .iter()
        .filter_map(|o| match &o.undo {
            UndoStep::DestroyDataset { name } if dry_run => Some(name),
            _ => None,
        })
        .collect();
    // Datasets the journal records for other runs or containers than those undone now.
    let in_pass: BTreeSet<&crate::types::DatasetName> = items
        .iter()
        .filter_map(|o| match &o.undo {
            UndoStep::DestroyDataset { name } => Some(name),
            _ => None,
        })
        .collect();
    // Parents left alone in this pass because other containers' datasets are below them:
    // their own parents stay for the same reason.
    let mut kept: BTreeSet<crate::types::DatasetName> = BTreeSet::new();
    for item in items.iter().rev() {
        let label = describe(item);
        let shared = match &item.undo {
            UndoStep::DestroyDataset { name } => Some((name, watch.clone())),
            // The container it was given to still mounts it (its mount is undone later);
            // another one that does may need to write it too.
            UndoStep::RestoreDatasetOwner { vmid, name, .. } => {
                Some((name, watch.iter().copied().filter(|v| v != vmid).collect()))
            }
            _ => None,
        };
        if let Some((name, watch)) = shared {
            // Checked when its turn comes: the containers undone before it no longer mount it.
            let mounted = host_of(&item.run).and_then(|h| mounted_by(h.as_ref(), name, &watch));
            if let Ok(Some(vmid)) = mounted {
                kept.insert(name.clone());
                report
                    .left_alone
                    .push(format!("{label} (mounted by container {vmid})"));
                continue;
            }
            // A parent (the shared models parent) whose children other containers' runs
            // made stays until their destroy removed them; it stays outstanding meanwhile.
            let children = host_of(&item.run).and_then(|h| h.zfs_children(name));
            if let Ok(children) = children {
                let remaining: Vec<&crate::types::DatasetName> = children
                    .iter()
                    .filter(|c| !undone_datasets.contains(c))
                    .collect();
                let elsewhere = remaining
                    .iter()
                    .all(|c| (recorded.contains(*c) && !in_pass.contains(*c)) || kept.contains(*c));
                let others: Vec<String> = remaining.iter().map(ToString::to_string).collect();
                if !others.is_empty() && elsewhere {
                    kept.insert(name.clone());
                    report.left_alone.push(format!(
                        "{label} (it still holds {}; a later destroy removes it once they are gone)",
                        others.join(", ")
                    ));
                    continue;
                }
            }
        }
        // Checked again now, not only when the step was recorded: the journal is a file.
        let allowed = host_of(&item.run)
            .map_err(crate::boundary::BoundaryError::from)
            .and_then(|h| crate::boundary::undo_may_run(h.as_ref(), &item.undo, items));
        if let Err(e) = allowed {
            match e {
                crate::boundary::BoundaryError::Refused(r) => {
                    report.left_alone.push(format!("{label} ({r})"));
                }
                crate::boundary::BoundaryError::Host(h) => {
                    report.failed.push((label, error_chain(&h)));
                }
            }
            continue;
        }
        if dry_run {
            report.undone.push(label);
            continue;
        }
        let shown = progress.step(format!("undo {label}"));
        // The host's nodes unit is shared: its release takes turns with the runs that
        // make sure of it (`gpu.attach`), so none of them enables it while this one finds
        // no other user and removes it.
        let _turn = match (&item.undo, journal.path().parent()) {
            (UndoStep::ReleaseNodesUnit { unit, .. }, Some(state_dir)) => {
                match crate::journal::ResourceLock::acquire(state_dir, "host-unit", unit) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        drop(shown);
                        report.failed.push((label, e.to_string()));
                        continue;
                    }
                }
            }
            _ => None,
        };
        let result = host_of(&item.run)
            .and_then(|host| execute(host.as_ref(), &item.undo, &item.run, item.done));
        if result.is_ok() {
            shown.done();
        } else {
            drop(shown);
        }
        match result {
            Ok(outcome) => {
                if let Err(e) = journal.undone(item.seq) {
                    report.failed.push((label, e.to_string()));
                    continue;
                }
                if matches!(outcome, Outcome::Undone | Outcome::AlreadyGone) {
                    if let Err(e) = remove_marker(marker_dir, &item.step, &item.run) {
                        tracing::warn!(step = %item.step, error = %e, "cannot remove marker");
                    }
                }
                match outcome {
                    Outcome::Undone => report.undone.push(label),
                    Outcome::AlreadyGone => report.already_gone.push(label),
                    Outcome::NotOurs(why) => report.left_alone.push(format!("{label} ({why})")),
                }
            }
            Err(e) => report.failed.push((label, error_chain(&e))),
        }
    }
    report
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A one-line description of an outstanding step.
pub fn describe(item: &Outstanding) -> String {
    let what = match &item.undo {
        UndoStep::DestroyContainer { vmid, .. } => format!("destroy container {vmid}"),
        UndoStep::StopContainer { vmid } => format!("stop container {vmid}"),
        UndoStep::RestoreConfig { vmid, .. } => format!("restore config of {vmid}"),
        UndoStep::RestoreOptions { vmid, options } => format!(
            "restore {} of {vmid}",
            options
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        UndoStep::DeleteConfigKeys { vmid, keys } => {
            format!("remove {} from {vmid}", keys.join(","))
        }
        UndoStep::DestroyDataset { name } => format!("destroy dataset {name}"),
        UndoStep::RestoreDatasetOwner {
            vmid,
            name,
            uid,
            gid,
        } => format!("give dataset {name} back to {uid}:{gid} (from {vmid})"),
        UndoStep::RemoveFile { vmid, path } => format!("remove {path} in {vmid}"),
        UndoStep::RemoveDir { vmid, path } => format!("remove directory {path} in {vmid}"),
        UndoStep::ReleaseNodesUnit { vmid, unit } => {
            format!("release host unit {unit} (for {vmid})")
        }
        UndoStep::Exec { vmid, argv } => format!("run {:?} in {vmid}", argv),
    };
    format!(
        "{} [{}{}]",
        what,
        item.step,
        if item.done { "" } else { ", may be partial" }
    )
}

/// The containers a run's steps concern.
fn run_vmids(outstanding: &[Outstanding]) -> BTreeMap<String, BTreeSet<Vmid>> {
    let mut m: BTreeMap<String, BTreeSet<Vmid>> = BTreeMap::new();
    for o in outstanding {
        if let Some(v) = o.undo.vmid() {
            m.entry(o.run.clone()).or_default().insert(v);
        }
    }
    m
}

/// Outstanding steps for `destroy`: all, or those of the selected containers, minus
/// datasets with `keep_data`. A dataset counts for the container whose journal scope holds
/// it (the `scope` of the run that created it); for a version 1 run without a scope, for
/// every container that run touched.
pub fn select_for_destroy(records: &[Record], vmids: &[Vmid], keep_data: bool) -> Vec<Outstanding> {
    let all = journal::outstanding(records);
    let mut by_run = run_vmids(&all);
    for (run, scope) in journal::run_scopes(records) {
        by_run.insert(run, BTreeSet::from([scope]));
    }
    all.into_iter()
        .filter(|o| !(keep_data && matches!(o.undo, UndoStep::DestroyDataset { .. })))
        .filter(|o| {
            if vmids.is_empty() {
                return true;
            }
            match o.undo.vmid() {
                Some(v) => vmids.contains(&v),
                None => by_run
                    .get(&o.run)
                    .is_some_and(|s| s.iter().any(|v| vmids.contains(v))),
            }
        })
        .collect()
}

/// Every container the journal's outstanding steps concern, in order.
pub fn recorded_containers(records: &[Record]) -> Vec<Vmid> {
    let set: BTreeSet<Vmid> = journal::outstanding(records)
        .iter()
        .filter_map(|o| o.undo.vmid())
        .collect();
    set.into_iter().collect()
}

/// Every dataset the journal's outstanding steps would destroy.
pub fn recorded_datasets(records: &[Record]) -> BTreeSet<crate::types::DatasetName> {
    journal::outstanding(records)
        .into_iter()
        .filter_map(|o| match o.undo {
            UndoStep::DestroyDataset { name } => Some(name),
            _ => None,
        })
        .collect()
}

/// The first of `others` whose config mounts dataset `name` (an `mpN` whose source is the
/// dataset's mountpoint or a path below it).
pub fn mounted_by(
    host: &dyn Host,
    name: &crate::types::DatasetName,
    others: &[Vmid],
) -> Result<Option<Vmid>, crate::host::HostError> {
    let Some(mountpoint) = host.zfs_mountpoint(name)? else {
        return Ok(None);
    };
    let below = format!("{}/", mountpoint.trim_end_matches('/'));
    for vmid in others {
        let Some(conf) = host.ct_config(*vmid)? else {
            continue;
        };
        let mounts = conf.entries.iter().any(|(key, value)| {
            let is_mp = key
                .strip_prefix("mp")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let source = value.split(',').next().unwrap_or("");
            is_mp && (source == mountpoint || source.starts_with(&below))
        });
        if mounts {
            return Ok(Some(*vmid));
        }
    }
    Ok(None)
}

/// Settings for the backend that run `run` used (its `run` record), so undo drives the
/// same host.
pub fn settings_for_run(settings: &Settings, records: &[Record], run: &str) -> Settings {
    let mut s = settings.clone();
    if let Some((host, emu_root)) = journal::run_host(records, run) {
        s.host.value = host;
        if let Some(root) = emu_root {
            s.emu_root.value = root;
        }
    }
    s
}

/// What the journal says exists, per container (and datasets by the runs that made them).
#[derive(Debug, Default, Serialize)]
pub struct Status {
    /// By container id.
    pub containers: BTreeMap<String, Vec<StatusStep>>,
    /// Resources without a container (datasets).
    pub other: Vec<StatusStep>,
}

/// One outstanding step in `status`.
#[derive(Debug, Serialize)]
pub struct StatusStep {
    /// The step's name.
    pub step: String,
    /// Whether it completed.
    pub done: bool,
    /// The run that made it.
    pub run: String,
    /// What undoing it does.
    pub undo: UndoStep,
}

/// Build the status from the journal's records.
pub fn status(records: &[Record]) -> Status {
    let mut s = Status::default();
    for o in journal::outstanding(records) {
        let step = StatusStep {
            step: o.step.clone(),
            done: o.done,
            run: o.run.clone(),
            undo: o.undo.clone(),
        };
        match o.undo.vmid() {
            Some(v) => s.containers.entry(v.to_string()).or_default().push(step),
            None => s.other.push(step),
        }
    }
    s
}

/// Undo every outstanding step of the run `rt` (for `--rollback-on-failure`, also after a
/// signal: the commands run on a fresh runner that ignores the first signal, while a second
/// one still exits at once).
pub fn rollback_run(rt: &crate::runtime::Runtime) -> Result<UndoReport, crate::Error> {
    if rt.dry_run {
        return Ok(UndoReport::default());
    }
    let records = journal::read(rt.journal.path())?;
    let items: Vec<Outstanding> = journal::outstanding(&records)
        .into_iter()
        .filter(|o| o.run == rt.run_id)
        .collect();
    let runner: Arc<dyn crate::exec::Runner> = Arc::new(crate::exec::SystemRunner::new(
        rt.redactor.clone(),
        crate::exec::CancelFlag::ignoring_signals(),
    ));
    let host = crate::host::open(&rt.settings, runner)?;
    Ok(undo_outstanding(
        &rt.journal,
        &items,
        &|_| Ok(Arc::clone(&host)),
        &recorded_containers(&records),
        &recorded_datasets(&records),
        &rt.settings.marker_dir.value,
        false,
        &rt.progress,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Entry;
    use crate::types::DatasetName;

    fn v(n: u64) -> Vmid {
        Vmid::new(n).unwrap()
    }

    #[test]
    fn markers_round_trip_and_are_removed_per_container() {
        let dir = tempfile::tempdir().unwrap();
        write_marker(dir.path(), "lxc.create:901", "r").unwrap();
        write_marker(dir.path(), "lxc.push:901:/etc/x y", "r").unwrap();
        write_marker(dir.path(), "lxc.create:902", "r").unwrap();
        assert!(has_marker(dir.path(), "lxc.push:901:/etc/x y"));
        assert!(!has_marker(dir.path(), "lxc.push:901:/etc/x"));
        let none = BTreeSet::new();
        assert_eq!(remove_markers(dir.path(), &[v(901)], &none).unwrap(), 2);
        assert!(has_marker(dir.path(), "lxc.create:902"));
        let keep = BTreeSet::from(["lxc.create:902".to_owned()]);
        assert_eq!(remove_markers(dir.path(), &[], &keep).unwrap(), 0);
        assert_eq!(remove_markers(dir.path(), &[], &none).unwrap(), 1);
        // One marker goes only for the run that wrote it.
        write_marker(dir.path(), "lxc.start:903", "r").unwrap();
        remove_marker(dir.path(), "lxc.start:903", "other").unwrap();
        assert!(has_marker(dir.path(), "lxc.start:903"));
        remove_marker(dir.path(), "lxc.start:903", "r").unwrap();
        assert!(!has_marker(dir.path(), "lxc.start:903"));
        remove_marker(dir.path(), "lxc.start:903", "r").unwrap();
    }

    #[test]
    fn destroy_selection_follows_containers_and_keep_data() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "a").unwrap();
        j.intent(
            "lxc.create:901",
            UndoStep::DestroyContainer {
                vmid: v(901),
                storage: None,
                volumes_before: Vec::new(),
            },
        )
        .unwrap();
        j.intent(
            "zfs.dataset:rpool/m",
            UndoStep::DestroyDataset {
                name: DatasetName::new("rpool/m").unwrap(),
            },
        )
        .unwrap();
        let j2 = Journal::open(dir.path(), "b").unwrap();
        j2.intent(
            "lxc.create:902",
            UndoStep::DestroyContainer {
                vmid: v(902),
                storage: None,
                volumes_before: Vec::new(),
            },
        )
        .unwrap();
        j2.append(Entry::End { ok: true }).unwrap();
        let recs = journal::read(&Journal::path_in(dir.path())).unwrap();
        let steps = |sel: &[Vmid], keep| -> Vec<String> {
            select_for_destroy(&recs, sel, keep)
                .into_iter()
                .map(|o| o.step)
                .collect()
        };
        assert_eq!(
            steps(&[v(901)], false),
            ["lxc.create:901", "zfs.dataset:rpool/m"]
        );
        assert_eq!(steps(&[v(901)], true), ["lxc.create:901"]);
        assert_eq!(steps(&[v(902)], false), ["lxc.create:902"]);
        assert_eq!(steps(&[], false).len(), 3);
        let st = status(&recs);
        assert_eq!(st.containers["901"].len(), 1);
        assert_eq!(st.other.len(), 1);
    }

    #[test]
    fn a_dataset_belongs_to_the_scope_of_the_run_that_made_it() {
        let dir = tempfile::tempdir().unwrap();
        let run = |id: &str, scope: u64| {
            let j = Journal::open(dir.path(), id).unwrap();
            j.append(Entry::Run {
                host: crate::settings::HostKind::Emulated,
                emu_root: None,
                recipe: "x.rhai".into(),
                pid: 1,
                scope: Some(v(scope)),
                batch: Some("up1".into()),
            })
            .unwrap();
            j
        };
        // 902's run made its dataset and failed before it made its container: the dataset
        // is still 902's (a run without a scope would leave it to no container).
        let a = run("up1-901", 901);
        let b = run("up1-902", 902);
        a.intent(
            "lxc.create:901",
            UndoStep::DestroyContainer {
                vmid: v(901),
                storage: None,
                volumes_before: Vec::new(),
            },
        )
        .unwrap();
        b.intent(
            "zfs.dataset:rpool/m/b",
            UndoStep::DestroyDataset {
                name: DatasetName::new("rpool/m/b").unwrap(),
            },
        )
        .unwrap();
        let recs = journal::read(&Journal::path_in(dir.path())).unwrap();
        let steps = |sel: &[Vmid]| -> Vec<String> {
            select_for_destroy(&recs, sel, false)
                .into_iter()
                .map(|o| o.step)
                .collect()
        };
        assert_eq!(steps(&[v(902)]), ["zfs.dataset:rpool/m/b"]);
        assert_eq!(steps(&[v(901)]), ["lxc.create:901"]);
    }
}

//! The `undo` family, and the executor that carries out undo steps.
//!
//! `undo.push(#{ct, argv})` records a recipe's own compensating command (data, never a
//! closure): `lxc.exec` cannot know what a program did, so a recipe pairs it with
//! `undo.push`. [`execute`] performs any [`UndoStep`] for rollback and `phoenix destroy`:
//! each is idempotent ("already gone" is success) and checks ownership first — a container
//! or dataset is destroyed only when it carries phoenix's owner tag *and* the tag of the run
//! that recorded the step, so a resource that existed before a run is never undone by it.

use rhai::{Array, Engine, FuncRegistration, Map};

use super::support::{known_keys, string_array, vmid_of};
use super::{ApiError, script_error};
use crate::host::{CtStatus, ExecRequest, Host, HostError};
use crate::journal::UndoStep;
use crate::runtime::Runtime;
use crate::types::AbsPath;

crate::api::handle!(
    /// The `undo` object recipes call methods on.
    UndoApi
);

type RhaiResult<T> = Result<T, Box<rhai::EvalAltResult>>;

/// What carrying out an undo step found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step's effect was removed.
    Undone,
    /// There was nothing to remove.
    AlreadyGone,
    /// The resource exists but is not this run's: left alone.
    NotOurs(String),
}

/// Carry out `step`, recorded by run `run`, on `host`; `done` says whether the step was
/// confirmed (its intent has a `done` record).
pub fn execute(
    host: &dyn Host,
    step: &UndoStep,
    run: &str,
    done: bool,
) -> Result<Outcome, HostError> {
    let run_tag = crate::host::pve::run_tag(run);
    match step {
        UndoStep::DestroyContainer {
            vmid,
            storage,
            volumes_before,
        } => {
            let leftovers = || -> Result<Vec<String>, HostError> {
                let Some(storage) = storage else {
                    return Ok(Vec::new());
                };
                Ok(host
                    .storage_volumes(storage, *vmid)?
                    .into_iter()
                    .filter(|v| !volumes_before.contains(v))
                    .collect())
            };
            let Some(conf) = host.ct_config(*vmid)? else {
                if done {
                    return Ok(Outcome::AlreadyGone);
                }
                // An interrupted removal of an interrupted create may have left its volume.
                let left = leftovers()?;
                for v in &left {
                    host.free_volume(v)?;
                }
                return Ok(if left.is_empty() {
                    Outcome::AlreadyGone
                } else {
                    Outcome::Undone
                });
            };
            let tags = conf.tags();
            if !conf.is_owned() {
                if !done && crate::ownership::is_create_stub(&conf) {
                    // This run's create never finished and left PVE's `lock: create` stub:
                    // the intent (written while the vmid was free) proves it is ours. PVE
                    // refuses to destroy a locked container, and the stub's config names
                    // no volume, so the volume the create allocated is freed by name.
                    let left = leftovers()?;
                    if conf.get("lock").is_some() {
                        host.ct_unlock(*vmid)?;
                    }
                    host.ct_destroy(*vmid)?;
                    for v in &left {
                        host.free_volume(v)?;
                    }
                    return Ok(Outcome::Undone);
                }
                return Ok(Outcome::NotOurs(format!(
                    "container {vmid} is not tagged phoenix"
                )));
            }
            if run_tag.as_ref().is_some_and(|t| !tags.contains(t)) {
                return Ok(Outcome::NotOurs(format!(
                    "container {vmid} was created by another run (tags: {})",
                    tags.join(";")
                )));
            }
            host.ct_destroy(*vmid)?;
            Ok(Outcome::Undone)
        }
        UndoStep::StopContainer { vmid } => match host.ct_status(*vmid)? {
            CtStatus::Running => {
                host.ct_stop(*vmid)?;
                Ok(Outcome::Undone)
            }
            _ => Ok(Outcome::AlreadyGone),
        },
        UndoStep::RestoreConfig { vmid, backup } => {
            if !backup.exists() || host.ct_config(*vmid)?.is_none() {
                return Ok(Outcome::AlreadyGone);
            }
            host.ct_restore_config(*vmid, backup)?;
            let _ = std::fs::remove_file(backup);
            Ok(Outcome::Undone)
        }
        UndoStep::RestoreOptions { vmid, options } => {
            let Some(conf) = host.ct_config(*vmid)? else {
                return Ok(Outcome::AlreadyGone);
            };
            let set: Vec<(String, String)> = options
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect();
            let delete: Vec<String> = options
                .iter()
                .filter(|(k, v)| v.is_none() && conf.get(k).is_some())
                .map(|(k, _)| k.clone())
                .collect();
            if !set.is_empty() {
                host.ct_set(*vmid, &set)?;
            }
            if !delete.is_empty() {
                host.ct_delete_keys(*vmid, &delete)?;
            }
            Ok(Outcome::Undone)
        }
        UndoStep::DeleteConfigKeys { vmid, keys } => {
            let Some(conf) = host.ct_config(*vmid)? else {
                return Ok(Outcome::AlreadyGone);
            };
            let present: Vec<String> = keys
                .iter()
                .filter(|k| conf.get(k).is_some())
                .cloned()
                .collect();
            if present.is_empty() {
                return Ok(Outcome::AlreadyGone);
            }
            host.ct_delete_keys(*vmid, &present)?;
            Ok(Outcome::Undone)
        }
        UndoStep::DestroyDataset { name } => {
            // Only the properties the dataset sets itself count: one made below a phoenix
            // dataset inherits its `phoenix:owner` and `phoenix:run`.
            match crate::ownership::dataset(host, name)? {
                crate::ownership::Dataset::Absent => Ok(Outcome::AlreadyGone),
                crate::ownership::Dataset::Foreign => Ok(Outcome::NotOurs(format!(
                    "dataset {name} sets no phoenix:owner property of its own"
                ))),
                crate::ownership::Dataset::Owned { run: Some(r) } if r != run => Ok(
                    Outcome::NotOurs(format!("dataset {name} was created by another run")),
                ),
                crate::ownership::Dataset::Owned { .. } => {
                    host.zfs_destroy(name)?;
                    Ok(Outcome::Undone)
                }
            }
        }
        UndoStep::RestoreDatasetOwner { name, uid, gid, .. } => {
            // Only the root directory of a dataset that is phoenix's (by its own
            // `phoenix:owner`), never a path the journal names.
            match crate::ownership::dataset(host, name)? {
                crate::ownership::Dataset::Absent => return Ok(Outcome::AlreadyGone),
                crate::ownership::Dataset::Foreign => {
                    return Ok(Outcome::NotOurs(format!(
                        "dataset {name} sets no phoenix:owner property of its own"
                    )));
                }
                crate::ownership::Dataset::Owned { .. } => {}
            }
            let Some(mp) = host.zfs_mountpoint(name)? else {
                return Ok(Outcome::AlreadyGone);
            };
            let mp = AbsPath::new(mp.clone()).map_err(|e| HostError::Parse {
                command: format!("zfs get mountpoint {name}"),
                message: e.to_string(),
            })?;
            if host.host_path_owner(&mp)?.is_none_or(|o| o == (*uid, *gid)) {
                return Ok(Outcome::AlreadyGone);
            }
            host.host_chown(&mp, *uid, *gid)?;
            Ok(Outcome::Undone)
        }
        UndoStep::RemoveFile { vmid, path } => {
            if host.ct_status(*vmid)? != CtStatus::Running {
                // Absent: gone with the container. Stopped: the file goes with the container
                // when it is destroyed; nothing else can reach it without starting it.
                return Ok(Outcome::AlreadyGone);
            }
            host.ct_exec(
                *vmid,
                &ExecRequest {
                    argv: vec!["rm".into(), "-f".into(), path.to_string()],
                    timeout: Some(std::time::Duration::from_secs(30)),
                    ..ExecRequest::default()
                },
            )?;
            Ok(Outcome::Undone)
        }
        UndoStep::RemoveDir { vmid, path } => {
            if host.ct_status(*vmid)? != CtStatus::Running {
                // As for a file: gone with the container, or unreachable until it starts.
                return Ok(Outcome::AlreadyGone);
            }
            let timeout = Some(std::time::Duration::from_secs(30));
            let probe = host.ct_exec(
                *vmid,
                &ExecRequest {
                    argv: vec!["test".into(), "-d".into(), path.to_string()],
                    timeout,
                    ok_codes: vec![0, 1],
                    read_only: true,
                    ..ExecRequest::default()
                },
            )?;
            if probe.code != 0 {
                return Ok(Outcome::AlreadyGone);
            }
            host.ct_exec(
                *vmid,
                &ExecRequest {
                    argv: vec!["rmdir".into(), path.to_string()],
                    timeout,
                    ..ExecRequest::default()
                },
            )?;
            Ok(Outcome::Undone)
        }
        UndoStep::ReleaseNodesUnit { vmid, unit } => {
            crate::api::gpu::release_nodes_unit(host, *vmid, unit)
        }
        UndoStep::Exec { vmid, argv } => {
            if host.ct_status(*vmid)? != CtStatus::Running {
                return Ok(Outcome::AlreadyGone);
            }
            host.ct_exec(
                *vmid,
                &ExecRequest {
                    argv: argv.clone(),
                    timeout: Some(std::time::Duration::from_secs(300)),
                    ..ExecRequest::default()
                },
            )?;
            Ok(Outcome::Undone)
        }
    }
}

/// `undo.push(#{ct, argv})`: record a custom undo step for this run, once the boundary
/// allows it (a command for a container this run may change, never a shell).
pub fn push(rt: &Runtime, step: UndoStep) -> Result<(), ApiError> {
    rt.boundary().undo_push("undo.push", &step)?;
    let name = match &step {
        UndoStep::Exec { vmid, argv } => format!("undo.push:{vmid}:{}", argv.join(" ")),
        other => format!("undo.push:{other:?}"),
    };
    let seq = rt.journal.intent(&name, step)?;
    rt.journal.done(seq)?;
    Ok(())
}

/// Register the `undo` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<UndoApi>("Undo");
    FuncRegistration::new("push")
        .with_params_info(["undo: Undo", "step: Map", "()"])
        .with_comments([
            "/// Record a compensating command for rollback and `phoenix destroy`:",
            "/// `#{ct: container, argv: [\"systemctl\", \"disable\", \"--now\", \"x\"]}`.",
            "/// It runs (inside the container, no shell) only if the container still runs.",
        ])
        .register_into_engine(engine, |api: UndoApi, step: Map| -> RhaiResult<()> {
            const CALL: &str = "undo.push";
            known_keys(CALL, &step, super::options::UNDO_STEP.keys).map_err(script_error)?;
            let ct = step
                .get("ct")
                .ok_or_else(|| script_error(ApiError::spec(CALL, "missing `ct`")))?;
            let vmid = vmid_of(CALL, ct).map_err(script_error)?;
            let argv = step
                .get("argv")
                .and_then(|a| a.read_lock::<Array>().map(|a| a.clone()))
                .ok_or_else(|| {
                    script_error(ApiError::spec(CALL, "`argv` must be an array of strings"))
                })?;
            let argv = string_array(CALL, "argv", &argv).map_err(script_error)?;
            push(&api.rt, UndoStep::Exec { vmid, argv }).map_err(script_error)
        });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::exec::{CommandOutput, RecordingRunner};
    use crate::host::pve::{PveHost, PvePaths};
    use crate::types::{AbsPath, StorageId, Vmid};

    /// A PVE backend whose container 901 runs and whose `test -d` answers `dir_code`.
    fn host(dir_code: i32) -> (PveHost, Arc<RecordingRunner>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("901.conf"), "hostname: x\n").unwrap();
        let runner = Arc::new(RecordingRunner::new(move |cmd| {
            let argv = cmd.argv();
            let out = |code: i32, text: &str| CommandOutput {
                code,
                stdout: text.as_bytes().to_vec(),
                stderr: Vec::new(),
            };
            if argv.iter().any(|a| a == "status") {
                out(0, "status: running\n")
            } else if argv.iter().any(|a| a == "-d") {
                out(dir_code, "")
            } else if argv[0].ends_with("pveversion") {
                out(
                    0,
                    "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-4-pve)\n",
                )
            } else {
                out(0, "")
            }
        }));
        (pve(dir.path(), runner.clone()), runner, dir)
    }

    /// The PVE backend with container configs in `lxc_dir`, commands through `runner`.
    fn pve(lxc_dir: &std::path::Path, runner: Arc<RecordingRunner>) -> PveHost {
        let paths = PvePaths::for_tests(lxc_dir.to_owned());
        PveHost::new(paths, runner)
    }

    fn step() -> UndoStep {
        UndoStep::RemoveDir {
            vmid: Vmid::new(901).unwrap(),
            path: AbsPath::new("/etc/phoenix-vllm").unwrap(),
        }
    }

    fn ran_rmdir(runner: &RecordingRunner) -> bool {
        runner
            .calls()
            .iter()
            .any(|c| c.argv().iter().any(|a| a == "rmdir"))
    }

    #[test]
    fn remove_dir_that_was_never_made_is_already_gone() {
        let (host, runner, _dir) = host(1);
        assert_eq!(
            execute(&host, &step(), "r1", true).unwrap(),
            Outcome::AlreadyGone
        );
        // It asked the running container, and removed nothing.
        assert!(
            runner
                .calls()
                .iter()
                .any(|c| c.argv().iter().any(|a| a == "-d")),
            "{:?}",
            runner.calls()
        );
        assert!(!ran_rmdir(&runner), "{:?}", runner.calls());
    }

    #[test]
    fn remove_dir_that_exists_runs_rmdir_in_the_container() {
        let (host, runner, _dir) = host(0);
        assert_eq!(
            execute(&host, &step(), "r1", true).unwrap(),
            Outcome::Undone
        );
        let rmdir = runner
            .calls()
            .into_iter()
            .find(|c| c.argv().iter().any(|a| a == "rmdir"))
            .unwrap();
        let argv = rmdir.argv();
        assert_eq!(argv[argv.len() - 2..], ["rmdir", "/etc/phoenix-vllm"]);
        assert!(argv.contains(&"901".to_owned()), "{argv:?}");
    }

    /// A PVE backend whose container 901 has the config `conf` (`None`: absent), stopped,
    /// with the volumes `local-zfs:subvol-901-disk-0` (new) and `…-disk-9` (older).
    fn stub_host(conf: Option<&str>) -> (PveHost, Arc<RecordingRunner>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = conf {
            std::fs::write(dir.path().join("901.conf"), text).unwrap();
        }
        let runner = Arc::new(RecordingRunner::new(|cmd| {
            let argv = cmd.argv();
            let text = if argv.iter().any(|a| a == "status") {
                "status: stopped\n"
            } else if argv.iter().any(|a| a == "list") {
                "Volid                       Format  Type            Size VMID\n\
                 local-zfs:subvol-901-disk-0 subvol  rootdir   8589934592 901\n\
                 local-zfs:subvol-901-disk-9 subvol  rootdir   8589934592 901\n"
            } else {
                ""
            };
            CommandOutput {
                code: 0,
                stdout: text.as_bytes().to_vec(),
                stderr: Vec::new(),
            }
        }));
        (pve(dir.path(), runner.clone()), runner, dir)
    }

    fn create_step() -> UndoStep {
        UndoStep::DestroyContainer {
            vmid: Vmid::new(901).unwrap(),
            storage: Some(StorageId::new("local-zfs").unwrap()),
            volumes_before: vec!["local-zfs:subvol-901-disk-9".into()],
        }
    }

    fn changes(runner: &RecordingRunner) -> Vec<String> {
        runner
            .calls()
            .iter()
            .map(|c| c.argv()[1..].join(" "))
            .filter(|a| !a.starts_with("status") && !a.starts_with("list"))
            .collect()
    }

    #[test]
    fn an_unconfirmed_create_stub_is_unlocked_destroyed_and_its_new_volume_freed() {
        let (host, runner, _d) = stub_host(Some("lock: create\n"));
        assert_eq!(
            execute(&host, &create_step(), "r1", false).unwrap(),
            Outcome::Undone
        );
        assert_eq!(
            changes(&runner),
            [
                "unlock 901",
                "destroy 901 --purge 1",
                "free local-zfs:subvol-901-disk-0"
            ]
        );
    }

    #[test]
    fn a_stub_after_a_confirmed_create_or_a_locked_foreign_ct_is_left_alone() {
        let (host, runner, _d) = stub_host(Some("lock: create\n"));
        assert!(matches!(
            execute(&host, &create_step(), "r1", true).unwrap(),
            Outcome::NotOurs(_)
        ));
        let (host2, runner2, _d2) = stub_host(Some("hostname: other\nlock: backup\n"));
        assert!(matches!(
            execute(&host2, &create_step(), "r1", false).unwrap(),
            Outcome::NotOurs(_)
        ));
        assert_eq!(changes(&runner), Vec::<String>::new());
        assert_eq!(changes(&runner2), Vec::<String>::new());
    }

    #[test]
    fn a_removal_killed_after_pct_destroy_frees_the_volume_next_time() {
        let (host, runner, _d) = stub_host(None);
        assert_eq!(
            execute(&host, &create_step(), "r1", false).unwrap(),
            Outcome::Undone
        );
        assert_eq!(changes(&runner), ["free local-zfs:subvol-901-disk-0"]);
        let (host, runner, _d) = stub_host(None);
        assert_eq!(
            execute(&host, &create_step(), "r1", true).unwrap(),
            Outcome::AlreadyGone
        );
        assert_eq!(changes(&runner), Vec::<String>::new());
    }
}

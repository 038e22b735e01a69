//! Whose a container or dataset is: the facts phoenix decides by before it changes or
//! removes one (DESIGN.md §1 "Ownership", §10 "Never undo what was already there", §11).
//!
//! A dataset is phoenix's when the dataset *itself* sets `phoenix:owner=phoenix` (source
//! `local` in `zfs get`): ZFS user properties inherit, so every dataset anyone creates
//! below a phoenix dataset reports the parent's `phoenix:owner` (and `phoenix:run`) as
//! `inherited from …` (OpenZFS cmd/zfs/zfs_main.c `get_callback`). Only the locally set
//! properties count, here and for the run that made it.
//!
//! A container is phoenix's when
//! - its config carries the `phoenix` tag (for the undo of one run's step: that run's
//!   `phoenix-run-<id>` tag too), or
//! - it is what phoenix's own create left when interrupted, proven by the journal: Proxmox
//!   writes `lock: create` and nothing else first, and the rest of the config — tags
//!   included — only after the template is extracted (pve-guest-common
//!   `src/PVE/AbstractConfig.pm` `create_and_lock_config`; pve-container
//!   `src/PVE/API2/LXC.pm` `create_vm`). A kill or timeout in between leaves an untagged,
//!   locked container and maybe a volume. phoenix writes its `lxc.create` intent only when
//!   the vmid is free, so that intent without `done` is the proof the stub is phoenix's.
//!
//! A locked container without such an intent is never touched, and neither is a stub once
//! its intent is `done` (phoenix's create finished, so the stub is someone else's).
//! These functions answer from data (a config, journal records) so every caller — undo,
//! `lxc.create`, the boundary check — decides the same way.

use std::collections::BTreeMap;

use crate::host::{CtConfig, Host, HostError, OWNER_TAG, ZFS_OWNER_PROP, ZFS_RUN_PROP};
use crate::journal::{self, Outstanding, Record, UndoStep};
use crate::types::{DatasetName, Vmid};

/// What a dataset is to phoenix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dataset {
    /// There is no such dataset.
    Absent,
    /// It sets `phoenix:owner=phoenix` itself; `run` is its own `phoenix:run`, if set.
    Owned {
        /// The run that created it.
        run: Option<String>,
    },
    /// Someone else's (at most an inherited `phoenix:owner`).
    Foreign,
}

/// Ownership from the properties set on the dataset itself (`None`: absent).
pub fn dataset_of(local: Option<&BTreeMap<String, String>>) -> Dataset {
    let Some(local) = local else {
        return Dataset::Absent;
    };
    if local.get(ZFS_OWNER_PROP).map(String::as_str) != Some(OWNER_TAG) {
        return Dataset::Foreign;
    }
    Dataset::Owned {
        run: local.get(ZFS_RUN_PROP).cloned(),
    }
}

/// What dataset `name` on `host` is to phoenix (one read-only `zfs get -s local`).
pub fn dataset(host: &dyn Host, name: &DatasetName) -> Result<Dataset, HostError> {
    Ok(dataset_of(host.zfs_local_props(name)?.as_ref()))
}

/// What a container is to phoenix.
#[derive(Debug, Clone, PartialEq)]
pub enum Container {
    /// There is no such container.
    Absent,
    /// It carries the `phoenix` tag.
    Tagged,
    /// It is the stub of phoenix's create that never finished: the journal's intent.
    InterruptedCreate(Box<Outstanding>),
    /// Someone else's (or a stub without phoenix's intent): never touched.
    Foreign,
}

/// Whether `conf` is what an unfinished create leaves: `lock: create` and nothing else, or
/// nothing at all (that stub after `pct unlock`, when a removal was itself interrupted).
pub fn is_create_stub(conf: &CtConfig) -> bool {
    match conf.entries.as_slice() {
        [] => true,
        [(k, v)] => k == "lock" && v == "create",
        _ => false,
    }
}

/// Whether `conf` carries the `phoenix` tag.
pub fn is_tagged(conf: &CtConfig) -> bool {
    conf.is_owned()
}

/// The journal's unfinished intent to create `vmid` (newest first), if any: an
/// `lxc.create` step with no `done` and not undone.
pub fn interrupted_create(records: &[Record], vmid: Vmid) -> Option<Outstanding> {
    journal::outstanding(records).into_iter().rev().find(|o| {
        !o.done && matches!(o.undo, UndoStep::DestroyContainer { vmid: v, .. } if v == vmid)
    })
}

/// What container `vmid` with config `conf` (`None`: absent) is to phoenix, given the
/// journal's `records`.
pub fn container(conf: Option<&CtConfig>, records: &[Record], vmid: Vmid) -> Container {
    let Some(conf) = conf else {
        return Container::Absent;
    };
    if is_tagged(conf) {
        return Container::Tagged;
    }
    if is_create_stub(conf) {
        if let Some(intent) = interrupted_create(records, vmid) {
            return Container::InterruptedCreate(Box::new(intent));
        }
    }
    Container::Foreign
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;

    fn conf(text: &str) -> CtConfig {
        CtConfig::parse(text)
    }

    fn vmid(n: u64) -> Vmid {
        Vmid::new(n).unwrap()
    }

    fn create(n: u64) -> UndoStep {
        UndoStep::DestroyContainer {
            vmid: vmid(n),
            storage: None,
            volumes_before: Vec::new(),
        }
    }

    #[test]
    fn a_dataset_is_phoenixs_only_by_its_own_owner_property() {
        let props = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
            kv.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(dataset_of(None), Dataset::Absent);
        assert_eq!(
            dataset_of(Some(&props(&[
                ("phoenix:owner", "phoenix"),
                ("phoenix:run", "r1")
            ]))),
            Dataset::Owned {
                run: Some("r1".into())
            }
        );
        // What `zfs get -s local` shows of a child that only inherits them: nothing.
        assert_eq!(
            dataset_of(Some(&props(&[("compression", "lz4")]))),
            Dataset::Foreign
        );
        assert_eq!(
            dataset_of(Some(&props(&[("phoenix:owner", "someone")]))),
            Dataset::Foreign
        );
    }

    #[test]
    fn only_a_lone_create_lock_is_a_stub() {
        assert!(is_create_stub(&conf("lock: create\n")));
        assert!(is_create_stub(&conf("")));
        assert!(!is_create_stub(&conf("lock: backup\n")));
        assert!(!is_create_stub(&conf("lock: create\nhostname: x\n")));
        assert!(!is_create_stub(&conf("hostname: x\n")));
    }

    #[test]
    fn a_stub_is_phoenixs_only_with_an_unfinished_intent_for_its_vmid() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_in(dir.path());
        let stub = conf("lock: create\n");
        let read = || journal::read(&path).unwrap();
        assert_eq!(
            container(Some(&stub), &read(), vmid(901)),
            Container::Foreign
        );
        let j = Journal::open(dir.path(), "r1").unwrap();
        let seq = j.intent("lxc.create:901", create(901)).unwrap();
        match container(Some(&stub), &read(), vmid(901)) {
            Container::InterruptedCreate(o) => assert_eq!((o.seq, o.run.as_str()), (seq, "r1")),
            other => panic!("{other:?}"),
        }
        // Another vmid's stub, a locked config with more in it: not ours.
        assert_eq!(
            container(Some(&stub), &read(), vmid(902)),
            Container::Foreign
        );
        let busy = conf("lock: create\nhostname: x\n");
        assert_eq!(
            container(Some(&busy), &read(), vmid(901)),
            Container::Foreign
        );
        // Once phoenix's create finished, a stub there is someone else's.
        j.done(seq).unwrap();
        assert_eq!(
            container(Some(&stub), &read(), vmid(901)),
            Container::Foreign
        );
        assert_eq!(
            container(
                Some(&conf("tags: phoenix;phoenix-run-r1\n")),
                &read(),
                vmid(901)
            ),
            Container::Tagged
        );
        assert_eq!(container(None, &read(), vmid(901)), Container::Absent);
    }
}

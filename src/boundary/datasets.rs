//! ZFS datasets a recipe may create or mount, and the properties it may set (DESIGN.md
//! §12).
//!
//! - **Where**: strictly below the configured models parent (`models_dataset`, e.g.
//!   `rpool/phoenix-models`), compared component by component, so `tank/models2/x` is not
//!   under `tank/models` and `tank/models` itself is not "below". A name with `@`
//!   (snapshot), `#` (bookmark), `..`, a leading `-` or more than 255 bytes (ZFS's
//!   `ZFS_MAX_DATASET_NAME_LEN` is 256 with the NUL) is not a dataset name at all
//!   ([`crate::types::DatasetName`]).
//! - **Whose**: an existing dataset must carry phoenix's owner property (checked by the
//!   primitive against the host, through [`owned`]); a dataset phoenix did not create is
//!   never adopted, mounted or destroyed.
//! - **Properties**: only those in [`ALLOWED_PROPS`], which change how data is stored, not
//!   where it appears or what it may run. `mountpoint` (a dataset mounted over
//!   `/etc/cron.d`), `sharenfs`/`sharesmb` (exported to the network), `setuid`, `exec`,
//!   `devices`, `canmount`, `zoned`, `keylocation` (reads a host file or URL) and every
//!   user property are refused with the reason.

use std::collections::BTreeMap;

use super::{Refusal, Rule};
use crate::types::{DatasetName, PropKey, PropValue};

/// Properties a recipe may set on its datasets (storage behaviour only).
pub const ALLOWED_PROPS: &[&str] = &[
    "acltype",
    "atime",
    "checksum",
    "compression",
    "copies",
    "dnodesize",
    "logbias",
    "primarycache",
    "quota",
    "recordsize",
    "redundant_metadata",
    "refquota",
    "refreservation",
    "relatime",
    "reservation",
    "secondarycache",
    "special_small_blocks",
    "sync",
    "xattr",
];

/// Properties refused with a reason of their own (the rest: "not in the allow-list").
const REFUSED_PROPS: &[(&str, &str)] = &[
    (
        "mountpoint",
        "it would mount the dataset anywhere on the host (over /etc/cron.d, say)",
    ),
    (
        "canmount",
        "it changes whether and where the dataset is mounted on the host",
    ),
    (
        "sharenfs",
        "it would export the dataset to the network over NFS",
    ),
    (
        "sharesmb",
        "it would export the dataset to the network over SMB",
    ),
    (
        "setuid",
        "set-uid programs on the dataset would run as root on the host",
    ),
    (
        "exec",
        "it controls whether programs on the dataset may run on the host",
    ),
    (
        "devices",
        "device nodes on the dataset would give access to host devices",
    ),
    (
        "zoned",
        "it hands the dataset's administration to a zone or container",
    ),
    (
        "readonly",
        "phoenix manages the dataset's writability through the mount",
    ),
    (
        "keylocation",
        "ZFS would read a key from a host file or URL",
    ),
    (
        "keyformat",
        "encryption is set up by the operator, not by a recipe",
    ),
    (
        "encryption",
        "encryption is set up by the operator, not by a recipe",
    ),
    (
        "overlay",
        "it allows mounting over non-empty host directories",
    ),
    ("snapdir", "it exposes snapshots of the dataset"),
    ("volsize", "recipes create file systems, not volumes"),
];

/// The ZFS user property that marks a phoenix-owned dataset, and its value.
pub use crate::host::{OWNER_TAG, ZFS_OWNER_PROP};

/// Whether the properties a dataset sets itself (`zfs get -s local`, [`crate::host::Host::zfs_local_props`])
/// say phoenix created it. An inherited `phoenix:owner` does not count
/// ([`crate::ownership::dataset`]).
pub fn owned(local_props: &BTreeMap<String, String>) -> bool {
    matches!(
        crate::ownership::dataset_of(Some(local_props)),
        crate::ownership::Dataset::Owned { .. }
    )
}

/// Whether `name` lies strictly below `parent` (component-wise).
pub fn below(name: &DatasetName, parent: &DatasetName) -> bool {
    name.as_str()
        .strip_prefix(parent.as_str())
        .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1)
}

/// Parse `name` as written by the recipe and check it lies below `parent` (or is
/// `parent` itself, when `parent_itself` allows it: `zfs.dataset` may create a missing
/// models parent; nothing mounts it, since it holds every container's models).
pub fn check_name(
    call: &'static str,
    name: &str,
    parent: &DatasetName,
    parent_itself: bool,
) -> Result<DatasetName, Refusal> {
    let ds = DatasetName::new(name).map_err(|e| {
        let hint = if name.contains('@') || name.contains('#') {
            " (snapshots `@` and bookmarks `#` are not datasets)"
        } else {
            ""
        };
        Refusal::new(call, Rule::Datasets, format!("{e}{hint}"))
    })?;
    if parent_itself && ds == *parent {
        return Ok(ds);
    }
    if !below(&ds, parent) {
        return Err(Refusal::new(
            call,
            Rule::Datasets,
            format!(
                "dataset {ds} is not below the models parent {parent}: recipes create and mount only datasets under it (setting models_dataset)"
            ),
        ));
    }
    Ok(ds)
}

/// Refuse properties outside the allow-list, naming the first one and why.
pub fn check_props(call: &'static str, props: &[(PropKey, PropValue)]) -> Result<(), Refusal> {
    for (k, v) in props {
        let key = k.as_str();
        if ALLOWED_PROPS.contains(&key) {
            continue;
        }
        let why = if let Some((_, why)) = REFUSED_PROPS.iter().find(|(p, _)| *p == key) {
            (*why).to_owned()
        } else if key.starts_with("phoenix:") {
            "phoenix's own ownership properties are set by phoenix".to_owned()
        } else if key.contains(':') {
            "user properties are read by other tools on the host (e.g. org.openzfs.systemd:*)"
                .to_owned()
        } else {
            "it is not in the allow-list".to_owned()
        };
        return Err(Refusal::new(
            call,
            Rule::DatasetProperties,
            format!(
                "property {key}={v} is not allowed: {why}; allowed: {}",
                ALLOWED_PROPS.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(s: &str) -> DatasetName {
        DatasetName::new(s).unwrap()
    }

    #[test]
    fn below_is_component_wise_and_strict() {
        let p = ds("tank/models");
        assert!(below(&ds("tank/models/x"), &p));
        assert!(below(&ds("tank/models/x/y"), &p));
        assert!(!below(&ds("tank/models"), &p));
        assert!(!below(&ds("tank/models2/x"), &p));
        assert!(!below(&ds("tank/x"), &p));
        assert!(!below(&ds("TANK/models/x"), &p));
    }

    #[test]
    fn names_outside_the_parent_or_not_datasets_are_refused() {
        let p = ds("tank/models");
        assert_eq!(
            check_name(
                "zfs.dataset",
                "rpool/lxc-disks/subvol-100-disk-0/x",
                &p,
                true
            )
            .unwrap_err()
            .to_string(),
            "zfs.dataset: refused by the boundary (datasets): dataset rpool/lxc-disks/subvol-100-disk-0/x is not below the models parent tank/models: recipes create and mount only datasets under it (setting models_dataset)"
        );
        for bad in [
            "tank/models/x@snap",
            "tank/models/x#b",
            "tank/models/../x",
            "tank/models/x/",
            "/tank/models/x",
        ] {
            assert!(check_name("zfs.dataset", bad, &p, true).is_err(), "{bad}");
        }
        let e = check_name("zfs.dataset", "tank/models/x@s", &p, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("snapshots `@` and bookmarks `#` are not datasets"),
            "{e}"
        );
        let long = format!("tank/models/{}", "a".repeat(250));
        let e = check_name("zfs.dataset", &long, &p, true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 255 allowed"), "{e}");
        check_name("zfs.dataset", "tank/models/drdevstral", &p, false).unwrap();
        check_name("zfs.dataset", "tank/models", &p, true).unwrap();
        let e = check_name("lxc.mount", "tank/models", &p, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not below the models parent"), "{e}");
    }

    #[test]
    fn properties_come_from_the_allow_list() {
        let prop = |k: &str, v: &str| vec![(PropKey::new(k).unwrap(), PropValue::new(v).unwrap())];
        check_props("zfs.dataset", &prop("compression", "lz4")).unwrap();
        check_props("zfs.dataset", &prop("recordsize", "1M")).unwrap();
        for bad in [
            "mountpoint",
            "sharenfs",
            "sharesmb",
            "setuid",
            "exec",
            "devices",
            "canmount",
            "keylocation",
            "com.example:x",
            "phoenix:owner",
            "volmode",
        ] {
            let e = check_props("zfs.dataset", &prop(bad, "on"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("zfs.dataset: refused by the boundary (dataset properties): property {bad}=on is not allowed: ")), "{e}");
        }
        let e = check_props("zfs.dataset", &prop("mountpoint", "/etc/cron.d"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("over /etc/cron.d"), "{e}");
    }
}

//! The `zfs` family: datasets phoenix owns.
//!
//! `zfs.dataset(name, props)` creates a dataset with `-o k=v` properties plus the ownership
//! properties `phoenix:owner=phoenix` and `phoenix:run=<run id>`. It is idempotent: an
//! existing phoenix-owned dataset is adopted (differing properties are reported as drift in
//! the log, not changed); a dataset phoenix did not create is refused, and never destroyed.
//! Owned means the dataset sets `phoenix:owner` itself ([`crate::ownership::dataset`]): one
//! someone made below a phoenix dataset inherits the property and is still not phoenix's.
//! Runs of one `phoenix up` that need the same dataset (the shared models parent) take
//! turns on a lock per dataset name ([`crate::journal::ResourceLock`]).

use rhai::{Engine, FuncRegistration, Map};

use super::support::step;
use super::{ApiError, script_error};
use crate::host::{HostError, ZFS_OWNER_PROP, ZFS_RUN_PROP};
use crate::journal::UndoStep;
use crate::runtime::Runtime;
use crate::types::{DatasetName, PropKey, PropValue};

crate::api::handle!(
    /// The `zfs` object recipes call methods on.
    ZfsApi
);

type RhaiResult<T> = Result<T, Box<rhai::EvalAltResult>>;

/// Validate recipe properties; the ownership properties are phoenix's own.
pub fn props_of(call: &'static str, map: &Map) -> Result<Vec<(PropKey, PropValue)>, ApiError> {
    let mut out = Vec::new();
    for (k, v) in map {
        let key = PropKey::new(k.as_str()).map_err(|source| ApiError::Type { call, source })?;
        let text = if let Ok(b) = v.as_bool() {
            if b { "on".to_owned() } else { "off".to_owned() }
        } else if let Ok(i) = v.as_int() {
            i.to_string()
        } else {
            v.clone()
                .into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|t| {
                    ApiError::spec(
                        call,
                        format!("property {key} must be a string, int or bool, found {t}"),
                    )
                })?
        };
        let value = PropValue::new(text).map_err(|source| ApiError::Type { call, source })?;
        out.push((key, value));
    }
    Ok(out)
}

/// `zfs.dataset(name, props)`: returns the dataset's mountpoint (empty when unmounted).
/// Missing parents below the pool are created first, each as its own owned step (never
/// `zfs create -p`, whose parents would carry no owner and no undo).
pub fn dataset(
    rt: &Runtime,
    name: &DatasetName,
    props: &[(PropKey, PropValue)],
) -> Result<String, ApiError> {
    const CALL: &str = "zfs.dataset";
    let boundary = rt.boundary();
    let name = boundary.dataset_name(CALL, name.as_str())?;
    boundary.dataset_props(CALL, props)?;
    let name = &name;
    let parts: Vec<&str> = name.as_str().split('/').collect();
    // Missing parents below the pool, each its own owned step: the models parent the
    // operator named (`rpool/phoenix/models` needs `rpool/phoenix`) and those below it.
    // An existing one that is not phoenix's is used as it is and never touched. Below a
    // parent this call created, nothing can exist yet: no need to ask (each `zfs get` is a
    // host command).
    let mut created = false;
    for depth in 2..parts.len() {
        let parent =
            DatasetName::new(parts[..depth].join("/")).map_err(|source| ApiError::Type {
                call: "zfs.dataset",
                source,
            })?;
        created = ensure_one(rt, &parent, &[], true, created)?.is_none();
    }
    Ok(match ensure_one(rt, name, props, false, created)? {
        Some(mountpoint) => mountpoint,
        None if rt.dry_run => format!("/{name}"),
        None => rt.host.zfs_mountpoint(name)?.unwrap_or_default(),
    })
}

/// Adopt `name` when phoenix owns it, refuse it when not (unless it is only the parent of
/// the dataset asked for), create it when absent (without asking first when `absent`: its
/// parent was created a moment ago). The mountpoint of an existing dataset; `None` when it
/// was created.
fn ensure_one(
    rt: &Runtime,
    name: &DatasetName,
    props: &[(PropKey, PropValue)],
    parent_of_ours: bool,
    absent: bool,
) -> Result<Option<String>, ApiError> {
    // Runs that need the same dataset at once (the models parent of every container of a
    // `phoenix up`) take turns: the first creates it, the others then find and adopt it
    // instead of failing on "dataset already exists". A dry run creates nothing.
    let _turn = if rt.dry_run {
        None
    } else {
        Some(crate::journal::ResourceLock::acquire(
            &rt.settings.state_dir.value,
            "dataset",
            name.as_str(),
        )?)
    };
    let owned = if absent {
        crate::ownership::Dataset::Absent
    } else {
        crate::ownership::dataset(rt.host.as_ref(), name)?
    };
    if owned != crate::ownership::Dataset::Absent {
        let existing = rt.host.zfs_get(name)?.unwrap_or_default();
        if !matches!(owned, crate::ownership::Dataset::Owned { .. }) {
            if parent_of_ours {
                // An existing parent someone else made (e.g. the host's `rpool/phoenix`):
                // phoenix creates beneath it and never touches it.
                return Ok(Some(
                    existing.get("mountpoint").cloned().unwrap_or_default(),
                ));
            }
            return Err(HostError::DatasetNotOwned(name.clone()).into());
        }
        for (k, v) in props {
            if existing
                .get(k.as_str())
                .is_some_and(|have| !have.eq_ignore_ascii_case(v.as_str()))
            {
                tracing::warn!(dataset = %name, property = %k, have = %existing[k.as_str()], want = %v, "dataset property drift (left unchanged)");
            }
        }
        return Ok(Some(
            existing.get("mountpoint").cloned().unwrap_or_default(),
        ));
    }
    let mut all = props.to_vec();
    let owner = |k: &str, v: &str| -> Result<(PropKey, PropValue), ApiError> {
        Ok((
            PropKey::new(k).map_err(|source| ApiError::Type {
                call: "zfs.dataset",
                source,
            })?,
            PropValue::new(v).map_err(|source| ApiError::Type {
                call: "zfs.dataset",
                source,
            })?,
        ))
    };
    all.push(owner(ZFS_OWNER_PROP, crate::host::OWNER_TAG)?);
    all.push(owner(ZFS_RUN_PROP, &rt.run_id)?);
    step(
        rt,
        &format!("zfs.dataset:{name}"),
        UndoStep::DestroyDataset { name: name.clone() },
        || Ok(rt.host.zfs_create(name, &all)?),
    )?;
    Ok(None)
}

/// Register the `zfs` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ZfsApi>("Zfs");
    let f = |api: ZfsApi, name: &str, props: Map| -> RhaiResult<String> {
        const CALL: &str = "zfs.dataset";
        let name = api
            .rt
            .boundary()
            .dataset_name(CALL, name)
            .map_err(script_error)?;
        let props = props_of(CALL, &props).map_err(script_error)?;
        dataset(&api.rt, &name, &props).map_err(script_error)
    };
    FuncRegistration::new("dataset")
        .with_params_info(["zfs: Zfs", "name: String", "String"])
        .with_comments([
            "/// Create the dataset `name` (`rpool/phoenix/models/x`) owned by phoenix, or adopt it when phoenix",
            "/// created it earlier. A dataset phoenix did not create is refused. Returns its",
            "/// mountpoint. Undo: `zfs destroy` (only phoenix-owned datasets).",
        ])
        .register_into_engine(engine, move |api: ZfsApi, name: &str| f(api, name, Map::new()));
    FuncRegistration::new("dataset")
        .with_params_info(["zfs: Zfs", "name: String", "props: Map", "String"])
        .with_comments(["/// Create the dataset with properties (`#{compression: \"lz4\", recordsize: \"1M\"}`)."])
        .register_into_engine(engine, f);
}

//! What every primitive shares: the write-ahead step protocol and the conversions from
//! Rhai values to typed specs.
//!
//! [`step`] is the only way a primitive changes host state: it checks for a pending signal,
//! writes the journal intent (with the compensating [`UndoStep`]) and only then acts, and
//! marks the step done afterwards. A crash between the two leaves an intent without `done`,
//! which `destroy` resolves by looking at the real state.

use std::time::Duration;

use rhai::{Array, Dynamic, Map};

use super::ApiError;
use crate::journal::UndoStep;
use crate::runtime::Runtime;
use crate::types::{DurationSpec, Vmid};

/// Run `act` as step `name` with the write-ahead protocol.
pub fn step<T>(
    rt: &Runtime,
    name: &str,
    undo: UndoStep,
    act: impl FnOnce() -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    check_cancel(rt)?;
    let seq = rt.journal.intent(name, undo)?;
    // The one place a journaled step shows progress (a `start` line or a live spinner,
    // heartbeats while it runs, `done`/`failed` with the time): crate::progress.
    let shown = if rt.dry_run {
        tracing::info!("plan  {name}");
        None
    } else {
        Some(rt.progress.step(name))
    };
    let value = act().map_err(|e| {
        // A signal kills the running command, which then fails in whatever way its
        // primitive reports (a host error, a failed exec): the cause is the signal, so the
        // run ends as interrupted (exit 130/143), not as a failed step (exit 1).
        if rt.cancel.is_cancelled() {
            ApiError::Interrupted
        } else {
            e
        }
    })?;
    rt.journal.done(seq)?;
    if let Some(shown) = shown {
        shown.done();
        if let Err(e) =
            crate::markers::write_marker(&rt.settings.marker_dir.value, name, &rt.run_id)
        {
            // A marker is a convenience for operators and re-runs; the journal is the record.
            tracing::warn!(step = name, error = %e, "cannot write marker");
        }
    }
    Ok(value)
}

/// Show a command run inside container `vmid` as a step (`lxc.exec:901 apt-get install -y
/// docker.io`, display-quoted, cut at 100 characters, redacted by the tracker); `None` in a
/// dry run, where nothing runs.
pub fn exec_step(
    rt: &Runtime,
    vmid: crate::types::Vmid,
    argv: &[String],
) -> Option<crate::progress::Step> {
    if rt.dry_run {
        return None;
    }
    let mut shown = crate::exec::display_argv(argv);
    if shown.chars().count() > 100 {
        shown = shown.chars().take(99).collect::<String>() + "…";
    }
    Some(rt.progress.step(format!("lxc.exec:{vmid} {shown}")))
}

/// Fail with [`ApiError::Interrupted`] when a signal asked phoenix to stop.
pub fn check_cancel(rt: &Runtime) -> Result<(), ApiError> {
    if rt.cancel.is_cancelled() {
        Err(ApiError::Interrupted)
    } else {
        Ok(())
    }
}

/// A container argument: a container map/handle with `vmid`, or a plain integer id.
pub fn vmid_of(call: &'static str, value: &Dynamic) -> Result<Vmid, ApiError> {
    if let Some(map) = value.read_lock::<Map>() {
        let v = map
            .get("vmid")
            .ok_or_else(|| ApiError::spec(call, "container map has no `vmid`"))?;
        return vmid_of(call, v);
    }
    if let Ok(n) = value.as_int() {
        return u64::try_from(n)
            .map_err(|_| ApiError::spec(call, format!("vmid {n} is negative")))
            .and_then(|n| Vmid::new(n).map_err(|source| ApiError::Type { call, source }));
    }
    if let Ok(s) = value.clone().into_immutable_string() {
        return s.parse().map_err(|source| ApiError::Type { call, source });
    }
    Err(ApiError::spec(
        call,
        format!(
            "expected a container (a map with `vmid`, or an id), found {}",
            value.type_name()
        ),
    ))
}

/// A string field of an options map.
pub fn opt_str(call: &'static str, map: &Map, key: &str) -> Result<Option<String>, ApiError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .clone()
            .into_immutable_string()
            .map(|s| Some(s.to_string()))
            .map_err(|t| ApiError::spec(call, format!("`{key}` must be a string, found {t}"))),
    }
}

/// A duration field (`"10s"`) of an options map.
pub fn opt_duration(
    call: &'static str,
    map: &Map,
    key: &str,
) -> Result<Option<Duration>, ApiError> {
    opt_str(call, map, key)?
        .map(|s| {
            s.parse::<DurationSpec>()
                .map(|d| d.0)
                .map_err(|source| ApiError::Type { call, source })
        })
        .transpose()
}

/// An integer field of an options map.
pub fn opt_int(call: &'static str, map: &Map, key: &str) -> Result<Option<i64>, ApiError> {
    match map.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => v
            .as_int()
            .map(Some)
            .map_err(|t| ApiError::spec(call, format!("`{key}` must be an integer, found {t}"))),
    }
}

/// Refuse keys an options map does not know (typos are errors, not silently ignored).
pub fn known_keys(call: &'static str, map: &Map, known: &[&str]) -> Result<(), ApiError> {
    for k in map.keys() {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::spec(call, super::options::unknown_key(k, known)));
        }
    }
    Ok(())
}

/// An array of strings (argv).
pub fn string_array(call: &'static str, what: &str, arr: &Array) -> Result<Vec<String>, ApiError> {
    arr.iter()
        .enumerate()
        .map(|(i, v)| {
            v.clone()
                .into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|t| {
                    ApiError::spec(call, format!("{what}[{i}] must be a string, found {t}"))
                })
        })
        .collect()
}

/// A Rhai map from any serialisable value.
pub fn to_dynamic<T: serde::Serialize>(value: &T) -> Dynamic {
    rhai::serde::to_dynamic(value).unwrap_or(Dynamic::UNIT)
}

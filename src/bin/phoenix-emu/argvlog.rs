//! `$ROOT/argv.log`: one JSON object per line for every call the emulator receives
//! (DESIGN.md §7), appended under an exclusive `flock` so parallel calls never interleave.
//!
//! `exit` is `null` for a call that hangs (`hang`, `succeed-then-hang`): the line is
//! written before the hang, since the caller kills the process. `fault` names the injected
//! action when one applied (an addition to the contract's fields). stdin is never logged,
//! only its length. `work_us` is `[began, ended]` of the tool's own work (after any
//! injected delay), in µs of the monotonic clock.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::Duration;

use serde::Serialize;

use crate::root::{Root, RootError, lock_file};

/// One logged call.
#[derive(Debug, Serialize)]
pub struct Entry<'a> {
    /// The tool (`pct`, `zfs`, …).
    pub tool: &'a str,
    /// Its arguments (without the tool name).
    pub argv: &'a [String],
    /// The environment the call got, as an object.
    #[serde(serialize_with = "env_map")]
    pub env: &'a [(String, String)],
    /// How many bytes came on stdin.
    pub stdin_bytes: usize,
    /// The exit code, `null` when the call hung.
    pub exit: Option<i32>,
    /// The injected fault applied, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<&'a str>,
    /// When the tool's work began and ended, in µs of the system's monotonic clock
    /// ([`now_us`]); absent when a fault stood in for the work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_us: Option<(u64, u64)>,
}

/// Microseconds of `CLOCK_MONOTONIC`: one clock for every process of the machine, so the
/// work intervals of parallel calls compare (an addition to the contract's fields; a test
/// checks with them that no two writes to one container config overlapped).
pub fn now_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000
    })
}

fn env_map<S: serde::Serializer>(env: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    let map: std::collections::BTreeMap<&str, &str> =
        env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    map.serialize(s)
}

/// Append `entry` as one line.
pub fn append(root: &Root, entry: &Entry<'_>) -> Result<(), RootError> {
    let path = root.join("argv.log");
    let mut line = serde_json::to_vec(entry).map_err(|source| RootError::Json {
        path: path.clone(),
        source,
    })?;
    line.push(b'\n');
    let _lock = lock_file(&root.join("argv.log.lock"), Duration::from_secs(60))?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| RootError::io("open", &path, e))?;
    f.write_all(&line)
        .map_err(|e| RootError::io("append to", &path, e))
}

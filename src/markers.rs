//! Markers of finished steps: `$PHOENIX_MARKER_DIR/<step>.done` (JSON: step, run, time).
//!
//! A marker is a convenience for operators and re-runs; the journal is the record. The
//! primitives write one when a step finishes ([`write_marker`]); `destroy` and rollbacks
//! remove the markers of what they removed. This module sits below `api/` and
//! `lifecycle`, so neither imports the other for it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::types::Vmid;

/// Where the marker of `step` lives.
pub fn marker_path(marker_dir: &Path, step: &str) -> PathBuf {
    let mut name = String::with_capacity(step.len() + 5);
    for b in step.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name.push_str(".done");
    marker_dir.join(name)
}

/// Record that `step` finished in run `run`.
pub fn write_marker(marker_dir: &Path, step: &str, run: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(marker_dir)?;
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = serde_json::json!({"step": step, "run": run, "ts": ts}).to_string();
    crate::atomic_file::write(&marker_path(marker_dir, step), body.as_bytes(), 0o600)
}

/// Whether `step` has a marker.
pub fn has_marker(marker_dir: &Path, step: &str) -> bool {
    marker_path(marker_dir, step).exists()
}

/// Remove the marker of `step` if run `run` wrote it.
pub fn remove_marker(marker_dir: &Path, step: &str, run: &str) -> std::io::Result<()> {
    let path = marker_path(marker_dir, step);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let writer = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("run").and_then(|r| r.as_str()).map(str::to_owned));
    if writer.as_deref() == Some(run) {
        std::fs::remove_file(&path)?;
    }
    Ok(())
}

/// Remove the markers of the selected containers (all markers when `vmids` is empty),
/// except those of the steps in `keep` (still outstanding, e.g. datasets kept by
/// `destroy --keep-data`). Returns how many were removed.
pub fn remove_markers(
    marker_dir: &Path,
    vmids: &[Vmid],
    keep: &BTreeSet<String>,
) -> std::io::Result<usize> {
    let entries = match std::fs::read_dir(marker_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("done") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let step = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("step").and_then(|s| s.as_str()).map(str::to_owned))
            .unwrap_or_default();
        let selected = vmids.is_empty()
            || vmids
                .iter()
                .any(|v| step.split(':').any(|part| part == v.to_string()));
        if selected && !keep.contains(&step) {
            std::fs::remove_file(&path)?;
            n += 1;
        }
    }
    Ok(n)
}

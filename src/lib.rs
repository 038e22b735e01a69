//! phoenix puts vLLM servers on NVIDIA GPUs inside Proxmox VE LXC containers.
//!
//! # Architecture
//! ```text
//! config (JSON + schema) ─► typed Config ─► Rhai recipe (sandboxed) ─► primitives (typed Rust)
//!                                                │                        │
//!                                                ▼                        ▼
//!                                       undo journal (write-ahead)   Host backend ─► argv-only
//!                                                                    (pve | emulated | lxc)
//! ```
//! - [`config`]: the container config file, schema and semantic validation.
//! - [`settings`]: paths and tunables with their sources (flag > env > file > default).
//! - [`types`]: validated newtypes for everything that reaches a command line.
//! - [`datasets`]: where phoenix's ZFS datasets live (the models parent).
//! - [`doctor`]: the read-only host preflight (`phoenix doctor`, and `up` before it acts).
//! - [`exec`]: the one door for processes (argv only, no shell).
//! - [`host`]: the [`host::Host`] trait and its backends (`pve`, which also drives the
//!   emulated host, and `lxc`).
//! - [`journal`]: the write-ahead undo journal and per-container locks.
//! - [`ownership`]: whose a container is (the `phoenix` tag, or the journal's intent).
//! - [`secret`]: opaque secrets and the age-encrypted store.
//! - [`runtime`]: the state one recipe run shares with its primitives.
//! - [`plan`]: the `--dry-run` plan (`+`/`~`/`-` changes, file diffs, read-only checks).
//! - [`boundary`]: what a recipe may touch (DESIGN.md §12): the one choke point every
//!   primitive asks, below `api` and `script`.
//! - [`progress`]: what phoenix waits for and for how long, on stderr (spinners on a
//!   terminal, heartbeat lines otherwise), one tracker per container.
//! - [`report`]: what a run reports to the operator (recipe outputs, `--json` version,
//!   follow-up commands spelled as the operator typed phoenix).
//! - [`api`]: the primitives, one file per recipe-facing family.
//! - [`script`]: the sandboxed Rhai engine, lint and the generated API reference.
//! - [`cli`]: the command line; [`main_entry`] prints errors and picks the exit code.

pub mod api;
pub(crate) mod atomic_file;
pub mod boundary;
pub mod cli;
pub mod config;
pub mod datasets;
pub mod doctor;
pub mod error;
pub mod exec;
pub mod exit;
pub mod host;
pub mod journal;
pub mod lifecycle;
pub mod logging;
pub mod markers;
pub mod ownership;
pub mod plan;
pub mod progress;
pub mod report;
pub mod runtime;
pub mod script;
pub mod secret;
pub mod settings;
pub mod signal;
pub mod types;

#[cfg(test)]
pub(crate) mod test_support;

pub use error::{Error, Result};

use std::ffi::OsString;
use std::process::ExitCode;

/// Run phoenix with `args` (including the program name); print any error with its cause
/// chain and return the exit code of DESIGN.md §6.
/// Every line printed passes through the run's redactor (DESIGN.md §12: no secret in any
/// error, even one a recipe read back from a container).
pub fn main_entry(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let redactor = exec::Redactor::default();
    let Err(err) = cli::run_with(args, &redactor) else {
        return ExitCode::SUCCESS;
    };
    eprintln!("phoenix: error: {}", redactor.redact(&err.to_string()));
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        eprintln!("  caused by: {}", redactor.redact(&cause.to_string()));
        source = cause.source();
    }
    err.exit_code()
}

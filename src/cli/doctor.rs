//! `phoenix doctor`: the host preflight ([`crate::doctor`]) on its own.
//!
//! Loads and validates the config (exit 2 when invalid), opens the host with a runner that
//! passes read-only commands through and records, without running, any that would change
//! the host, runs [`crate::doctor::check`] and prints the report on stdout: every check
//! with its result, the fix under each problem, a summary line; with `--json` the
//! document of docs/json.md. Exit 0 when no check failed (warnings allowed), 2 when one did.

use std::sync::Arc;

use super::Context;
use crate::exec::{CancelFlag, RecordingRunner, Runner, SystemRunner};
use crate::settings::HostKind;
use crate::types::Vmid;

/// `phoenix doctor`.
#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    /// Check only these config entries (repeatable; default: every entry).
    #[arg(long = "lxc", value_name = "VMID")]
    pub lxc: Vec<Vmid>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `phoenix doctor`.
pub fn run(ctx: &Context, args: &DoctorArgs) -> crate::Result<()> {
    let settings = &ctx.settings;
    let config = crate::config::load(&settings.config.value)?;
    super::setup::check_selection(&config, &args.lxc)?;
    if settings.host.value == HostKind::Emulated {
        crate::host::emulated::find_emu_binary().map_err(|e| crate::Error::Usage(e.to_string()))?;
    }
    // Read-only by construction: a command that would change the host is recorded here and
    // never run (the checks ask none; this guards against a future one that would).
    let system: Arc<dyn Runner> = Arc::new(SystemRunner::new(
        ctx.redactor.clone(),
        CancelFlag::default(),
    ));
    let guard = Arc::new(RecordingRunner::dry_run(system));
    let host = crate::host::open(settings, guard.clone())?;
    let report = crate::doctor::check(settings, &config, &args.lxc, host.as_ref());
    if let Some(cmd) = guard.calls().first() {
        return Err(crate::Error::Usage(format!(
            "internal error: the preflight asked to change the host (`{cmd}`); it was not run"
        )));
    }
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json()).expect("the report serialises");
        super::out(&format!("{text}\n"))?;
    } else {
        super::out(&report.render(true))?;
    }
    match report.failure() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

//! `phoenix destroy` and `phoenix status`: what the journal says exists.
//!
//! `destroy` undoes every outstanding step newest first on the backend of the run that
//! recorded it, touching only phoenix-owned resources; it is idempotent (a second run finds
//! nothing and exits 0), continues past a failing step, and exits 3 when anything is left.
//! A dataset that another container the journal records still mounts (e.g. a model cache
//! two servers share, with `destroy --lxc`) is left alone; its step stays in the journal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use clap::Args;

use super::Context;
use crate::exec::{CancelFlag, Runner, SystemRunner};
use crate::host::Host;
use crate::journal::{self, CtLock, Journal};
use crate::lifecycle;

/// Arguments of `phoenix destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Only what belongs to these containers (repeatable); default: everything phoenix made.
    #[arg(long = "lxc", value_name = "VMID")]
    pub lxc: Vec<crate::types::Vmid>,
    /// Also remove phoenix's log files.
    #[arg(long)]
    pub remove_logs: bool,
    /// Keep ZFS datasets (downloaded models).
    #[arg(long)]
    pub keep_data: bool,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `phoenix status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `phoenix destroy`.
pub fn destroy(ctx: &Context, args: DestroyArgs) -> crate::Result<()> {
    crate::signal::install().map_err(crate::Error::Output)?;
    if !args.dry_run {
        crate::host::sweep_push_files(&ctx.settings.state_dir.value.join("tmp"));
    }
    let state = &ctx.settings.state_dir.value;
    let records = journal::read(&Journal::path_in(state))?;
    let items = lifecycle::select_for_destroy(&records, &args.lxc, args.keep_data);

    // Undo commands run in containers: whatever they print is redacted like a run's.
    let store = crate::secret::SecretStore::new(&ctx.settings, ctx.redactor.clone());
    if let Err(e) = store.register_all() {
        tracing::warn!(error = %e, "cannot read the secret store to redact its values");
    }
    let runner: Arc<dyn Runner> = Arc::new(SystemRunner::new(
        ctx.redactor.clone(),
        CancelFlag::default(),
    ));
    let hosts: Mutex<HashMap<String, Arc<dyn Host>>> = Mutex::new(HashMap::new());
    let host_of = |run: &str| -> Result<Arc<dyn Host>, crate::host::HostError> {
        let mut cache = hosts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = cache.get(run) {
            return Ok(Arc::clone(h));
        }
        let settings = lifecycle::settings_for_run(&ctx.settings, &records, run);
        let host = crate::host::open(&settings, Arc::clone(&runner))?;
        cache.insert(run.to_owned(), Arc::clone(&host));
        Ok(host)
    };
    // Hold the lock of every container involved, so no run works on them meanwhile.
    let mut vmids: Vec<_> = items.iter().filter_map(|o| o.undo.vmid()).collect();
    vmids.extend(args.lxc.iter().copied());
    vmids.sort_unstable();
    vmids.dedup();
    let _locks = if args.dry_run {
        Vec::new()
    } else {
        vmids
            .iter()
            .map(|v| CtLock::acquire(state, *v))
            .collect::<Result<Vec<_>, _>>()?
    };

    let mut text = String::new();
    if items.is_empty() {
        text.push_str("nothing to destroy: the journal records nothing phoenix-made");
        if !args.lxc.is_empty() {
            let ids: Vec<String> = args.lxc.iter().map(ToString::to_string).collect();
            text.push_str(&format!(" for {}", ids.join(", ")));
        }
        text.push('\n');
    }

    let journal = if args.dry_run {
        Journal::in_memory("destroy")
    } else {
        Journal::open(
            state,
            &format!("destroy-{}", crate::runtime::Runtime::new_run_id()),
        )?
    };
    let report = lifecycle::undo_outstanding(
        &journal,
        &items,
        &host_of,
        &lifecycle::recorded_containers(&records),
        &ctx.settings.marker_dir.value,
        args.dry_run,
    );
    for line in report.lines() {
        text.push_str(if args.dry_run { "would: " } else { "" });
        text.push_str(&line);
        text.push('\n');
    }
    if !args.dry_run && report.complete() {
        // Steps still outstanding (datasets kept with --keep-data) keep their markers.
        let keep = journal::outstanding(&journal::read(&Journal::path_in(state))?)
            .into_iter()
            .map(|o| o.step)
            .collect();
        let n = lifecycle::remove_markers(&ctx.settings.marker_dir.value, &args.lxc, &keep)
            .map_err(crate::Error::Output)?;
        if n > 0 {
            text.push_str(&format!("removed {n} marker(s)\n"));
        }
        if args.remove_logs {
            let log = ctx.settings.log_dir.value.join("phoenix.log");
            match std::fs::remove_file(&log) {
                Ok(()) => text.push_str(&format!("removed {}\n", log.display())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(crate::Error::Output(e)),
            }
        }
    }
    super::out(&text)?;
    if let Some(sig) = crate::signal::received() {
        return Err(crate::Error::Interrupted(sig));
    }
    if report.complete() {
        Ok(())
    } else {
        Err(crate::Error::Incomplete {
            what: "destroy",
            failed: report.failed.len(),
        })
    }
}

/// Run `phoenix status`.
pub fn status(ctx: &Context, args: StatusArgs) -> crate::Result<()> {
    let records = journal::read(&Journal::path_in(&ctx.settings.state_dir.value))?;
    let status = lifecycle::status(&records);
    if args.json {
        let text = serde_json::to_string_pretty(&status).expect("status serialises");
        return super::out(&format!("{text}\n"));
    }
    if status.containers.is_empty() && status.other.is_empty() {
        return super::out("nothing phoenix-made is recorded in the journal\n");
    }
    let mut text = String::new();
    for (vmid, steps) in &status.containers {
        text.push_str(&format!("container {vmid}\n"));
        for s in steps {
            text.push_str(&format!(
                "  {:<40} {}\n",
                s.step,
                if s.done {
                    "done"
                } else {
                    "started, not confirmed"
                }
            ));
        }
    }
    if !status.other.is_empty() {
        text.push_str("other\n");
        for s in &status.other {
            text.push_str(&format!(
                "  {:<40} {}\n",
                s.step,
                if s.done {
                    "done"
                } else {
                    "started, not confirmed"
                }
            ));
        }
    }
    super::out(&text)
}

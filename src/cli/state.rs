//! `phoenix destroy` and `phoenix status`: what the journal says exists.
//!
//! `destroy` undoes every outstanding step newest first on the backend of the run that
//! recorded it, touching only phoenix-owned resources; it is idempotent (a second run finds
//! nothing and exits 0), continues past a failing step, and exits 3 when anything is left.
//! A dataset that another container the journal records still mounts (e.g. a model cache
//! two servers share, with `destroy --lxc`) is left alone; its step stays in the journal.
//!
//! Before it acts, `destroy` prints its plan on stderr and says loudly when ZFS datasets
//! (downloaded models) will be destroyed (`--keep-data` keeps them). When stdin is a
//! terminal it then asks, and anything but `y`/`yes` changes nothing (exit 1); `--yes`
//! skips the question, and without a terminal (scripts, CI) it proceeds as before. What it
//! did goes to stdout; with `-q` only its one-line summary (and any failure) is printed.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use clap::Args;

use super::Context;
use super::result::{EndpointView, LiveContainer, chain, listening};
use crate::exec::{CancelFlag, Runner, SystemRunner};
use crate::host::{CtStatus, Host};
use crate::journal::{self, CtLock, Journal};
use crate::lifecycle;
use crate::report::{Endpoint, OutputItem};

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
    /// Do not ask on a terminal (without a terminal phoenix never asks).
    #[arg(short = 'y', long)]
    pub yes: bool,
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
    let quiet = ctx.global.quiet;
    let state = &ctx.settings.state_dir.value;
    let records = journal::read(&Journal::path_in(state))?;
    let items = lifecycle::select_for_destroy(&records, &args.lxc, args.keep_data);
    // Hold the lock of every container involved, so no run works on them meanwhile (also
    // while the operator reads the plan: what they confirm is what happens).
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

    if items.is_empty() {
        let mut text = String::from("nothing to destroy: the journal records nothing phoenix-made");
        if !args.lxc.is_empty() {
            let ids: Vec<String> = args.lxc.iter().map(ToString::to_string).collect();
            text.push_str(&format!(" for {}", ids.join(", ")));
        }
        text.push('\n');
        return super::out(&text);
    }

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
    if !args.dry_run {
        let kept = lifecycle::select_for_destroy(&records, &args.lxc, false).len() - items.len();
        let ask = !args.yes && std::io::stdin().is_terminal();
        if ask || !quiet {
            eprint!("{}", plan_text(&items, kept));
        }
        if ask && !confirm(items.len())? {
            return Err(crate::Error::Declined);
        }
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
        &lifecycle::recorded_datasets(&records),
        &ctx.settings.marker_dir.value,
        args.dry_run,
        &ctx.progress.tracker(None),
    );
    let mut text = String::new();
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
        let markers = lifecycle::remove_markers(&ctx.settings.marker_dir.value, &args.lxc, &keep)
            .map_err(crate::Error::Output)?;
        if markers > 0 {
            text.push_str(&format!("removed {markers} marker(s)\n"));
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
    if quiet {
        // The one-line result; failures still show (they are errors).
        text = report
            .failed
            .iter()
            .map(|(s, e)| format!("FAILED        {s}: {e}\n"))
            .collect();
        text.push_str(&summary(&report, args.dry_run));
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

/// `destroy: 11 undone, 0 already gone, 0 left alone, 0 failed`.
fn summary(report: &lifecycle::UndoReport, dry_run: bool) -> String {
    format!(
        "{}: {} undone, {} already gone, {} left alone, {} failed\n",
        if dry_run {
            "destroy --dry-run"
        } else {
            "destroy"
        },
        report.undone.len(),
        report.already_gone.len(),
        report.left_alone.len(),
        report.failed.len()
    )
}

/// What `destroy` is about to do, newest step first (the order it undoes them), with a loud
/// line when datasets (model files) will be destroyed.
fn plan_text(items: &[journal::Outstanding], kept: usize) -> String {
    let mut text = format!("phoenix destroy will undo {} step(s):\n", items.len());
    for item in items.iter().rev() {
        text.push_str(&format!("  - {}\n", lifecycle::describe(item)));
    }
    let datasets: Vec<String> = items
        .iter()
        .rev()
        .filter_map(|o| match &o.undo {
            journal::UndoStep::DestroyDataset { name } => Some(name.to_string()),
            _ => None,
        })
        .collect();
    if !datasets.is_empty() {
        let line = format!(
            "WARNING: {} ZFS dataset(s) will be DESTROYED with everything in them (downloaded \
             model weights): {}. Add --keep-data to keep them.",
            datasets.len(),
            datasets.join(", ")
        );
        text.push_str(&loud(&line));
        text.push('\n');
    }
    if kept > 0 {
        text.push_str(&format!(
            "keeping {kept} dataset step(s) (--keep-data): their datasets and data stay\n"
        ));
    }
    text
}

/// `line` in bold red when stderr is a colour terminal (`NO_COLOR` unset).
fn loud(line: &str) -> String {
    let color = std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    if !color {
        return line.to_owned();
    }
    let style = anstyle::Style::new()
        .bold()
        .fg_color(Some(anstyle::AnsiColor::Red.into()));
    format!("{style}{line}{style:#}")
}

/// Ask on the terminal; only `y` or `yes` (any case) goes ahead. End of input is a no.
fn confirm(n: usize) -> crate::Result<bool> {
    use std::io::BufRead;
    eprint!("Undo these {n} step(s)? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(crate::Error::Output)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// One container in `status`: its live state next to what the journal records.
#[derive(Debug, serde::Serialize)]
struct StatusContainer {
    /// Live state.
    #[serde(flatten)]
    live: LiveContainer,
    /// The backend of the run that last touched it.
    host: crate::settings::HostKind,
    /// The endpoints the last run that reported any for it recorded.
    endpoints: Vec<EndpointView>,
    /// Outstanding journal steps, oldest first.
    steps: Vec<lifecycle::StatusStep>,
}

/// The `status --json` document.
#[derive(Debug, serde::Serialize)]
struct StatusDoc {
    version: u32,
    containers: Vec<StatusContainer>,
    /// Steps that concern no container (datasets).
    other: Vec<lifecycle::StatusStep>,
}

/// Run `phoenix status`: what the journal records, per container, with the container's
/// live state (asked of the backend of the run that last touched it) and the endpoints
/// its last run reported (with whether their port accepts a connection now).
pub fn status(ctx: &Context, args: StatusArgs) -> crate::Result<()> {
    let records = journal::read(&Journal::path_in(&ctx.settings.state_dir.value))?;
    let status = lifecycle::status(&records);
    let runner: Arc<dyn Runner> = Arc::new(SystemRunner::new(
        ctx.redactor.clone(),
        CancelFlag::default(),
    ));
    let mut containers = Vec::new();
    for (vmid, steps) in status.containers {
        let Ok(vmid) = vmid.parse::<crate::types::Vmid>() else {
            continue;
        };
        let run = steps.last().map(|s| s.run.clone()).unwrap_or_default();
        let settings = lifecycle::settings_for_run(&ctx.settings, &records, &run);
        let live = match crate::host::check_tools(&settings)
            .and_then(|()| crate::host::open(&settings, Arc::clone(&runner)))
        {
            Ok(host) => LiveContainer::query(host.as_ref(), vmid, None, None),
            Err(e) => LiveContainer {
                vmid,
                name: None,
                state: None,
                address: None,
                error: Some(chain(&e)),
            },
        };
        let endpoints = recorded_endpoints(&records, vmid)
            .iter()
            .map(|e| {
                let mut view = EndpointView::new(e, &ctx.invocation);
                if live.state == Some(CtStatus::Running) {
                    view.listening = listening(&e.url, live.address.as_deref());
                }
                view
            })
            .collect();
        containers.push(StatusContainer {
            live,
            host: settings.host.value,
            endpoints,
            steps,
        });
    }
    if args.json {
        let doc = StatusDoc {
            version: crate::report::JSON_VERSION,
            containers,
            other: status.other,
        };
        let text = serde_json::to_string_pretty(&doc).expect("status serialises");
        return super::out(&format!("{text}\n"));
    }
    if containers.is_empty() && status.other.is_empty() {
        return super::out("nothing phoenix-made is recorded in the journal\n");
    }
    let width = containers
        .iter()
        .flat_map(|c| &c.steps)
        .chain(&status.other)
        .map(|s| s.step.chars().count())
        .max()
        .unwrap_or(0);
    let step_line = |s: &lifecycle::StatusStep| {
        format!(
            "    {:<width$}  {}\n",
            s.step,
            if s.done {
                "done"
            } else {
                "started, not confirmed"
            }
        )
    };
    let mut text = String::new();
    for c in &containers {
        text.push_str(&format!("container {} ({} host)\n", c.live.line(), c.host));
        let mut rows = Vec::new();
        for e in &c.endpoints {
            e.status_rows(&mut rows);
        }
        let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        for (label, value) in rows {
            text.push_str(&format!("  {label:width$}  {value}\n"));
        }
        text.push_str("  journal:\n");
        for s in &c.steps {
            text.push_str(&step_line(s));
        }
    }
    if !status.other.is_empty() {
        text.push_str("other (no container):\n");
        for s in &status.other {
            text.push_str(&step_line(s));
        }
    }
    super::out(&text)
}

/// The endpoints for `vmid` that the last run reporting any for it recorded.
fn recorded_endpoints(records: &[journal::Record], vmid: crate::types::Vmid) -> Vec<Endpoint> {
    let mut last_run: Option<&str> = None;
    let mut found: Vec<Endpoint> = Vec::new();
    for r in records {
        if let journal::Entry::Output {
            item: OutputItem::Endpoint(e),
        } = &r.entry
        {
            if e.vmid != Some(vmid) {
                continue;
            }
            if last_run != Some(r.run.as_str()) {
                found.clear();
                last_run = Some(r.run.as_str());
            }
            found.push(e.clone());
        }
    }
    found
}

//! `phoenix up`: every entry of the config (or the `--lxc` ones) provisioned with its
//! recipe, several at once, after the host preflight; and the same engine for `recipe run`
//! with several `--lxc` (issue 14).
//!
//! Before anything is touched (exit 2, nothing changed, as `recipe run`): the config is
//! loaded and validated (the `after` graph has no cycle, a GPU two entries share is a
//! warning unless one marks it `gpu_exclusive`), every recipe is compiled and checked (an
//! entry's `recipe`, relative to the config file's directory, else the built-in
//! [`CONTAINER_RECIPE`]: create, start, the entry's `packages`; no GPU, no vLLM), the
//! secret key is checked (or made, when a recipe generates its secrets), the models parent
//! dataset is resolved once, the boundary's preflight checks every entry's values, and
//! `up` runs the host preflight ([`crate::doctor`]): every problem is listed on stderr and
//! the command exits 2.
//!
//! Then the entries run in one process, at most `--parallel` at once (default
//! [`DEFAULT_PARALLEL`]; 1 = one after the other), an entry only once every selected entry
//! it names in `after` is ready, in ascending vmid order among those that may start.
//! Each entry is one run of its own ([`run_one`]): its own run id, its journal scope (the
//! `run` record names the container and the batch), its own Rhai engine, its own host
//! runner (its own dry-run plan), its container lock. One entry's failure never stops the
//! others: an entry that comes `after` a failed one is skipped (it would build on what is
//! not there), every other one goes on. `--rollback-on-failure` undoes only the failed
//! entries' runs, each right after it failed, while the others continue.
//! SIGINT/SIGTERM: nothing new starts, the running recipes stop at their next command
//! (the running command is killed), the asked rollbacks run, and phoenix exits 130/143.
//!
//! Progress: each container's log lines carry its id (a `ct{vmid=…}` span), with one line
//! when it starts and one when it ends. At the end stdout gets the summary table
//! (container, recipe, state, endpoint, time) and, under it, why each failed one failed and
//! what its rollback did; `--json` prints the same as one document (docs/json.md).
//! Exit: 0 when every entry is ready, 1 when one failed or was skipped, 3 when a rollback
//! left something, 130/143 after a signal.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::Context;
use super::result::{EndpointView, chain};
use crate::config::Config;
use crate::exec::{CancelFlag, RecordingRunner, SystemRunner};
use crate::journal::{CtLock, Entry, Journal};
use crate::runtime::Runtime;
use crate::script::stdlib::Stdlib;
use crate::script::{Recipe, RecipeError};
use crate::secret::SecretStore;
use crate::settings::{HostKind, Settings};
use crate::types::Vmid;

/// How many entries run at once when `--parallel` is not given. Most of a provisioning
/// run is waiting (image pulls, model downloads, a server loading), and each real `pct`
/// call starts a Perl interpreter: four keeps a host busy without crowding it.
pub const DEFAULT_PARALLEL: usize = 4;

/// The recipe of entries without a `recipe` field (the source tree's
/// `recipes/container.rhai`, built in so an installed phoenix always has it).
pub const CONTAINER_RECIPE: &str = include_str!("../../recipes/container.rhai");

/// The file name the built-in recipe runs under (in logs, the journal and the summary).
pub const CONTAINER_RECIPE_NAME: &str = "container.rhai";

/// `phoenix up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Provision only these config entries (repeatable; default: every entry).
    #[arg(long = "lxc", value_name = "VMID")]
    pub lxc: Vec<Vmid>,
    /// How many containers are provisioned at once (1 = one after the other)
    /// [default: 4]
    #[arg(long, value_name = "N")]
    pub parallel: Option<NonZeroUsize>,
    /// Undo a failed container's steps right after it failed (the others go on).
    #[arg(long)]
    pub rollback_on_failure: bool,
    /// Show, per container, the exact commands that would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary (or the dry run's plans) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One entry to provision and the recipe that does it.
pub(super) struct Job<'r> {
    /// The config entry.
    pub vmid: Vmid,
    /// Its recipe, compiled.
    pub recipe: &'r Recipe,
}

/// How a batch runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Options {
    /// At most this many at once.
    pub parallel: usize,
    /// Undo a failed entry's run.
    pub rollback: bool,
    /// Plan only.
    pub dry_run: bool,
    /// Print JSON.
    pub json: bool,
    /// Run the host preflight first (`up`; `recipe run` has none).
    pub preflight: bool,
}

/// What became of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Its recipe finished.
    Ready,
    /// Its recipe failed; what it made stays (recorded in the journal).
    Failed,
    /// Its recipe failed and its steps were undone.
    RolledBack,
    /// Its recipe failed and the rollback left something.
    RollbackIncomplete,
    /// Not started: an entry it comes after failed, or a signal came first.
    Skipped,
    /// Stopped by SIGINT/SIGTERM (its steps undone when asked).
    Interrupted,
    /// A dry run planned it.
    Planned,
}

impl State {
    fn words(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Failed => "FAILED",
            Self::RolledBack => "FAILED, rolled back",
            Self::RollbackIncomplete => "FAILED, rollback incomplete",
            Self::Skipped => "skipped",
            Self::Interrupted => "interrupted",
            Self::Planned => "planned",
        }
    }
}

/// One entry in the summary (and in `--json`'s `containers`).
#[derive(Debug, Clone, Serialize)]
pub struct ContainerResult {
    /// The container id.
    pub vmid: Vmid,
    /// The entry's name.
    pub name: String,
    /// The recipe's file name.
    pub recipe: String,
    /// What became of it.
    pub state: State,
    /// Its run id (`null` when it did not start).
    pub run: Option<String>,
    /// How long its run took, rollback included, in milliseconds.
    pub elapsed_ms: u64,
    /// The first endpoint its recipe reported (`output.endpoint`), `null` when none.
    pub endpoint: Option<String>,
    /// Every endpoint its recipe reported, as in `recipe run --json`.
    pub endpoints: Vec<EndpointView>,
    /// Why it failed or was skipped (the error and its causes).
    pub error: Option<String>,
    /// What the rollback did, one line per step (empty when none ran).
    pub rollback: Vec<String>,
    /// A dry run's planned changes, one per line (`null` when not a dry run).
    pub plan: Option<Vec<String>>,
}

/// The result of `phoenix up` (and of `recipe run` with several `--lxc`): the `--json`
/// document.
#[derive(Debug, Clone, Serialize)]
pub struct UpResult {
    /// Format version ([`crate::report::JSON_VERSION`]).
    pub version: u32,
    /// Whether every entry is ready (or planned).
    pub ok: bool,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// The host backend.
    pub host: HostKind,
    /// The batch id every run of this command carries in the journal.
    pub batch: Option<String>,
    /// At most this many ran at once.
    pub parallel: usize,
    /// How long it took, in milliseconds.
    pub elapsed_ms: u64,
    /// The host preflight's report (`phoenix doctor --json`'s document), `null` for
    /// `recipe run`.
    pub preflight: Option<serde_json::Value>,
    /// Every selected entry, ascending by vmid.
    pub containers: Vec<ContainerResult>,
    /// The command that removes what these runs made (`null` when nothing is recorded).
    pub destroy: Option<String>,
}

/// Run `phoenix up`.
pub fn run(ctx: &Context, args: &UpArgs) -> crate::Result<()> {
    let config = crate::config::load(&ctx.settings.config.value)?;
    super::setup::check_selection(&config, &args.lxc)?;
    let ids = selection(&config, &args.lxc);
    let stdlib = Stdlib::from_settings(&ctx.settings);
    // Each distinct recipe is compiled once; the entries that name it share it.
    let mut recipes: BTreeMap<PathBuf, Recipe> = BTreeMap::new();
    for vmid in &ids {
        let entry = config.get(*vmid).expect("selection is checked");
        let path = recipe_path(&config, entry.recipe.as_deref());
        if recipes.contains_key(&path) {
            continue;
        }
        let recipe = match entry.recipe {
            Some(_) => Recipe::read(&path, &stdlib)?,
            None => Recipe::compile(&path, CONTAINER_RECIPE, &stdlib)?,
        };
        recipes.insert(path, recipe);
    }
    let jobs: Vec<Job<'_>> = ids
        .iter()
        .map(|v| {
            let entry = config.get(*v).expect("selection is checked");
            Job {
                vmid: *v,
                recipe: &recipes[&recipe_path(&config, entry.recipe.as_deref())],
            }
        })
        .collect();
    let opts = Options {
        parallel: args
            .parallel
            .map_or(DEFAULT_PARALLEL, NonZeroUsize::get)
            .min(jobs.len().max(1)),
        rollback: args.rollback_on_failure,
        dry_run: args.dry_run,
        json: args.json,
        preflight: true,
    };
    execute(ctx, &config, &jobs, opts)
}

/// Where an entry's recipe is: its `recipe` relative to the config file's directory (or
/// absolute), else the built-in container recipe's name.
fn recipe_path(config: &Config, recipe: Option<&str>) -> PathBuf {
    match recipe {
        Some(r) => {
            let dir = config.path.parent().unwrap_or(Path::new("."));
            dir.join(r)
        }
        None => PathBuf::from(CONTAINER_RECIPE_NAME),
    }
}

/// The selected ids, ascending and once each (every entry when none is named).
fn selection(config: &Config, lxc: &[Vmid]) -> Vec<Vmid> {
    if lxc.is_empty() {
        return config.lxc.keys().copied().collect();
    }
    let set: BTreeSet<Vmid> = lxc.iter().copied().collect();
    set.into_iter().collect()
}

/// What every run of a batch shares.
struct Shared<'a> {
    ctx: &'a Context,
    settings: Settings,
    config: Arc<Config>,
    secrets: SecretStore,
    cancel: CancelFlag,
    batch: String,
    opts: Options,
    /// The host facts every container's backend shares with the preflight's (the PVE
    /// version, the GPUs): asked once per `up`.
    facts: Arc<crate::host::pve::Facts>,
}

/// Check everything that can be checked without touching the host, run the preflight,
/// then provision `jobs` and print the summary.
pub(super) fn execute(
    ctx: &Context,
    config: &Config,
    jobs: &[Job<'_>],
    opts: Options,
) -> crate::Result<()> {
    let started = Instant::now();
    let settings = &ctx.settings;
    super::setup::check_mount_roots(settings)?;
    crate::host::check_tools(settings)?;
    // The config's warnings (a GPU two entries share, bash-era forms) are shown once,
    // before anything runs.
    for w in &config.warnings {
        tracing::warn!("{}: {w}", config.path.display());
    }
    let mut distinct: Vec<&Recipe> = Vec::new();
    for job in jobs {
        if !distinct.iter().any(|r| std::ptr::eq(*r, job.recipe)) {
            distinct.push(job.recipe);
        }
    }
    for recipe in &distinct {
        recipe.check()?;
    }
    let secrets = SecretStore::new(settings, ctx.redactor.clone());
    super::setup::prepare_secrets(settings, &secrets, &distinct, opts.dry_run)?;

    // Read-only questions first, on a runner that records (and never runs) anything that
    // would change the host: the models parent, the boundary's value checks, the doctor.
    let guard = Arc::new(RecordingRunner::dry_run(Arc::new(SystemRunner::new(
        ctx.redactor.clone(),
        CancelFlag::default(),
    ))));
    let facts = Arc::new(crate::host::pve::Facts::default());
    let probe = crate::host::open_shared(settings, guard.clone(), &facts)?;
    let mut settings = settings.clone();
    if distinct.iter().any(|r| r.uses_models_dataset()) {
        let parent = crate::datasets::resolve(&settings, config, probe.as_ref())?;
        tracing::info!(dataset = %parent.value, source = %parent.source, "models dataset");
        settings.models_dataset = crate::settings::Setting {
            value: Some(parent.value),
            source: parent.source,
        };
    }
    let ids: Vec<Vmid> = jobs.iter().map(|j| j.vmid).collect();
    if let Some(parent) = crate::boundary::known_models_parent(&settings, config) {
        crate::boundary::preflight(config, &ids, &parent)
            .map_err(|r| crate::Error::Usage(r.to_string()))?;
    }
    let mut preflight = None;
    if opts.preflight {
        let report = crate::doctor::check(&settings, config, &ids, probe.as_ref());
        if let Some(cmd) = guard.calls().first() {
            return Err(crate::Error::Usage(format!(
                "internal error: the preflight asked to change the host (`{cmd}`); it was not run"
            )));
        }
        if let Some(err) = report.failure() {
            // Every problem, with its fix, before anything is touched (exit 2).
            eprint!("{}", report.render(false));
            if opts.json {
                let doc = UpResult {
                    version: crate::report::JSON_VERSION,
                    ok: false,
                    dry_run: opts.dry_run,
                    host: settings.host.value,
                    batch: None,
                    parallel: opts.parallel,
                    elapsed_ms: ms(started),
                    preflight: Some(report.to_json()),
                    containers: Vec::new(),
                    destroy: None,
                };
                print_json(&doc)?;
            }
            return Err(err);
        }
        tracing::info!(
            containers = ids.len(),
            warnings = report.warnings(),
            "host preflight passed"
        );
        for f in report.with(crate::doctor::Severity::Warning) {
            let about = f.vmid.map(|v| format!("{v}: ")).unwrap_or_default();
            tracing::warn!("preflight {}: {about}{}", f.check, f.message);
        }
        preflight = Some(report.to_json());
    }
    drop(probe);

    super::setup::start_runs(&settings);
    let shared = Shared {
        ctx,
        settings,
        config: Arc::new(config.clone()),
        secrets,
        cancel: CancelFlag::default(),
        batch: format!("batch-{}", Runtime::new_run_id()),
        opts,
        facts,
    };
    tracing::info!(
        containers = jobs.len(),
        parallel = opts.parallel,
        batch = %shared.batch,
        dry_run = opts.dry_run,
        "provisioning starts"
    );
    let results = schedule(&shared, jobs);
    finish(&shared, results, preflight, started)
}

/// Run `jobs`, at most `parallel` at once, each after the selected entries it names in
/// `after`; the results in vmid order.
fn schedule(shared: &Shared<'_>, jobs: &[Job<'_>]) -> Vec<ContainerResult> {
    let selected: BTreeSet<Vmid> = jobs.iter().map(|j| j.vmid).collect();
    let after: BTreeMap<Vmid, Vec<Vmid>> = jobs
        .iter()
        .map(|j| {
            let deps = shared
                .config
                .get(j.vmid)
                .map(|e| e.after.clone())
                .unwrap_or_default();
            let (inside, outside): (Vec<Vmid>, Vec<Vmid>) =
                deps.into_iter().partition(|d| selected.contains(d));
            if !outside.is_empty() {
                tracing::info!(
                    vmid = %j.vmid,
                    "comes after {} (not selected: taken as already there)",
                    join(&outside)
                );
            }
            (j.vmid, inside)
        })
        .collect();
    let by_id: BTreeMap<Vmid, &Job<'_>> = jobs.iter().map(|j| (j.vmid, j)).collect();
    let stopping = || crate::signal::received().is_some() || shared.cancel.is_cancelled();
    let run = |vmid: Vmid| {
        let job = by_id[&vmid];
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_one(shared, job)))
            .unwrap_or_else(|_| {
                let mut r = skipped(shared, job, "phoenix panicked".to_owned());
                r.state = State::Failed;
                r
            })
    };
    let skip = |vmid: Vmid, why: String| {
        tracing::warn!(vmid = %vmid, "{why}");
        skipped(shared, by_id[&vmid], why)
    };
    run_ordered(&after, shared.opts.parallel, &stopping, &run, &skip)
}

/// The scheduler: runs `run(vmid)` for every key of `after`, at most `parallel` at once on
/// scoped threads, each once every id its `after` list names has ended ready; one whose
/// predecessor did not is `skip`ped. Once `stopping()` says so nothing new starts, and what
/// never started is skipped. The results, ascending by vmid.
fn run_ordered(
    after: &BTreeMap<Vmid, Vec<Vmid>>,
    parallel: usize,
    stopping: &(dyn Fn() -> bool + Sync),
    run: &(dyn Fn(Vmid) -> ContainerResult + Sync),
    skip: &dyn Fn(Vmid, String) -> ContainerResult,
) -> Vec<ContainerResult> {
    let mut pending: Vec<Vmid> = after.keys().copied().collect();
    let mut done: BTreeMap<Vmid, ContainerResult> = BTreeMap::new();
    let (tx, rx) = std::sync::mpsc::channel::<ContainerResult>();
    std::thread::scope(|scope| {
        let mut running = 0usize;
        loop {
            let stop = stopping();
            let mut i = 0;
            while i < pending.len() {
                let vmid = pending[i];
                let deps = &after[&vmid];
                let failed_dep = deps
                    .iter()
                    .find(|d| done.get(d).is_some_and(|r| !ok_state(r.state)));
                if let Some(dep) = failed_dep {
                    let why = format!("not started: it comes after {dep}, which did not finish");
                    done.insert(vmid, skip(vmid, why));
                    pending.remove(i);
                    continue;
                }
                let ready = deps.iter().all(|d| done.contains_key(d));
                if ready && !stop && running < parallel.max(1) {
                    pending.remove(i);
                    running += 1;
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let _ = tx.send(run(vmid));
                    });
                    continue;
                }
                i += 1;
            }
            if running == 0 {
                break;
            }
            // A finished run may let others start; a signal stops new starts.
            match rx.recv_timeout(std::time::Duration::from_millis(200)) {
                Ok(r) => {
                    running -= 1;
                    done.insert(r.vmid, r);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    });
    for vmid in pending {
        let why = if stopping() {
            "not started: interrupted by a signal".to_owned()
        } else {
            "not started: what it comes after did not finish".to_owned()
        };
        done.insert(vmid, skip(vmid, why));
    }
    done.into_values().collect()
}

fn ok_state(state: State) -> bool {
    matches!(state, State::Ready | State::Planned)
}

fn skipped(shared: &Shared<'_>, job: &Job<'_>, why: String) -> ContainerResult {
    ContainerResult {
        vmid: job.vmid,
        name: entry_name(shared, job.vmid),
        recipe: job.recipe.name.clone(),
        state: State::Skipped,
        run: None,
        elapsed_ms: 0,
        endpoint: None,
        endpoints: Vec::new(),
        error: Some(why),
        rollback: Vec::new(),
        plan: None,
    }
}

fn entry_name(shared: &Shared<'_>, vmid: Vmid) -> String {
    shared
        .config
        .get(vmid)
        .map(|e| e.name.to_string())
        .unwrap_or_default()
}

/// One entry's run: its own journal scope, engine, runner and lock; rolled back when it
/// failed and that was asked for.
fn run_one(shared: &Shared<'_>, job: &Job<'_>) -> ContainerResult {
    let started = Instant::now();
    let span = tracing::info_span!("ct", vmid = %job.vmid);
    let _in = span.enter();
    let settings = &shared.settings;
    let dry_run = shared.opts.dry_run;
    let mut result = ContainerResult {
        vmid: job.vmid,
        name: entry_name(shared, job.vmid),
        recipe: job.recipe.name.clone(),
        state: State::Failed,
        run: None,
        elapsed_ms: 0,
        endpoint: None,
        endpoints: Vec::new(),
        error: None,
        rollback: Vec::new(),
        plan: None,
    };
    let run_id = Runtime::new_run_id();
    result.run = Some(run_id.clone());
    tracing::info!(recipe = %job.recipe.name, run = %run_id, "starts");
    let journal = match super::setup::open_journal(settings, &run_id, dry_run) {
        Ok(j) => j,
        Err(e) => return failed_early(result, &e, started),
    };
    let record = journal.append(Entry::run_start(
        settings,
        &job.recipe.path,
        Some(job.vmid),
        Some(shared.batch.clone()),
    ));
    if let Err(e) = record {
        return failed_early(result, &e, started);
    }
    let (runner, plan) = super::setup::runner(&shared.ctx.redactor, &shared.cancel, dry_run);
    let host = match crate::host::open_shared(settings, runner, &shared.facts) {
        Ok(h) => h,
        Err(e) => {
            let _ = journal.append(Entry::End { ok: false });
            return failed_early(result, &e, started);
        }
    };
    let rt = Arc::new(Runtime {
        settings: settings.clone(),
        config: Arc::clone(&shared.config),
        selected: vec![job.vmid],
        recipe_name: job.recipe.name.clone(),
        host,
        journal,
        secrets: shared.secrets.clone(),
        redactor: shared.ctx.redactor.clone(),
        dry_run,
        plan,
        cancel: shared.cancel.clone(),
        run_id,
        notes: crate::plan::Notes::default(),
        // One live line per container on a terminal (the progress layer's tracker).
        progress: shared
            .ctx
            .progress
            .tracker(Some(&format!("{} {}", job.vmid, result.name))),
    });
    // One phoenix process per container at a time (another one fails naming the holder).
    let lock = if dry_run {
        None
    } else {
        match CtLock::acquire(&settings.state_dir.value, job.vmid) {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = rt.journal.append(Entry::End { ok: false });
                return failed_early(result, &e, started);
            }
        }
    };
    let outcome = job.recipe.run(&rt);
    if rt.dry_run {
        result.plan = Some(rt.plan().change_lines());
    }
    let records = if rt.dry_run {
        rt.journal.memory()
    } else {
        crate::journal::read(rt.journal.path()).unwrap_or_default()
    };
    let outputs = crate::journal::outputs_of(&records, &rt.run_id);
    result.endpoints = super::result::RunResult::outputs(&outputs, &shared.ctx.invocation).0;
    result.endpoint = result.endpoints.first().map(|e| e.url.clone());
    match outcome {
        Ok(()) => {
            result.state = if rt.dry_run {
                State::Planned
            } else {
                State::Ready
            };
        }
        Err(err) => fail(shared, &rt, &mut result, &err),
    }
    let ok = ok_state(result.state);
    if let Err(e) = rt.journal.append(Entry::End { ok }) {
        tracing::warn!(error = %e, "cannot record the run's end in the journal");
    }
    drop(lock);
    result.elapsed_ms = ms(started);
    let secs = result.elapsed_ms as f64 / 1000.0;
    match result.state {
        State::Ready => tracing::info!(
            endpoint = result.endpoint.as_deref().unwrap_or("-"),
            "ready in {secs:.1} s"
        ),
        State::Planned => tracing::info!("planned in {secs:.1} s"),
        state => tracing::warn!("{} after {secs:.1} s", state.words()),
    }
    result
}

/// Record why `rt`'s recipe failed, and roll its run back when asked.
fn fail(shared: &Shared<'_>, rt: &Runtime, result: &mut ContainerResult, err: &RecipeError) {
    let interrupted =
        crate::signal::received().is_some() || matches!(err, RecipeError::Interrupted { .. });
    result.error = Some(rt.redactor.redact(&chain(err)));
    tracing::warn!("{}", result.error.as_deref().unwrap_or(""));
    result.state = if interrupted {
        State::Interrupted
    } else {
        State::Failed
    };
    if !shared.opts.rollback || rt.dry_run {
        return;
    }
    tracing::warn!(run = %rt.run_id, "rolling back this container's steps");
    match crate::lifecycle::rollback_run(rt) {
        Ok(report) => {
            result.rollback = report.lines();
            for line in &result.rollback {
                tracing::warn!("rollback: {line}");
            }
            if !report.complete() {
                result.state = State::RollbackIncomplete;
            } else if !interrupted {
                result.state = State::RolledBack;
            }
        }
        Err(e) => {
            result.rollback = vec![format!("FAILED        the rollback: {}", chain(&e))];
            result.state = State::RollbackIncomplete;
        }
    }
}

fn failed_early(
    mut result: ContainerResult,
    err: &dyn std::error::Error,
    started: Instant,
) -> ContainerResult {
    result.error = Some(chain(err));
    result.state = State::Failed;
    result.elapsed_ms = ms(started);
    tracing::warn!("{}", result.error.as_deref().unwrap_or(""));
    result
}

/// Print the summary (or the plans) and turn the results into the exit code.
fn finish(
    shared: &Shared<'_>,
    containers: Vec<ContainerResult>,
    preflight: Option<serde_json::Value>,
    started: Instant,
) -> crate::Result<()> {
    let ctx = shared.ctx;
    let recorded: BTreeSet<Vmid> = if shared.opts.dry_run {
        BTreeSet::new()
    } else {
        crate::journal::read(&Journal::path_in(&shared.settings.state_dir.value))
            .map(|records| {
                crate::journal::outstanding(&records)
                    .iter()
                    .filter_map(|o| o.undo.vmid())
                    .collect()
            })
            .unwrap_or_default()
    };
    let removable: Vec<Vmid> = containers
        .iter()
        .map(|c| c.vmid)
        .filter(|v| recorded.contains(v))
        .collect();
    let doc = UpResult {
        version: crate::report::JSON_VERSION,
        ok: containers.iter().all(|c| ok_state(c.state)),
        dry_run: shared.opts.dry_run,
        host: shared.settings.host.value,
        batch: Some(shared.batch.clone()),
        parallel: shared.opts.parallel,
        elapsed_ms: ms(started),
        preflight,
        containers,
        destroy: (!removable.is_empty()).then(|| ctx.invocation.destroy(&removable)),
    };
    if shared.opts.json {
        print_json(&doc)?;
    } else {
        super::out(&human(&doc))?;
    }
    if let Some(sig) = crate::signal::received() {
        return Err(crate::Error::Interrupted(sig));
    }
    let incomplete = doc
        .containers
        .iter()
        .filter(|c| c.state == State::RollbackIncomplete)
        .count();
    if incomplete > 0 {
        return Err(crate::Error::Incomplete {
            what: "the rollback of the failed containers",
            failed: incomplete,
        });
    }
    let failed: Vec<Vmid> = doc
        .containers
        .iter()
        .filter(|c| !ok_state(c.state))
        .map(|c| c.vmid)
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(crate::Error::Batch {
            count: failed.len(),
            failed: join(&failed),
            total: doc.containers.len(),
        })
    }
}

/// The summary a person reads: the table, then why each one that did not finish did not,
/// then the dry run's plans or the command that removes it all.
pub fn human(doc: &UpResult) -> String {
    let rows: Vec<Vec<String>> = doc
        .containers
        .iter()
        .map(|c| {
            vec![
                format!("{} {}", c.vmid, c.name),
                c.recipe.clone(),
                c.state.words().to_owned(),
                c.endpoint.clone().unwrap_or_else(|| "-".to_owned()),
                if c.run.is_some() {
                    format!("{:.1} s", c.elapsed_ms as f64 / 1000.0)
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    let mut out = super::table(
        &["CONTAINER", "RECIPE", "STATE", "ENDPOINT", "TIME"],
        rows,
        &[4],
    );
    for c in &doc.containers {
        if let Some(err) = &c.error {
            out.push_str(&format!("\n{} {}: {}\n", c.vmid, c.name, err));
            for line in &c.rollback {
                out.push_str(&format!("  rollback: {line}\n"));
            }
        }
    }
    if doc.dry_run {
        for c in &doc.containers {
            let plan = c.plan.as_deref().unwrap_or_default();
            out.push_str(&format!(
                "\ndry run of {} for {} {}: {} change(s) would be made\n",
                c.recipe,
                c.vmid,
                c.name,
                plan.len()
            ));
            for line in plan {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str("\nnothing was changed\n");
    }
    let ready = doc.containers.iter().filter(|c| ok_state(c.state)).count();
    out.push_str(&format!(
        "\n{ready} of {} container(s) {} in {:.1} s (at most {} at once)\n",
        doc.containers.len(),
        if doc.dry_run { "planned" } else { "ready" },
        doc.elapsed_ms as f64 / 1000.0,
        doc.parallel
    ));
    if let Some(d) = &doc.destroy {
        out.push_str(&format!("remove it all: {d}\n"));
    }
    out
}

fn print_json(doc: &UpResult) -> crate::Result<()> {
    let text = serde_json::to_string_pretty(doc).expect("the summary serialises");
    super::out(&format!("{text}\n"))
}

fn ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn join(ids: &[Vmid]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    fn v(n: u64) -> Vmid {
        Vmid::new(n).unwrap()
    }

    fn result(vmid: Vmid, state: State) -> ContainerResult {
        ContainerResult {
            vmid,
            name: format!("ct{vmid}"),
            recipe: "container.rhai".into(),
            state,
            run: Some(format!("run-{vmid}")),
            elapsed_ms: 1500,
            endpoint: None,
            endpoints: Vec::new(),
            error: None,
            rollback: Vec::new(),
            plan: None,
        }
    }

    fn deps(list: &[(u64, &[u64])]) -> BTreeMap<Vmid, Vec<Vmid>> {
        list.iter()
            .map(|(id, d)| (v(*id), d.iter().map(|x| v(*x)).collect()))
            .collect()
    }

    /// Spins until `flag` is set; panics (the test fails) after a minute.
    fn wait(flag: &AtomicBool, what: &str) {
        let start = std::time::Instant::now();
        while !flag.load(Ordering::SeqCst) {
            assert!(start.elapsed().as_secs() < 60, "never happened: {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn runs_at_most_parallel_at_once_and_each_after_its_predecessors() {
        let after = deps(&[
            (901, &[]),
            (902, &[]),
            (903, &[901]),
            (904, &[903, 902]),
            (905, &[]),
        ]);
        let (now, max) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let events = Mutex::new(Vec::new());
        let (first_started, second_started) = (AtomicBool::new(false), AtomicBool::new(false));
        let run = |vmid: Vmid| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            events.lock().unwrap().push(format!("start {vmid}"));
            // 901 and 902 start first (lowest ids) and run at once: each ends only once
            // the other has started (so both are counted running together), which they
            // could not with one run at a time.
            if vmid == v(901) {
                first_started.store(true, Ordering::SeqCst);
                wait(&second_started, "902 starts while 901 runs");
            }
            if vmid == v(902) {
                second_started.store(true, Ordering::SeqCst);
                wait(&first_started, "901 starts while 902 runs");
            }
            events.lock().unwrap().push(format!("end {vmid}"));
            now.fetch_sub(1, Ordering::SeqCst);
            result(vmid, State::Ready)
        };
        let skip = |vmid: Vmid, _: String| result(vmid, State::Skipped);
        let out = run_ordered(&after, 2, &|| false, &run, &skip);
        assert_eq!(
            out.iter().map(|r| (r.vmid, r.state)).collect::<Vec<_>>(),
            (901..=905)
                .map(|n| (v(n), State::Ready))
                .collect::<Vec<_>>()
        );
        assert_eq!(max.load(Ordering::SeqCst), 2);
        let events = events.into_inner().unwrap();
        let at = |e: &str| events.iter().position(|x| x == e).unwrap();
        assert!(at("start 903") > at("end 901"), "{events:?}");
        assert!(at("start 904") > at("end 903"), "{events:?}");
        assert!(at("start 904") > at("end 902"), "{events:?}");
    }

    #[test]
    fn a_failed_run_skips_only_what_comes_after_it() {
        let after = deps(&[(901, &[]), (902, &[901]), (903, &[902]), (904, &[])]);
        let ran = Mutex::new(Vec::new());
        let run = |vmid: Vmid| {
            ran.lock().unwrap().push(vmid);
            let state = if vmid == v(901) {
                State::Failed
            } else {
                State::Ready
            };
            result(vmid, state)
        };
        let skip = |vmid: Vmid, why: String| {
            let mut r = result(vmid, State::Skipped);
            r.error = Some(why);
            r
        };
        let out = run_ordered(&after, 1, &|| false, &run, &skip);
        let mut ran = ran.into_inner().unwrap();
        ran.sort();
        assert_eq!(ran, [v(901), v(904)]);
        assert_eq!(
            out.iter().map(|r| r.state).collect::<Vec<_>>(),
            [State::Failed, State::Skipped, State::Skipped, State::Ready]
        );
        assert_eq!(
            out[1].error.as_deref(),
            Some("not started: it comes after 901, which did not finish")
        );
        assert_eq!(
            out[2].error.as_deref(),
            Some("not started: it comes after 902, which did not finish")
        );
    }

    #[test]
    fn nothing_starts_once_stopping() {
        let after = deps(&[(901, &[]), (902, &[])]);
        let stop = AtomicBool::new(false);
        let run = |vmid: Vmid| {
            stop.store(true, Ordering::SeqCst);
            result(vmid, State::Interrupted)
        };
        let skip = |vmid: Vmid, why: String| {
            let mut r = result(vmid, State::Skipped);
            r.error = Some(why);
            r
        };
        let out = run_ordered(&after, 1, &|| stop.load(Ordering::SeqCst), &run, &skip);
        assert_eq!(out[0].state, State::Interrupted);
        assert_eq!(out[1].state, State::Skipped);
        assert_eq!(
            out[1].error.as_deref(),
            Some("not started: interrupted by a signal")
        );
    }

    #[test]
    fn the_summary_is_a_table_then_why_each_failed_and_what_the_rollback_did() {
        let mut failed = result(v(903), State::RolledBack);
        failed.error = Some("container.rhai:12:5: lxc.start failed".into());
        failed.rollback = vec!["undone        destroy container 903 [lxc.create:903]".into()];
        let mut ready = result(v(901), State::Ready);
        ready.endpoint = Some("http://127.70.1.2:8000/v1".into());
        let mut skipped = result(v(904), State::Skipped);
        skipped.run = None;
        skipped.error = Some("not started: it comes after 903, which did not finish".into());
        let doc = UpResult {
            version: 1,
            ok: false,
            dry_run: false,
            host: HostKind::Emulated,
            batch: Some("batch-1".into()),
            parallel: 4,
            elapsed_ms: 2500,
            preflight: None,
            containers: vec![ready, failed, skipped],
            destroy: Some("phoenix destroy --lxc 901".into()),
        };
        assert_eq!(
            human(&doc),
            "\
CONTAINER  RECIPE          STATE                ENDPOINT                    TIME
901 ct901  container.rhai  ready                http://127.70.1.2:8000/v1  1.5 s
903 ct903  container.rhai  FAILED, rolled back  -                          1.5 s
904 ct904  container.rhai  skipped              -                              -

903 ct903: container.rhai:12:5: lxc.start failed
  rollback: undone        destroy container 903 [lxc.create:903]

904 ct904: not started: it comes after 903, which did not finish

1 of 3 container(s) ready in 2.5 s (at most 4 at once)
remove it all: phoenix destroy --lxc 901
"
        );
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["containers"][1]["state"], "rolled-back");
        assert_eq!(json["containers"][2]["run"], serde_json::Value::Null);
    }

    #[test]
    fn the_built_in_container_recipe_compiles_and_passes_its_checks() {
        let recipe = Recipe::compile(
            Path::new(CONTAINER_RECIPE_NAME),
            CONTAINER_RECIPE,
            &Stdlib::Embedded,
        )
        .unwrap();
        recipe.check().unwrap();
        assert!(!recipe.uses_secrets());
        assert!(!recipe.uses_models_dataset());
    }

    #[test]
    fn a_recipe_is_found_beside_the_config_and_the_default_is_built_in() {
        let config = Config {
            path: PathBuf::from("/etc/phoenix/lxc.json"),
            models_dataset: None,
            lxc: BTreeMap::new(),
            warnings: Vec::new(),
        };
        assert_eq!(
            recipe_path(&config, Some("drdevstral.rhai")),
            Path::new("/etc/phoenix/drdevstral.rhai")
        );
        assert_eq!(recipe_path(&config, None), Path::new("container.rhai"));
    }
}

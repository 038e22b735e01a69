//! `phoenix recipe run|test|lint|api` (`test` in [`super::recipe_test`]).
//!
//! `recipe run` does everything that can fail without touching the host first, in this
//! order, so a bad config, recipe or secret key exits 2 with nothing changed (DESIGN.md §6):
//! config loaded and validated → `--lxc` ids checked against it → recipe compiled and its
//! imports checked → the secret key checked when the recipe (or a module it imports) calls
//! `secret.get` → lint errors that cannot be false alarms refused ([`Recipe::check`]).
//! Only then: signal handlers, the journal (in memory for `--dry-run`) with
//! its `run` record, the host backend, the models parent dataset when the recipe uses one
//! (a read-only query when it comes from the host; exit 2 when there is none), the
//! [`Runtime`], the run, [`finish_run`] and the journal's `end` record.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use super::Context;
use super::help::after;
use crate::exec::CancelFlag;
use crate::journal::Entry;
use crate::runtime::Runtime;
use crate::script::stdlib::Stdlib;
use crate::script::{Recipe, RecipeError, docs, lint};
use crate::secret::SecretStore;

/// `phoenix recipe …`.
#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Run a recipe against the host.
    #[command(after_help = after!(
        "  phoenix recipe run recipes/drdevstral.rhai --lxc 901
  phoenix recipe run recipes/drdevstral.rhai --lxc 901 --lxc 903   # one run each, at once
  phoenix recipe run recipes/drdevstral.rhai --dry-run
  phoenix recipe run recipes/drdevstral.rhai --host emulated --config recipes/phoenix_lxc_configs.json --json

Progress goes to stderr; stdout gets the result: each container with its state, what the
recipe reported (endpoint, model, the command that reads the API key, a request to try)
and the command that removes it all. --json prints the same as one document.",
        "0 ok · 1 the run failed (after the rollback, if asked) · 2 usage, config, recipe or \
         secret-key error, nothing touched · 3 the rollback left something · 130/143 interrupted"
    ))]
    Run(RunArgs),
    /// Run a recipe on a throw-away emulated host, remove what it made, check nothing is left.
    #[command(after_help = after!(
        "  phoenix recipe test recipes/drdevstral.rhai --config recipes/phoenix_lxc_configs.json
  phoenix recipe test my-recipe.rhai --lxc 902 --json

Everything lives in a temporary directory (state, secrets, the emulated host) that is
removed at the end: nothing of this machine's phoenix is read but the config and the
recipe, nothing is written outside it. Each secret the recipe reads with a literal
secret.get(\"NAME\") gets a random stand-in. stdout says what the run created, which
endpoint answered, what the cleanup did and what was left. For CI, next to
`phoenix recipe lint --format github` (docs/recipes.md).",
        "0 the run succeeded, every endpoint answered, nothing was left · 1 the run failed or \
         an endpoint did not answer (cleaned up all the same) · 2 usage, config or recipe error, \
         nothing made · 3 something was left after the cleanup · 130/143 interrupted"
    ))]
    Test(super::recipe_test::TestArgs),
    /// Check recipes without running them (exit 1 on errors, 0 with only warnings).
    #[command(after_help = after!(
        "  phoenix recipe lint recipes/ stdlib/
  phoenix recipe lint --deny-warnings recipes/drdevstral.rhai
  phoenix recipe lint --format github recipes/drdevstral.rhai",
        "0 no errors (warnings allowed unless --deny-warnings) · 1 errors found (or warnings, \
         with --deny-warnings) · 2 usage"
    ))]
    Lint {
        /// Recipe files, or directories whose *.rhai files are checked.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: lint::Format,
        /// Fail (exit 1) on warnings too, as on errors.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Print the recipe API reference, generated from the engine.
    #[command(after_help = after!(
        "  phoenix recipe api > docs/recipe-api.md
  phoenix recipe api --format json",
        "0 ok · 1 failed · 2 usage or settings error"
    ))]
    Api {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: docs::Format,
    },
}

/// `phoenix recipe run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The recipe file.
    pub recipe: PathBuf,
    /// Serve these config entries (repeatable: the recipe runs once for each, several at
    /// once, and a summary table ends it, as `phoenix up` does).
    #[arg(long = "lxc", value_name = "VMID")]
    pub lxc: Vec<crate::types::Vmid>,
    /// Show the exact commands that would run; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// On failure, undo this run's steps in reverse.
    #[arg(long)]
    pub rollback_on_failure: bool,
    /// Print the result (or the dry run's plan) as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Never a flag: set by `recipe test`, which removes what the run made itself, so a
    /// failed run does not point the operator at `phoenix destroy`.
    #[arg(skip)]
    pub cleaned_up_by_caller: bool,
}

/// Run a `recipe` command.
pub fn run(ctx: &Context, cmd: RecipeCommand) -> crate::Result<()> {
    match cmd {
        RecipeCommand::Run(args) => run_recipe(ctx, &args),
        RecipeCommand::Test(args) => super::recipe_test::run(ctx, &args),
        RecipeCommand::Lint {
            paths,
            format,
            deny_warnings,
        } => {
            let linter = lint::Linter::new(Stdlib::from_settings(&ctx.settings));
            let findings = linter.lint_paths(&paths);
            if format == lint::Format::Json {
                let doc = serde_json::json!({
                    "version": crate::report::JSON_VERSION,
                    "errors": lint::errors(&findings),
                    "findings": findings,
                });
                let text = serde_json::to_string_pretty(&doc).expect("findings serialise");
                super::out(&format!("{text}\n"))?;
            } else {
                super::out(&lint::render(&findings, format))?;
            }
            match (lint::errors(&findings), findings.len()) {
                (0, 0) => Ok(()),
                (0, n) if deny_warnings => Err(crate::Error::LintWarnings(n)),
                (0, _) => Ok(()),
                (n, _) => Err(crate::Error::LintFailed(n)),
            }
        }
        RecipeCommand::Api { format } => {
            let entries = docs::entries(&Stdlib::from_settings(&ctx.settings));
            if format == docs::Format::Json {
                let doc = serde_json::json!({
                    "version": crate::report::JSON_VERSION,
                    "entries": entries,
                });
                let text = serde_json::to_string_pretty(&doc).expect("entries serialise");
                return super::out(&format!("{text}\n"));
            }
            super::out(&docs::render(&entries, format))
        }
    }
}

/// Everything checked before the host is touched (exit 2 on any failure).
pub(super) fn prepare(
    ctx: &Context,
    args: &RunArgs,
) -> crate::Result<(crate::config::Config, Recipe)> {
    let settings = &ctx.settings;
    let config = crate::config::load(&settings.config.value)?;
    super::setup::check_selection(&config, &args.lxc)?;
    let recipe = Recipe::read(&args.recipe, &Stdlib::from_settings(settings))?;
    super::setup::check_mount_roots(settings)?;
    Ok((config, recipe))
}

/// The boundary's check of the selected entries' values before anything is created: the
/// model dataset a recipe makes for an entry fits ZFS's name limit.
fn preflight(
    config: &crate::config::Config,
    settings: &crate::settings::Settings,
    args: &RunArgs,
    recipe: &Recipe,
) -> crate::Result<()> {
    let selected: Vec<crate::types::Vmid> = if args.lxc.is_empty() {
        crate::runtime::default_target(config, &recipe.name)
            .map(|e| vec![e.vmid])
            .unwrap_or_default()
    } else {
        args.lxc.clone()
    };
    match crate::boundary::known_models_parent(settings, config) {
        Some(parent) => crate::boundary::preflight(config, &selected, &parent)
            .map_err(|r| crate::Error::Usage(r.to_string())),
        None => Ok(()),
    }
}

/// `recipe run` with several `--lxc`: the recipe runs for each selected entry, as `phoenix
/// up` runs them ([`super::up`]: one run per entry, in parallel, the summary table), without
/// the host preflight.
fn run_several(ctx: &Context, args: &RunArgs, ids: Vec<crate::types::Vmid>) -> crate::Result<()> {
    let (config, recipe) = prepare(ctx, args)?;
    let jobs: Vec<super::up::Job<'_>> = ids
        .into_iter()
        .map(|vmid| super::up::Job {
            vmid,
            recipe: &recipe,
        })
        .collect();
    let opts = super::up::Options {
        parallel: super::up::DEFAULT_PARALLEL.min(jobs.len()),
        rollback: args.rollback_on_failure,
        dry_run: args.dry_run,
        json: args.json,
        preflight: false,
    };
    super::up::execute(ctx, &config, &jobs, opts)
}

pub(super) fn run_recipe(ctx: &Context, args: &RunArgs) -> crate::Result<()> {
    let ids: std::collections::BTreeSet<crate::types::Vmid> = args.lxc.iter().copied().collect();
    if ids.len() > 1 {
        return run_several(ctx, args, ids.into_iter().collect());
    }
    let started = std::time::Instant::now();
    let settings = &ctx.settings;
    let (config, recipe) = prepare(ctx, args)?;
    let redactor = ctx.redactor.clone();
    // Before anything is created (the secret key, the emulated root): a machine that is
    // not the host `--host` names is a usage problem (exit 2), not a failed run.
    crate::host::check_tools(settings)?;
    let secrets = SecretStore::new(settings, redactor.clone());
    recipe.check()?;
    super::setup::prepare_secrets(settings, &secrets, &[&recipe], args.dry_run)?;
    super::setup::start_runs(settings);
    let cancel = CancelFlag::default();
    let run_id = Runtime::new_run_id();
    let journal = super::setup::open_journal(settings, &run_id, args.dry_run)?;
    let scope = match args.lxc.as_slice() {
        [] => crate::runtime::default_target(&config, &recipe.name).map(|e| e.vmid),
        // One id (maybe repeated): several distinct ids go through `run_several`.
        [one, ..] => Some(*one),
    };
    journal.append(Entry::run_start(settings, &args.recipe, scope, None))?;

    let (runner, plan) = super::setup::runner(&redactor, &cancel, args.dry_run);
    let host = match crate::host::open(settings, runner) {
        Ok(host) => host,
        Err(e) => {
            journal.append(Entry::End { ok: false })?;
            return Err(e.into());
        }
    };

    // The models parent may come from the host (its one ZFS pool): resolved now, with a
    // read-only query, so a missing one stops the run before anything changes (exit 2).
    let mut settings = settings.clone();
    if recipe.uses_models_dataset() {
        match crate::datasets::resolve(&settings, &config, host.as_ref()) {
            Ok(parent) => {
                tracing::info!(dataset = %parent.value, source = %parent.source, "models dataset");
                settings.models_dataset = crate::settings::Setting {
                    value: Some(parent.value),
                    source: parent.source,
                };
            }
            Err(e) => {
                journal.append(Entry::End { ok: false })?;
                return Err(e.into());
            }
        }
    }
    if let Err(e) = preflight(&config, &settings, args, &recipe) {
        journal.append(Entry::End { ok: false })?;
        return Err(e);
    }
    let rt = Arc::new(Runtime {
        settings: settings.clone(),
        config: Arc::new(config),
        selected: args.lxc.clone(),
        recipe_name: recipe.name.clone(),
        host,
        journal,
        secrets,
        redactor,
        dry_run: args.dry_run,
        plan,
        cancel,
        run_id,
        notes: crate::plan::Notes::default(),
        progress: ctx.progress.tracker(None),
    });
    // One phoenix process per container at a time: a second one fails naming the holder.
    let mut locked: Vec<crate::types::Vmid> = rt.selected.clone();
    if locked.is_empty() {
        locked.extend(rt.target().map(|e| e.vmid));
    }
    let _locks = if args.dry_run {
        Vec::new()
    } else {
        match locked
            .iter()
            .map(|v| crate::journal::CtLock::acquire(&settings.state_dir.value, *v))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(l) => l,
            Err(e) => {
                rt.journal.append(Entry::End { ok: false })?;
                return Err(e.into());
            }
        }
    };
    tracing::info!(recipe = %recipe.name, run = %rt.run_id, dry_run = args.dry_run, "recipe starts");
    let outcome = recipe.run(&rt);
    let result = finish_run(ctx, &rt, &recipe, outcome, args, started);
    rt.journal.append(Entry::End { ok: result.is_ok() })?;
    result
}

/// What happens after the recipe returned, before the journal's `end` record: stdout gets
/// the result ([`super::result`]: the block, or `--json`) or the `--dry-run` plan (every
/// mutating command and config change, secrets redacted), and with `--rollback-on-failure`
/// a failed or interrupted run undoes its own steps newest first (exit 1 — or 130/143 after
/// a signal — when everything was undone, 3 when something is left).
fn finish_run(
    ctx: &Context,
    rt: &Arc<Runtime>,
    recipe: &Recipe,
    outcome: Result<(), RecipeError>,
    args: &RunArgs,
    started: std::time::Instant,
) -> crate::Result<()> {
    if rt.plan.is_some() {
        // Honest by construction: in a dry run only commands the host backend marks
        // read-only ran — its own queries and the boundary's built-in probes
        // (`crate::boundary::argv::is_probe`), never a command because a recipe said so.
        let plan = rt.plan();
        if args.json {
            let mut doc = run_result(ctx, rt, recipe, started, outcome.as_ref().err());
            doc.plan = Some(plan.change_lines());
            print_json(&doc)?;
        } else {
            super::out(&format!(
                "Dry run of {} on the {} host: nothing was changed.\n\n{}",
                recipe.name,
                rt.settings.host.value,
                plan.render()
            ))?;
        }
    } else if args.json || outcome.is_ok() {
        let doc = run_result(ctx, rt, recipe, started, outcome.as_ref().err());
        if args.json {
            print_json(&doc)?;
        } else {
            super::out(&doc.human())?;
        }
    }
    let Err(err) = outcome else {
        return Ok(());
    };
    // A signal ends the run as interrupted (130/143) whatever error the killed command
    // surfaced as; the recipe's own error is still shown.
    let failed = |err: RecipeError| -> crate::Error {
        match crate::signal::received() {
            Some(sig) if !matches!(err, RecipeError::Interrupted { .. }) => {
                tracing::warn!("{err}");
                crate::Error::Interrupted(sig)
            }
            _ => err.into(),
        }
    };
    if !args.rollback_on_failure || rt.dry_run {
        if !rt.dry_run && !args.cleaned_up_by_caller {
            tracing::warn!(
                "the run failed; what it made is recorded in the journal: `phoenix status` shows it, `phoenix destroy` removes it"
            );
        }
        return Err(failed(err));
    }
    tracing::warn!(run = %rt.run_id, "rolling back this run's steps");
    let report = crate::lifecycle::rollback_run(rt)?;
    for line in report.lines() {
        tracing::warn!("rollback: {line}");
    }
    if report.complete() {
        Err(failed(err))
    } else {
        Err(crate::Error::RollbackIncomplete {
            failed: report.failed.len(),
            source: err,
        })
    }
}

fn print_json(doc: &super::result::RunResult) -> crate::Result<()> {
    let text = serde_json::to_string_pretty(doc).expect("the run result serialises");
    super::out(&format!("{text}\n"))
}

/// The result of this run: the containers it served or touched with their live state (not
/// asked in a dry run or after a signal), what the recipe reported with `output.*`, and the
/// `destroy` command for the containers the journal holds anything of.
fn run_result(
    ctx: &Context,
    rt: &Runtime,
    recipe: &Recipe,
    started: std::time::Instant,
    error: Option<&RecipeError>,
) -> super::result::RunResult {
    use super::result::{LiveContainer, RunResult, chain};
    use std::collections::BTreeSet;

    let records = if rt.dry_run {
        rt.journal.memory()
    } else {
        crate::journal::read(rt.journal.path()).unwrap_or_default()
    };
    let outputs = crate::journal::outputs_of(&records, &rt.run_id);
    let (endpoints, values) = RunResult::outputs(&outputs, &ctx.invocation);
    let mut vmids: BTreeSet<crate::types::Vmid> = rt.selected.iter().copied().collect();
    vmids.extend(rt.target().map(|e| e.vmid));
    vmids.extend(endpoints.iter().filter_map(|e| e.vmid));
    vmids.extend(
        records
            .iter()
            .filter(|r| r.run == rt.run_id)
            .filter_map(|r| match &r.entry {
                Entry::Intent { undo, .. } => undo.vmid(),
                _ => None,
            }),
    );
    let live = !rt.dry_run && crate::signal::received().is_none();
    let containers: Vec<LiveContainer> = vmids
        .iter()
        .map(|v| {
            let entry = rt.config.get(*v);
            let name = entry.map(|e| e.name.to_string());
            if live {
                let iface = entry.map(|e| e.network.name.to_string());
                LiveContainer::query(rt.host.as_ref(), *v, name, iface.as_deref())
            } else {
                LiveContainer {
                    vmid: *v,
                    name,
                    state: None,
                    address: None,
                    error: None,
                }
            }
        })
        .collect();
    let recorded: BTreeSet<crate::types::Vmid> = crate::journal::outstanding(&records)
        .iter()
        .filter_map(|o| o.undo.vmid())
        .collect();
    let removable: Vec<crate::types::Vmid> = vmids.intersection(&recorded).copied().collect();
    RunResult {
        version: crate::report::JSON_VERSION,
        ok: error.is_none(),
        dry_run: rt.dry_run,
        recipe: recipe.name.clone(),
        run: rt.run_id.clone(),
        host: rt.settings.host.value,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        containers,
        endpoints,
        values,
        destroy: (!rt.dry_run && !removable.is_empty()).then(|| ctx.invocation.destroy(&removable)),
        plan: None,
        error: error.map(|e| rt.redactor.redact(&chain(e))),
    }
}

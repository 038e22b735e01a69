//! `phoenix recipe test`: run a recipe on a throw-away emulated host, remove everything it
//! made, and check that nothing is left (issue 16) — what an operator runs in CI next to
//! `recipe lint`.
//!
//! Decisions:
//! - **Nothing of the operator's is touched.** The config file and the recipe (and the
//!   stdlib) are read; everything else lives in one temporary directory (mode 0700, removed
//!   at the end, whatever happened): the state dir (journal, locks, markers), the secret
//!   store and its key, the emulated host's root. The settings are resolved as for
//!   `--host emulated` with only `PHOENIX_STATE_DIR` set to that directory, so no settings
//!   file or environment path of the operator's applies; the recipe-facing settings carry
//!   over (stdlib, vLLM image, emulated PVE version, script limits, lifecycle timeout,
//!   models dataset). `mount_roots` does not: host directories are the operator's real
//!   paths. Log lines go to stderr only (the CLI opens no log file for this command).
//! - **Secrets.** The throw-away store holds a random 64-hex-character stand-in for every
//!   secret the recipe (or a module it imports) reads with a literal `secret.get("NAME")`;
//!   `secret.ensure` generates its own as on a real host. Each is registered with the
//!   redactor, so no stand-in reaches the output either.
//! - **Prerequisites.** An entry that needs another one running (`openai_backend`: Open
//!   WebUI asks the host for its vLLM server's address) gets that entry provisioned first,
//!   on the same throw-away host, by the recipe that entry names; its secrets are seeded
//!   too, and the cleanup removes it with the rest.
//! - **The run** is `phoenix recipe run` itself (same checks, journal, boundary), without
//!   rollback: the cleanup is `phoenix destroy` itself, run afterwards whether the run
//!   succeeded, failed or was interrupted (so neither the run's result nor its failure
//!   warning tells the operator to run `destroy`).
//! - **Endpoints.** Each endpoint the recipe reported (`output.endpoint`) is asked once,
//!   `GET` of its URL (`…/models` for an OpenAI API, with its API key from the throw-away
//!   store), but only when the URL's host is the live address of one of the emulated
//!   host's containers (DESIGN.md §12 "network"): a 2xx answer passes; any other status
//!   (named in the report) or no answer fails the test.
//! - **Leftovers**, checked on the emulated host after the cleanup, each named: a container
//!   (any: the host started with none), a dataset the journal recorded, a host unit that
//!   was not there before the run, a marker file, a journal step still outstanding, a
//!   journal run without its `end` record.
//! - **Exit codes** (DESIGN.md §6): 0 the run succeeded, every endpoint answered 2xx and
//!   nothing is left; 1 the run failed (its own error; 2 when that was a usage or config
//!   error, 130/143 after a signal) or an endpoint did not answer 2xx; 3 something was left;
//!   2 a bad config, `--lxc` or recipe before anything was made.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::Context;
use super::recipe::RunArgs;
use crate::exec::{CancelFlag, Runner, SystemRunner};
use crate::host::Host;
use crate::journal::{self, Entry, Journal, UndoStep};
use crate::report::{Api, Endpoint, OutputItem};
use crate::secret::SecretStore;
use crate::settings::{FlagOverrides, HostKind, Settings};
use crate::types::{SecretName, Vmid};

/// How long one endpoint may take to answer.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `phoenix recipe test`.
#[derive(Debug, Clone, clap::Args)]
pub struct TestArgs {
    /// The recipe file.
    pub recipe: PathBuf,
    /// Serve these config entries (repeatable; default: the entry the recipe is for).
    #[arg(long = "lxc", value_name = "VMID")]
    pub lxc: Vec<Vmid>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// One endpoint the recipe reported, and whether it answered.
#[derive(Debug, Serialize)]
struct Probe {
    /// Its label.
    name: Option<String>,
    /// The URL the recipe reported.
    url: String,
    /// The URL asked.
    asked: Option<String>,
    /// Its container.
    vmid: Option<Vmid>,
    /// Whether an HTTP answer came back.
    answered: bool,
    /// Whether that answer was a success (2xx): what the test requires.
    ok: bool,
    /// The answer's status.
    status: Option<u16>,
    /// Why it was not asked, or why no answer came.
    error: Option<String>,
}

impl Probe {
    /// What is wrong with this endpoint for the test, if anything: no answer, or an answer
    /// that is not a success (its status named).
    fn problem(&self) -> Option<String> {
        match self.status {
            _ if self.ok => None,
            Some(s) => Some(format!(
                "endpoint {} answered HTTP {s} to GET {}, not a success (2xx)",
                self.url,
                self.asked.as_deref().unwrap_or(&self.url)
            )),
            None => Some(format!(
                "endpoint {} did not answer: {}",
                self.url,
                self.error.as_deref().unwrap_or("no answer")
            )),
        }
    }
}

/// The `recipe test --json` document (and what the human report shows).
#[derive(Debug, Serialize)]
struct TestReport {
    version: u32,
    /// The run succeeded, every endpoint answered 2xx and nothing is left.
    ok: bool,
    recipe: String,
    /// The run's own result document (`recipe run --json`), when it got that far.
    run: Option<serde_json::Value>,
    /// Why the run failed (the error and its causes).
    run_error: Option<String>,
    /// What the run made, as its journal recorded it.
    created: Vec<String>,
    endpoints: Vec<Probe>,
    /// What `destroy` said.
    cleanup: Vec<String>,
    /// What was still there after the cleanup.
    leftovers: Vec<String>,
}

/// Run `phoenix recipe test`.
pub fn run(ctx: &Context, args: &TestArgs) -> crate::Result<()> {
    let run_args = RunArgs {
        recipe: args.recipe.clone(),
        lxc: args.lxc.clone(),
        dry_run: false,
        rollback_on_failure: false,
        json: true,
        cleaned_up_by_caller: true,
    };
    // Everything that can be refused without making anything: config, --lxc, recipe.
    let (config, recipe) = super::recipe::prepare(ctx, &run_args)?;
    let prereqs = prerequisites(&config, &args.lxc, &recipe.name)?;
    let stdlib = crate::script::stdlib::Stdlib::from_settings(&ctx.settings);
    let mut pre_recipes = Vec::new();
    for (vmid, path) in &prereqs {
        let r = crate::script::Recipe::read(path, &stdlib)?;
        pre_recipes.push((*vmid, path.clone(), r));
    }
    if ctx.settings.host.value != HostKind::Emulated
        && ctx.settings.host.source == crate::settings::Source::Flag
    {
        tracing::warn!(
            host = %ctx.settings.host.value,
            "--host is ignored: recipe test always runs on a throw-away emulated host"
        );
    }
    let names = recipe
        .secret_names()
        .into_iter()
        .chain(pre_recipes.iter().flat_map(|(_, _, r)| r.secret_names()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|n| {
            SecretName::new(&n).map_err(|e| {
                crate::Error::Usage(format!("{}: secret.get: {e}", args.recipe.display()))
            })
        })
        .collect::<crate::Result<Vec<_>>>()?;

    let dir = tempfile::Builder::new()
        .prefix("phoenix-recipe-test-")
        .tempdir()
        .map_err(crate::Error::Output)?;
    let settings = throwaway_settings(&ctx.settings, dir.path())?;
    let tctx = Context {
        global: ctx.global.clone(),
        invocation: crate::report::Invocation::new(None, &settings),
        settings,
        redactor: ctx.redactor.clone(),
        progress: ctx.progress.clone(),
    };
    tracing::info!(dir = %dir.path().display(), "recipe test: a throw-away emulated host");

    let store = SecretStore::new(&tctx.settings, tctx.redactor.clone());
    store.init(false)?;
    for name in &names {
        let value = crate::api::secret::random_hex().map_err(crate::Error::Output)?;
        store.set(name, value.as_bytes())?;
    }
    store.register_all()?;

    let runner: Arc<dyn Runner> = Arc::new(SystemRunner::new(
        tctx.redactor.clone(),
        CancelFlag::default(),
    ));
    let host = crate::host::open(&tctx.settings, runner)?;
    let units_dir = tctx.settings.emu_root.value.join("etc/systemd/system");
    let units_before = unit_files(&units_dir);

    // The entries the served one needs running first, each by its own recipe.
    let mut pre_error = None;
    for (vmid, path, _) in &pre_recipes {
        tracing::info!(lxc = %vmid, recipe = %path.display(), "recipe test: provisioning a prerequisite first");
        let pre = RunArgs {
            recipe: path.clone(),
            lxc: vec![*vmid],
            dry_run: false,
            rollback_on_failure: false,
            json: true,
            cleaned_up_by_caller: true,
        };
        let (res, _) = super::captured(|| super::recipe::run_recipe(&tctx, &pre));
        if let Err(e) = res {
            pre_error = Some((
                format!(
                    "prerequisite {vmid} ({}) failed: ",
                    path.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
                ),
                e,
            ));
            break;
        }
    }
    let (outcome, text, pre_prefix) = match pre_error {
        Some((prefix, e)) => (Err(e), String::new(), prefix),
        None => {
            let (o, t) = super::captured(|| super::recipe::run_recipe(&tctx, &run_args));
            (o, t, String::new())
        }
    };
    let mut run_doc: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    if let Some(doc) = run_doc.as_mut().and_then(|d| d.as_object_mut()) {
        // The throw-away host is cleaned up here: its `destroy` command means nothing after.
        doc.remove("destroy");
    }
    let run_error = outcome.as_ref().err().map(|e| {
        format!(
            "{pre_prefix}{}",
            tctx.redactor.redact(&super::result::chain(e))
        )
    });

    let journal_path = Journal::path_in(&tctx.settings.state_dir.value);
    let records = journal::read(&journal_path).unwrap_or_default();
    let created: Vec<String> = journal::outstanding(&records)
        .iter()
        .map(|o| made(&o.undo))
        .collect();
    let endpoints = if crate::signal::received().is_none() {
        probe_endpoints(&tctx, host.as_ref(), &store, &records)
    } else {
        Vec::new()
    };

    let destroy_args = super::state::DestroyArgs {
        lxc: Vec::new(),
        remove_logs: false,
        keep_data: false,
        dry_run: false,
        yes: true,
    };
    let (destroyed, text) = super::captured(|| super::state::destroy(&tctx, destroy_args));
    let mut cleanup: Vec<String> = text.lines().map(str::to_owned).collect();
    if let (Err(e), true) = (&destroyed, cleanup.is_empty()) {
        cleanup.push(format!("destroy failed: {}", super::result::chain(e)));
    }
    let leftovers = leftovers(&tctx.settings, host.as_ref(), &units_before, &records);

    let endpoints_ok = endpoints.iter().all(|p| p.ok);
    let report = TestReport {
        version: crate::report::JSON_VERSION,
        ok: outcome.is_ok() && endpoints_ok && destroyed.is_ok() && leftovers.is_empty(),
        recipe: recipe.name.clone(),
        run: run_doc,
        run_error,
        created,
        endpoints,
        cleanup,
        leftovers,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&report).expect("the report serialises");
        super::out(&format!("{text}\n"))?;
    } else {
        super::out(&human(&report))?;
    }
    drop(host);
    // Removing the root also ends any emulated server still running (DESIGN.md §7).
    if let Err(e) = dir.close() {
        tracing::warn!(error = %e, "cannot remove the throw-away host's directory");
    }

    let mut problems = Vec::new();
    if let Some(e) = &report.run_error {
        problems.push(format!("the run failed: {e}"));
    }
    problems.extend(report.endpoints.iter().filter_map(Probe::problem));
    // A failed undo step stays outstanding in the journal: the leftovers name it.
    if let (Err(e), true) = (&destroyed, report.leftovers.is_empty()) {
        problems.push(format!("the cleanup failed: {}", super::result::chain(e)));
    }
    if !report.leftovers.is_empty() {
        problems.push(format!(
            "left after cleanup: {}",
            report.leftovers.join(", ")
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let left = destroyed.is_err() || !report.leftovers.is_empty();
    if !left && problems.len() == 1 {
        // The run's own error, with its own exit code (1, 2, 130/143).
        outcome?;
    }
    if let Some(sig) = crate::signal::received() {
        if !left {
            return Err(crate::Error::Interrupted(sig));
        }
    }
    Err(crate::Error::TestFailed {
        problems,
        leftovers: left,
    })
}

/// The entries the served entry needs running before its recipe can run, with the recipe
/// that provisions each (its `recipe` field, relative to the config file's directory): its
/// `openai_backend` (e.g. Open WebUI's vLLM server, whose address the recipe asks the host
/// for). The served entry is the first `--lxc`, else the recipe's default entry. Refused
/// (exit 2, nothing made) when a prerequisite names no recipe.
fn prerequisites(
    config: &crate::config::Config,
    lxc: &[Vmid],
    recipe_name: &str,
) -> crate::Result<Vec<(Vmid, PathBuf)>> {
    let target = match lxc.first() {
        Some(v) => config.get(*v),
        None => crate::runtime::default_target(config, recipe_name),
    };
    let Some(target) = target else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for vmid in target.openai_backend.iter().copied() {
        if lxc.contains(&vmid) {
            continue;
        }
        let entry = config.get(vmid).ok_or_else(|| {
            crate::Error::Usage(format!(
                "{}: openai_backend {vmid} of entry {} is not an entry",
                config.path.display(),
                target.vmid
            ))
        })?;
        let Some(r) = &entry.recipe else {
            return Err(crate::Error::Usage(format!(
                "{}: entry {} needs entry {vmid} running first (openai_backend), which names no recipe",
                config.path.display(),
                target.vmid
            )));
        };
        let dir = config.path.parent().unwrap_or_else(|| Path::new("."));
        out.push((vmid, dir.join(r)));
    }
    Ok(out)
}

/// Settings for the throw-away host under `dir`: `--host emulated` with only the state
/// directory set (everything else derives from it), plus the recipe-facing settings of
/// `operator` (module docs).
fn throwaway_settings(operator: &Settings, dir: &Path) -> crate::Result<Settings> {
    let state = dir.join("state").display().to_string();
    let flags = FlagOverrides {
        config: Some(operator.config.value.clone()),
        host: Some(HostKind::Emulated),
        models_dataset: None,
    };
    let mut s = Settings::resolve_with(&flags, &|k| {
        (k == "PHOENIX_STATE_DIR").then(|| state.clone())
    })?;
    s.config = operator.config.clone();
    s.stdlib = operator.stdlib.clone();
    s.vllm_image = operator.vllm_image.clone();
    s.emu_pve_version = operator.emu_pve_version.clone();
    s.script_cpu = operator.script_cpu.clone();
    s.script_memory = operator.script_memory.clone();
    s.lifecycle_timeout = operator.lifecycle_timeout.clone();
    s.models_dataset = operator.models_dataset.clone();
    Ok(s)
}

/// What an undo step's action made, as a noun (`container 901`).
fn made(undo: &UndoStep) -> String {
    match undo {
        UndoStep::DestroyContainer { vmid, .. } => format!("container {vmid}"),
        UndoStep::StopContainer { vmid } => format!("container {vmid} started"),
        UndoStep::RestoreConfig { vmid, .. } => format!("config lines of container {vmid}"),
        UndoStep::RestoreOptions { vmid, options } => format!(
            "options {} of container {vmid} changed in place",
            options
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        UndoStep::DeleteConfigKeys { vmid, keys } => {
            format!("config keys {} of container {vmid}", keys.join(","))
        }
        UndoStep::DestroyDataset { name } => format!("dataset {name}"),
        UndoStep::RestoreDatasetOwner { vmid, name, .. } => {
            format!("owner of dataset {name} (given to container {vmid})")
        }
        UndoStep::RemoveFile { vmid, path } => format!("file {path} in container {vmid}"),
        UndoStep::RemoveDir { vmid, path } => format!("directory {path} in container {vmid}"),
        UndoStep::ReleaseNodesUnit { vmid, unit } => {
            format!("host unit {unit} (for container {vmid})")
        }
        UndoStep::Exec { vmid, argv } => format!("undo command {argv:?} in container {vmid}"),
    }
}

/// The files and links under `dir`, recursively, as relative paths (directories do not
/// count: `systemctl disable` leaves an empty `*.wants/` behind, as on any host).
fn unit_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.insert(rel.display().to_string());
            }
        }
    }
    out
}

/// The names in `dir` (none when it does not exist).
fn dir_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Ask each endpoint the recipe reported (module docs, "Endpoints").
fn probe_endpoints(
    ctx: &Context,
    host: &dyn Host,
    store: &SecretStore,
    records: &[journal::Record],
) -> Vec<Probe> {
    let runs: BTreeSet<&str> = records
        .iter()
        .filter(|r| matches!(r.entry, Entry::Run { .. }))
        .map(|r| r.run.as_str())
        .collect();
    let endpoints: Vec<Endpoint> = runs
        .iter()
        .flat_map(|run| journal::outputs_of(records, run))
        .filter_map(|o| match o {
            OutputItem::Endpoint(e) => Some(e),
            OutputItem::Value(_) => None,
        })
        .collect();
    if endpoints.is_empty() {
        return Vec::new();
    }
    // The live addresses of the emulated host's containers (as the host reports them).
    let config = crate::config::load(&ctx.settings.config.value).ok();
    let addresses: BTreeSet<String> = host
        .ct_ids()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|vmid| {
            let iface = config
                .as_ref()
                .and_then(|c| c.get(vmid))
                .map_or_else(|| "eth0".to_owned(), |e| e.network.name.to_string());
            host.ct_address(vmid, &iface).ok().map(|a| a.to_string())
        })
        .collect();
    let client = reqwest::blocking::Client::builder()
        .timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build();
    endpoints
        .into_iter()
        .map(|e| probe(&e, &addresses, client.as_ref().ok(), store))
        .collect()
}

fn probe(
    e: &Endpoint,
    addresses: &BTreeSet<String>,
    client: Option<&reqwest::blocking::Client>,
    store: &SecretStore,
) -> Probe {
    let mut p = Probe {
        name: e.name.clone(),
        url: e.url.clone(),
        asked: None,
        vmid: e.vmid,
        answered: false,
        ok: false,
        status: None,
        error: None,
    };
    let Ok(url) = reqwest::Url::parse(&e.url) else {
        p.error = Some("not a URL".into());
        return p;
    };
    let host = url.host_str().unwrap_or_default().to_owned();
    if !addresses.contains(&host) {
        p.error = Some(format!(
            "not asked: {host} is no container's address on the emulated host (report the address lxc.address gives)"
        ));
        return p;
    }
    let asked = if e.api == Api::Openai {
        format!("{}/models", e.url.trim_end_matches('/'))
    } else {
        e.url.clone()
    };
    p.asked = Some(asked.clone());
    let Some(client) = client else {
        p.error = Some("no HTTP client".into());
        return p;
    };
    let mut req = client.get(&asked);
    if let Some(key) = &e.api_key {
        if let Ok(secret) = store.get(key) {
            if let Ok(text) = std::str::from_utf8(secret.expose()) {
                req = req.bearer_auth(text);
            }
        }
    }
    match req.send() {
        Ok(resp) => {
            p.answered = true;
            p.ok = resp.status().is_success();
            p.status = Some(resp.status().as_u16());
        }
        Err(err) => p.error = Some(super::result::chain(&err)),
    }
    p
}

/// What is still on the throw-away host after the cleanup (module docs, "Leftovers").
fn leftovers(
    settings: &Settings,
    host: &dyn Host,
    units_before: &BTreeSet<String>,
    before: &[journal::Record],
) -> Vec<String> {
    let mut left = Vec::new();
    match host.ct_ids() {
        Ok(ids) => left.extend(ids.iter().map(|v| format!("container {v}"))),
        Err(e) => left.push(format!("containers unknown ({e})")),
    }
    let datasets: BTreeSet<String> = before
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::Intent {
                undo: UndoStep::DestroyDataset { name },
                ..
            } => Some(name.to_string()),
            _ => None,
        })
        .collect();
    for name in datasets {
        let Ok(parsed) = crate::types::DatasetName::new(&name) else {
            continue;
        };
        match host.zfs_get(&parsed) {
            Ok(None) => {}
            Ok(Some(_)) => left.push(format!("dataset {name}")),
            Err(e) => left.push(format!("dataset {name} unknown ({e})")),
        }
    }
    let units_dir = settings.emu_root.value.join("etc/systemd/system");
    left.extend(
        unit_files(&units_dir)
            .difference(units_before)
            .map(|u| format!("host unit {u}")),
    );
    left.extend(
        dir_names(&settings.marker_dir.value)
            .into_iter()
            .map(|m| format!("marker {m}")),
    );
    let records = journal::read(&Journal::path_in(&settings.state_dir.value)).unwrap_or_default();
    left.extend(
        journal::outstanding(&records)
            .iter()
            .map(|o| format!("journal step {}", crate::lifecycle::describe(o))),
    );
    let ended: BTreeSet<&str> = records
        .iter()
        .filter(|r| matches!(r.entry, Entry::End { .. }))
        .map(|r| r.run.as_str())
        .collect();
    left.extend(
        records
            .iter()
            .filter(|r| matches!(r.entry, Entry::Run { .. }) && !ended.contains(r.run.as_str()))
            .map(|r| format!("journal run {} left open (no end record)", r.run)),
    );
    left
}

/// The report a person reads.
fn human(r: &TestReport) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    let run = match (&r.run_error, &r.run) {
        (Some(e), _) => format!("FAILED: {e}"),
        (None, Some(doc)) => format!(
            "ok in {:.1} s (run {})",
            doc["elapsed_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            doc["run"].as_str().unwrap_or("?")
        ),
        (None, None) => "ok".to_owned(),
    };
    rows.push(("run".into(), run));
    if r.created.is_empty() {
        rows.push(("created".into(), "nothing".into()));
    }
    for c in &r.created {
        rows.push(("created".into(), c.clone()));
    }
    for p in &r.endpoints {
        let label = p
            .name
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let what = match (p.status, &p.error) {
            (Some(s), _) if p.ok => format!(
                "answered HTTP {s} to GET {}",
                p.asked.as_deref().unwrap_or(&p.url)
            ),
            (Some(s), _) => format!(
                "FAILED: answered HTTP {s} to GET {}, not a success (2xx)",
                p.asked.as_deref().unwrap_or(&p.url)
            ),
            (None, Some(e)) => format!("DID NOT ANSWER: {e}"),
            (None, None) => "DID NOT ANSWER".to_owned(),
        };
        rows.push(("endpoint".into(), format!("{}{label}: {what}", p.url)));
    }
    for c in &r.cleanup {
        rows.push(("cleanup".into(), c.clone()));
    }
    if r.leftovers.is_empty() {
        rows.push(("left".into(), "nothing".into()));
    }
    for l in &r.leftovers {
        rows.push(("LEFT".into(), l.clone()));
    }
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut text = format!(
        "recipe test of {} on a throw-away emulated host: {}\n",
        r.recipe,
        if r.ok { "PASS" } else { "FAIL" }
    );
    for (label, value) in rows {
        text.push_str(&format!("  {label:width$}  {value}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throwaway_settings_point_only_into_the_directory() {
        let operator = Settings::resolve_with(
            &FlagOverrides {
                config: Some(PathBuf::from("/srv/ops/lxc.json")),
                host: Some(HostKind::Pve),
                models_dataset: None,
            },
            &|k| match k {
                "PHOENIX_SETTINGS" => Some("/dev/null".to_owned()),
                "PHOENIX_VLLM_IMAGE" => Some("vllm/vllm-openai:v0.10.2".to_owned()),
                "PHOENIX_MOUNT_ROOTS" => Some("/srv/models".to_owned()),
                _ => None,
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = throwaway_settings(&operator, dir.path()).unwrap();
        assert_eq!(s.host.value, HostKind::Emulated);
        assert_eq!(s.config.value, PathBuf::from("/srv/ops/lxc.json"));
        assert_eq!(s.vllm_image.value, "vllm/vllm-openai:v0.10.2");
        assert!(s.mount_roots.value.is_empty());
        for (name, path) in [
            ("state_dir", &s.state_dir.value),
            ("marker_dir", &s.marker_dir.value),
            ("log_dir", &s.log_dir.value),
            ("secrets_dir", &s.secrets_dir.value),
            ("secret_key", &s.secret_key.value),
            ("emu_root", &s.emu_root.value),
        ] {
            assert!(path.starts_with(dir.path()), "{name}: {}", path.display());
        }
    }

    /// A loopback server (port 0, kept) that answers one request with `status`.
    fn answers_once(status: u16) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        });
        format!("http://127.0.0.1:{port}/v1")
    }

    #[test]
    fn an_endpoint_passes_only_with_a_2xx_answer_and_a_failure_names_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let operator = Settings::resolve_with(&FlagOverrides::default(), &|k| match k {
            "PHOENIX_SETTINGS" => Some("/dev/null".to_owned()),
            _ => None,
        })
        .unwrap();
        let settings = throwaway_settings(&operator, dir.path()).unwrap();
        let store = SecretStore::new(&settings, crate::exec::Redactor::default());
        let addresses: BTreeSet<String> = ["127.0.0.1".to_owned()].into();
        let client = reqwest::blocking::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap();
        let endpoint = |url: String| Endpoint {
            name: Some("app".into()),
            url,
            api: Api::Openai,
            model: None,
            api_key: None,
            vmid: None,
        };

        let url = answers_once(204);
        let p = probe(&endpoint(url.clone()), &addresses, Some(&client), &store);
        assert_eq!((p.answered, p.ok, p.status), (true, true, Some(204)));
        assert_eq!(p.problem(), None);

        let url = answers_once(503);
        let p = probe(&endpoint(url.clone()), &addresses, Some(&client), &store);
        assert_eq!((p.answered, p.ok, p.status), (true, false, Some(503)));
        assert_eq!(
            p.problem().as_deref(),
            Some(
                format!(
                    "endpoint {url} answered HTTP 503 to GET {url}/models, not a success (2xx)"
                )
                .as_str()
            )
        );
        let report = TestReport {
            version: 1,
            ok: false,
            recipe: "app.rhai".into(),
            run: None,
            run_error: None,
            created: Vec::new(),
            endpoints: vec![p],
            cleanup: Vec::new(),
            leftovers: Vec::new(),
        };
        assert!(
            human(&report).contains(&format!(
                "  endpoint  {url} (app): FAILED: answered HTTP 503 to GET {url}/models, not a success (2xx)\n"
            )),
            "{}",
            human(&report)
        );

        // Not asked at all (not a container's address): no answer, and the reason.
        let p = probe(
            &endpoint("http://10.0.0.111:8080".into()),
            &addresses,
            Some(&client),
            &store,
        );
        assert_eq!((p.answered, p.ok, p.status), (false, false, None));
        assert!(
            p.problem()
                .unwrap()
                .starts_with("endpoint http://10.0.0.111:8080 did not answer: not asked: "),
            "{:?}",
            p.problem()
        );
    }

    #[test]
    fn the_report_names_what_was_made_what_answered_and_what_was_left() {
        let r = TestReport {
            version: 1,
            ok: false,
            recipe: "webui.rhai".into(),
            run: Some(serde_json::json!({"elapsed_ms": 1500, "run": "r1"})),
            run_error: None,
            created: vec![made(&UndoStep::DestroyContainer {
                vmid: Vmid::new(901).unwrap(),
                storage: None,
                volumes_before: Vec::new(),
            })],
            endpoints: vec![Probe {
                name: Some("Open WebUI".into()),
                url: "http://127.64.1.2:8080".into(),
                asked: Some("http://127.64.1.2:8080".into()),
                vmid: None,
                answered: true,
                ok: true,
                status: Some(200),
                error: None,
            }],
            cleanup: vec!["undone        destroy container 901 [lxc.create:901]".into()],
            leftovers: vec!["dataset rpool/phoenix/models/x".into()],
        };
        assert_eq!(
            human(&r),
            "recipe test of webui.rhai on a throw-away emulated host: FAIL
  run       ok in 1.5 s (run r1)
  created   container 901
  endpoint  http://127.64.1.2:8080 (Open WebUI): answered HTTP 200 to GET http://127.64.1.2:8080
  cleanup   undone        destroy container 901 [lxc.create:901]
  LEFT      dataset rpool/phoenix/models/x
"
        );
    }
}

//! The set-up a run shares, whichever command starts it: `recipe run` ([`super::recipe`]:
//! one run) and `up` ([`super::up`]: one run per entry, also `recipe run` with several
//! `--lxc`); `doctor` shares the selection check.
//!
//! Before the host is touched (exit 2, nothing changed): the `--lxc` ids name entries of
//! the config ([`check_selection`]), the mount roots are usable ([`check_mount_roots`]),
//! the secret key is there or made, and every stored secret is known to the redactor
//! ([`prepare_secrets`]). Then, once per process, push files a killed phoenix left are
//! removed and the signal handlers installed ([`start_runs`]); each run gets its journal
//! ([`open_journal`]: in memory for a dry run) and its host runner ([`runner`]: recording,
//! never running, what would change the host in a dry run).

use std::sync::Arc;

use crate::config::Config;
use crate::exec::{CancelFlag, RecordingRunner, Redactor, Runner, SystemRunner};
use crate::journal::{Journal, JournalError};
use crate::script::Recipe;
use crate::secret::SecretStore;
use crate::settings::Settings;
use crate::types::Vmid;

/// Refuse an `--lxc` that names no entry (exit 2).
pub(super) fn check_selection(config: &Config, lxc: &[Vmid]) -> crate::Result<()> {
    if let Some(v) = lxc.iter().find(|v| config.get(**v).is_none()) {
        return Err(crate::Error::Usage(format!(
            "--lxc {v}: {} has no such entry (ids: {})",
            config.path.display(),
            config
                .lxc
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// The boundary's check that needs no host (DESIGN.md §12): the mount roots are usable
/// (exit 2 otherwise).
pub(super) fn check_mount_roots(settings: &Settings) -> crate::Result<()> {
    let protected = crate::boundary::paths::protected_set(&crate::boundary::own_dirs(settings));
    crate::boundary::paths::check_roots(&settings.mount_roots.value, &protected).map_err(|m| {
        crate::Error::Usage(format!("setting mount_roots (PHOENIX_MOUNT_ROOTS): {m}"))
    })?;
    Ok(())
}

/// The secret store made ready for `recipes`, before the host is touched: when one of them
/// generates its secrets (`secret.ensure`) and the store is fresh, the key is created now,
/// as `phoenix secret init` would (not in a dry run: it creates nothing, and `secret.has`
/// answers false); otherwise, when one uses secrets, the key is checked. Then every stored
/// secret is registered with the redactor, so that text a recipe reads back from a
/// container (`cat` of a token file) is redacted wherever phoenix shows it; a store that
/// cannot be read for that is a warning, not a failure.
pub(super) fn prepare_secrets(
    settings: &Settings,
    secrets: &SecretStore,
    recipes: &[&Recipe],
    dry_run: bool,
) -> crate::Result<()> {
    if recipes.iter().any(|r| r.uses_secrets()) {
        if secrets.is_fresh() && recipes.iter().any(|r| r.creates_secrets()) {
            if !dry_run {
                secrets.init(false)?;
                tracing::info!(
                    key = %settings.secret_key.value.display(),
                    "created this host's secret key (as `phoenix secret init` would); back it up"
                );
            }
        } else {
            secrets.check_key()?;
        }
    }
    match secrets.register_all() {
        Ok(n) => tracing::debug!(secrets = n, "secret values registered for redaction"),
        Err(e) => tracing::warn!(
            error = %e,
            "cannot read the secret store to redact its values: a secret a recipe reads back from a container may show in output"
        ),
    }
    Ok(())
}

/// Once per process, before the first run: remove the push files a killed phoenix left in
/// the state directory, and install the SIGINT/SIGTERM handlers (a warning when that
/// fails: a signal then stops phoenix at once).
pub(super) fn start_runs(settings: &Settings) {
    let swept = crate::host::sweep_push_files(&settings.state_dir.value.join("tmp"));
    if swept > 0 {
        tracing::warn!(files = swept, "removed push files left by a killed phoenix");
    }
    if let Err(e) = crate::signal::install() {
        tracing::warn!(
            "cannot install SIGINT/SIGTERM handlers ({e}): a signal stops phoenix at once"
        );
    }
}

/// Run `run_id`'s journal: in memory for a dry run, else in the state directory.
pub(super) fn open_journal(
    settings: &Settings,
    run_id: &str,
    dry_run: bool,
) -> Result<Journal, JournalError> {
    if dry_run {
        Ok(Journal::in_memory(run_id))
    } else {
        Journal::open(&settings.state_dir.value, run_id)
    }
}

/// A run's host runner: real processes (secrets redacted in what is shown, stopped by
/// `cancel`), and in a dry run a recording runner in front that runs only read-only
/// commands and records the rest (returned too: the run's plan).
pub(super) fn runner(
    redactor: &Redactor,
    cancel: &CancelFlag,
    dry_run: bool,
) -> (Arc<dyn Runner>, Option<Arc<RecordingRunner>>) {
    let system: Arc<dyn Runner> = Arc::new(SystemRunner::new(redactor.clone(), cancel.clone()));
    if dry_run {
        let recording = Arc::new(RecordingRunner::dry_run(system));
        (recording.clone(), Some(recording))
    } else {
        (system, None)
    }
}

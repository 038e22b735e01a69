//! The state one recipe run shares with its primitives.
//!
//! A [`Runtime`] is built once per `recipe run` (or `destroy`) from the settings, the
//! validated config and the chosen host backend, and handed to every primitive as an
//! `Arc`. It is `Send + Sync` so several recipes can later run at once (DESIGN.md §9).

use std::sync::Arc;

use crate::config::{Config, LxcConfig};
use crate::exec::{CancelFlag, RecordingRunner, Redactor};
use crate::host::Host;
use crate::journal::Journal;
use crate::secret::SecretStore;
use crate::settings::Settings;
use crate::types::Vmid;

/// Shared state of one run.
pub struct Runtime {
    /// Resolved settings.
    pub settings: Settings,
    /// The validated config.
    pub config: Arc<Config>,
    /// Entries selected with `--lxc` (empty = default selection).
    pub selected: Vec<Vmid>,
    /// The recipe file name (for the default target: the entry whose `recipe` names it).
    pub recipe_name: String,
    /// The host backend.
    pub host: Arc<dyn Host>,
    /// The write-ahead journal.
    pub journal: Journal,
    /// The secret store.
    pub secrets: SecretStore,
    /// Secret values to hide in any text shown.
    pub redactor: Redactor,
    /// `--dry-run`: mutating commands are recorded, not run; waits are skipped.
    pub dry_run: bool,
    /// In dry-run, the runner that recorded the plan.
    pub plan: Option<Arc<RecordingRunner>>,
    /// Set by SIGINT/SIGTERM.
    pub cancel: CancelFlag,
    /// This run's id (also in tags and the journal).
    pub run_id: String,
    /// Dry-run plan notes: changes that are not commands (config lines phoenix writes, a
    /// secret generated) and the content of files a push would write ([`crate::plan`]).
    pub notes: crate::plan::Notes,
    /// Where this run's steps show their progress (one tracker per container run; the
    /// default shows nothing).
    pub progress: crate::progress::Tracker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("run_id", &self.run_id)
            .field("host", &self.host.kind())
            .field("dry_run", &self.dry_run)
            .finish_non_exhaustive()
    }
}

/// The entry recipe `recipe_name` serves when none is selected (DESIGN.md §10): the entry
/// whose `recipe` names it, else the only entry.
pub fn default_target<'a>(config: &'a Config, recipe_name: &str) -> Option<&'a LxcConfig> {
    let by_recipe: Vec<&LxcConfig> = config
        .lxc
        .values()
        .filter(|c| {
            c.recipe
                .as_deref()
                .is_some_and(|r| r == recipe_name || r.rsplit('/').next() == Some(recipe_name))
        })
        .collect();
    if by_recipe.len() == 1 {
        return Some(by_recipe[0]);
    }
    if config.lxc.len() == 1 {
        return config.lxc.values().next();
    }
    None
}

impl Runtime {
    /// The entries this run may change: those selected with `--lxc`, else the default
    /// target ([`Runtime::target`]); empty when there is none.
    pub fn selection(&self) -> Vec<Vmid> {
        if self.selected.is_empty() {
            self.target().map(|e| vec![e.vmid]).unwrap_or_default()
        } else {
            self.selected.clone()
        }
    }

    /// The boundary every primitive asks (DESIGN.md §12).
    pub fn boundary(&self) -> crate::boundary::Boundary<'_> {
        crate::boundary::Boundary {
            config: &self.config,
            selected: self.selection(),
            models_parent: crate::boundary::known_models_parent(&self.settings, &self.config),
            paths: crate::boundary::HostPaths::new(
                crate::boundary::own_dirs(&self.settings),
                self.settings.mount_roots.value.clone(),
            ),
            host: self.host.as_ref(),
            journal: &self.journal,
            dry_run: self.dry_run,
        }
    }

    /// Add a plan line (dry run) for a change that is not a host command: `action` says
    /// whether it creates, changes or removes something.
    pub fn note(&self, action: crate::plan::Action, line: String) {
        self.notes.change(self.recorded(), action, line);
    }

    /// Note (dry run) the content a push to `path` in `vmid` would write over `old`
    /// (`None`: no such file yet), shown as a diff under the push in the plan.
    pub fn note_file(&self, vmid: Vmid, path: &str, old: Option<&[u8]>, new: &[u8], mode: u32) {
        self.notes
            .file(self.recorded(), &vmid.to_string(), path, old, new, mode);
    }

    /// The commands the dry run recorded so far.
    fn recorded(&self) -> usize {
        self.plan.as_ref().map_or(0, |p| p.recorded())
    }

    /// The dry run's plan ([`crate::plan::Plan`]); empty outside a dry run.
    pub fn plan(&self) -> crate::plan::Plan {
        match &self.plan {
            Some(p) => {
                crate::plan::Plan::build(&p.calls(), &p.ran_calls(), &self.notes, &self.redactor)
            }
            None => crate::plan::Plan::default(),
        }
    }

    /// The entry a recipe serves by default (DESIGN.md §10): the one selected with
    /// `--lxc`, else the entry whose `recipe` names this recipe, else the only entry.
    pub fn target(&self) -> Option<&LxcConfig> {
        if let Some(v) = self.selected.first() {
            return self.config.get(*v);
        }
        default_target(&self.config, &self.recipe_name)
    }

    /// A new run id: time and pid, unique enough per host and readable in tags. The runs
    /// one process starts (the containers of `phoenix up`) add a sequence number from the
    /// second one on, so runs started in the same millisecond never share an id.
    pub fn new_run_id() -> String {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        match SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed) {
            0 => format!("{ms:x}-{:x}", std::process::id()),
            n => format!("{ms:x}-{:x}-{n:x}", std::process::id()),
        }
    }
}

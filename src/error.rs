//! The crate error and the one exit-code table (DESIGN.md §6).
//!
//! Every module has its own error enum; this one gathers them with `#[from]` and maps each
//! to an exit code in [`Error::exit_code`]. The chain is printed in one place,
//! [`crate::main_entry`].

use std::process::ExitCode;

pub use crate::exit::{code, signal_code};

/// Everything that can end a phoenix command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// Settings could not be resolved.
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// The config file is invalid (nothing was touched).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// No models parent dataset could be found (nothing was touched).
    #[error(transparent)]
    Datasets(#[from] crate::datasets::DatasetsError),
    /// The secret store or key failed.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A recipe could not be loaded or failed.
    #[error(transparent)]
    Recipe(#[from] crate::script::RecipeError),
    /// Lint found errors.
    #[error("lint found {0} error(s)")]
    LintFailed(usize),
    /// Lint found only warnings, and `--deny-warnings` makes them fail.
    #[error("lint found {0} warning(s), denied by --deny-warnings")]
    LintWarnings(usize),
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// A host operation failed outside a recipe.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// A destroy or rollback left things behind.
    #[error(
        "{what}: {failed} step(s) could not be undone; run `phoenix destroy` again after fixing the cause"
    )]
    Incomplete {
        /// Which operation.
        what: &'static str,
        /// How many steps failed.
        failed: usize,
    },
    /// A run failed and its rollback left something behind.
    #[error(
        "the run failed and {failed} step(s) could not be rolled back; run `phoenix destroy` after fixing the cause"
    )]
    RollbackIncomplete {
        /// How many undo steps failed.
        failed: usize,
        /// Why the run failed.
        #[source]
        source: crate::script::RecipeError,
    },
    /// Some containers of `phoenix up` (or of `recipe run` with several `--lxc`) did not
    /// end ready; the others did.
    #[error(
        "{count} of the {total} container(s) did not end ready ({failed}): the summary says why"
    )]
    Batch {
        /// How many failed or were skipped.
        count: usize,
        /// The ids that failed or were skipped, as text.
        failed: String,
        /// How many were selected.
        total: usize,
    },
    /// The operator answered no at a confirmation prompt: nothing was changed.
    #[error("not confirmed: nothing was changed")]
    Declined,
    /// The host preflight found problems (nothing was touched).
    #[error(
        "the host preflight found {errors} error(s) and {warnings} warning(s) (its report says what to fix): nothing was changed"
    )]
    Preflight {
        /// How many errors.
        errors: usize,
        /// How many warnings.
        warnings: usize,
    },
    /// `phoenix recipe test` failed: the run, an endpoint, or the cleanup (each named).
    #[error("recipe test failed: {}", problems.join("; "))]
    TestFailed {
        /// What failed, one entry each.
        problems: Vec<String>,
        /// Whether something was left after the cleanup (exit 3, else 1).
        leftovers: bool,
    },
    /// Stopped by a signal.
    #[error("interrupted by signal {0}")]
    Interrupted(i32),
    /// Writing output failed.
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl Error {
    /// The exit code for this error, from the one table.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The numeric exit code.
    pub fn code(&self) -> u8 {
        match self {
            Self::Usage(_)
            | Self::Settings(_)
            | Self::Config(_)
            | Self::Datasets(_)
            | Self::Preflight { .. } => code::USAGE,
            Self::Secret(e) => e.exit_code(),
            Self::Recipe(e) => e.exit_code(),
            Self::LintFailed(_) | Self::LintWarnings(_) | Self::Declined | Self::Batch { .. } => {
                code::RUN_FAILED
            }
            Self::Host(e) if e.is_wrong_host() => code::USAGE,
            Self::Journal(_) | Self::Host(_) | Self::Output(_) => code::RUN_FAILED,
            Self::Incomplete { .. } | Self::RollbackIncomplete { .. } => code::INCOMPLETE,
            Self::TestFailed { leftovers, .. } => {
                if *leftovers {
                    code::INCOMPLETE
                } else {
                    code::RUN_FAILED
                }
            }
            Self::Interrupted(sig) => signal_code(*sig),
        }
    }
}

/// Result with the crate error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! `phoenix recipe run|lint|api`.

use std::path::PathBuf;

use clap::Subcommand;

use super::Context;

/// `phoenix recipe …`.
#[derive(Debug, Subcommand)]
pub enum RecipeCommand {
    /// Run a recipe against the host.
    Run {
        /// The recipe file.
        recipe: PathBuf,
        /// Serve these config entries (repeatable).
        #[arg(long = "lxc", value_name = "VMID")]
        lxc: Vec<crate::types::Vmid>,
        /// Show the exact commands that would run; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// On failure, undo this run's steps in reverse.
        #[arg(long)]
        rollback_on_failure: bool,
    },
}

/// Run a `recipe` command.
pub fn run(_ctx: &Context, cmd: RecipeCommand) -> crate::Result<()> {
    match cmd {
        RecipeCommand::Run { .. } => {
            Err(crate::Error::Usage("recipe run: not available yet".into()))
        }
    }
}

//! `phoenix gpu list`.

use clap::Subcommand;

use super::Context;

/// `phoenix gpu …`.
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// List the host's GPUs.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `gpu` command.
pub fn run(_ctx: &Context, cmd: GpuCommand) -> crate::Result<()> {
    match cmd {
        GpuCommand::List { .. } => Err(crate::Error::Usage("gpu list: not available yet".into())),
    }
}

//! `phoenix secret …`.

use clap::Subcommand;

use super::Context;

/// `phoenix secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create this host's secret key.
    Init,
}

/// Run a `secret` command.
pub fn run(_ctx: &Context, cmd: SecretCommand) -> crate::Result<()> {
    match cmd {
        SecretCommand::Init => Err(crate::Error::Usage("secret init: not available yet".into())),
    }
}

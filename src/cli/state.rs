//! `phoenix destroy` and `phoenix status`: what the journal says exists.

use clap::Args;

use super::Context;

/// Arguments of `phoenix destroy`.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Only these containers (repeatable).
    #[arg(long = "lxc", value_name = "VMID")]
    pub lxc: Vec<crate::types::Vmid>,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `phoenix status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Run `phoenix destroy`.
pub fn destroy(_ctx: &Context, _args: DestroyArgs) -> crate::Result<()> {
    Err(crate::Error::Usage("destroy: not available yet".into()))
}

/// Run `phoenix status`.
pub fn status(_ctx: &Context, _args: StatusArgs) -> crate::Result<()> {
    Err(crate::Error::Usage("status: not available yet".into()))
}

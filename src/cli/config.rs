//! `phoenix config validate`.

use clap::Subcommand;

use super::Context;

/// `phoenix config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file (schema, then semantic checks); exit 2 when invalid.
    Validate {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `config` command.
pub fn run(ctx: &Context, cmd: ConfigCommand) -> crate::Result<()> {
    match cmd {
        ConfigCommand::Validate { json } => {
            let config = crate::config::load(&ctx.settings.config.value)?;
            if json {
                super::out(&format!(
                    "{}\n",
                    serde_json::json!({"valid": true, "containers": config.lxc.len()})
                ))
            } else {
                super::out(&format!(
                    "{}: valid, {} container(s)\n",
                    config.path.display(),
                    config.lxc.len()
                ))
            }
        }
    }
}

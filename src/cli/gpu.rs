//! `phoenix gpu list`: the host's GPUs as `nvidia-smi` reports them, with the minor number
//! that names each one's `/dev/nvidiaN` node.

use std::sync::Arc;

use clap::Subcommand;

use super::Context;
use crate::exec::{CancelFlag, Redactor, SystemRunner};

/// `phoenix gpu …`.
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// List the host's GPUs (index, PCI bus id, UUID, name, memory, driver, minor).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `gpu` command.
pub fn run(ctx: &Context, cmd: GpuCommand) -> crate::Result<()> {
    match cmd {
        GpuCommand::List { json } => {
            let runner = Arc::new(SystemRunner::new(
                Redactor::default(),
                CancelFlag::default(),
            ));
            let host = crate::host::open(&ctx.settings, runner)?;
            let gpus = host.gpus()?;
            if json {
                let text = serde_json::to_string_pretty(&gpus).expect("GPUs serialise");
                return super::out(&format!("{text}\n"));
            }
            if gpus.is_empty() {
                return super::out("no NVIDIA GPU found\n");
            }
            let mut text = String::from(
                "INDEX  PCI BUS ID        UUID                                      MEMORY     DRIVER      MINOR  NAME\n",
            );
            for g in gpus {
                text.push_str(&format!(
                    "{:<5}  {:<16}  {:<40}  {:>6} MiB  {:<10}  {:<5}  {}\n",
                    g.index,
                    g.pci_bus_id,
                    g.uuid,
                    g.memory_mib,
                    g.driver_version,
                    g.minor.map_or_else(|| "?".to_owned(), |m| m.to_string()),
                    g.name
                ));
            }
            super::out(&text)
        }
    }
}

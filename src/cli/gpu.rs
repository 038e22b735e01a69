//! `phoenix gpu list`: the host's GPUs as `nvidia-smi` reports them, with the minor number
//! that names each one's `/dev/nvidiaN` node. A host without `nvidia-smi` is told so in
//! words (exit 2) before anything runs; `--json` prints `{version, gpus: […]}`.

use std::sync::Arc;

use clap::Subcommand;

use super::Context;
use super::help::after;
use crate::exec::{CancelFlag, Redactor, SystemRunner};
use crate::host::HostError;
use crate::settings::HostKind;

/// `phoenix gpu …`.
#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// List the host's GPUs (index, PCI bus id, UUID, name, memory, driver, minor).
    #[command(after_help = after!(
        "  phoenix gpu list
  phoenix gpu list --json --host emulated",
        "0 ok · 1 nvidia-smi failed · 2 no NVIDIA driver on the host, or usage"
    ))]
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
            if ctx.settings.host.value != HostKind::Emulated {
                // A machine without the driver gets words, not a failed `nvidia-smi` spawn.
                let nvidia_smi = ctx.settings.tool("nvidia-smi");
                if !nvidia_smi.exists() {
                    return Err(HostError::NoNvidiaDriver { nvidia_smi }.into());
                }
            }
            let host = crate::host::open(&ctx.settings, runner)?;
            let gpus = host.gpus()?;
            if json {
                let doc = serde_json::json!({
                    "version": crate::report::JSON_VERSION,
                    "gpus": gpus,
                });
                let text = serde_json::to_string_pretty(&doc).expect("GPUs serialise");
                return super::out(&format!("{text}\n"));
            }
            if gpus.is_empty() {
                return super::out("no NVIDIA GPU found\n");
            }
            let rows = gpus
                .into_iter()
                .map(|g| {
                    vec![
                        g.index.to_string(),
                        g.pci_bus_id,
                        g.uuid,
                        format!("{} MiB", g.memory_mib),
                        g.driver_version,
                        g.minor.map_or_else(|| "?".to_owned(), |m| m.to_string()),
                        g.name,
                    ]
                })
                .collect();
            super::out(&super::table(
                &[
                    "INDEX",
                    "PCI BUS ID",
                    "UUID",
                    "MEMORY",
                    "DRIVER",
                    "MINOR",
                    "NAME",
                ],
                rows,
                &[3],
            ))
        }
    }
}

//! The command line (DESIGN.md §6).
//!
//! This file defines the global options and the command tree; each command's arguments and
//! behaviour live in a file of their own. Every command returns `crate::Result`, and
//! [`crate::main_entry`] turns an error into the exit code.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::{FlagOverrides, HostKind, Settings};

mod config;
mod doctor;
mod gpu;
mod paths;
mod recipe;
mod secret;
mod state;

/// phoenix: vLLM servers on NVIDIA GPUs in Proxmox VE LXC containers, provisioned by
/// sandboxed Rhai recipes.
#[derive(Debug, Parser)]
#[command(name = "phoenix", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The container config file [env: PHOENIX_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The host backend: pve (Proxmox VE), emulated (the built-in emulated Proxmox host),
    /// lxc (plain LXC) [env: PHOENIX_HOST] [default: pve]
    #[arg(long, global = true, value_enum)]
    pub host: Option<HostKind>,
    /// The parent ZFS dataset of the model datasets, inside one of the host's pools
    /// (`rpool/phoenix/models`); overrides the config's `models_dataset`
    /// [env: PHOENIX_MODELS_DATASET]
    #[arg(long, global = true, value_name = "DATASET")]
    pub models_dataset: Option<String>,
    /// More output (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run, lint or document recipes.
    #[command(subcommand)]
    Recipe(recipe::RecipeCommand),
    /// Check the container config file.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Check, read-only, that the host can take the config's containers (exit 2 if not).
    Doctor(doctor::DoctorArgs),
    /// Remove everything phoenix's journal says it created (only phoenix-owned things).
    Destroy(state::DestroyArgs),
    /// Show what the journal says exists, per container.
    Status(state::StatusArgs),
    /// Manage the encrypted secret store.
    #[command(subcommand)]
    Secret(secret::SecretCommand),
    /// Inspect the host's GPUs.
    #[command(subcommand)]
    Gpu(gpu::GpuCommand),
    /// Print every resolved path and setting, and where it came from.
    Paths(paths::PathsArgs),
}

/// What every command gets: the parsed globals and the resolved settings.
#[derive(Debug, Clone)]
pub struct Context {
    /// The global options.
    pub global: GlobalArgs,
    /// The resolved settings.
    pub settings: Settings,
    /// Hides secret values in everything shown (logs, errors, plans).
    pub redactor: crate::exec::Redactor,
}

impl Context {
    /// Verbosity for logging: -1 quiet … 2 trace.
    pub fn verbosity(&self) -> i8 {
        if self.global.quiet {
            -1
        } else {
            self.global.verbose.min(2) as i8
        }
    }
}

/// Parse `args` and run the command.
pub fn run(args: impl IntoIterator<Item = OsString>) -> crate::Result<()> {
    run_with(args, &crate::exec::Redactor::default())
}

/// [`run`], with the redactor that hides secret values in logs and in the error the
/// caller prints.
pub fn run_with(
    args: impl IntoIterator<Item = OsString>,
    redactor: &crate::exec::Redactor,
) -> crate::Result<()> {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                // A closed pipe (`phoenix --help | head`) is not an error.
                return out(&e.render().to_string());
            }
            let text = e.render().to_string();
            let text = text.trim_end();
            return Err(crate::Error::Usage(
                text.strip_prefix("error: ").unwrap_or(text).to_owned(),
            ));
        }
    };
    let settings = Settings::resolve(&FlagOverrides {
        config: cli.global.config.clone(),
        host: cli.global.host,
        models_dataset: cli.global.models_dataset.clone(),
    })?;
    let ctx = Context {
        global: cli.global,
        settings,
        redactor: redactor.clone(),
    };
    crate::logging::init(
        ctx.verbosity(),
        Some(&ctx.settings.log_dir.value),
        &ctx.redactor,
    );
    match cli.command {
        Command::Recipe(c) => recipe::run(&ctx, c),
        Command::Config(c) => config::run(&ctx, c),
        Command::Doctor(a) => doctor::run(&ctx, &a),
        Command::Destroy(a) => state::destroy(&ctx, a),
        Command::Status(a) => state::status(&ctx, a),
        Command::Secret(c) => secret::run(&ctx, c),
        Command::Gpu(c) => gpu::run(&ctx, c),
        Command::Paths(a) => paths::run(&ctx, a),
    }
}

/// Write `text` to stdout, turning a closed pipe into a quiet success.
pub(crate) fn out(text: &str) -> crate::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::Error::Output(e)),
    }
}

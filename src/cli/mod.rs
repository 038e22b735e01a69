//! The command line: global options, the command tree and the dispatch.
//!
//! This file defines the global options and the command tree; each command's arguments and
//! behaviour live in a file of their own, and [`help`] renders help, completions and the
//! man page. Every command returns `crate::Result`, and [`crate::main_entry`] turns an error
//! into the exit code.
//!
//! Output conventions: data and results go to stdout (tables, the result of `recipe run`,
//! `--json` documents with a `version` field, see `docs/json.md`); progress, warnings and
//! errors go to stderr. `--json` prints data as JSON; `--format` exists only where there
//! are several formats (`recipe lint`: human, json, github; `recipe api`: markdown, json).
//! `-q` hides progress and confirmations, never a command's result or an error.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand};

use crate::settings::{FlagOverrides, HostKind, Settings};

mod config;
mod doctor;
mod gpu;
pub mod help;
mod paths;
mod recipe;
mod recipe_test;
pub mod result;
mod secret;
mod setup;
mod state;
pub mod up;

use help::after;

/// phoenix: vLLM servers on NVIDIA GPUs in Proxmox VE LXC containers, provisioned by
/// sandboxed Rhai recipes.
#[derive(Debug, Parser)]
#[command(
    name = "phoenix",
    version,
    about,
    long_about = None,
    arg_required_else_help = true,
    after_help = help::ROOT_AFTER
)]
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
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The container config file [env: PHOENIX_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The host backend [env: PHOENIX_HOST] [default: pve]
    #[arg(long, global = true, value_enum, hide_possible_values = false)]
    pub host: Option<HostKind>,
    /// The parent ZFS dataset of the model datasets, inside one of the host's pools
    /// (`rpool/phoenix/models`); overrides the config's `models_dataset`
    /// [env: PHOENIX_MODELS_DATASET]
    #[arg(long, global = true, value_name = "DATASET")]
    pub models_dataset: Option<String>,
    /// More output: -v phoenix's debug lines, -vv trace, -vvv every library's (RUST_LOG wins)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Quiet: no progress; each command prints only its result (one line, or its data) and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run, lint or document recipes.
    #[command(subcommand, arg_required_else_help = true)]
    Recipe(recipe::RecipeCommand),
    /// Check the container config file.
    #[command(subcommand, arg_required_else_help = true)]
    Config(config::ConfigCommand),
    /// Check, read-only, that the host can take the config's containers (exit 2 if not).
    #[command(after_help = after!(
        "  phoenix doctor                          # every entry of the config
  phoenix doctor --lxc 901 --json         # one entry, as data
  phoenix doctor --host emulated          # the emulated host (no Proxmox here)",
        "0 no errors (warnings allowed) · 2 errors found (each says how to fix it), or a usage, \
         settings or config error · 1 the host could not be asked"
    ))]
    Doctor(doctor::DoctorArgs),
    /// Provision every container of the config (or the --lxc ones) with its recipe,
    /// several at once, after the host preflight.
    #[command(after_help = after!(
        "  phoenix up                                  # every entry, 4 at a time
  phoenix up --dry-run                        # the commands each container's recipe would run
  phoenix up --lxc 901 --lxc 903 --parallel 2 --rollback-on-failure
  phoenix up --host emulated --config recipes/phoenix_lxc_configs.json --json

Each entry runs its `recipe` (relative to the config file), or the built-in container.rhai
(create, start, the entry's `packages`) when it names none; an entry starts only after the
entries its `after` names are ready. `phoenix doctor` runs first: any problem stops up before
anything is touched. One container's failure never stops the others; --rollback-on-failure
undoes only the failed one. Progress goes to stderr, one line per container and step;
stdout gets the summary table (container, recipe, state, endpoint, time).",
        "0 every container ready · 1 one failed or was skipped (the summary says which and why) · \
         2 usage, config, recipe, secret-key or preflight error, nothing touched · \
         3 a rollback left something · 130/143 interrupted"
    ))]
    Up(up::UpArgs),
    /// Remove everything phoenix's journal says it created (only phoenix-owned things).
    #[command(after_help = after!(
        "  phoenix destroy --dry-run               # show what would be removed
  phoenix destroy --lxc 901 --keep-data   # keep the model datasets
  phoenix destroy --yes                   # no question on a terminal",
        "0 removed (or nothing to remove) · 1 declined at the prompt, or failed · 2 usage · \
         3 something could not be removed (run it again after fixing the cause) · 130/143 interrupted"
    ))]
    Destroy(state::DestroyArgs),
    /// Show what the journal says exists, per container, with its live state and endpoints.
    #[command(after_help = after!(
        "  phoenix status
  phoenix status --json",
        "0 ok · 1 failed · 2 usage or settings error"
    ))]
    Status(state::StatusArgs),
    /// Manage the encrypted secret store.
    #[command(subcommand, arg_required_else_help = true)]
    Secret(secret::SecretCommand),
    /// Inspect the host's GPUs.
    #[command(subcommand, arg_required_else_help = true)]
    Gpu(gpu::GpuCommand),
    /// Print every resolved path and setting, and where it came from.
    #[command(after_help = after!(
        "  phoenix paths
  phoenix paths --host emulated --json",
        "0 ok · 2 a bad settings file or value"
    ))]
    Paths(paths::PathsArgs),
    /// Print a shell completion script.
    #[command(after_help = after!(
        "  phoenix completions bash > /etc/bash_completion.d/phoenix
  phoenix completions zsh > \"${fpath[1]}/_phoenix\"",
        "0 ok · 2 unknown shell"
    ))]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (or write one per command into a directory).
    #[command(after_help = after!(
        "  phoenix man | man -l -
  phoenix man --out-dir /usr/local/share/man/man1",
        "0 ok · 1 cannot write"
    ))]
    Man {
        /// Write phoenix.1 and phoenix-<command>.1 pages here instead of printing phoenix.1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
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
    /// How phoenix was invoked, to spell follow-up commands.
    pub invocation: crate::report::Invocation,
    /// Where steps show their progress on stderr (spinners on a terminal, heartbeat lines
    /// otherwise, nothing with `-q`); a command that runs containers makes one tracker per
    /// container from it.
    pub progress: crate::progress::Progress,
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
    let args: Vec<OsString> = args.into_iter().collect();
    let parsed = help::command()
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                // Bare `phoenix` (or `phoenix recipe`) prints the help, like `--help`. A
                // closed pipe (`phoenix --help | head`) is not an error.
                return out(&e.render().to_string());
            }
            let text = e.render().to_string();
            let text = text.trim_end();
            return Err(crate::Error::Usage(
                text.strip_prefix("error: ").unwrap_or(text).to_owned(),
            ));
        }
    };
    // Commands that need no settings: they work whatever the environment says.
    match &cli.command {
        Command::Completions { shell } => {
            let mut text = Vec::new();
            help::completions(*shell, &mut text);
            return out(&String::from_utf8_lossy(&text));
        }
        Command::Man { out_dir: None } => {
            let mut text = Vec::new();
            help::man(&mut text).map_err(crate::Error::Output)?;
            return out(&String::from_utf8_lossy(&text));
        }
        Command::Man { out_dir: Some(dir) } => {
            return help::man_pages(dir).map_err(crate::Error::Output);
        }
        _ => {}
    }
    let settings = Settings::resolve(&FlagOverrides {
        config: cli.global.config.clone(),
        host: cli.global.host,
        models_dataset: cli.global.models_dataset.clone(),
    })?;
    let ctx = Context {
        invocation: crate::report::Invocation::new(args.first(), &settings),
        progress: crate::progress::Progress::new(
            crate::progress::Mode::detect(cli.global.quiet),
            settings.progress_interval.value,
            redactor.clone(),
        ),
        global: cli.global,
        settings,
        redactor: redactor.clone(),
    };
    // `recipe test` touches none of the operator's paths: its log lines go to stderr only.
    let log_dir = (!matches!(cli.command, Command::Recipe(recipe::RecipeCommand::Test(_))))
        .then_some(ctx.settings.log_dir.value.as_path());
    crate::logging::init(ctx.verbosity(), log_dir, &ctx.redactor);
    match cli.command {
        Command::Recipe(c) => recipe::run(&ctx, c),
        Command::Config(c) => config::run(&ctx, c),
        Command::Doctor(a) => doctor::run(&ctx, &a),
        Command::Up(a) => up::run(&ctx, &a),
        Command::Destroy(a) => state::destroy(&ctx, a),
        Command::Status(a) => state::status(&ctx, a),
        Command::Secret(c) => secret::run(&ctx, c),
        Command::Gpu(c) => gpu::run(&ctx, c),
        Command::Paths(a) => paths::run(&ctx, a),
        Command::Completions { .. } | Command::Man { .. } => Ok(()),
    }
}

thread_local! {
    /// Where [`out`] writes instead of stdout while [`captured`] runs a command inside
    /// another one (`recipe test` runs `recipe run` and `destroy` and reports on them).
    static CAPTURE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Run `f` with this thread's [`out`] collected into a string instead of stdout.
pub(crate) fn captured<T>(f: impl FnOnce() -> T) -> (T, String) {
    let outer = CAPTURE.with(|c| c.borrow_mut().replace(String::new()));
    let value = f();
    let text = CAPTURE.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
    (value, text.unwrap_or_default())
}

/// Write `text` to stdout, turning a closed pipe into a quiet success.
pub(crate) fn out(text: &str) -> crate::Result<()> {
    use std::io::Write;
    let taken = CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(buf) => {
            buf.push_str(text);
            true
        }
        None => false,
    });
    if taken {
        return Ok(());
    }
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

/// A plain text table: a header row and `rows`, columns two spaces apart, no borders, no
/// trailing blanks; the columns in `right` are right-aligned.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>, right: &[usize]) -> String {
    use comfy_table::{CellAlignment, Table, presets};
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    let last = header.len().saturating_sub(1);
    for (i, col) in t.column_iter_mut().enumerate() {
        col.set_padding((0, if i == last { 0 } else { 2 }));
        if right.contains(&i) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines().map(|l| format!("{}\n", l.trim_end())).collect()
}

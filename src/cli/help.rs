//! Help, completions and the man page: one command tree, three renderings.
//!
//! - `phoenix --help` lists the global options once, under "Global options"; a
//!   subcommand's help shows its own options, examples and exit codes, and one line naming
//!   the global options ([`command`] hides their copies there). Bare `phoenix` prints the
//!   help (exit 0), and so does a command group without its subcommand (`phoenix recipe`).
//! - `phoenix completions <shell>` (clap_complete) and `phoenix man` (clap_mangen) render
//!   the unmodified tree, so every option completes and is documented in every page.
//! - Help text names only files of the repository (`recipes/…`, `docs/…`) or of the host.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use super::Cli;

/// Text after a subcommand's options: examples, then the exit codes, then where the global
/// options are.
macro_rules! after {
    ($examples:literal, $codes:literal) => {
        concat!(
            "Examples:\n",
            $examples,
            "\n\nExit codes: ",
            $codes,
            "\n\nGlobal options: --config <FILE>, --host pve|emulated|lxc, --models-dataset <DATASET>, \
             -v/--verbose, -q/--quiet (see `phoenix --help`)"
        )
    };
}
pub(crate) use after;

/// Text after the top-level options.
pub const ROOT_AFTER: &str = "\
Examples:
  phoenix recipe run recipes/drdevstral.rhai --host emulated --config recipes/phoenix_lxc_configs.json
  phoenix status
  phoenix destroy --lxc 901

Exit codes: 0 ok · 1 run failed (after the rollback, if asked) · 2 usage, config, validation or
secret-key error, nothing touched · 3 rollback or destroy incomplete · 130/143 interrupted

Settings: every path has a PHOENIX_* environment variable and a key in /etc/phoenix/phoenix.toml
(flag > environment > file > default); `phoenix paths` shows each value and its source. With
--host emulated, state, secrets and logs live under ~/.local/state/phoenix/emulated.
`--json` output is documented in docs/json.md.";

/// The command tree for parsing and help: global options appear once, in the top-level help.
///
/// Every subcommand gets a hidden copy of each global option before the tree is built;
/// clap then propagates no visible copy there (it skips an id a subcommand already has), and
/// the hidden copies still parse and still reach the top-level matches as globals.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .cloned()
        .collect();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |sub| {
            globals
                .iter()
                .fold(sub, |sub, a| sub.arg(a.clone().hide(true)))
        });
    }
    cmd
}

/// Write completions for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "phoenix", out);
}

/// Write the man page `phoenix.1` to `out`.
pub fn man(out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}

/// Write `phoenix.1` and a page per subcommand (`phoenix-recipe-run.1`, …) into `dir`.
pub fn man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)
}

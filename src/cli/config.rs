//! `phoenix config validate`.
//!
//! Human output: a one-line summary and any warnings on stdout (exit 0). An invalid file is
//! returned as [`crate::config::ConfigError`], which [`crate::main_entry`] prints as
//! `file:line:col: /pointer: expected X, found Y`, one problem per line, and maps to exit 2.
//! With `--json` the same result is printed on stdout as
//! `{version, valid, containers, warnings, problems: [{pointer, line, column, expected, found}]}`,
//! and an invalid file still exits 2 (stderr then carries the human listing as well).

use clap::Subcommand;
use serde_json::json;

use super::Context;
use super::help::after;
use crate::config::{ConfigError, Problem};

/// `phoenix config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the config file (schema, then semantic checks); exit 2 when invalid.
    #[command(after_help = after!(
        "  phoenix config validate --config recipes/phoenix_lxc_configs.json
  phoenix config validate --json",
        "0 valid · 2 invalid (every problem is listed with its file, line and JSON path) or usage"
    ))]
    Validate {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Run a `config` command.
pub fn run(ctx: &Context, cmd: ConfigCommand) -> crate::Result<()> {
    match cmd {
        ConfigCommand::Validate { json } => validate(ctx, json),
    }
}

fn validate(ctx: &Context, json: bool) -> crate::Result<()> {
    let path = &ctx.settings.config.value;
    let text = crate::config::read(path)?;
    let checked = match crate::config::check_str(path, &text) {
        Ok(c) => c,
        Err(err @ ConfigError::Syntax { line, column, .. }) => {
            if json {
                let problem = Problem {
                    pointer: String::new(),
                    line: Some(line),
                    column: Some(column),
                    expected: "valid JSON".to_owned(),
                    found: err.to_string(),
                };
                print_json(false, 0, &[], &[problem])?;
            }
            return Err(err.into());
        }
        Err(err) => return Err(err.into()),
    };
    let Some(config) = checked.config else {
        if json {
            print_json(false, 0, &checked.warnings, &checked.problems)?;
        }
        return Err(ConfigError::Invalid {
            path: path.clone(),
            problems: checked.problems,
        }
        .into());
    };
    if json {
        return print_json(true, config.lxc.len(), &config.warnings, &[]);
    }
    let mut text = format!(
        "{}: valid, {} container(s): {}\n",
        config.path.display(),
        config.lxc.len(),
        config
            .lxc
            .values()
            .map(|c| format!("{} {}", c.vmid, c.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for w in &config.warnings {
        text.push_str(&format!("warning: {}:{w}\n", config.path.display()));
    }
    super::out(&text)
}

fn print_json(
    valid: bool,
    containers: usize,
    warnings: &[Problem],
    problems: &[Problem],
) -> crate::Result<()> {
    let doc = json!({
        "version": crate::report::JSON_VERSION,
        "valid": valid,
        "containers": containers,
        "warnings": warnings,
        "problems": problems,
    });
    super::out(&format!("{doc}\n"))
}

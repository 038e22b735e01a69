//! `phoenix secret …`: the key and the encrypted store (DESIGN.md §1, §6, §10).
//!
//! Values never come from argv: `set` reads stdin (on a terminal: twice, unechoed, and the
//! two must match) or `--from-file`, and drops one trailing newline. `get` prints a value
//! only with `--reveal`; `list` prints names and modification times only. Every key or
//! store problem exits 2 (`SecretError::exit_code`). With `-q` each command prints one
//! line (what it did) or its data, nothing more.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use crate::exec::Redactor;
use crate::secret::{
    InitOutcome, MAX_VALUE_LEN, SecretError, SecretStore, legacy_sources, rfc3339,
    strip_one_newline,
};
use crate::types::SecretName;

use super::help::after;
use super::{Context, out};

/// `phoenix secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create this host's secret key (an age X25519 identity) and the store's recipient file.
    #[command(after_help = after!(
        "  phoenix secret init
  phoenix secret init --force   # a new key: secrets encrypted to the old one are lost",
        "0 ok · 2 key or store problem, or usage"
    ))]
    Init(InitArgs),
    /// Store a secret: the value is read from stdin (on a terminal: asked twice, not
    /// echoed) or from --from-file, never from the command line.
    #[command(after_help = after!(
        "  phoenix secret set hf_token   # asks twice on a terminal, or reads stdin
  phoenix secret set hf_token --from-file token.txt",
        "0 ok · 2 key or store problem, values differ, or usage"
    ))]
    Set(SetArgs),
    /// List the stored secrets (names and dates, never values).
    #[command(after_help = after!(
        "  phoenix secret list
  phoenix secret list --json",
        "0 ok · 2 key or store problem, or usage"
    ))]
    List(ListArgs),
    /// Remove a secret.
    #[command(after_help = after!(
        "  phoenix secret rm hf_token",
        "0 ok · 2 no such secret, or usage"
    ))]
    Rm(NameArg),
    /// Print a secret's value (only with --reveal).
    #[command(after_help = after!(
        "  phoenix secret get vllm_api_key --reveal
  curl -H \"Authorization: Bearer $(phoenix secret get vllm_api_key --reveal)\" http://10.0.0.110:8000/v1/models",
        "0 ok · 2 no such secret, no --reveal, key problem, or usage"
    ))]
    Get(GetArgs),
    /// Replace the key with a new one and re-encrypt every secret to it.
    #[command(after_help = after!(
        "  phoenix secret rotate-key",
        "0 ok (an interrupted rotation is finished by running it again) · 2 key or store problem"
    ))]
    RotateKey,
    /// Import the bash suite's base64 secret files, then scrub and remove them.
    #[command(after_help = after!(
        "  phoenix secret import-legacy
  phoenix secret import-legacy --keep --hf-token-file /root/hf_token.b64",
        "0 ok (also when there was nothing to import) · 2 key or store problem, or usage"
    ))]
    ImportLegacy(ImportArgs),
}

/// `secret init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Replace an existing key (secrets encrypted to it can then no longer be read).
    #[arg(long)]
    pub force: bool,
}

/// `secret set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The secret's name (lowercase letters, digits, `_`, `-`).
    pub name: SecretName,
    /// Read the value from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
}

/// `secret list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON: `{"version": 1, "secrets": [{"name": …, "modified": "…Z"}]}`.
    #[arg(long)]
    pub json: bool,
}

/// A secret's name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// The secret's name.
    pub name: SecretName,
}

/// `secret get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The secret's name.
    pub name: SecretName,
    /// Really print the value.
    #[arg(long)]
    pub reveal: bool,
}

/// `secret import-legacy`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The base64 Hugging Face token file (becomes `hf_token`)
    /// [default: /usr/local/etc/phoenix_hf_token.conf].
    #[arg(long, value_name = "P")]
    pub hf_token_file: Option<PathBuf>,
    /// The base64 container root password file (becomes `lxc_root_password`)
    /// [default: /root/.phoenix_lxc_root_passwd].
    #[arg(long, value_name = "P")]
    pub root_password_file: Option<PathBuf>,
    /// Leave the original files in place.
    #[arg(long)]
    pub keep: bool,
}

/// Run a `secret` command.
pub fn run(ctx: &Context, cmd: SecretCommand) -> crate::Result<()> {
    let store = SecretStore::new(&ctx.settings, Redactor::default());
    let quiet = ctx.global.quiet;
    match cmd {
        SecretCommand::Init(a) => init(&store, &a, quiet),
        SecretCommand::Set(a) => set(&store, &a),
        SecretCommand::List(a) => list(&store, &a),
        SecretCommand::Rm(a) => {
            let path = store.remove(&a.name)?;
            out(&format!(
                "removed secret `{}` ({})\n",
                a.name,
                path.display()
            ))
        }
        SecretCommand::Get(a) => get(&store, &a),
        SecretCommand::RotateKey => rotate(&store, quiet),
        SecretCommand::ImportLegacy(a) => import(&store, a, quiet),
    }
}

fn init(store: &SecretStore, a: &InitArgs, quiet: bool) -> crate::Result<()> {
    let outcome = store.init(a.force)?;
    if quiet {
        let verb = match outcome {
            InitOutcome::Created { .. } => "created",
            InitOutcome::Adopted { .. } => "kept",
        };
        return out(&format!(
            "{verb} secret key {}\n",
            store.key_path().display()
        ));
    }
    let text = match outcome {
        InitOutcome::Created {
            recipient,
            stranded,
        } => {
            let mut t = format!(
                "created secret key {} (recipient {recipient})\nrecipient stored in {}\n",
                store.key_path().display(),
                store.recipient_path().display()
            );
            if stranded > 0 {
                t.push_str(&format!(
                    "warning: {stranded} secret(s) in {} were encrypted to the replaced key and can no longer be read: set them again\n",
                    store.dir().display()
                ));
            }
            t
        }
        InitOutcome::Adopted { recipient } => format!(
            "kept the existing secret key {} (recipient {recipient})\nrecipient stored in {}\n",
            store.key_path().display(),
            store.recipient_path().display()
        ),
    };
    out(&text)
}

fn set(store: &SecretStore, a: &SetArgs) -> crate::Result<()> {
    // Check the key before asking for a value nobody could store.
    store.check_key()?;
    let value = read_value(&a.name, a.from_file.as_deref())?;
    let path = store.set(&a.name, &value)?;
    out(&format!(
        "stored secret `{}` in {}\n",
        a.name,
        path.display()
    ))
}

/// The value for `name`: from `file`, else a terminal (twice, unechoed), else stdin.
fn read_value(
    name: &SecretName,
    file: Option<&std::path::Path>,
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let read_err = |from: String| {
        let name = name.clone();
        move |source| SecretError::ReadValue { name, from, source }
    };
    let mut value = Zeroizing::new(Vec::with_capacity(MAX_VALUE_LEN + 2));
    if let Some(path) = file {
        let f = std::fs::File::open(path).map_err(read_err(path.display().to_string()))?;
        f.take(MAX_VALUE_LEN as u64 + 2)
            .read_to_end(&mut value)
            .map_err(read_err(path.display().to_string()))?;
    } else if std::io::stdin().is_terminal() {
        let first = Zeroizing::new(
            rpassword::prompt_password(format!("value for secret `{name}`: "))
                .map_err(read_err("the terminal".into()))?,
        );
        let second = Zeroizing::new(
            rpassword::prompt_password(format!("value for secret `{name}` again: "))
                .map_err(read_err("the terminal".into()))?,
        );
        if *first != *second {
            return Err(SecretError::ValuesDiffer { name: name.clone() });
        }
        value.extend_from_slice(first.as_bytes());
    } else {
        std::io::stdin()
            .lock()
            .take(MAX_VALUE_LEN as u64 + 2)
            .read_to_end(&mut value)
            .map_err(read_err("stdin".into()))?;
    }
    strip_one_newline(&mut value);
    Ok(value)
}

fn list(store: &SecretStore, a: &ListArgs) -> crate::Result<()> {
    let items = store.list()?;
    let text = if a.json {
        let rows: Vec<_> = items
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.name.as_str(),
                    "modified": rfc3339(i.modified),
                })
            })
            .collect();
        let doc = serde_json::json!({
            "version": crate::report::JSON_VERSION,
            "secrets": rows,
        });
        let mut s = serde_json::to_string_pretty(&doc).expect("names and dates serialise");
        s.push('\n');
        s
    } else if items.is_empty() {
        format!("no secrets in {}\n", store.dir().display())
    } else {
        let rows = items
            .iter()
            .map(|i| vec![i.name.as_str().to_owned(), rfc3339(i.modified)])
            .collect();
        super::table(&["NAME", "MODIFIED"], rows, &[])
    };
    out(&text)
}

fn get(store: &SecretStore, a: &GetArgs) -> crate::Result<()> {
    if !a.reveal {
        // Check the name exists first, so the refusal is about --reveal only.
        store.check_key()?;
        if !store.secret_path(&a.name).exists() {
            return Err(SecretError::NotFound {
                name: a.name.clone(),
                dir: store.dir().to_owned(),
            }
            .into());
        }
        return Err(SecretError::RevealRequired {
            name: a.name.clone(),
        }
        .into());
    }
    let secret = store.get(&a.name)?;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(secret.expose())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(crate::Error::Output(e)),
    }
}

fn rotate(store: &SecretStore, quiet: bool) -> crate::Result<()> {
    let r = store.rotate_key()?;
    if quiet {
        return out(&format!(
            "re-encrypted {} secret(s) to the new key {}\n",
            r.secrets.len(),
            store.key_path().display()
        ));
    }
    let mut text = String::new();
    if r.resumed {
        text.push_str("finished an interrupted key rotation\n");
    }
    text.push_str(&format!(
        "re-encrypted {} secret(s) to recipient {}\nold recipient {} no longer opens the store\nkey: {}\n",
        r.secrets.len(),
        r.new_recipient,
        r.old_recipient,
        store.key_path().display()
    ));
    out(&text)
}

fn import(store: &SecretStore, a: ImportArgs, quiet: bool) -> crate::Result<()> {
    let sources = legacy_sources(a.hf_token_file, a.root_password_file);
    let r = store.import_legacy(&sources, a.keep)?;
    if quiet {
        return out(&format!(
            "imported {} secret(s), removed {} file(s)\n",
            r.imported.len(),
            r.removed.len()
        ));
    }
    let mut text = String::new();
    for (name, path) in &r.imported {
        let note = if r.unchanged.contains(name) {
            " (already stored, unchanged)"
        } else {
            ""
        };
        text.push_str(&format!(
            "imported `{name}` from {}{note}\n",
            path.display()
        ));
    }
    for p in &r.removed {
        text.push_str(&format!(
            "removed {} (overwritten with zeros first)\n",
            p.display()
        ));
    }
    for p in &r.kept {
        text.push_str(&format!("kept {} (--keep)\n", p.display()));
    }
    for p in &r.absent {
        text.push_str(&format!("absent: {} (nothing to import)\n", p.display()));
    }
    if r.imported.is_empty() {
        text.push_str("nothing imported\n");
    }
    out(&text)
}

//! What phoenix reports to the operator: the outputs a recipe records (`output.endpoint`,
//! `output.set`), the version of every `--json` document, and how to spell a follow-up
//! command so that it works when pasted.
//!
//! Decisions:
//! - A recipe decides what it produced. The CLI knows no service: it shows the endpoints and
//!   values the recipe recorded, plus what the journal and the host say about the containers.
//!   Outputs are journal records ([`crate::journal::Entry::Output`]), so `phoenix status`
//!   can show a container's endpoint after the run that made it has ended.
//! - A secret in an output is kept by name only; the operator is shown the command that
//!   reads it (`phoenix secret get NAME --reveal`), never the value.
//! - Follow-up commands are spelled with the program as the operator typed it (`argv[0]`)
//!   and with the global options that moved phoenix's state (`--host emulated` keeps the
//!   emulated host's state in a per-user directory), so a pasted command finds the same
//!   journal and secrets. They are shell text for a person to paste; phoenix itself never
//!   runs them through a shell.

use std::ffi::OsString;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::exec::shell_word;
use crate::settings::{HostKind, Settings, Source};
use crate::types::{SecretName, Vmid};

/// The version of every `--json` document phoenix prints (its `version` field). It changes
/// only when a field changes meaning or disappears; new fields may appear within a version.
pub const JSON_VERSION: u32 = 1;

/// The protocol an endpoint speaks, so the operator can be shown a request that works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Plain HTTP: the example is a `GET` of the URL.
    #[default]
    Http,
    /// An OpenAI-compatible API rooted at the URL (`…/v1`): the example is a completion.
    Openai,
}

impl Api {
    /// Parse a recipe's `api` value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Self::Http),
            "openai" => Some(Self::Openai),
            _ => None,
        }
    }
}

/// A service a recipe reported (`output.endpoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// A label (`vLLM`), when the recipe gave one.
    #[serde(default)]
    pub name: Option<String>,
    /// The URL clients use (`http://10.0.0.110:8000/v1`).
    pub url: String,
    /// The protocol.
    #[serde(default)]
    pub api: Api,
    /// The model it serves, when it serves one.
    #[serde(default)]
    pub model: Option<String>,
    /// The secret holding its API key (the name only).
    #[serde(default)]
    pub api_key: Option<SecretName>,
    /// The container serving it.
    #[serde(default)]
    pub vmid: Option<Vmid>,
}

/// A scalar a recipe reported (`output.set`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A string (known secret values redacted).
    Text(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// A named value a recipe reported: a scalar, or a secret (by name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedValue {
    /// Its label.
    pub name: String,
    /// The value; `None` when it is a secret.
    #[serde(default)]
    pub value: Option<Scalar>,
    /// The secret it names, when it is one.
    #[serde(default)]
    pub secret: Option<SecretName>,
}

/// One output record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum OutputItem {
    /// `output.endpoint(…)`.
    Endpoint(Endpoint),
    /// `output.set(…)`.
    Value(NamedValue),
}

/// How the operator invoked phoenix, to spell follow-up commands they can paste.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program as typed (`argv[0]`): `phoenix` when found on `PATH`, else the path given.
    pub program: String,
    /// Global options to repeat (`--host emulated` when the host did not come from the
    /// environment or a settings file).
    pub globals: Vec<String>,
}

impl Invocation {
    /// From `argv[0]` (falling back to the running executable) and the resolved settings.
    pub fn new(argv0: Option<&OsString>, settings: &Settings) -> Self {
        let program = argv0
            .filter(|a| !a.is_empty())
            .map(|a| a.to_string_lossy().into_owned())
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .map(|p: PathBuf| p.display().to_string())
            })
            .unwrap_or_else(|| "phoenix".to_owned());
        let mut globals = Vec::new();
        // A host chosen with a flag must be repeated; one from PHOENIX_HOST or the settings
        // file still applies to the next command.
        if settings.host.source == Source::Flag && settings.host.value != HostKind::Pve {
            globals.push("--host".to_owned());
            globals.push(settings.host.value.to_string());
        }
        Self { program, globals }
    }

    /// The shell text of `phoenix <args…> <globals…>`, each word quoted where needed.
    pub fn command(&self, args: &[&str]) -> String {
        std::iter::once(self.program.as_str())
            .chain(args.iter().copied())
            .chain(self.globals.iter().map(String::as_str))
            .map(shell_word)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The command that prints secret `name`.
    pub fn read_secret(&self, name: &SecretName) -> String {
        self.command(&["secret", "get", name.as_str(), "--reveal"])
    }

    /// The command that removes what the containers `vmids` hold (all when empty).
    pub fn destroy(&self, vmids: &[Vmid]) -> String {
        let ids: Vec<String> = vmids.iter().map(ToString::to_string).collect();
        let mut args = vec!["destroy"];
        for id in &ids {
            args.push("--lxc");
            args.push(id);
        }
        self.command(&args)
    }

    /// A request that shows `endpoint` works, as `curl` shell text.
    pub fn example(&self, endpoint: &Endpoint) -> String {
        let mut words: Vec<String> = vec!["curl".into(), "-sS".into()];
        let url = endpoint.url.trim_end_matches('/');
        match endpoint.api {
            Api::Http => words.push(shell_word(&endpoint.url).into_owned()),
            Api::Openai => {
                words.push(shell_word(&format!("{url}/completions")).into_owned());
                words.push("-H".into());
                words.push(shell_word("Content-Type: application/json").into_owned());
                let body = serde_json::json!({
                    "model": endpoint.model.as_deref().unwrap_or("default"),
                    "prompt": "Hello",
                    "max_tokens": 16,
                });
                words.push("-d".into());
                words.push(shell_word(&body.to_string()).into_owned());
            }
        }
        if let Some(secret) = &endpoint.api_key {
            // Inside double quotes so that `$(…)` runs; the inner words keep their quoting.
            words.push("-H".into());
            words.push(format!(
                "\"Authorization: Bearer $({})\"",
                self.read_secret(secret)
            ));
        }
        words.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(program: &str, globals: &[&str]) -> Invocation {
        Invocation {
            program: program.into(),
            globals: globals.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn endpoint(api: Api, key: Option<&str>) -> Endpoint {
        Endpoint {
            name: None,
            url: "http://127.0.0.9:8000/v1".into(),
            api,
            model: Some("org/model|v2".into()),
            api_key: key.map(|k| k.parse().unwrap()),
            vmid: None,
        }
    }

    #[test]
    fn commands_repeat_the_program_as_typed_and_the_host_flag() {
        let i = inv("target/release/phoenix", &["--host", "emulated"]);
        assert_eq!(
            i.destroy(&[Vmid::new(901).unwrap(), Vmid::new(902).unwrap()]),
            "target/release/phoenix destroy --lxc 901 --lxc 902 --host emulated"
        );
        assert_eq!(
            i.read_secret(&"vllm_api_key".parse().unwrap()),
            "target/release/phoenix secret get vllm_api_key --reveal --host emulated"
        );
        assert_eq!(
            inv("/opt/my tools/phoenix", &[]).destroy(&[]),
            "'/opt/my tools/phoenix' destroy"
        );
    }

    #[test]
    fn openai_example_posts_a_completion_with_the_key_read_by_phoenix() {
        let i = inv("phoenix", &[]);
        assert_eq!(
            i.example(&endpoint(Api::Openai, Some("vllm_api_key"))),
            "curl -sS http://127.0.0.9:8000/v1/completions -H 'Content-Type: application/json' \
             -d '{\"max_tokens\":16,\"model\":\"org/model|v2\",\"prompt\":\"Hello\"}' \
             -H \"Authorization: Bearer $(phoenix secret get vllm_api_key --reveal)\""
        );
        assert_eq!(
            i.example(&endpoint(Api::Http, None)),
            "curl -sS http://127.0.0.9:8000/v1"
        );
    }

    #[test]
    fn the_host_flag_is_repeated_only_when_it_came_from_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("phoenix.toml");
        std::fs::write(&file, "").unwrap();
        let file = file.display().to_string();
        let resolve = |flag: Option<HostKind>, env: Option<&str>| {
            let env = env.map(str::to_owned);
            let file = file.clone();
            let s = Settings::resolve_with(
                &crate::settings::FlagOverrides {
                    host: flag,
                    ..crate::settings::FlagOverrides::default()
                },
                &move |k| match k {
                    "PHOENIX_HOST" => env.clone(),
                    "PHOENIX_SETTINGS" => Some(file.clone()),
                    "PHOENIX_STATE_DIR" => Some("/tmp/st".into()),
                    _ => None,
                },
            )
            .unwrap();
            Invocation::new(Some(&OsString::from("phoenix")), &s).globals
        };
        assert_eq!(
            resolve(Some(HostKind::Emulated), None),
            ["--host", "emulated"]
        );
        assert!(resolve(None, Some("emulated")).is_empty());
        assert!(resolve(Some(HostKind::Pve), None).is_empty());
    }

    #[test]
    fn outputs_round_trip_as_json() {
        let item = OutputItem::Endpoint(endpoint(Api::Openai, Some("k")));
        let text = serde_json::to_string(&item).unwrap();
        assert!(text.starts_with("{\"type\":\"endpoint\""), "{text}");
        assert_eq!(serde_json::from_str::<OutputItem>(&text).unwrap(), item);
        let v = OutputItem::Value(NamedValue {
            name: "port".into(),
            value: Some(Scalar::Int(8000)),
            secret: None,
        });
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<OutputItem>(&text).unwrap(), v);
    }
}

//! Injected faults from `$ROOT/faults.json`, read on every call (DESIGN.md §7).
//!
//! The file is a JSON list (an object `{"faults":[…],"vllm":{…}}` is accepted too). Fault entries are `{"match":[…],"action":…,"times":N}`; the
//! first entry whose `match` is a prefix of the call's key and whose `times` is not used up
//! applies. The key is `tool + argv`, except for `pct exec <vmid> [opts] -- prog args…`,
//! whose key is `prog args…` (`prog` by its file name, as `["docker","run"]`). `times`
//! counts down and is written back under the root lock; an entry at 0 stays in the file but
//! no longer matches. Objects of another shape (e.g. `{"vllm":{…}}`) are kept for the
//! emulated vLLM server and ignored here.
//!
//! `hang` (and the hang of `succeed-then-hang`) sleeps until the caller kills the process,
//! or until the root disappears, or for at most an hour, so a killed test run leaves no
//! emulator process behind for long.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::root::{Root, RootError, atomic_write};

/// What an injected fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Exit non-zero with a message, doing nothing.
    Fail,
    /// Exit with this code, doing nothing.
    Exit(i32),
    /// Hang before doing anything.
    Hang,
    /// Wait, then work normally.
    Delay(Duration),
    /// Do the work, print its output, then hang.
    SucceedThenHang,
    /// Do the first part of the work and hang where the real tool spends its time: `pct
    /// create` after writing `lock: create` and allocating the volumes, while the template
    /// is extracted (so a kill leaves what a killed real create leaves). Tools without such
    /// a point hang before their work, as `hang` does.
    HangMidway,
}

impl Action {
    /// The action as written in `faults.json`.
    pub fn label(&self) -> String {
        match self {
            Self::Fail => "fail".into(),
            Self::Exit(n) => format!("exit:{n}"),
            Self::Hang => "hang".into(),
            Self::Delay(d) => format!("delay:{}ms", d.as_millis()),
            Self::SucceedThenHang => "succeed-then-hang".into(),
            Self::HangMidway => "hang-midway".into(),
        }
    }

    /// Parse `fail`, `hang`, `exit:N`, `delay:2s`/`delay:500ms`, `succeed-then-hang`,
    /// `hang-midway`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fail" => Some(Self::Fail),
            "hang" => Some(Self::Hang),
            "succeed-then-hang" => Some(Self::SucceedThenHang),
            "hang-midway" => Some(Self::HangMidway),
            _ => {
                if let Some(n) = s.strip_prefix("exit:") {
                    return n.parse().ok().map(Self::Exit);
                }
                s.strip_prefix("delay:")
                    .and_then(parse_duration)
                    .map(Self::Delay)
            }
        }
    }
}

/// `500ms`, `2s`, `1m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// Errors of `faults.json`.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    Root(#[from] RootError),
    /// The file is not a list of fault entries.
    #[error("faults.json entry {index}: {message}")]
    Invalid {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// The key a call is matched by.
pub fn match_key(tool: &str, args: &[String]) -> Vec<String> {
    if tool == "pct" && args.first().map(String::as_str) == Some("exec") {
        if let Some(pos) = args.iter().position(|a| a == "--") {
            let mut inner: Vec<String> = args[pos + 1..].to_vec();
            if let Some(first) = inner.first_mut() {
                if let Some(name) = Path::new(first.as_str()).file_name() {
                    *first = name.to_string_lossy().into_owned();
                }
            }
            if !inner.is_empty() {
                return inner;
            }
        }
    }
    std::iter::once(tool.to_owned())
        .chain(args.iter().cloned())
        .collect()
}

/// The fault for `key`, counting its `times` down. `None` when no entry matches.
///
/// `also` is a second key an entry may match instead (for `pct exec`: the whole
/// `pct exec …` command line, so `["pct","exec"]` faults every command in a container).
pub fn take(root: &Root, key: &[String], also: &[String]) -> Result<Option<Action>, FaultError> {
    let path = root.join("faults.json");
    if !path.exists() {
        return Ok(None);
    }
    let _lock = root.lock()?;
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RootError::io("read", &path, e).into()),
    };
    let mut list: Value = serde_json::from_slice(&text).map_err(|source| RootError::Json {
        path: path.clone(),
        source,
    })?;
    let items = if list.is_array() {
        list.as_array_mut()
    } else if list.is_object() && list.get("faults").is_none() {
        // Only settings (e.g. `{"vllm":{…}}`): no faults.
        return Ok(None);
    } else {
        list.get_mut("faults").and_then(Value::as_array_mut)
    };
    let Some(items) = items else {
        return Err(FaultError::Invalid {
            index: 0,
            message: "the file must hold a JSON list (or an object with a `faults` list)".into(),
        });
    };
    for (index, item) in items.iter_mut().enumerate() {
        let Some(pattern) = item.get("match") else {
            continue; // e.g. {"vllm":{…}}
        };
        let pattern: Vec<&str> = pattern
            .as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect())
            .ok_or_else(|| FaultError::Invalid {
                index,
                message: "`match` must be a list of strings".into(),
            })?;
        let action_text = item.get("action").and_then(Value::as_str).unwrap_or("");
        let action = Action::parse(action_text).ok_or_else(|| FaultError::Invalid {
            index,
            message: format!("unknown action {action_text:?}"),
        })?;
        let is_prefix = |key: &[String]| {
            pattern.len() <= key.len() && pattern.iter().zip(key).all(|(p, k)| *p == k.as_str())
        };
        if !is_prefix(key) && !is_prefix(also) {
            continue;
        }
        match item.get("times").and_then(Value::as_u64) {
            None if item.get("times").is_some_and(|t| !t.is_null()) => {
                return Err(FaultError::Invalid {
                    index,
                    message: "`times` must be a non-negative integer".into(),
                });
            }
            None => return Ok(Some(action)),
            Some(0) => continue,
            Some(n) => {
                item["times"] = Value::from(n - 1);
                let mut data =
                    serde_json::to_vec_pretty(&list).map_err(|source| RootError::Json {
                        path: path.clone(),
                        source,
                    })?;
                data.push(b'\n');
                atomic_write(&path, &data)?;
                return Ok(Some(action));
            }
        }
    }
    Ok(None)
}

/// Sleep until killed, until the root disappears, or for an hour.
pub fn hang(root: &Root) {
    let start = Instant::now();
    while root.path().exists() && start.elapsed() < Duration::from_secs(3600) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_parse() {
        assert_eq!(Action::parse("fail"), Some(Action::Fail));
        assert_eq!(Action::parse("exit:3"), Some(Action::Exit(3)));
        assert_eq!(
            Action::parse("delay:2s"),
            Some(Action::Delay(Duration::from_secs(2)))
        );
        assert_eq!(
            Action::parse("delay:250ms"),
            Some(Action::Delay(Duration::from_millis(250)))
        );
        assert_eq!(Action::parse("hang-midway"), Some(Action::HangMidway));
        assert_eq!(Action::parse("delay:2h"), None);
        assert_eq!(Action::parse("explode"), None);
    }

    #[test]
    fn exec_key_is_the_inner_program() {
        let args: Vec<String> = [
            "exec",
            "901",
            "--keep-env",
            "0",
            "--",
            "/usr/bin/docker",
            "run",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(match_key("pct", &args), ["docker", "run"]);
        let args: Vec<String> = ["create", "901"].map(String::from).to_vec();
        assert_eq!(match_key("pct", &args), ["pct", "create", "901"]);
    }
}

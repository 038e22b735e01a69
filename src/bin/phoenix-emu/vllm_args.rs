//! The arguments of an emulated `vllm/vllm-openai` container, read as the image reads them.
//!
//! - The entrypoint ([`Entrypoint`]): up to and including v0.11.0 the image runs
//!   `python3 -m vllm.entrypoints.openai.api_server` (vllm-project/vllm
//!   `docker/Dockerfile`, v0.11.0), whose argparse knows no positional model: one exits 2
//!   with `api_server.py: error: unrecognized arguments: <model>` (vllm-project/vllm#27389).
//!   Early-2026 images accept a positional and ignore it, so the default model is served
//!   (vllm-project/vllm PR #32292; DESIGN.md §11). The default model of `EngineArgs` in these
//!   images is `Qwen/Qwen3-0.6B` (`vllm/config/model.py` `ModelConfig.model`).
//! - `--config FILE`: vLLM's `FlexibleArgumentParser` (`vllm/utils/__init__.py`, v0.11.0,
//!   `_pull_args_from_config`/`load_config_file`) reads the YAML with `yaml.safe_load` and
//!   turns each `key: value` into `--key value` (`true` → `--key`, a list → `--key a b`),
//!   inserted before the command-line arguments (after a leading positional), so the
//!   command line wins. Read here with
//!   a real YAML parser (yaml-rust2; YAML 1.2 where PyYAML reads 1.1: `yes`/`on` stay
//!   strings). Option names with `_` are read as with `-`, as `FlexibleArgumentParser` does.
//! - The flags ([`FLAGS`]): a subset of `FrontendArgs` (`vllm/entrypoints/openai/cli_args.py`)
//!   and `EngineArgs` (`vllm/engine/arg_utils.py`) in their declaration order, with their
//!   defaults and types; argparse's errors (exit 2) for unknown arguments, missing or
//!   malformed values and invalid choices.
//! - The "non-default args" line ([`Args::non_default_line`]): `log_non_default_args`
//!   (`vllm/entrypoints/utils.py`, v0.11.0) compares the parsed namespace with the parser's
//!   defaults and logs the differing entries as a Python dict, in the parser's order. Values
//!   from `--api-key` and from a `--config` YAML are arguments like any other, so an API key
//!   given that way is printed in the server's log (`docker logs`); `VLLM_API_KEY` from the
//!   environment is not an argument and is not printed (DESIGN.md §11; fixed upstream only
//!   by vllm-project/vllm PR #52523).

use serde_json::Value;

/// How the image's entrypoint treats a positional model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entrypoint {
    /// `python3 -m vllm.entrypoints.openai.api_server` of v0.11.0 and older: a positional
    /// is an unrecognized argument (exit 2).
    ApiServer,
    /// The api_server of early-2026 images: a positional is accepted and ignored.
    ApiServerIgnoringPositional,
}

/// The entrypoint of `image` (`vllm/vllm-openai:vX.Y.Z`). Tags after v0.11.x take the
/// positional-ignoring behaviour; v0.11.x and older, and tags that are not versions (a
/// digest, `nightly`), the pinned one.
pub fn entrypoint(image: &str) -> Entrypoint {
    let tag = image.rsplit_once(':').map_or("", |(_, t)| t);
    let mut nums = tag
        .trim_start_matches('v')
        .split(['.', '-', 'r', 'p'])
        .map(|x| x.parse::<u32>().ok());
    match (nums.next().flatten(), nums.next().flatten()) {
        (Some(major), Some(minor)) if (major, minor) > (0, 11) => {
            Entrypoint::ApiServerIgnoringPositional
        }
        _ => Entrypoint::ApiServer,
    }
}

/// `docker ps`'s COMMAND for a container of `image`.
pub fn entrypoint_text(image: &str) -> String {
    if image.starts_with("vllm/vllm-openai") {
        "\"python3 -m vllm.entrypoints.openai.api_server\"".into()
    } else {
        "\"/bin/sh\"".into()
    }
}

/// The model `EngineArgs` loads when none is given.
pub const DEFAULT_MODEL: &str = "Qwen/Qwen3-0.6B";

/// A value as Python holds it after argparse.
#[derive(Debug, Clone, PartialEq)]
pub enum Py {
    /// `None`.
    None,
    /// A `str`.
    Str(String),
    /// An `int`.
    Int(i64),
    /// A `float`.
    Float(f64),
    /// A `bool`.
    Bool(bool),
    /// A `list` of `str` (`nargs='+'`).
    List(Vec<String>),
    /// A value from `json.loads`.
    Json(Value),
}

/// A Python `str`'s `repr()`: single quotes unless the text has `'` and no `"`.
pub fn py_str(s: &str) -> String {
    let q = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == q => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

/// A Python `float`'s `repr()` (`0.9`, `1.0`).
fn py_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

/// A JSON value as the Python object `json.loads` makes, `repr()`ed.
fn py_json(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n
            .as_i64()
            .map(|i| i.to_string())
            .unwrap_or_else(|| py_float(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => py_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_json).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_str(k), py_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl Py {
    /// Python's `repr()`.
    pub fn repr(&self) -> String {
        match self {
            Self::None => "None".into(),
            Self::Str(s) => py_str(s),
            Self::Int(i) => i.to_string(),
            Self::Float(f) => py_float(*f),
            Self::Bool(b) => if *b { "True" } else { "False" }.into(),
            Self::List(l) => format!(
                "[{}]",
                l.iter().map(|s| py_str(s)).collect::<Vec<_>>().join(", ")
            ),
            Self::Json(v) => py_json(v),
        }
    }
}

/// How argparse reads a flag.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
    /// `store_true`.
    Bool,
    /// `nargs='+'`.
    List,
    /// `type=json.loads`.
    Json,
    Choice(&'static [&'static str]),
}

/// One flag: its spellings, its `dest`, its type and its default.
struct Flag {
    names: &'static [&'static str],
    dest: &'static str,
    kind: Kind,
    default: Default,
}

/// A flag's default (a `const`-friendly [`Py`]).
#[derive(Debug, Clone, Copy)]
enum Default {
    None,
    Str(&'static str),
    Int(i64),
    Float(f64),
    False,
}

impl Default {
    fn py(self) -> Py {
        match self {
            Self::None => Py::None,
            Self::Str(s) => Py::Str(s.into()),
            Self::Int(i) => Py::Int(i),
            Self::Float(f) => Py::Float(f),
            Self::False => Py::Bool(false),
        }
    }
}

const fn f(
    names: &'static [&'static str],
    dest: &'static str,
    kind: Kind,
    default: Default,
) -> Flag {
    Flag {
        names,
        dest,
        kind,
        default,
    }
}

const KV_DTYPES: &[&str] = &["auto", "bfloat16", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc"];
const LOG_LEVELS: &[&str] = &["critical", "error", "warning", "info", "debug", "trace"];

/// The flags the emulated api_server knows, in the parser's order (`FrontendArgs`, then
/// `EngineArgs`): a subset of vLLM v0.11.0's, with their types and defaults.
const FLAGS: &[Flag] = &[
    // FrontendArgs (vllm/entrypoints/openai/cli_args.py).
    f(&["--host"], "host", Kind::Str, Default::None),
    f(&["--port"], "port", Kind::Int, Default::Int(8000)),
    f(
        &["--uvicorn-log-level"],
        "uvicorn_log_level",
        Kind::Choice(LOG_LEVELS),
        Default::Str("info"),
    ),
    f(
        &["--disable-uvicorn-access-log"],
        "disable_uvicorn_access_log",
        Kind::Bool,
        Default::False,
    ),
    f(
        &["--allow-credentials"],
        "allow_credentials",
        Kind::Bool,
        Default::False,
    ),
    f(&["--api-key"], "api_key", Kind::List, Default::None),
    f(
        &["--chat-template"],
        "chat_template",
        Kind::Str,
        Default::None,
    ),
    f(
        &["--enable-auto-tool-choice"],
        "enable_auto_tool_choice",
        Kind::Bool,
        Default::False,
    ),
    f(
        &["--tool-call-parser"],
        "tool_call_parser",
        Kind::Str,
        Default::None,
    ),
    f(
        &["--disable-log-requests"],
        "disable_log_requests",
        Kind::Bool,
        Default::False,
    ),
    // EngineArgs (vllm/engine/arg_utils.py).
    f(
        &["--model"],
        "model",
        Kind::Str,
        Default::Str(DEFAULT_MODEL),
    ),
    f(
        &["--served-model-name"],
        "served_model_name",
        Kind::List,
        Default::None,
    ),
    f(&["--tokenizer"], "tokenizer", Kind::Str, Default::None),
    f(
        &["--tokenizer-mode"],
        "tokenizer_mode",
        Kind::Str,
        Default::Str("auto"),
    ),
    f(
        &["--trust-remote-code"],
        "trust_remote_code",
        Kind::Bool,
        Default::False,
    ),
    f(
        &["--download-dir"],
        "download_dir",
        Kind::Str,
        Default::None,
    ),
    f(
        &["--load-format"],
        "load_format",
        Kind::Str,
        Default::Str("auto"),
    ),
    f(&["--dtype"], "dtype", Kind::Str, Default::Str("auto")),
    f(&["--seed"], "seed", Kind::Int, Default::Int(0)),
    f(
        &["--max-model-len"],
        "max_model_len",
        Kind::Int,
        Default::None,
    ),
    f(&["--revision"], "revision", Kind::Str, Default::None),
    f(
        &["--generation-config"],
        "generation_config",
        Kind::Str,
        Default::Str("auto"),
    ),
    f(
        &["--pipeline-parallel-size", "-pp"],
        "pipeline_parallel_size",
        Kind::Int,
        Default::Int(1),
    ),
    f(
        &["--tensor-parallel-size", "-tp"],
        "tensor_parallel_size",
        Kind::Int,
        Default::Int(1),
    ),
    f(
        &["--enable-prefix-caching"],
        "enable_prefix_caching",
        Kind::Bool,
        Default::False,
    ),
    f(
        &["--gpu-memory-utilization"],
        "gpu_memory_utilization",
        Kind::Float,
        Default::Float(0.9),
    ),
    f(
        &["--swap-space"],
        "swap_space",
        Kind::Float,
        Default::Float(4.0),
    ),
    f(
        &["--kv-cache-dtype"],
        "kv_cache_dtype",
        Kind::Choice(KV_DTYPES),
        Default::Str("auto"),
    ),
    f(
        &["--max-num-batched-tokens"],
        "max_num_batched_tokens",
        Kind::Int,
        Default::None,
    ),
    f(
        &["--max-num-seqs"],
        "max_num_seqs",
        Kind::Int,
        Default::None,
    ),
    f(
        &["--enable-chunked-prefill"],
        "enable_chunked_prefill",
        Kind::Bool,
        Default::False,
    ),
    f(
        &["--quantization", "-q"],
        "quantization",
        Kind::Str,
        Default::None,
    ),
    f(
        &["--quantization-config"],
        "quantization_config",
        Kind::Json,
        Default::None,
    ),
    f(
        &["--enforce-eager"],
        "enforce_eager",
        Kind::Bool,
        Default::False,
    ),
    f(
        &["--limit-mm-per-prompt"],
        "limit_mm_per_prompt",
        Kind::Json,
        Default::None,
    ),
    f(
        &["--disable-log-stats"],
        "disable_log_stats",
        Kind::Bool,
        Default::False,
    ),
];

/// An argument error as the process reports it: exit code and the text on stderr.
pub type Failure = (i32, String);

/// argparse's error exit: the usage line and `api_server.py: error: MSG` (exit 2).
fn usage_error(msg: &str) -> Failure {
    (
        2,
        format!(
            "usage: api_server.py [-h] [--host HOST] [--port PORT] [--api-key API_KEY [API_KEY ...]] [--model MODEL] [--served-model-name SERVED_MODEL_NAME [SERVED_MODEL_NAME ...]] [--tensor-parallel-size TENSOR_PARALLEL_SIZE] [--max-model-len MAX_MODEL_LEN] ...\napi_server.py: error: {msg}\n"
        ),
    )
}

/// The parsed arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// Every flag's value, in the parser's order (defaults included).
    values: Vec<(&'static str, Py)>,
}

impl Args {
    /// The value of `dest`.
    pub fn get(&self, dest: &str) -> &Py {
        self.values
            .iter()
            .find(|(d, _)| *d == dest)
            .map_or(&Py::None, |(_, v)| v)
    }

    fn str(&self, dest: &str) -> Option<&str> {
        match self.get(dest) {
            Py::Str(s) => Some(s),
            _ => None,
        }
    }

    fn int(&self, dest: &str) -> Option<i64> {
        match self.get(dest) {
            Py::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The model vLLM loads.
    pub fn model(&self) -> &str {
        self.str("model").unwrap_or(DEFAULT_MODEL)
    }

    /// The name `/v1/models` lists: the first `--served-model-name`, else the model.
    pub fn served(&self) -> &str {
        match self.get("served_model_name") {
            Py::List(l) if !l.is_empty() => &l[0],
            _ => self.model(),
        }
    }

    /// `--port`.
    pub fn port(&self) -> i64 {
        self.int("port").unwrap_or(8000)
    }

    /// `--tensor-parallel-size`.
    pub fn tensor_parallel_size(&self) -> i64 {
        self.int("tensor_parallel_size").unwrap_or(1)
    }

    /// `--max-model-len`.
    pub fn max_model_len(&self) -> Option<i64> {
        self.int("max_model_len")
    }

    /// `--download-dir`.
    pub fn download_dir(&self) -> Option<&str> {
        self.str("download_dir")
    }

    /// The keys given with `--api-key` (or a `--config` YAML).
    pub fn api_keys(&self) -> Vec<String> {
        match self.get("api_key") {
            Py::List(l) => l.clone(),
            _ => Vec::new(),
        }
    }

    /// `log_non_default_args`'s message: the entries that differ from the defaults, as a
    /// Python dict in the parser's order.
    pub fn non_default_line(&self) -> String {
        let entries: Vec<String> = FLAGS
            .iter()
            .zip(&self.values)
            .filter(|(flag, (_, v))| *v != flag.default.py())
            .map(|(_, (dest, v))| format!("{}: {}", py_str(dest), v.repr()))
            .collect();
        format!("non-default args: {{{}}}", entries.join(", "))
    }
}

/// Whether argparse takes `arg` for an option (a `-` that is not a negative number).
fn is_option(arg: &str) -> bool {
    arg.starts_with('-') && arg.len() > 1 && arg.parse::<f64>().is_err()
}

/// `--key_name` → `--key-name` (also `--key_name=value`), as `FlexibleArgumentParser` does.
fn dashes(arg: &str) -> String {
    match arg.strip_prefix("--") {
        Some(rest) => match rest.split_once('=') {
            Some((k, v)) => format!("--{}={v}", k.replace('_', "-")),
            None => format!("--{}", rest.replace('_', "-")),
        },
        None => arg.to_owned(),
    }
}

/// A YAML scalar as Python's `str()` prints what `yaml.safe_load` made of it.
fn yaml_str(y: &yaml_rust2::Yaml) -> String {
    use yaml_rust2::Yaml;
    match y {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => if *b { "True" } else { "False" }.into(),
        Yaml::Null => "None".into(),
        other => format!("{other:?}"),
    }
}

/// `load_config_file`: the arguments a `--config` YAML stands for.
fn config_args(path: &str, text: &str) -> Result<Vec<String>, Failure> {
    use yaml_rust2::{Yaml, YamlLoader};
    let ext = path.rsplit('.').next().unwrap_or("");
    if ext != "yaml" && ext != "yml" {
        return Err((
            1,
            format!("ValueError: Config file must be of a yaml/yml type. {ext} supplied\n"),
        ));
    }
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| (1, format!("yaml.scanner.ScannerError: {e}\n")))?;
    let Some(Yaml::Hash(map)) = docs.into_iter().next() else {
        return Err((
            1,
            "AttributeError: the config file is not a mapping ('items')\n".into(),
        ));
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let key = format!("--{}", yaml_str(&k));
        match v {
            Yaml::Boolean(true) => out.push(key),
            Yaml::Boolean(false) => {}
            Yaml::Array(items) => {
                if !items.is_empty() {
                    out.push(key);
                    out.extend(items.iter().map(yaml_str));
                }
            }
            other => {
                out.push(key);
                out.push(yaml_str(&other));
            }
        }
    }
    Ok(out)
}

/// Read `args` (what follows the image in `docker run`) as the entrypoint does. `read`
/// opens a file inside the vLLM container (the `--config` YAML), `Err` naming why not.
pub fn parse(
    args: &[String],
    entry: Entrypoint,
    read: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Args, Failure> {
    let mut args: Vec<String> = args.to_vec();
    if args.iter().filter(|a| *a == "--config").count() > 1 {
        return Err((
            1,
            "AssertionError: More than one config file specified!\n".into(),
        ));
    }
    if let Some(i) = args.iter().position(|a| a == "--config") {
        let Some(path) = args.get(i + 1).cloned() else {
            return Err((
                1,
                "ValueError: No config file specified! Please check your command-line arguments.\n"
                    .into(),
            ));
        };
        let text = read(&path).map_err(|m| (1, format!("{m}\n")))?;
        let from_file = config_args(&path, &text)?;
        // No sub command (the api_server entry point): the file's arguments first, then
        // every command-line argument, so the command line wins; a leading positional
        // stays first.
        let keep = usize::from(!is_option(&args[0]) && i > 0);
        let mut merged: Vec<String> = args[..keep].to_vec();
        merged.extend(from_file);
        merged.extend(args[keep..i].iter().cloned());
        merged.extend(args[i + 2..].iter().cloned());
        args = merged;
    }
    // FlexibleArgumentParser.parse_args: after the config, `--a_b` reads as `--a-b`.
    let args: Vec<String> = args.iter().map(|a| dashes(a)).collect();
    let mut values: Vec<(&'static str, Py)> =
        FLAGS.iter().map(|fl| (fl.dest, fl.default.py())).collect();
    let mut extras: Vec<String> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].clone();
        i += 1;
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if a.starts_with('-') => (n.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let Some((idx, flag)) = FLAGS
            .iter()
            .enumerate()
            .find(|(_, fl)| fl.names.contains(&name.as_str()))
        else {
            if !a.starts_with('-') && entry == Entrypoint::ApiServerIgnoringPositional {
                // vllm-project/vllm PR #32292: a positional model is accepted and ignored.
                continue;
            }
            extras.push(a);
            continue;
        };
        let value = match flag.kind {
            Kind::Bool => {
                if let Some(v) = inline {
                    return Err(usage_error(&format!(
                        "argument {name}: ignored explicit argument '{v}'"
                    )));
                }
                Py::Bool(true)
            }
            Kind::List => {
                let mut items: Vec<String> = inline.into_iter().collect();
                while i < args.len() && !is_option(&args[i]) {
                    items.push(args[i].clone());
                    i += 1;
                }
                if items.is_empty() {
                    return Err(usage_error(&format!(
                        "argument {name}: expected at least one argument"
                    )));
                }
                Py::List(items)
            }
            kind => {
                let raw = match inline {
                    Some(v) => v,
                    None if i < args.len() && !is_option(&args[i]) => {
                        i += 1;
                        args[i - 1].clone()
                    }
                    None => {
                        return Err(usage_error(&format!(
                            "argument {name}: expected one argument"
                        )));
                    }
                };
                let bad =
                    |t: &str| usage_error(&format!("argument {name}: invalid {t} value: '{raw}'"));
                match kind {
                    Kind::Int => Py::Int(raw.parse().map_err(|_| bad("int"))?),
                    Kind::Float => Py::Float(raw.parse().map_err(|_| bad("float"))?),
                    Kind::Json => Py::Json(serde_json::from_str(&raw).map_err(|_| bad("loads"))?),
                    Kind::Choice(choices) => {
                        if !choices.contains(&raw.as_str()) {
                            return Err(usage_error(&format!(
                                "argument {name}: invalid choice: '{raw}' (choose from {})",
                                choices
                                    .iter()
                                    .map(|c| format!("'{c}'"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )));
                        }
                        Py::Str(raw)
                    }
                    _ => Py::Str(raw),
                }
            }
        };
        values[idx].1 = value;
    }
    if !extras.is_empty() {
        return Err(usage_error(&format!(
            "unrecognized arguments: {}",
            extras.join(" ")
        )));
    }
    Ok(Args { values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    fn no_file(p: &str) -> Result<String, String> {
        Err(format!(
            "FileNotFoundError: [Errno 2] No such file or directory: '{p}'"
        ))
    }

    #[test]
    fn the_pinned_api_server_refuses_a_positional_model() {
        let e = parse(
            &argv(&[
                "mistralai/Devstral-Small-2507",
                "--tensor-parallel-size",
                "2",
            ]),
            Entrypoint::ApiServer,
            &no_file,
        )
        .unwrap_err();
        assert_eq!(e.0, 2);
        assert!(
            e.1.ends_with(
                "api_server.py: error: unrecognized arguments: mistralai/Devstral-Small-2507\n"
            ),
            "{}",
            e.1
        );
        assert!(e.1.starts_with("usage: api_server.py [-h]"), "{}", e.1);
    }

    #[test]
    fn a_later_image_ignores_the_positional_and_loads_its_default() {
        let a = parse(
            &argv(&[
                "mistralai/Devstral-Small-2507",
                "--served-model-name",
                "mistralai/Devstral-Small-2507",
            ]),
            Entrypoint::ApiServerIgnoringPositional,
            &no_file,
        )
        .unwrap();
        assert_eq!(a.model(), "Qwen/Qwen3-0.6B");
        assert_eq!(a.served(), "mistralai/Devstral-Small-2507");
        assert_eq!(
            entrypoint("vllm/vllm-openai:v0.11.0"),
            Entrypoint::ApiServer
        );
        assert_eq!(
            entrypoint("vllm/vllm-openai:v0.10.2"),
            Entrypoint::ApiServer
        );
        assert_eq!(
            entrypoint("vllm/vllm-openai:v0.14.1"),
            Entrypoint::ApiServerIgnoringPositional
        );
        assert_eq!(
            entrypoint("vllm/vllm-openai@sha256:0123abcd"),
            Entrypoint::ApiServer
        );
    }

    #[test]
    fn the_non_default_args_line_is_a_python_dict_in_parser_order() {
        let a = parse(
            &argv(&[
                "--model",
                "mistralai/Devstral-Small-2507",
                "--tensor-parallel-size",
                "2",
                "--max-model-len",
                "128000",
                "--kv-cache-dtype",
                "fp8",
                "--gpu-memory-utilization",
                "0.95",
                "--quantization-config",
                r#"{"activation_scheme":"dynamic","x":[1,true,null]}"#,
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
            ]),
            Entrypoint::ApiServer,
            &no_file,
        )
        .unwrap();
        assert_eq!(
            a.non_default_line(),
            "non-default args: {'host': '0.0.0.0', 'model': 'mistralai/Devstral-Small-2507', 'max_model_len': 128000, 'tensor_parallel_size': 2, 'gpu_memory_utilization': 0.95, 'kv_cache_dtype': 'fp8', 'quantization_config': {'activation_scheme': 'dynamic', 'x': [1, True, None]}}"
        );
        assert_eq!(a.port(), 8000);
        assert!(a.api_keys().is_empty());
    }

    #[test]
    fn a_config_yaml_becomes_arguments_and_its_key_is_logged() {
        let yaml = "# phoenix's old key file\napi-key: \"sk-\\\"quoted\\\"\"\nmax_model_len: 4096\nenforce-eager: true\ndisable-log-stats: false\nserved-model-name: [a, b]\n";
        let read = |p: &str| {
            assert_eq!(p, "/etc/phoenix-vllm/k.yaml");
            Ok(yaml.to_owned())
        };
        let a = parse(
            &argv(&[
                "--model",
                "m/x",
                "--config",
                "/etc/phoenix-vllm/k.yaml",
                "--max-model-len",
                "8192",
            ]),
            Entrypoint::ApiServer,
            &read,
        )
        .unwrap();
        assert_eq!(a.api_keys(), ["sk-\"quoted\""]);
        // The command line after `--config` wins over the file.
        assert_eq!(a.max_model_len(), Some(8192));
        assert_eq!(a.served(), "a");
        assert_eq!(
            a.non_default_line(),
            "non-default args: {'api_key': ['sk-\"quoted\"'], 'model': 'm/x', 'served_model_name': ['a', 'b'], 'max_model_len': 8192, 'enforce_eager': True}"
        );
        let e = parse(
            &argv(&["--config", "/x.json"]),
            Entrypoint::ApiServer,
            &|_| Ok(String::new()),
        )
        .unwrap_err();
        assert_eq!(
            e,
            (
                1,
                "ValueError: Config file must be of a yaml/yml type. json supplied\n".into()
            )
        );
        let e = parse(
            &argv(&["--config", "/x.yaml"]),
            Entrypoint::ApiServer,
            &no_file,
        )
        .unwrap_err();
        assert_eq!(
            e.1,
            "FileNotFoundError: [Errno 2] No such file or directory: '/x.yaml'\n"
        );
        let e = parse(
            &argv(&["--model", "m", "--config", "/x.yaml"]),
            Entrypoint::ApiServer,
            &|_| Ok("api-key: [unclosed\n".into()),
        )
        .unwrap_err();
        assert!(e.1.starts_with("yaml.scanner.ScannerError"), "{}", e.1);
    }

    #[test]
    fn argparse_errors() {
        let err = |a: &[&str]| {
            parse(&argv(a), Entrypoint::ApiServer, &no_file)
                .unwrap_err()
                .1
        };
        assert!(
            err(&["--port", "x"]).ends_with("error: argument --port: invalid int value: 'x'\n")
        );
        assert!(err(&["--kv-cache-dtype", "fp4"]).contains(
            "error: argument --kv-cache-dtype: invalid choice: 'fp4' (choose from 'auto', 'bfloat16', 'fp8', 'fp8_e4m3', 'fp8_e5m2', 'fp8_inc')"
        ));
        assert!(
            err(&["--quantization-config-type", "x"])
                .ends_with("error: unrecognized arguments: --quantization-config-type x\n")
        );
        assert!(
            err(&["--served-model-name"])
                .ends_with("error: argument --served-model-name: expected at least one argument\n")
        );
        assert!(err(&["--model"]).ends_with("error: argument --model: expected one argument\n"));
        // Underscores read as dashes, as FlexibleArgumentParser does.
        let a = parse(
            &argv(&["--tensor_parallel_size=4"]),
            Entrypoint::ApiServer,
            &no_file,
        )
        .unwrap();
        assert_eq!(a.tensor_parallel_size(), 4);
        assert_eq!(py_str("it's"), "\"it's\"");
        assert_eq!(py_str("a'b\"c\n"), "'a\\'b\"c\\n'");
    }
}

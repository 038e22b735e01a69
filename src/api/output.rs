//! The `output` family: what a recipe produced, for the operator.
//!
//! `output.endpoint(#{url, api, model, api_key, ct, name})` records a service and
//! `output.set(name, value)` a named value. `phoenix recipe run` ends with a block on stdout
//! built from these (and `--json` prints them as data); `phoenix status` shows a container's
//! recorded endpoints next to its live state. Each call is a journal record
//! ([`crate::journal::Entry::Output`]); it changes nothing on the host, so it has no undo.
//!
//! Decisions:
//! - The CLI knows no service: a recipe says what it made, so a recipe without a GPU or a
//!   server simply records nothing (or its own values) and still gets a result block.
//! - A secret is recorded by name only (`api_key: secret.get("k")`, `output.set("root
//!   password", secret.get("p"))`): the operator is shown how to read it, never its value.
//!   Strings pass through the run's redactor, so a secret value read back from a container
//!   is shown as its placeholder.
//! - `ct` must be an entry of the loaded config: status asks the host about that container.
//! - Options are checked like every other options map: unknown keys are errors.

use rhai::{Dynamic, Engine, FuncRegistration, Map};

use super::support::{known_keys, opt_str, vmid_of};
use super::{ApiError, script_error};
use crate::journal::Entry;
use crate::report::{Api, Endpoint, NamedValue, OutputItem, Scalar};
use crate::runtime::Runtime;
use crate::secret::Secret;

crate::api::handle!(
    /// The `output` object recipes call methods on.
    OutputApi
);

type RhaiResult<T> = Result<T, Box<rhai::EvalAltResult>>;

/// The longest label or model name accepted.
const MAX_LABEL: usize = 256;
/// The longest text value or URL accepted.
const MAX_TEXT: usize = 4096;

/// Keys `output.endpoint` accepts.
pub const ENDPOINT_KEYS: &[&str] = &["url", "api", "model", "api_key", "ct", "name"];

fn text(call: &'static str, what: &str, s: &str, max: usize) -> Result<String, ApiError> {
    if s.is_empty() {
        return Err(ApiError::spec(call, format!("{what} is empty")));
    }
    if s.len() > max {
        return Err(ApiError::spec(
            call,
            format!("{what} is longer than {max} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::spec(
            call,
            format!("{what} contains a control character"),
        ));
    }
    Ok(s.to_owned())
}

/// The typed endpoint from a recipe's map.
pub fn endpoint_spec(rt: &Runtime, map: &Map) -> Result<Endpoint, ApiError> {
    const CALL: &str = "output.endpoint";
    known_keys(CALL, map, ENDPOINT_KEYS)?;
    let url = opt_str(CALL, map, "url")?.ok_or_else(|| ApiError::spec(CALL, "missing `url`"))?;
    let url = rt.redactor.redact(&text(CALL, "`url`", &url, MAX_TEXT)?);
    let parsed = reqwest::Url::parse(&url)
        .map_err(|e| ApiError::spec(CALL, format!("`url` {url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ApiError::spec(
            CALL,
            format!("`url` {url:?} must be http://host… or https://host…"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::spec(
            CALL,
            "`url` must not hold credentials: pass the key as `api_key` (a secret)",
        ));
    }
    let api = match opt_str(CALL, map, "api")? {
        None => Api::Http,
        Some(a) => Api::parse(&a).ok_or_else(|| {
            ApiError::spec(CALL, format!("`api` {a:?} is not one of: http, openai"))
        })?,
    };
    let model = opt_str(CALL, map, "model")?
        .map(|m| text(CALL, "`model`", &m, MAX_LABEL).map(|m| rt.redactor.redact(&m)))
        .transpose()?;
    let name = opt_str(CALL, map, "name")?
        .map(|m| text(CALL, "`name`", &m, MAX_LABEL).map(|m| rt.redactor.redact(&m)))
        .transpose()?;
    let api_key = match map.get("api_key") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => Some(
            v.read_lock::<Secret>()
                .map(|s| s.name().clone())
                .ok_or_else(|| {
                    ApiError::spec(
                        CALL,
                        format!(
                            "`api_key` must be a secret (`secret.get(\"name\")`), found {}",
                            v.type_name()
                        ),
                    )
                })?,
        ),
    };
    let vmid = match map.get("ct") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => {
            let vmid = vmid_of(CALL, v)?;
            if rt.config.get(vmid).is_none() {
                return Err(ApiError::spec(
                    CALL,
                    format!("`ct` {vmid} is not an entry of the loaded config"),
                ));
            }
            Some(vmid)
        }
    };
    Ok(Endpoint {
        name,
        url,
        api,
        model,
        api_key,
        vmid,
    })
}

/// The typed named value from a recipe's `name` and `value`.
pub fn value_spec(rt: &Runtime, name: &str, value: &Dynamic) -> Result<NamedValue, ApiError> {
    const CALL: &str = "output.set";
    let name = rt
        .redactor
        .redact(&text(CALL, "the name", name, MAX_LABEL)?);
    if let Some(secret) = value.read_lock::<Secret>() {
        return Ok(NamedValue {
            name,
            value: None,
            secret: Some(secret.name().clone()),
        });
    }
    let scalar = if let Ok(b) = value.as_bool() {
        Scalar::Bool(b)
    } else if let Ok(n) = value.as_int() {
        Scalar::Int(n)
    } else if let Ok(x) = value.as_float() {
        Scalar::Float(x)
    } else if let Ok(s) = value.clone().into_immutable_string() {
        Scalar::Text(rt.redactor.redact(&text(CALL, "the value", &s, MAX_TEXT)?))
    } else {
        return Err(ApiError::spec(
            CALL,
            format!(
                "`{name}`: the value must be a string, number, boolean or secret, found {}",
                value.type_name()
            ),
        ));
    };
    Ok(NamedValue {
        name,
        value: Some(scalar),
        secret: None,
    })
}

/// Record `item` in the run's journal.
pub fn record(rt: &Runtime, item: OutputItem) -> Result<(), ApiError> {
    super::support::check_cancel(rt)?;
    rt.journal.append(Entry::Output { item })?;
    Ok(())
}

/// Register the `output` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<OutputApi>("Output");
    FuncRegistration::new("endpoint")
        .with_params_info(["output: Output", "endpoint: Map", "()"])
        .with_comments([
            "/// Report a service this run provides, shown when the run ends and by `phoenix status`:",
            "/// `#{url: \"http://…:8000/v1\", api: \"openai\" | \"http\", model: \"org/name\",",
            "/// api_key: secret.get(\"vllm_api_key\"), ct: container, name: \"vLLM\"}`; only `url` is required.",
            "/// An API key is shown as the command that reads it, never as its value.",
        ])
        .register_into_engine(engine, |api: OutputApi, spec: Map| -> RhaiResult<()> {
            let endpoint = endpoint_spec(&api.rt, &spec).map_err(script_error)?;
            record(&api.rt, OutputItem::Endpoint(endpoint)).map_err(script_error)
        });
    FuncRegistration::new("set")
        .with_params_info(["output: Output", "name: &str", "value: Dynamic", "()"])
        .with_comments([
            "/// Report a named value (string, number, boolean) shown when the run ends; a secret",
            "/// is shown as the command that reads it, never as its value.",
        ])
        .register_into_engine(
            engine,
            |api: OutputApi, name: &str, value: Dynamic| -> RhaiResult<()> {
                let value = value_spec(&api.rt, name, &value).map_err(script_error)?;
                record(&api.rt, OutputItem::Value(value)).map_err(script_error)
            },
        );
}

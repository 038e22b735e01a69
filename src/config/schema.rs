//! The embedded JSON Schema (`schemas/phoenix_lxc_configs.schema.json`) and the translation
//! of its errors into findings (problems before they get a position).
//!
//! The schema is compiled once per process with draft 2020-12 and a retriever that refuses
//! every URI: only `#/$defs/…` references inside the file are followed, nothing is ever
//! fetched (DESIGN.md §3, §10). A branch that can take two JSON types (`network_config`,
//! `features`, `gpu_assignment`, `dns`) is written as one subschema with `"type": [a, b]`
//! and keywords that apply to one type only, instead of `anyOf`: a mistake then yields one
//! precise error at the right pointer instead of one vague error per branch.

use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, Retrieve, Uri, Validator};
use serde_json::Value;

use super::position::escape_token;
use super::{At, Finding};

/// The schema text, as shipped in `schemas/`.
pub const SCHEMA: &str = include_str!("../../schemas/phoenix_lxc_configs.schema.json");

/// The legacy field the bash suite used for a vLLM flag that never existed.
pub(crate) const LEGACY_QUANT_TYPE: &str = "vllm_quantization_config_type";

/// Refuses every external resource: the schema is self-contained.
struct NoRemote;

impl Retrieve for NoRemote {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("phoenix never fetches schema resources (asked for {uri})").into())
    }
}

struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        // Both steps are checked by `schema_compiles` below; the text is part of the binary.
        let schema: Value = serde_json::from_str(SCHEMA).expect("embedded schema is JSON");
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_retriever(NoRemote)
            .build(&schema)
            .expect("embedded schema compiles");
        Compiled { schema, validator }
    })
}

/// Check `doc` against the schema; one finding per problem.
pub(crate) fn check(doc: &Value) -> Vec<Finding> {
    let c = compiled();
    let mut out = Vec::new();
    // Collecting errors costs more than a yes/no answer; most files are valid.
    if c.validator.is_valid(doc) {
        return out;
    }
    for err in c.validator.iter_errors(doc) {
        let pointer = err.instance_path().as_str().to_owned();
        let instance = err.instance();
        let found = describe(instance);
        let mut push = |pointer: String, at: At, expected: String, found: String| {
            out.push(Finding {
                pointer,
                at,
                expected,
                found,
            });
        };
        match err.kind() {
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(t) => t.to_string(),
                    TypeKind::Multiple(set) => set
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(" or "),
                };
                push(pointer, At::Value, expected, found);
            }
            ValidationErrorKind::Minimum { limit } => {
                push(pointer, At::Value, format!("a number ≥ {limit}"), found);
            }
            ValidationErrorKind::Maximum { limit } => {
                push(pointer, At::Value, format!("a number ≤ {limit}"), found);
            }
            ValidationErrorKind::ExclusiveMinimum { limit } => {
                push(pointer, At::Value, format!("a number > {limit}"), found);
            }
            ValidationErrorKind::ExclusiveMaximum { limit } => {
                push(pointer, At::Value, format!("a number < {limit}"), found);
            }
            ValidationErrorKind::MinLength { limit } => {
                push(
                    pointer,
                    At::Value,
                    format!("at least {limit} character(s)"),
                    found,
                );
            }
            ValidationErrorKind::MaxLength { limit } => {
                push(
                    pointer,
                    At::Value,
                    format!("at most {limit} characters"),
                    found,
                );
            }
            ValidationErrorKind::Pattern { pattern } => {
                let expected = if pointer == "/models_dataset" {
                    "a dataset inside one of the host's pools, such as `rpool/phoenix/models` \
                     (the pool's name first, then `/`-separated names of ASCII letters, \
                     digits, `_` `.` `:` `-`)"
                        .to_owned()
                } else {
                    format!("a string matching {pattern}")
                };
                push(pointer, At::Value, expected, found);
            }
            ValidationErrorKind::MinItems { limit } => {
                push(
                    pointer,
                    At::Value,
                    format!("at least {limit} item(s)"),
                    found,
                );
            }
            ValidationErrorKind::MaxItems { limit } => {
                push(pointer, At::Value, format!("at most {limit} items"), found);
            }
            ValidationErrorKind::Enum { options } => {
                let list = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| options.to_string());
                push(pointer, At::Value, format!("one of: {list}"), found);
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default();
                let expected = if err.schema_path().as_str().contains("dependentRequired") {
                    format!("field `{name}` (the vllm_* fields need a model)")
                } else {
                    format!("field `{name}` (required)")
                };
                push(
                    format!("{pointer}/{}", escape_token(name)),
                    At::Parent,
                    expected,
                    "nothing".to_owned(),
                );
            }
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    let (expected, found) = unknown_field(&c.schema, &pointer, name);
                    push(
                        format!("{pointer}/{}", escape_token(name)),
                        At::Key,
                        expected,
                        found,
                    );
                }
            }
            ValidationErrorKind::Not { .. } | ValidationErrorKind::FalseSchema
                if pointer.ends_with(&format!("/{LEGACY_QUANT_TYPE}")) =>
            {
                let (expected, found) = legacy_quant_type();
                push(pointer, At::Key, expected, found);
            }
            _ => push(pointer, At::Value, err.to_string(), found),
        }
    }
    out
}

/// The message for `vllm_quantization_config_type` (DESIGN.md §5).
pub(crate) fn legacy_quant_type() -> (String, String) {
    (
        "`vllm_quantization_config` (a JSON object passed to vLLM as `--quantization-config`), \
         which replaces it"
            .to_owned(),
        format!(
            "`{LEGACY_QUANT_TYPE}`: its flag `--quantization-config-type` never existed in \
             vLLM and `vllm serve` refuses it"
        ),
    )
}

/// Expected/found for an unknown field, with a suggestion when a known field is close.
fn unknown_field(schema: &Value, parent: &str, name: &str) -> (String, String) {
    if name == LEGACY_QUANT_TYPE {
        return legacy_quant_type();
    }
    let known = known_fields(schema, parent);
    let close = known
        .iter()
        .map(|k| (strsim_distance(k, name), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min();
    let expected = match close {
        Some((_, k)) => format!("a known field (did you mean `{k}`?)"),
        None if known.is_empty() => "no further fields".to_owned(),
        None => format!("one of the fields {}", known.join(", ")),
    };
    (expected, format!("unknown field `{name}`"))
}

/// The fields the schema allows in the object at `parent`.
fn known_fields(schema: &Value, parent: &str) -> Vec<String> {
    let segments: Vec<&str> = parent.split('/').skip(1).collect();
    let props = match segments.as_slice() {
        [] => schema.pointer("/properties"),
        ["lxc_configs", _] => schema.pointer("/$defs/container/properties"),
        ["lxc_configs", _, field] => schema.pointer(&format!(
            "/$defs/container/properties/{}/properties",
            escape_token(field)
        )),
        _ => None,
    };
    props
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, v)| k.as_str() != LEGACY_QUANT_TYPE && v.get("deprecated").is_none())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// Levenshtein distance, for "did you mean".
fn strsim_distance(a: &str, b: &str) -> usize {
    strsim::levenshtein(a, b)
}

/// A value as a human reads it in "found …": its JSON type and, for scalars, the value.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if n.is_i64() || n.is_u64() => format!("integer {n}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", crate::types::show(s)),
        Value::Array(a) => format!("an array of {} item(s)", a.len()),
        Value::Object(o) => format!("an object with {} field(s)", o.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schema_compiles() {
        let c = compiled();
        assert!(c.schema.get("$defs").is_some());
    }

    #[test]
    fn enums_match_the_rust_lists() {
        let c = compiled();
        let list = |p: &str| -> Vec<String> {
            c.schema
                .pointer(p)
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            list("/$defs/container/properties/vllm_kv_cache_dtype/enum"),
            crate::config::KvCacheDtype::ALL
        );
        assert_eq!(
            list("/$defs/container/properties/vllm_quantization/enum"),
            crate::config::QUANTIZATIONS
        );
    }

    #[test]
    fn remote_refs_are_never_fetched() {
        let schema = json!({"$ref": "https://example.invalid/schema.json"});
        let built = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .with_retriever(NoRemote)
            .build(&schema);
        let err = built
            .map(|_| ())
            .expect_err("a remote $ref must not resolve")
            .to_string();
        assert!(err.contains("never fetches"), "{err}");
    }

    #[test]
    fn type_error_names_pointer_and_types() {
        let doc = json!({"lxc_configs": {"901": {"memory_mb": "invalid"}}});
        let f = check(&doc);
        let m = f
            .iter()
            .find(|f| f.pointer == "/lxc_configs/901/memory_mb")
            .expect("memory_mb reported");
        assert_eq!(m.expected, "integer");
        assert_eq!(m.found, "string \"invalid\"");
        // The required fields are reported at their own pointers.
        assert!(f.iter().any(|f| f.pointer == "/lxc_configs/901/cores"
            && f.expected == "field `cores` (required)"
            && matches!(f.at, At::Parent)));
    }

    #[test]
    fn unknown_fields_suggest_the_close_one() {
        let doc = json!({"lxc_configs": {"901": {"memroy_mb": 1}}});
        let f = check(&doc);
        let m = f
            .iter()
            .find(|f| f.pointer == "/lxc_configs/901/memroy_mb")
            .unwrap();
        assert_eq!(m.expected, "a known field (did you mean `memory_mb`?)");
        assert_eq!(m.found, "unknown field `memroy_mb`");
    }

    #[test]
    fn legacy_quantization_type_is_refused_with_its_replacement() {
        let doc = json!({"lxc_configs": {"901": {LEGACY_QUANT_TYPE: "x"}}});
        let f = check(&doc);
        let m: Vec<_> = f
            .iter()
            .filter(|f| f.pointer == format!("/lxc_configs/901/{LEGACY_QUANT_TYPE}"))
            .collect();
        assert_eq!(m.len(), 1, "{f:?}");
        assert!(m[0].expected.contains("`vllm_quantization_config`"));
        assert!(m[0].found.contains("never existed"));
    }

    #[test]
    fn two_type_fields_give_one_precise_error() {
        let doc = json!({"lxc_configs": {"901": {"network_config": 5, "gpu_assignment": [0, -1]}}});
        let f = check(&doc);
        let net: Vec<_> = f
            .iter()
            .filter(|f| f.pointer.contains("network_config"))
            .collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0].expected, "string or object");
        let gpu: Vec<_> = f
            .iter()
            .filter(|f| f.pointer.contains("gpu_assignment"))
            .collect();
        assert_eq!(gpu.len(), 1);
        assert_eq!(gpu[0].pointer, "/lxc_configs/901/gpu_assignment/1");
        assert_eq!(gpu[0].expected, "a number ≥ 0");
    }

    #[test]
    fn vllm_fields_need_a_model() {
        let doc = json!({"lxc_configs": {"901": {"vllm_port": 8000}}});
        let f = check(&doc);
        assert!(
            f.iter().any(|f| f.pointer == "/lxc_configs/901/vllm_model"
                && f.expected.contains("need a model"))
        );
    }

    #[test]
    fn distance() {
        assert_eq!(strsim_distance("memory_mb", "memroy_mb"), 2);
        assert_eq!(strsim_distance("cores", "cores"), 0);
        assert_eq!(strsim_distance("", "abc"), 3);
    }
}

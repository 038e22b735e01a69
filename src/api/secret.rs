//! The `secret` family of recipe primitives: `secret.get(name)` and the opaque `Secret`
//! type (DESIGN.md §1 "Secrets are opaque").
//!
//! A `Secret` reaches a recipe as a Rhai custom type whose every conversion to text or
//! comparison raises a runtime error saying that a secret can only be passed to a
//! primitive that accepts one: `to_string`, `to_debug`, `print`, `debug`, `+` with a string
//! (either side) or any other value, `+=` onto a string, `==` and `!=`.
//!
//! # String interpolation (and containers printed as text)
//! Rhai swallows errors from `to_string` inside `` `${…}` `` (and when printing an array or
//! map): it writes the type name, `Secret`, instead of failing. The value never leaks, but
//! the misuse must still fail the run, so every refusal also records itself in a
//! thread-local slot, and [`swallowed_misuse`] hands it out as a termination token. The
//! engine's `on_progress` callback must return it (Rhai then stops the script at the next
//! operation with `ErrorTerminated(token)`, the token being a [`SharedApiError`]), and the
//! runner must call [`swallowed_misuse`] once more after the script ends (a misuse in the
//! last expression) and once before it starts (to clear a stale slot). A misuse caught with
//! `try`/`catch` is thus reported anyway: a recipe cannot ignore it.
//!
//! # Templates
//! `secret.template(text, #{ key: secret, … })` renders `text` with each `{key}` placeholder
//! replaced by that secret's bytes and returns the result as a new opaque `Secret` (named
//! `template-<the secrets' names>`), so an app's `.env` or config file holding a token can
//! be written with `lxc.push` (0600 by default) or fed to a stdin-taking primitive without
//! the token ever becoming a Rhai string. Decisions (module-level so lint and docs agree):
//! - placeholders are `{name}` with `name` a Rhai identifier (`[A-Za-z_][A-Za-z0-9_]*`);
//!   `{{` and `}}` stand for literal braces (as in Rust's `format!` and Python's
//!   `str.format`), any other `{` or `}` is refused with its byte offset;
//! - every placeholder must have a value and every value must be used: a typo on either
//!   side is refused naming it, not rendered as an empty string;
//! - values must be `Secret`s: plain text belongs in `text` itself;
//! - a value is substituted into a line of text, so it is checked like a secret written
//!   into a line format (no control characters: a newline in an API key would add a line
//!   of the secret's author's choosing — `crate::boundary::values`) and must be UTF-8;
//! - the rendered value is registered with the run's redactor under the new name (it, its
//!   base64 and its hex forms never appear in logs, errors, plans or the journal), on top
//!   of each secret it holds, which the store registered already.

use std::cell::RefCell;

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString};

use crate::api::{ApiError, SharedApiError, script_error};
use crate::boundary::values::{SecretUse, secret_bytes};
use crate::secret::{Secret, SecretError, SecretStore};
use crate::types::SecretName;

crate::api::handle!(
    /// The `secret` object recipes call methods on.
    SecretApi
);

thread_local! {
    static MISUSE: RefCell<Option<SharedApiError>> = const { RefCell::new(None) };
}

/// `secret.get(name)`: the secret `name` from `store` (its value is registered with the
/// store's redactor).
pub fn get(store: &SecretStore, name: &str) -> Result<Secret, ApiError> {
    let name = SecretName::new(name).map_err(|source| ApiError::Type {
        call: "secret.get",
        source,
    })?;
    Ok(store.get(&name)?)
}

/// `secret.has(name)`: whether the store holds `name` (the key is checked).
pub fn has(store: &SecretStore, name: &str) -> Result<bool, ApiError> {
    let name = SecretName::new(name).map_err(|source| ApiError::Type {
        call: "secret.has",
        source,
    })?;
    if store.is_fresh() {
        // No store on this host yet (a dry run before the first `secret.ensure`).
        return Ok(false);
    }
    store.check_key()?;
    Ok(store.secret_path(&name).exists())
}

/// `secret.ensure(name)`: the secret `name`, generated first (32 random bytes as 64 hex
/// characters, stored encrypted) when the store lacks it. In a dry run nothing is stored:
/// a throw-away value stands in and the plan says the secret would be generated.
pub fn ensure(rt: &crate::runtime::Runtime, name: &str) -> Result<Secret, ApiError> {
    const CALL: &str = "secret.ensure";
    let name = SecretName::new(name).map_err(|source| ApiError::Type { call: CALL, source })?;
    if rt.dry_run {
        if has(&rt.secrets, name.as_str())? {
            return Ok(rt.secrets.get(&name)?);
        }
        rt.note(
            crate::plan::Action::Create,
            format!("generate secret {name} and store it encrypted"),
        );
        let hex = random_hex()
            .map_err(|e| ApiError::spec(CALL, format!("cannot read /dev/urandom: {e}")))?;
        return Ok(Secret::new(
            name,
            zeroize::Zeroizing::new(hex.as_bytes().to_vec()),
        ));
    }
    // One check-and-store under the store's lock: parallel runs get the same value.
    let (secret, _) = rt.secrets.ensure(&name, || {
        Ok(zeroize::Zeroizing::new(random_hex()?.as_bytes().to_vec()))
    })?;
    Ok(secret)
}

/// One piece of a parsed template.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    /// Literal text (braces already unescaped).
    Text(String),
    /// A `{name}` placeholder.
    Placeholder(&'a str),
}

const TEMPLATE: &str = "secret.template";

/// Split a template into text and `{name}` placeholders (`{{`/`}}` are literal braces).
fn parse_template(text: &str) -> Result<Vec<Piece<'_>>, ApiError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text.char_indices().peekable();
    while let Some((i, c)) = rest.next() {
        match c {
            '{' if rest.peek().map(|&(_, c)| c) == Some('{') => {
                rest.next();
                literal.push('{');
            }
            '}' if rest.peek().map(|&(_, c)| c) == Some('}') => {
                rest.next();
                literal.push('}');
            }
            '{' => {
                let Some(len) = text[i + 1..].find('}') else {
                    return Err(ApiError::spec(
                        TEMPLATE,
                        format!(
                            "the `{{` at byte {i} is never closed (write `{{{{` for a literal brace)"
                        ),
                    ));
                };
                let name = &text[i + 1..i + 1 + len];
                let ident = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !ident {
                    return Err(ApiError::spec(
                        TEMPLATE,
                        format!(
                            "`{{{}}}` at byte {i} is not a placeholder: a name is a letter or `_` then letters, digits or `_` (write `{{{{` for a literal brace)",
                            name.escape_debug()
                        ),
                    ));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Placeholder(name));
                while rest.peek().is_some_and(|&(j, _)| j <= i + 1 + len) {
                    rest.next();
                }
            }
            '}' => {
                return Err(ApiError::spec(
                    TEMPLATE,
                    format!(
                        "the `}}` at byte {i} closes no placeholder (write `}}}}` for a literal brace)"
                    ),
                ));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// `secret.template(text, values)`: `text` with each `{name}` replaced by the secret
/// `values[name]`, as a new opaque [`Secret`] (module docs, "Templates"). The caller
/// registers the result with the run's redactor.
pub fn template(text: &str, values: &[(&str, &Secret)]) -> Result<Secret, ApiError> {
    let pieces = parse_template(text)?;
    let value_of = |name: &str| values.iter().find(|(k, _)| *k == name).map(|(_, s)| *s);
    let given = || {
        let mut names: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
        names.sort_unstable();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    };
    let used: Vec<&str> = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Placeholder(n) => Some(*n),
            Piece::Text(_) => None,
        })
        .collect();
    if let Some(missing) = used.iter().find(|n| value_of(n).is_none()) {
        return Err(ApiError::spec(
            TEMPLATE,
            format!(
                "the placeholder `{{{missing}}}` has no value in the map (given: {})",
                given()
            ),
        ));
    }
    let mut unused: Vec<&str> = values
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !used.contains(k))
        .collect();
    unused.sort_unstable();
    if let Some(first) = unused.first() {
        return Err(ApiError::spec(
            TEMPLATE,
            format!("`{first}` is given but the text has no `{{{first}}}` placeholder"),
        ));
    }
    let mut names: Vec<&str> = Vec::new();
    for (key, secret) in values {
        let what = format!("{secret} (placeholder `{{{key}}}`)");
        secret_bytes(TEMPLATE, &what, secret.expose(), SecretUse::Line)?;
        if std::str::from_utf8(secret.expose()).is_err() {
            return Err(ApiError::spec(
                TEMPLATE,
                format!("{what} is not UTF-8 text and cannot be rendered into text"),
            ));
        }
        if !names.contains(&secret.name().as_str()) {
            names.push(secret.name().as_str());
        }
    }
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(text.len()));
    for piece in &pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
            Piece::Placeholder(n) => {
                out.extend_from_slice(value_of(n).expect("checked above").expose());
            }
        }
    }
    if out.len() > crate::secret::MAX_VALUE_LEN {
        return Err(ApiError::spec(
            TEMPLATE,
            format!(
                "the rendered text is {} bytes, more than a secret may hold ({})",
                out.len(),
                crate::secret::MAX_VALUE_LEN
            ),
        ));
    }
    // `template-<names>` when that is a valid name (≤ 64 characters), else `template`.
    let name = SecretName::new(format!("template-{}", names.join("-")))
        .or_else(|_| SecretName::new("template"))
        .expect("`template` is a valid secret name");
    Ok(Secret::rendered(name, out))
}

/// The `(key, Secret)` pairs of a template's value map; a value that is not a Secret is
/// refused naming its key and type.
fn template_values(values: &rhai::Map) -> Result<Vec<(&str, Secret)>, ApiError> {
    values
        .iter()
        .map(|(k, v)| match v.read_lock::<Secret>() {
            Some(s) => Ok((k.as_str(), s.clone())),
            None => Err(ApiError::spec(
                TEMPLATE,
                format!(
                    "the value of `{k}` must be a Secret (from secret.get or secret.ensure), found {}: plain text belongs in the template text",
                    v.type_name()
                ),
            )),
        })
        .collect()
}

/// 32 random bytes from `/dev/urandom` as 64 lowercase hex characters (a generated
/// secret's value).
pub fn random_hex() -> std::io::Result<zeroize::Zeroizing<String>> {
    use std::io::Read;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(bytes.as_mut()))?;
    Ok(zeroize::Zeroizing::new(
        bytes.iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

/// The pending misuse of a secret on this thread, if any, as a termination token for the
/// engine's `on_progress` callback (module docs). Taking it clears it.
pub fn swallowed_misuse() -> Option<Dynamic> {
    MISUSE.with(|m| m.borrow_mut().take()).map(Dynamic::from)
}

/// The refusal of `operation` on `secret`, also recorded for [`swallowed_misuse`].
fn refuse(operation: &'static str, secret: &Secret) -> Box<EvalAltResult> {
    let err: SharedApiError = std::sync::Arc::new(ApiError::Secret(SecretError::Opaque {
        operation,
        name: secret.name().clone(),
    }));
    MISUSE.with(|m| *m.borrow_mut() = Some(err.clone()));
    EvalAltResult::ErrorRuntime(Dynamic::from(err), rhai::Position::NONE).into()
}

type Refused = Result<Dynamic, Box<EvalAltResult>>;

/// Register the `secret` methods and the opaque `Secret` type.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<SecretApi>("SecretApi");
    engine.register_type_with_name::<Secret>("Secret");

    FuncRegistration::new("get")
        .with_comments([
            "/// The secret `name` from this host's encrypted store, as an opaque `Secret`.",
            "///",
            "/// A `Secret` cannot be printed, converted to a string, concatenated or compared;",
            "/// pass it to a primitive that accepts one (e.g. `lxc.set_password`).",
            "/// The key is checked before the first host change.",
        ])
        .with_params_info(["secret: SecretApi", "name: &str", "Secret"])
        .register_into_engine(
            engine,
            |api: SecretApi, name: &str| -> Result<Secret, Box<EvalAltResult>> {
                let rt = api.runtime();
                let secret = get(&rt.secrets, name).map_err(script_error)?;
                // The store registers with its own redactor; make sure the run's has it too.
                if let Ok(text) = std::str::from_utf8(secret.expose()) {
                    rt.redactor.register(secret.name().as_str(), text);
                }
                Ok(secret)
            },
        );

    FuncRegistration::new("has")
        .with_comments([
            "/// Whether this host's store holds the secret `name` (the key is checked).",
        ])
        .with_params_info(["secret: SecretApi", "name: &str", "bool"])
        .register_into_engine(
            engine,
            |api: SecretApi, name: &str| -> Result<bool, Box<EvalAltResult>> {
                has(&api.runtime().secrets, name).map_err(script_error)
            },
        );

    FuncRegistration::new("ensure")
        .with_comments([
            "/// The secret `name`, generated (32 random bytes, hex) and stored encrypted first",
            "/// when the store lacks it — e.g. the API key that protects a vLLM server.",
        ])
        .with_params_info(["secret: SecretApi", "name: &str", "Secret"])
        .register_into_engine(
            engine,
            |api: SecretApi, name: &str| -> Result<Secret, Box<EvalAltResult>> {
                let rt = api.runtime();
                let secret = ensure(rt, name).map_err(script_error)?;
                if let Ok(text) = std::str::from_utf8(secret.expose()) {
                    rt.redactor.register(secret.name().as_str(), text);
                }
                Ok(secret)
            },
        );

    FuncRegistration::new("template")
        .with_comments([
            "/// `text` with each `{name}` placeholder replaced by the secret `values.name`, as a",
            "/// new opaque `Secret` — e.g. an app's env file holding an API key:",
            "/// `secret.template(\"API_KEY={key}\\n\", #{ key: secret.get(\"vllm_api_key\") })`.",
            "/// Pass it to `lxc.push` (mode 0600 by default) or as `stdin`. `{{` and `}}` are",
            "/// literal braces. A placeholder without a value, a value without a placeholder and a",
            "/// value that is not a Secret are refused, naming them. The result is redacted like",
            "/// any secret.",
        ])
        .with_params_info(["secret: SecretApi", "text: &str", "values: Map", "Secret"])
        .register_into_engine(
            engine,
            |api: SecretApi, text: &str, values: rhai::Map| -> Result<Secret, Box<EvalAltResult>> {
                let rt = api.runtime();
                let values = template_values(&values).map_err(script_error)?;
                let pairs: Vec<(&str, &Secret)> = values.iter().map(|(k, s)| (*k, s)).collect();
                let secret = template(text, &pairs).map_err(script_error)?;
                if let Ok(text) = std::str::from_utf8(secret.expose()) {
                    rt.redactor.register(secret.name().as_str(), text);
                }
                Ok(secret)
            },
        );

    for op in ["to_string", "to_debug", "print", "debug"] {
        engine.register_fn(op, move |s: &mut Secret| -> Refused { Err(refuse(op, s)) });
    }
    for op in ["+", "==", "!="] {
        engine.register_fn(op, move |s: Secret, _: ImmutableString| -> Refused {
            Err(refuse(op, &s))
        });
        engine.register_fn(op, move |_: ImmutableString, s: Secret| -> Refused {
            Err(refuse(op, &s))
        });
        engine.register_fn(op, move |s: Secret, _: Secret| -> Refused {
            Err(refuse(op, &s))
        });
        engine.register_fn(op, move |s: Secret, _: Dynamic| -> Refused {
            Err(refuse(op, &s))
        });
        engine.register_fn(op, move |_: Dynamic, s: Secret| -> Refused {
            Err(refuse(op, &s))
        });
    }
    engine.register_fn("+=", |_: &mut ImmutableString, s: Secret| -> Refused {
        Err(refuse("+=", &s))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::Scope;
    use zeroize::Zeroizing;

    const VALUE: &str = "hf_s3cr3tvalue";
    const MESSAGE: &str = "a secret can only be passed to a primitive that accepts one";

    /// The engine recipes run in (every family, limits, the misuse hook), not one with
    /// only this family registered.
    fn engine() -> Engine {
        crate::script::engine::new_engine(crate::script::engine::EngineOptions::default())
    }

    fn scope() -> Scope<'static> {
        let mut scope = Scope::new();
        scope.push(
            "s",
            Secret::new(
                SecretName::new("hf_token").unwrap(),
                Zeroizing::new(VALUE.as_bytes().to_vec()),
            ),
        );
        scope
    }

    /// The typed error a script raised, with its position.
    fn refusal(err: &EvalAltResult) -> (String, rhai::Position) {
        match err {
            EvalAltResult::ErrorRuntime(d, pos) => {
                let e = d
                    .clone()
                    .try_cast::<SharedApiError>()
                    .unwrap_or_else(|| panic!("not an ApiError: {d:?}"));
                (e.to_string(), *pos)
            }
            EvalAltResult::ErrorTerminated(d, pos) => {
                let e = d
                    .clone()
                    .try_cast::<SharedApiError>()
                    .unwrap_or_else(|| panic!("not an ApiError: {d:?}"));
                (e.to_string(), *pos)
            }
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => refusal(inner),
            other => panic!("unexpected error: {other:?}"),
        }
    }

    fn assert_refused(engine: &Engine, script: &str, operation: &str) {
        let _ = swallowed_misuse();
        let mut printed = Vec::new();
        let result = engine.eval_with_scope::<Dynamic>(&mut scope(), script);
        let err = match result {
            Err(e) => e,
            Ok(v) => {
                printed.push(v.to_string());
                panic!("`{script}` succeeded with {v:?}")
            }
        };
        let (text, pos) = refusal(&err);
        assert!(text.contains(MESSAGE), "`{script}`: {text}");
        assert!(
            text.contains(&format!("`{operation}`")),
            "`{script}`: {text}"
        );
        assert!(text.contains("«secret:hf_token»"), "`{script}`: {text}");
        assert!(!text.contains(VALUE), "`{script}`: {text}");
        assert!(!pos.is_none(), "`{script}`: no position");
    }

    #[test]
    fn conversions_concatenation_and_comparison_are_refused() {
        let e = engine();
        for (script, op) in [
            ("s.to_string()", "to_string"),
            ("to_string(s)", "to_string"),
            ("s.to_debug()", "to_debug"),
            ("print(s)", "print"),
            ("debug(s)", "debug"),
            (r#""token: " + s"#, "+"),
            (r#"s + "x""#, "+"),
            ("s + s", "+"),
            ("s + 1", "+"),
            ("1 + s", "+"),
            (r#"let t = "a"; t += s; t"#, "+="),
            (r#"s == "hf_s3cr3tvalue""#, "=="),
            (r#""hf_s3cr3tvalue" == s"#, "=="),
            (r#"s != "x""#, "!="),
            ("s == s", "=="),
            ("s != 42", "!="),
        ] {
            assert_refused(&e, script, op);
        }
    }

    #[test]
    fn interpolation_is_refused_through_the_progress_hook() {
        let mut e = engine();
        e.on_progress(|_| swallowed_misuse());
        assert_refused(&e, r#"let t = `token=${s}`; t"#, "to_string");
        // Also as the script's last expression: the runner's check after the run.
        let _ = swallowed_misuse();
        let out = e.eval_with_scope::<String>(&mut scope(), "`${s}`").unwrap();
        assert_eq!(out, "Secret", "the value never appears");
        let token = swallowed_misuse().expect("misuse recorded");
        let err = token.try_cast::<SharedApiError>().unwrap();
        assert!(err.to_string().contains(MESSAGE), "{err}");
    }

    #[test]
    fn a_caught_refusal_still_stops_the_script() {
        let mut e = engine();
        e.on_progress(|_| swallowed_misuse());
        assert_refused(
            &e,
            "let t = 0; try { s.to_string() } catch (err) { t = 1 } t",
            "to_string",
        );
    }

    #[test]
    fn a_secret_can_be_passed_around_and_typed() {
        let e = engine();
        let _ = swallowed_misuse();
        let t: String = e
            .eval_with_scope(&mut scope(), "let a = [s]; let t = a[0]; type_of(t)")
            .unwrap();
        assert_eq!(t, "Secret");
        assert!(swallowed_misuse().is_none());
    }

    fn secret(name: &str, value: &str) -> Secret {
        Secret::new(
            SecretName::new(name).unwrap(),
            Zeroizing::new(value.as_bytes().to_vec()),
        )
    }

    #[test]
    fn a_template_renders_placeholders_and_literal_braces_into_a_named_secret() {
        let key = secret("vllm_api_key", "sk-0123456789");
        let other = secret("db_pass", "pa55word");
        let out = template(
            "OPENAI_API_KEY={key}\nDB={db}\nJSON={{\"k\": \"{key}\"}}\n",
            &[("key", &key), ("db", &other)],
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(out.expose()).unwrap(),
            "OPENAI_API_KEY=sk-0123456789\nDB=pa55word\nJSON={\"k\": \"sk-0123456789\"}\n"
        );
        assert_eq!(out.to_string(), "«secret:template-vllm_api_key-db_pass»");
        // Names too long for a secret name fall back to `template`.
        let long = secret(&"a".repeat(60), "value1234");
        let out = template("{x}", &[("x", &long)]).unwrap();
        assert_eq!(out.name().as_str(), "template");
    }

    #[test]
    fn a_template_refuses_missing_unknown_and_malformed_placeholders_naming_them() {
        let key = secret("vllm_api_key", "sk-0123456789");
        for (text, values, want) in [
            (
                "A={key}\nB={keyy}\n",
                vec![("key", &key)],
                "secret.template: the placeholder `{keyy}` has no value in the map (given: key)",
            ),
            (
                "A={key}\n",
                vec![("key", &key), ("extra", &key)],
                "secret.template: `extra` is given but the text has no `{extra}` placeholder",
            ),
            (
                "A={}\n",
                vec![],
                "secret.template: `{}` at byte 2 is not a placeholder: a name is a letter or `_` then letters, digits or `_` (write `{{` for a literal brace)",
            ),
            (
                "A={a key}",
                vec![],
                "secret.template: `{a key}` at byte 2 is not a placeholder",
            ),
            (
                "A={key",
                vec![("key", &key)],
                "secret.template: the `{` at byte 2 is never closed (write `{{` for a literal brace)",
            ),
            (
                "A=}{key}",
                vec![("key", &key)],
                "secret.template: the `}` at byte 2 closes no placeholder (write `}}` for a literal brace)",
            ),
            (
                "no placeholders",
                vec![("key", &key)],
                "secret.template: `key` is given but the text has no `{key}` placeholder",
            ),
        ] {
            let err = template(text, &values).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_template_refuses_a_value_that_would_add_lines_without_showing_it() {
        let bad = secret("api_key", "sk-1\nLD_PRELOAD=/tmp/x.so");
        let err = template("KEY={k}\n", &[("k", &bad)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "secret.template: refused by the boundary (values): «secret:api_key» (placeholder `{k}`) holds the control character 0x0a at byte 4: it would add lines to the file or stdin it is written into; store the value without it (`phoenix secret set`)"
        );
        assert!(!err.contains("LD_PRELOAD"));
    }

    #[test]
    fn a_template_in_a_recipe_takes_only_secrets_and_stays_opaque() {
        let mut e = engine();
        e.on_progress(|_| swallowed_misuse());
        // No runtime: call the typed conversion the registered function uses.
        let mut map = rhai::Map::new();
        map.insert("key".into(), Dynamic::from("plain text"));
        map.insert("n".into(), Dynamic::from(42_i64));
        let err = template_values(&map).unwrap_err().to_string();
        assert_eq!(
            err,
            "secret.template: the value of `key` must be a Secret (from secret.get or secret.ensure), found string: plain text belongs in the template text"
        );
        // A rendered template is a Secret like any other: every conversion is refused.
        let rendered = template(
            "T={s}",
            &[("s", &scope().get_value::<Secret>("s").unwrap())],
        )
        .unwrap();
        let mut scope = Scope::new();
        scope.push("t", rendered);
        let _ = swallowed_misuse();
        let err = e
            .eval_with_scope::<Dynamic>(&mut scope, r#"let x = "a" + t; x"#)
            .unwrap_err();
        let (text, _) = refusal(&err);
        assert!(text.contains("«secret:template-hf_token»"), "{text}");
        assert!(text.contains(MESSAGE), "{text}");
    }

    #[test]
    fn opaque_misuse_fails_the_run_not_usage() {
        let err = SecretError::Opaque {
            operation: "+",
            name: SecretName::new("x").unwrap(),
        };
        assert_eq!(err.exit_code(), crate::exit::code::RUN_FAILED);
    }

    #[test]
    fn get_validates_the_name_and_reads_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let redactor = crate::exec::Redactor::default();
        let store = SecretStore::at(
            tmp.path().join("secrets"),
            tmp.path().join("secret.key"),
            redactor.clone(),
        );
        store.init(false).unwrap();
        store
            .set(&SecretName::new("hf_token").unwrap(), VALUE.as_bytes())
            .unwrap();
        let s = get(&store, "hf_token").unwrap();
        assert_eq!(s.expose(), VALUE.as_bytes());
        assert_eq!(
            redactor.redact(&format!("failed: {VALUE}")),
            "failed: «secret:hf_token»"
        );
        let err = get(&store, "../etc/passwd").unwrap_err();
        assert!(
            matches!(
                err,
                ApiError::Type {
                    call: "secret.get",
                    ..
                }
            ),
            "{err:?}"
        );
        let err = get(&store, "absent").unwrap_err();
        assert!(
            matches!(err, ApiError::Secret(SecretError::NotFound { .. })),
            "{err:?}"
        );
    }
}

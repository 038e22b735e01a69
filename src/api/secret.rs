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

use std::cell::RefCell;

use rhai::{Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString};

use crate::api::{ApiError, SharedApiError, script_error};
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
    if has(&rt.secrets, name.as_str())? {
        return Ok(rt.secrets.get(&name)?);
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(bytes.as_mut()))
            .map_err(|e| ApiError::spec(CALL, format!("cannot read /dev/urandom: {e}")))?;
    }
    let hex: zeroize::Zeroizing<String> =
        zeroize::Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect());
    if rt.dry_run {
        rt.note(format!("generate secret {name} and store it encrypted"));
        return Ok(Secret::new(
            name,
            zeroize::Zeroizing::new(hex.as_bytes().to_vec()),
        ));
    }
    rt.secrets.set(&name, hex.as_bytes())?;
    tracing::info!(secret = %name, "secret generated and stored");
    Ok(rt.secrets.get(&name)?)
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

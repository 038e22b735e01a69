//! The `log` family: structured log lines from a recipe.
//!
//! `log.info/warn/error/verbose(msg)` emit a tracing event with the recipe's name, after the
//! run's [`crate::exec::Redactor`] has replaced every known secret value. Only strings are
//! accepted (decision): a recipe formats its message with interpolation, and a `Secret`
//! refuses interpolation, so a secret cannot reach a log line through this door.
//!
//! The debug level is `log.verbose(msg)`, not `log.debug(msg)`: `debug` (like `print`) is a
//! Rhai keyword, so `log.debug(…)` does not even parse ("'debug' is a reserved keyword").
//! Rhai's own `debug(msg)` also reaches the logger at debug level (see the engine).
//!
//! In a `--dry-run` every line starts with `dry run: ` (unless the recipe wrote it so), so a
//! recipe's "docker installed"-style line never reads as the success of a real run.

use rhai::{Engine, FuncRegistration};

crate::api::handle!(
    /// The `log` object recipes call methods on.
    LogApi
);

/// A log level a recipe can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `log.verbose` (debug level).
    Debug,
    /// `log.info`.
    Info,
    /// `log.warn`.
    Warn,
    /// `log.error`.
    Error,
}

/// Emit `message` at `level` for the run of `api`, redacted. Returns the text logged.
pub fn emit(api: &LogApi, level: Level, message: &str) -> String {
    let rt = api.runtime();
    let mut text = rt.redactor.redact(message);
    if rt.dry_run && !text.starts_with("dry run") {
        text = format!("dry run: {text}");
    }
    let recipe = rt.recipe_name.as_str();
    match level {
        Level::Debug => tracing::debug!(target: "phoenix::recipe", recipe, "{text}"),
        Level::Info => tracing::info!(target: "phoenix::recipe", recipe, "{text}"),
        Level::Warn => tracing::warn!(target: "phoenix::recipe", recipe, "{text}"),
        Level::Error => tracing::error!(target: "phoenix::recipe", recipe, "{text}"),
    }
    text
}

/// Register the `log` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<LogApi>("LogApi");
    for (name, level, what) in [
        (
            "verbose",
            Level::Debug,
            "a debug-level line (shown with -v)",
        ),
        ("info", Level::Info, "an info line"),
        ("warn", Level::Warn, "a warning"),
        (
            "error",
            Level::Error,
            "an error line (the run goes on; use `throw` to stop it)",
        ),
    ] {
        FuncRegistration::new(name)
            .with_params_info(["log: LogApi", "message: String"])
            .with_comments([format!(
                "/// Log {what} with the recipe's name; known secret values are redacted."
            )])
            .register_into_engine(engine, move |api: LogApi, message: &str| {
                emit(&api, level, message);
            });
    }
}

//! The sandboxed Rhai recipe runtime: engine construction, running a recipe, lint and the
//! generated API reference.
//!
//! - [`engine`]: the one engine constructor (limits, strict variables, no `eval`, stdlib-only
//!   imports, API handles through the variable resolver, `print` to the logger).
//! - [`stdlib`]: the modules a recipe may import, embedded or from `PHOENIX_STDLIB`.
//! - [`facts`]: calls, imports and literals read from the AST.
//! - [`lint`]: `phoenix recipe lint`.
//! - [`docs`]: `phoenix recipe api` and `docs/recipe-api.md`.
//!
//! A recipe goes through [`Recipe::load`] (read, compile, check every import, compile every
//! imported module) before anything on the host is touched, then [`Recipe::run`]. Errors
//! come back as [`RecipeError`] with the recipe's file:line:column; a primitive's
//! [`ApiError`] travels inside Rhai as a runtime error (`crate::api::script_error`) and is
//! downcast back here, so it stays the `#[source]` of the error and the cause chain prints.
//!
//! Exit codes (DESIGN.md §6): a recipe that cannot be read, does not compile or imports
//! outside the stdlib is 2 (nothing was touched); a recipe that fails while running is 1,
//! sandbox limits included; a run stopped by SIGINT/SIGTERM is 130/143.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rhai::{AST, Dynamic, Engine, EvalAltResult, Position, Scope};

use crate::api::{ApiError, SharedApiError};
use crate::runtime::Runtime;

pub mod docs;
pub mod engine;
pub mod facts;
pub mod lint;
pub mod stdlib;

use engine::{EngineOptions, ImportError, StdlibResolver};
use facts::Facts;
use stdlib::Stdlib;

/// How many nested function frames an error message shows.
const MAX_TRACE: usize = 4;

/// Why a recipe could not run to success.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("cannot read recipe {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The recipe does not compile.
    #[error("{path}:{line}:{column}: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Rhai's message.
        message: String,
    },
    /// An import names something other than a stdlib module, or the module is broken.
    #[error("{path}:{line}:{column}: cannot import \"{import}\"")]
    Import {
        /// The recipe.
        path: PathBuf,
        /// 1-based line of the `import`.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The import path as written.
        import: String,
        /// Why.
        #[source]
        source: ImportError,
    },
    /// A primitive failed.
    #[error("{path}:{line}:{column}: {call} failed{trace}")]
    Api {
        /// The recipe.
        path: PathBuf,
        /// 1-based line of the call in the recipe (the outermost frame).
        line: usize,
        /// 1-based column.
        column: usize,
        /// The call that failed (`lxc.create`), `a primitive` when unknown.
        call: String,
        /// Function frames between the recipe line and the failing call.
        trace: Trace,
        /// The primitive's error.
        #[source]
        source: SharedApiError,
    },
    /// The script itself failed: a sandbox limit, an unknown function, a type error, `throw`.
    #[error("{path}:{line}:{column}: {message}{trace}")]
    Script {
        /// The recipe.
        path: PathBuf,
        /// 1-based line (the outermost frame).
        line: usize,
        /// 1-based column.
        column: usize,
        /// What went wrong.
        message: String,
        /// Function frames between the recipe line and the failure.
        trace: Trace,
    },
    /// SIGINT/SIGTERM stopped the run.
    #[error("{path}:{line}:{column}: interrupted by signal {signal}")]
    Interrupted {
        /// The recipe.
        path: PathBuf,
        /// 1-based line where it stopped.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The signal number.
        signal: i32,
    },
}

impl RecipeError {
    /// The exit code (DESIGN.md §6).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Read { .. } | Self::Compile { .. } | Self::Import { .. } => {
                crate::error::code::USAGE
            }
            Self::Api { .. } | Self::Script { .. } => crate::error::code::RUN_FAILED,
            Self::Interrupted { signal, .. } => crate::error::signal_code(*signal),
        }
    }
}

/// Function frames of an error, innermost last: `(function, source, line, column)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace(pub Vec<(String, String, usize, usize)>);

impl std::fmt::Display for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let frames = &self.0;
        let skip = frames.len().saturating_sub(MAX_TRACE);
        if skip > 0 {
            write!(f, " (after {skip} more nested calls)")?;
        }
        for (func, source, line, column) in &frames[skip..] {
            write!(f, " in fn {func} at {source}:{line}:{column}")?;
        }
        Ok(())
    }
}

/// A recipe that compiled, with every module it imports checked and compiled.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// The file.
    pub path: PathBuf,
    /// Its file name (`drdevstral.rhai`), for `config.target()` and log lines.
    pub name: String,
    /// The compiled script.
    pub ast: AST,
    /// What the script contains.
    pub facts: Facts,
    /// Every stdlib module it imports, directly or through another module:
    /// `(name, ast, facts)`.
    pub modules: Vec<(String, AST, Facts)>,
    /// Where its imports resolve.
    pub stdlib: Stdlib,
}

impl Recipe {
    /// Read and compile the recipe at `path`; check its imports against `stdlib`.
    pub fn load(path: &Path, stdlib: &Stdlib) -> Result<Self, RecipeError> {
        let source = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::compile(path, &source, stdlib)
    }

    /// Compile recipe `source` that came from `path`.
    pub fn compile(path: &Path, source: &str, stdlib: &Stdlib) -> Result<Self, RecipeError> {
        let engine = engine::new_engine(EngineOptions {
            stdlib: Some(stdlib.clone()),
            ..EngineOptions::default()
        });
        let mut ast = engine::compile(&engine, source).map_err(|e| RecipeError::Compile {
            path: path.to_owned(),
            line: e.position().line().unwrap_or(0),
            column: e.position().position().unwrap_or(0),
            message: e.err_type().to_string(),
        })?;
        ast.set_source(path.display().to_string());
        let facts = Facts::of(&ast);
        let mut recipe = Self {
            path: path.to_owned(),
            name: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            ast,
            facts,
            modules: Vec::new(),
            stdlib: stdlib.clone(),
        };
        let resolver = StdlibResolver::new(stdlib.clone());
        // Every import, transitively; every error names the recipe's own import line.
        let mut pending: Vec<(Option<String>, Position)> = recipe
            .facts
            .imports
            .iter()
            .rev()
            .map(|i| (i.path.clone(), i.pos))
            .collect();
        while let Some((import, recipe_pos)) = pending.pop() {
            let err = |source: ImportError, import: String| RecipeError::Import {
                path: path.to_owned(),
                line: recipe_pos.line().unwrap_or(0),
                column: recipe_pos.position().unwrap_or(0),
                import,
                source,
            };
            let Some(name) = import else {
                return Err(err(
                    ImportError::NotLiteral,
                    "(computed at run time)".to_owned(),
                ));
            };
            if recipe.modules.iter().any(|(n, ..)| *n == name) {
                continue;
            }
            let (ast, _) = resolver
                .compile_module(&engine, &name)
                .map_err(|e| err(e, name.clone()))?;
            let facts = Facts::of(&ast);
            pending.extend(facts.imports.iter().map(|i| (i.path.clone(), recipe_pos)));
            recipe.modules.push((name, ast, facts));
        }
        Ok(recipe)
    }

    /// Whether the recipe or a module it imports calls `secret.get`.
    pub fn uses_secrets(&self) -> bool {
        std::iter::once(&self.facts)
            .chain(self.modules.iter().map(|(_, _, f)| f))
            .any(|f| f.calls.iter().any(|c| c.is_method_on("secret", "get")))
    }

    /// The engine a run of this recipe uses, bound to `rt`.
    pub fn engine(&self, rt: &Arc<Runtime>) -> Engine {
        engine::new_engine(EngineOptions {
            stdlib: Some(self.stdlib.clone()),
            recipe_name: self.name.clone(),
            redactor: rt.redactor.clone(),
            cancel: Some(rt.cancel.clone()),
            handles: crate::api::handles(rt),
        })
    }

    /// Run the recipe against `rt`.
    pub fn run(&self, rt: &Arc<Runtime>) -> Result<(), RecipeError> {
        let engine = self.engine(rt);
        engine
            .run_ast_with_scope(&mut Scope::new(), &self.ast)
            .map_err(|e| self.error(&e))
    }

    /// Turn Rhai's error into a [`RecipeError`] at the recipe's line.
    pub fn error(&self, err: &EvalAltResult) -> RecipeError {
        let outer = err.position();
        let mut trace = Trace::default();
        let mut inner = err;
        let mut source = String::new();
        loop {
            match inner {
                EvalAltResult::ErrorInFunctionCall(func, src, next, _) => {
                    source = if src.is_empty() {
                        self.path.display().to_string()
                    } else {
                        src.clone()
                    };
                    let p = next.position();
                    trace.0.push((
                        func.clone(),
                        source.clone(),
                        p.line().unwrap_or(0),
                        p.position().unwrap_or(0),
                    ));
                    inner = next;
                }
                EvalAltResult::ErrorInModule(name, next, _) => {
                    source = format!("stdlib/{name}.rhai");
                    let p = next.position();
                    trace.0.push((
                        "(module body)".to_owned(),
                        source.clone(),
                        p.line().unwrap_or(0),
                        p.position().unwrap_or(0),
                    ));
                    inner = next;
                }
                _ => break,
            }
        }
        let path = self.path.clone();
        let (line, column) = (outer.line().unwrap_or(0), outer.position().unwrap_or(0));
        match inner {
            EvalAltResult::ErrorRuntime(value, pos) => {
                if let Some(api) = value.clone().try_cast::<SharedApiError>() {
                    if matches!(*api, ApiError::Interrupted) {
                        return RecipeError::Interrupted {
                            path,
                            line,
                            column,
                            signal: crate::signal::received().unwrap_or(libc::SIGINT),
                        };
                    }
                    let call = self
                        .call_at(&source, *pos)
                        .unwrap_or_else(|| "a primitive".to_owned());
                    return RecipeError::Api {
                        path,
                        line,
                        column,
                        call,
                        trace,
                        source: api,
                    };
                }
                if let Some(import) = value.clone().try_cast::<ImportError>() {
                    return RecipeError::Import {
                        path,
                        line,
                        column,
                        import: import_name(&import),
                        source: import,
                    };
                }
                RecipeError::Script {
                    path,
                    line,
                    column,
                    message: format!("the recipe threw: {}", show(value)),
                    trace,
                }
            }
            EvalAltResult::ErrorTerminated(token, _)
                if token.clone().try_cast::<String>().as_deref() == Some(engine::CANCEL_TOKEN) =>
            {
                RecipeError::Interrupted {
                    path,
                    line,
                    column,
                    signal: crate::signal::received().unwrap_or(libc::SIGINT),
                }
            }
            other => RecipeError::Script {
                path,
                line,
                column,
                message: script_message(other),
                trace,
            },
        }
    }

    /// The call starting at `pos` in `source` (the recipe or a module).
    fn call_at(&self, source: &str, pos: Position) -> Option<String> {
        let facts = self
            .modules
            .iter()
            .find(|(n, ..)| source == format!("stdlib/{n}.rhai"))
            .map_or(&self.facts, |(_, _, f)| f);
        facts.call_at(pos).map(facts::CallSite::display)
    }
}

fn import_name(e: &ImportError) -> String {
    match e {
        ImportError::Stdlib(s) => s.name().to_owned(),
        ImportError::Compile { name, .. } | ImportError::Cycle { name } => name.clone(),
        ImportError::NotLiteral => "(computed at run time)".to_owned(),
    }
}

fn show(value: &Dynamic) -> String {
    if value.is_string() {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

/// Rhai's message without its position, with the sandbox limit named where one was hit.
fn script_message(err: &EvalAltResult) -> String {
    use engine::limits;
    match err {
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "sandbox limit: the recipe ran more than {} operations (a runaway loop?)",
            limits::MAX_OPERATIONS
        ),
        EvalAltResult::ErrorStackOverflow(_) => format!(
            "sandbox limit: calls nested deeper than {} levels (unbounded recursion?)",
            limits::MAX_CALL_LEVELS
        ),
        EvalAltResult::ErrorDataTooLarge(what, _) => format!(
            "sandbox limit: {what} too large (strings ≤ {} bytes, arrays ≤ {} elements, maps ≤ {} entries)",
            limits::MAX_STRING_SIZE,
            limits::MAX_ARRAY_SIZE,
            limits::MAX_MAP_SIZE
        ),
        EvalAltResult::ErrorTooManyModules(_) => format!(
            "sandbox limit: more than {} modules imported",
            limits::MAX_MODULES
        ),
        EvalAltResult::ErrorTooManyVariables(_) => format!(
            "sandbox limit: more than {} variables",
            limits::MAX_VARIABLES
        ),
        EvalAltResult::ErrorFunctionNotFound(sig, _) => {
            format!("no such function or method: {sig}")
        }
        other => {
            let text = other.to_string();
            let suffix = format!(" ({})", other.position());
            text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
        }
    }
}

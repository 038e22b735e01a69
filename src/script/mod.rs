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
//! imported module, refuse lint errors that cannot be false alarms: calls to functions or
//! API methods that do not exist or get the wrong number of arguments, a shell as
//! `lxc.exec`'s argv\[0\]) before anything on the host is touched, then [`Recipe::run`].
//! Decision: `Engine::compile` accepts calls to functions that do not exist; refusing them
//! up front means a typo in a late step does not leave a half-provisioned container. Errors
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
        /// Why (boxed: keeps every phoenix error small).
        #[source]
        source: Box<ImportError>,
    },
    /// Lint found a certain error (a call that cannot succeed, a shell argv): refused before
    /// the run.
    #[error("{path}:{line}:{column}: {message}{}", more_problems(*.more))]
    Refused {
        /// The recipe.
        path: PathBuf,
        /// 1-based line of the first problem.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The first problem.
        message: String,
        /// How many more problems lint found.
        more: usize,
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
            Self::Read { .. }
            | Self::Compile { .. }
            | Self::Import { .. }
            | Self::Refused { .. } => crate::exit::code::USAGE,
            Self::Api { .. } | Self::Script { .. } => crate::exit::code::RUN_FAILED,
            Self::Interrupted { signal, .. } => crate::exit::signal_code(*signal),
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
    /// The text it was compiled from.
    pub source: String,
    /// The compiled script.
    pub ast: AST,
    /// What the script contains.
    pub facts: Facts,
    /// Every stdlib module it imports, directly or through another module.
    pub modules: Vec<CompiledModule>,
    /// Where its imports resolve.
    pub stdlib: Stdlib,
}

/// A stdlib module a recipe imports, compiled once: checked by [`Recipe::compile`] and
/// [`Recipe::check`], evaluated by every run of the recipe without compiling it again.
#[derive(Debug, Clone)]
pub struct CompiledModule {
    /// The module's name (`import "steps"`).
    pub name: String,
    /// The text it was compiled from.
    pub source: String,
    /// The compiled module, named `stdlib/<name>.rhai`.
    pub ast: Arc<AST>,
    /// What the module contains.
    pub facts: Facts,
}

impl Recipe {
    /// Read, compile and [`check`](Recipe::check) the recipe at `path`.
    pub fn load(path: &Path, stdlib: &Stdlib) -> Result<Self, RecipeError> {
        let recipe = Self::read(path, stdlib)?;
        recipe.check()?;
        Ok(recipe)
    }

    /// Read and compile the recipe at `path`, checking its imports (no lint).
    pub fn read(path: &Path, stdlib: &Stdlib) -> Result<Self, RecipeError> {
        let source =
            crate::boundary::limits::read_input_text(path, crate::boundary::limits::Input::Recipe)
                .map_err(|source| RecipeError::Read {
                    path: path.to_owned(),
                    source,
                })?;
        Self::compile(path, &source, stdlib)
    }

    /// [`Recipe::compile`] and [`Recipe::check`].
    pub fn from_source(path: &Path, source: &str, stdlib: &Stdlib) -> Result<Self, RecipeError> {
        let recipe = Self::compile(path, source, stdlib)?;
        recipe.check()?;
        Ok(recipe)
    }

    /// Refuse lint errors that cannot be false alarms (calls that cannot succeed, a shell
    /// argv), so they stop the recipe before the run rather than halfway through
    /// provisioning.
    ///
    /// The findings are those `phoenix recipe lint` gives this source; the recipe and its
    /// modules are not compiled again for it.
    pub fn check(&self) -> Result<(), RecipeError> {
        let path = &self.path;
        let linter = lint::Linter::new(self.stdlib.clone());
        let module_fns = |name: &str| {
            Ok(self
                .modules
                .iter()
                .find(|m| m.name == name)
                .map(|m| lint::functions_of(&m.ast))
                .unwrap_or_default())
        };
        let blocking: Vec<lint::Finding> = linter
            .lint_compiled(
                &path.display().to_string(),
                &self.source,
                &self.facts,
                &module_fns,
            )
            .into_iter()
            .filter(|f| f.severity == lint::Severity::Error && f.blocks_run)
            .collect();
        if let Some(first) = blocking.first() {
            return Err(RecipeError::Refused {
                path: path.to_owned(),
                line: first.line,
                column: first.column,
                message: first.message.clone(),
                more: blocking.len() - 1,
            });
        }
        Ok(())
    }

    /// Compile recipe `source` that came from `path` and check its imports (no lint).
    pub fn compile(path: &Path, source: &str, stdlib: &Stdlib) -> Result<Self, RecipeError> {
        let engine = engine::compile_engine();
        let mut ast = engine::compile(engine, source).map_err(|e| RecipeError::Compile {
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
            source: source.to_owned(),
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
                source: Box::new(source),
            };
            let Some(name) = import else {
                return Err(err(
                    ImportError::NotLiteral,
                    "(computed at run time)".to_owned(),
                ));
            };
            if recipe.modules.iter().any(|m| m.name == name) {
                continue;
            }
            let (ast, source) = resolver
                .compile_module(engine, &name)
                .map_err(|e| err(e, name.clone()))?;
            let facts = Facts::of(&ast);
            pending.extend(facts.imports.iter().map(|i| (i.path.clone(), recipe_pos)));
            recipe.modules.push(CompiledModule {
                name,
                source,
                ast: Arc::new(ast),
                facts,
            });
        }
        Ok(recipe)
    }

    /// Whether the recipe or a module it imports calls a `secret` method.
    pub fn uses_secrets(&self) -> bool {
        std::iter::once(&self.facts)
            .chain(self.modules.iter().map(|m| &m.facts))
            .any(|f| f.calls.iter().any(|c| c.handle() == Some("secret")))
    }

    /// The secret names the recipe (or a module it imports) reads with a literal
    /// `secret.get("NAME")`, sorted and deduplicated (`phoenix recipe test` stores a
    /// stand-in for each in its throw-away store).
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::iter::once(&self.facts)
            .chain(self.modules.iter().map(|m| &m.facts))
            .flat_map(|f| f.calls.iter())
            .filter(|c| c.is_method_on("secret", "get"))
            .filter_map(|c| match c.args.first() {
                Some(facts::Literal::Str(name)) => Some(name.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether the recipe may create a secret (`secret.ensure`).
    pub fn creates_secrets(&self) -> bool {
        std::iter::once(&self.facts)
            .chain(self.modules.iter().map(|m| &m.facts))
            .any(|f| f.calls.iter().any(|c| c.is_method_on("secret", "ensure")))
    }

    /// Whether the recipe or a module it imports needs the models parent dataset: it calls
    /// `config.models_dataset()` or any `zfs` method ([`crate::datasets`]).
    pub fn uses_models_dataset(&self) -> bool {
        std::iter::once(&self.facts)
            .chain(self.modules.iter().map(|m| &m.facts))
            .any(|f| {
                f.calls.iter().any(|c| {
                    c.is_method_on("config", "models_dataset") || c.handle() == Some("zfs")
                })
            })
    }

    /// The engine a run of this recipe uses, bound to `rt`, metered by `meter`.
    pub fn engine_with(
        &self,
        rt: &Arc<Runtime>,
        meter: Option<Arc<crate::boundary::limits::ScriptMeter>>,
    ) -> Engine {
        engine::new_engine(EngineOptions {
            stdlib: Some(self.stdlib.clone()),
            compiled: self
                .modules
                .iter()
                .map(|m| (m.name.clone(), m.source.clone(), Arc::clone(&m.ast)))
                .collect(),
            recipe_name: self.name.clone(),
            redactor: rt.redactor.clone(),
            cancel: Some(rt.cancel.clone()),
            handles: crate::api::handles(rt),
            meter,
        })
    }

    /// The engine a run of this recipe uses, bound to `rt`, with the run's CPU budget.
    pub fn engine(&self, rt: &Arc<Runtime>) -> Engine {
        let meter = crate::boundary::limits::ScriptMeter::new(
            rt.settings.script_cpu.value,
            rt.settings.script_memory.value,
        );
        self.engine_with(rt, Some(Arc::new(meter)))
    }

    /// Run the recipe against `rt`, within the run's CPU budget and memory cap: every
    /// allocation on this thread while the script runs counts against the cap.
    pub fn run(&self, rt: &Arc<Runtime>) -> Result<(), RecipeError> {
        use crate::boundary::limits::{MemoryGroup, ScriptMeter};
        let meter = Arc::new(ScriptMeter::new(
            rt.settings.script_cpu.value,
            rt.settings.script_memory.value,
        ));
        let engine = self.engine_with(rt, Some(Arc::clone(&meter)));
        let mut group = MemoryGroup::new();
        if let Some(g) = &group {
            meter.watch_memory(g.gauge());
        }
        let guard = group.as_mut().map(MemoryGroup::enter);
        // Clear a misuse parked by an earlier script on this thread.
        let _ = crate::api::secret::swallowed_misuse();
        let result = engine.run_ast_with_scope(&mut Scope::new(), &self.ast);
        drop(guard);
        result.map_err(|e| self.error(&e))?;
        // A misuse in the very last expression has no later progress tick to stop at.
        match crate::api::secret::swallowed_misuse() {
            Some(misuse) => Err(self.error(&EvalAltResult::ErrorRuntime(misuse, Position::NONE))),
            None => Ok(()),
        }
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
        if let EvalAltResult::ErrorTerminated(token, _) = inner {
            if let Some(over) = token
                .clone()
                .try_cast::<crate::boundary::limits::LimitExceeded>()
            {
                return RecipeError::Script {
                    path,
                    line,
                    column,
                    message: over.to_string(),
                    trace,
                };
            }
        }
        if let EvalAltResult::ErrorTerminated(token, pos) = inner {
            if token.is::<SharedApiError>() {
                // A secret misuse that Rhai swallowed, ended through `on_progress`.
                return self.error(&EvalAltResult::ErrorRuntime(token.clone(), *pos));
            }
        }
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
                if let Some(refused) = value.clone().try_cast::<engine::Unavailable>() {
                    return RecipeError::Script {
                        path,
                        line,
                        column,
                        message: refused.to_string(),
                        trace,
                    };
                }
                if let Some(import) = value.clone().try_cast::<ImportError>() {
                    return RecipeError::Import {
                        path,
                        line,
                        column,
                        import: import_name(&import),
                        source: Box::new(import),
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
            .find(|m| source == format!("stdlib/{}.rhai", m.name))
            .map_or(&self.facts, |m| &m.facts);
        facts.call_at(pos).map(facts::CallSite::display)
    }
}

fn more_problems(more: usize) -> String {
    match more {
        0 => String::new(),
        n => format!(" (and {n} more: run `phoenix recipe lint` for all)"),
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

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
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
            "sandbox limit: {} too large (strings ≤ {} bytes, arrays ≤ {} elements, maps ≤ {} entries)",
            lower_first(what),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::Ipv4Addr;

    use rhai::Array;

    use super::*;
    use crate::exec::{CancelFlag, CommandOutput, Redactor};
    use crate::host::{self, CreateSpec, CtConfig, CtStatus, ExecRequest, Gpu, Host, HostError};
    use crate::journal::Journal;
    use crate::secret::SecretStore;
    use crate::settings::{FlagOverrides, HostKind, Settings};
    use crate::types::{AbsPath, DatasetName, PropKey, PropValue, Vmid};

    /// A host that refuses everything: these tests only exercise the script side.
    struct NoHost;

    fn no<T>(what: &'static str) -> host::Result<T> {
        Err(HostError::Unsupported {
            backend: HostKind::Emulated,
            what,
        })
    }

    impl Host for NoHost {
        fn kind(&self) -> HostKind {
            HostKind::Emulated
        }
        fn ct_config(&self, _: Vmid) -> host::Result<Option<CtConfig>> {
            no("ct_config")
        }
        fn ct_create(&self, _: &CreateSpec) -> host::Result<()> {
            no("ct_create")
        }
        fn ct_destroy(&self, _: Vmid) -> host::Result<()> {
            no("ct_destroy")
        }
        fn ct_start(&self, _: Vmid) -> host::Result<()> {
            no("ct_start")
        }
        fn ct_stop(&self, _: Vmid) -> host::Result<()> {
            no("ct_stop")
        }
        fn ct_status(&self, _: Vmid) -> host::Result<CtStatus> {
            no("ct_status")
        }
        fn ct_exec(&self, _: Vmid, _: &ExecRequest) -> host::Result<CommandOutput> {
            no("ct_exec")
        }
        fn ct_push(&self, _: Vmid, _: &[u8], _: &AbsPath, _: u32) -> host::Result<()> {
            no("ct_push")
        }
        fn ct_set(&self, _: Vmid, _: &[(String, String)]) -> host::Result<()> {
            no("ct_set")
        }
        fn ct_delete_keys(&self, _: Vmid, _: &[String]) -> host::Result<()> {
            no("ct_delete_keys")
        }
        fn ct_append_lines(&self, _: Vmid, _: &[(String, String)], _: &Path) -> host::Result<()> {
            no("ct_append_lines")
        }
        fn ct_restore_config(&self, _: Vmid, _: &Path) -> host::Result<()> {
            no("ct_restore_config")
        }
        fn ct_address(&self, _: Vmid, _: &str) -> host::Result<Ipv4Addr> {
            no("ct_address")
        }
        fn zfs_get(&self, _: &DatasetName) -> host::Result<Option<BTreeMap<String, String>>> {
            no("zfs_get")
        }
        fn zfs_create(&self, _: &DatasetName, _: &[(PropKey, PropValue)]) -> host::Result<()> {
            no("zfs_create")
        }
        fn zfs_destroy(&self, _: &DatasetName) -> host::Result<()> {
            no("zfs_destroy")
        }
        fn zfs_mountpoint(&self, _: &DatasetName) -> host::Result<Option<String>> {
            no("zfs_mountpoint")
        }
        fn zfs_pools(&self) -> host::Result<Vec<String>> {
            no("zfs_pools")
        }
        fn host_path_owner(&self, _: &AbsPath) -> host::Result<Option<(u32, u32)>> {
            no("host_path_owner")
        }
        fn host_chown(&self, _: &AbsPath, _: u32, _: u32) -> host::Result<()> {
            no("host_chown")
        }
        fn zfs_local_props(
            &self,
            _: &DatasetName,
        ) -> host::Result<Option<BTreeMap<String, String>>> {
            no("zfs_local_props")
        }
        fn ct_unlock(&self, _: Vmid) -> host::Result<()> {
            no("ct_unlock")
        }
        fn storage_volumes(
            &self,
            _: &crate::types::StorageId,
            _: Vmid,
        ) -> host::Result<Vec<String>> {
            no("storage_volumes")
        }
        fn free_volume(&self, _: &str) -> host::Result<()> {
            no("free_volume")
        }
        fn zfs_children(&self, _: &DatasetName) -> host::Result<Vec<DatasetName>> {
            no("zfs_children")
        }
        fn gpus(&self) -> host::Result<Vec<Gpu>> {
            no("gpus")
        }
        fn pve_version(&self) -> host::Result<Option<(u32, u32, u32)>> {
            Ok(None)
        }
        fn dev_dir(&self) -> &Path {
            Path::new("/nonexistent/dev")
        }
        fn backup_dir(&self) -> PathBuf {
            PathBuf::from("/nonexistent/backup")
        }
        fn cgroup_mode(&self) -> crate::host::Result<crate::host::CgroupMode> {
            Err(HostError::Device("not a host".into()))
        }
    }

    /// The shipped example config (901 drdevstral, 902 gateway): the suite's one config
    /// fixture.
    const CONFIG: &str = include_str!("../../recipes/phoenix_lxc_configs.json");

    fn runtime(recipe_name: &str, selected: &[u32]) -> (Arc<Runtime>, tempfile::TempDir) {
        runtime_with(recipe_name, selected, &[])
    }

    fn runtime_with(
        recipe_name: &str,
        selected: &[u32],
        extra: &[(&str, &str)],
    ) -> (Arc<Runtime>, tempfile::TempDir) {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let key = tmp.path().join("secret.key");
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let env = move |k: &str| match k {
            "PHOENIX_STATE_DIR" => Some(state.display().to_string()),
            "PHOENIX_SECRET_KEY" => Some(key.display().to_string()),
            _ => extra.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
        };
        let settings = Settings::resolve_with(&FlagOverrides::default(), &env).unwrap();
        let config = crate::config::load_str(Path::new("lxc.json"), CONFIG).unwrap();
        let redactor = Redactor::default();
        let rt = Runtime {
            secrets: SecretStore::new(&settings, redactor.clone()),
            settings,
            config: Arc::new(config),
            selected: selected
                .iter()
                .map(|v| Vmid::new(u64::from(*v)).unwrap())
                .collect(),
            recipe_name: recipe_name.to_owned(),
            host: Arc::new(NoHost),
            journal: Journal::in_memory("test-run"),
            redactor,
            dry_run: false,
            plan: None,
            cancel: CancelFlag::default(),
            run_id: "test-run".to_owned(),
            notes: crate::plan::Notes::default(),
            progress: crate::progress::Tracker::default(),
        };
        (Arc::new(rt), tmp)
    }

    fn compile_with(src: &str, modules: &[(&str, &str)]) -> (Recipe, tempfile::TempDir) {
        let lib = tempfile::tempdir().unwrap();
        for (name, text) in modules {
            std::fs::write(lib.path().join(format!("{name}.rhai")), text).unwrap();
        }
        let stdlib = if modules.is_empty() {
            Stdlib::Embedded
        } else {
            Stdlib::Dir(lib.path().to_owned())
        };
        let r = Recipe::compile(Path::new("recipes/test.rhai"), src, &stdlib).unwrap();
        (r, lib)
    }

    fn eval_array(recipe: &Recipe, rt: &Arc<Runtime>) -> Array {
        recipe
            .engine(rt)
            .eval_ast_with_scope::<Array>(&mut Scope::new(), &recipe.ast)
            .unwrap_or_else(|e| panic!("{}", recipe.error(&e)))
    }

    #[test]
    fn every_handle_resolves_at_top_level_in_fns_and_in_stdlib_modules() {
        let (rt, _t) = runtime("test.rhai", &[]);
        let expected: Vec<String> = crate::api::handles(&rt)
            .iter()
            .map(|(_, h)| rt_type_name(h))
            .collect();
        for (i, name) in crate::api::HANDLE_NAMES.iter().enumerate() {
            let module = format!("fn get() {{ {name} }}\nfn nested() {{ get() }}\n");
            let src = format!(
                "import \"m\" as m;\nfn f() {{ {name} }}\n\
                 [type_of({name}), type_of(f()), type_of(m::get()), type_of(m::nested())]"
            );
            let (recipe, _lib) = compile_with(&src, &[("m", &module)]);
            let got: Vec<String> = eval_array(&recipe, &rt)
                .into_iter()
                .map(|d| d.into_string().unwrap())
                .collect();
            assert_eq!(got, vec![expected[i].clone(); 4], "{name}");
        }
    }

    fn rt_type_name(h: &Dynamic) -> String {
        let e = engine::new_engine(EngineOptions::default());
        e.map_type_name(h.type_name()).to_owned()
    }

    #[test]
    fn handle_types_match_the_handles() {
        let (rt, _t) = runtime("test.rhai", &[]);
        let handles: Vec<(&str, std::any::TypeId)> = crate::api::handles(&rt)
            .iter()
            .map(|(n, h)| (*n, h.type_id()))
            .collect();
        assert_eq!(handles, crate::api::handle_types());
        let names: Vec<&str> = handles.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, crate::api::HANDLE_NAMES);
    }

    #[test]
    fn a_local_variable_shadows_a_handle() {
        let (rt, _t) = runtime("test.rhai", &[]);
        let (recipe, _l) = compile_with("let config = 5; fn f(lxc) { lxc } [config, f(7)]", &[]);
        let got: Vec<i64> = eval_array(&recipe, &rt)
            .into_iter()
            .map(|d| d.as_int().unwrap())
            .collect();
        assert_eq!(got, [5, 7]);
    }

    #[test]
    fn config_methods_work_in_fns_and_stdlib_modules() {
        let (rt, _t) = runtime("drdevstral.rhai", &[]);
        let module = "fn target_vmid() { config.target().vmid }\n\
                      fn note(x) { log.info(`note ${x}`); x }\n";
        let src = "import \"m\" as m;\n\
                   fn name_of(id) { config.lxc(id).name }\n\
                   let t = config.target();\n\
                   [t.vmid, m::target_vmid(), name_of(902), config.lxc(\"902\").cores,\n\
                    config.ids(), t.vllm_model, t.gpus, t.network_config.ip,\n\
                    config.lxc(902).vllm_model, m::note(1), t.features.nesting,\n\
                    config.lxc(902).features.nesting]";
        let (recipe, _lib) = compile_with(src, &[("m", module)]);
        let got = eval_array(&recipe, &rt);
        let shown: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "901",
                "901",
                "gateway",
                "2",
                "[901, 902]",
                "mistralai/Devstral-Small-2507",
                "0,1",
                "10.0.0.111/24",
                "",
                "1",
                "true",
                // No `features` in entry 902: phoenix adds none of its own.
                "false"
            ]
        );
    }

    #[test]
    fn the_steps_module_serves_recipes() {
        let (rt, _t) = runtime("drdevstral.rhai", &[]);
        let src = "import \"steps\" as steps;\n\
                   let all = steps::targets([902, \"901\"]);\n\
                   let label = steps::begin(config.target(), \"install docker\");\n\
                   steps::finish(label);\n\
                   [steps::targets([])[0].vmid, all[0].vmid, all[1].vmid, label,\n\
                    steps::serves_vllm(all[1]), steps::serves_vllm(all[0]),\n\
                    steps::gpu_selector(all[1]), steps::gpu_selector(all[0])]";
        let recipe =
            Recipe::from_source(Path::new("drdevstral.rhai"), src, &Stdlib::Embedded).unwrap();
        let shown: Vec<String> = eval_array(&recipe, &rt)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            [
                "901",
                "902",
                "901",
                "901/drdevstral: install docker",
                "true",
                "false",
                "0,1",
                ""
            ]
        );
    }

    #[test]
    fn lxc_selection_wins_and_no_default_is_an_error_naming_the_choice() {
        let (rt, _t) = runtime("other.rhai", &[902]);
        let (recipe, _l) = compile_with("[config.target().vmid]", &[]);
        assert_eq!(eval_array(&recipe, &rt)[0].as_int().unwrap(), 902);
        let (rt, _t) = runtime("other.rhai", &[]);
        let (recipe, _l) = compile_with("config.target();", &[]);
        let err = recipe.run(&rt).unwrap_err();
        assert_eq!(
            err.to_string(),
            "recipes/test.rhai:1:8: config.target failed"
        );
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert_eq!(
            cause,
            "config.target: no default entry: lxc.json has 2 entries and none names recipe `other.rhai`; choose with --lxc"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn api_errors_keep_the_recipe_line_the_call_and_the_typed_cause() {
        let (rt, _t) = runtime("drdevstral.rhai", &[]);
        let module = "fn pick(id) {\n  let x = 1;\n  config.lxc(id)\n}\n";
        let src = "import \"m\" as m;\nfn deploy() { m::pick(999) }\n\nlet a = 1;\n  deploy();\n";
        let (recipe, _lib) = compile_with(src, &[("m", module)]);
        let err = recipe.run(&rt).unwrap_err();
        let RecipeError::Api {
            line,
            column,
            call,
            source,
            trace,
            ..
        } = &err
        else {
            panic!("{err:?}")
        };
        assert_eq!((*line, *column), (5, 3));
        assert_eq!(call, "config.lxc");
        assert!(matches!(
            **source,
            ApiError::Spec {
                call: "config.lxc",
                ..
            }
        ));
        assert_eq!(
            trace.0,
            [
                ("deploy".to_owned(), "recipes/test.rhai".to_owned(), 2, 18),
                ("pick".to_owned(), "stdlib/m.rhai".to_owned(), 3, 10),
            ]
        );
        assert_eq!(
            err.to_string(),
            "recipes/test.rhai:5:3: config.lxc failed in fn deploy at recipes/test.rhai:2:18 in fn pick at stdlib/m.rhai:3:10"
        );
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "config.lxc: no entry 999 in lxc.json (ids: 901, 902)"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn a_loop_of_string_operations_stops_at_the_cpu_budget() {
        // Each operation is a copy of a ~1 MB string: few operations, much CPU. Rhai's
        // operation limit (1,000,000) would let this run for minutes.
        let (rt, _t) = runtime_with("test.rhai", &[], &[("PHOENIX_SCRIPT_CPU", "300ms")]);
        let src = "let s = \"x\";\nwhile s.len() < 500000 { s += s; }\nlet n = 0;\nloop { let t = s + \"y\"; n += t.len(); }";
        let recipe =
            Recipe::from_source(Path::new("recipes/spin.rhai"), src, &Stdlib::Embedded).unwrap();
        let err = recipe.run(&rt).unwrap_err();
        let text = err.to_string();
        // It stops somewhere in the loop on line 4.
        assert!(text.starts_with("recipes/spin.rhai:4:"), "{text}");
        assert!(
            text.ends_with(": sandbox limit: the recipe's own code used more than 300ms of CPU time between primitive calls (setting script_cpu, PHOENIX_SCRIPT_CPU)"),
            "{text}"
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn closures_holding_large_strings_stop_at_the_memory_cap() {
        // Rhai counts strings, arrays and maps, not what a closure captures: 200 closures
        // each holding its own ~0.5 MB string pass every Rhai limit.
        let (rt, _t) = runtime_with("test.rhai", &[], &[("PHOENIX_SCRIPT_MEMORY", "32m")]);
        let src = "let s = \"x\";\nwhile s.len() < 500000 { s += s; }\nlet keep = [];\nfor i in 0..200 { let t = s + i; keep.push(|| t.len()); }";
        let recipe =
            Recipe::from_source(Path::new("recipes/hoard.rhai"), src, &Stdlib::Embedded).unwrap();
        let err = recipe.run(&rt).unwrap_err();
        let text = err.to_string();
        assert!(
            text.ends_with("sandbox limit: the recipe holds more than 32 MiB of memory (values, closures and what they capture; setting script_memory, PHOENIX_SCRIPT_MEMORY)"),
            "{text}"
        );
        // The same script with room to spare finishes: the cap, not the script, stopped it.
        let (rt, _t) = runtime_with("test.rhai", &[], &[("PHOENIX_SCRIPT_MEMORY", "512m")]);
        recipe.run(&rt).unwrap();
    }

    /// Run `src`; the sandbox must stop it. Returns the error (its text names the limit).
    fn stopped(src: &str) -> RecipeError {
        let (rt, _t) = runtime("test.rhai", &[]);
        let err = match Recipe::from_source(Path::new("recipes/bad.rhai"), src, &Stdlib::Embedded) {
            Ok(recipe) => recipe.run(&rt).expect_err(src),
            Err(e) => e,
        };
        assert_ne!(err.exit_code(), 0);
        err
    }

    #[test]
    fn adversarial_recipes_are_stopped_by_the_sandbox() {
        let cases: &[(&str, &str, u8)] = &[
            (
                "loop {}",
                "recipes/bad.rhai:1:6: sandbox limit: the recipe ran more than 1000000 operations (a runaway loop?)",
                1,
            ),
            (
                "fn r(n) { r(n + 1) }\nr(0);",
                "recipes/bad.rhai:2:1: sandbox limit: calls nested deeper than 32 levels (unbounded recursion?)",
                1,
            ),
            (
                "let s = \"xxxxxxxxxx\";\nwhile true { s += s; }",
                "recipes/bad.rhai:2:16: sandbox limit: length of string too large (strings ≤ 1048576 bytes, arrays ≤ 10000 elements, maps ≤ 1000 entries)",
                1,
            ),
            (
                "let a = [];\na.pad(10000000, 0);",
                "recipes/bad.rhai:2:3: sandbox limit: size of array/BLOB too large (strings ≤ 1048576 bytes, arrays ≤ 10000 elements, maps ≤ 1000 entries)",
                1,
            ),
            ("eval(\"1 + 1\");", "recipes/bad.rhai:1:1: ", 2),
            (
                "import \"/etc/passwd\" as p;",
                "recipes/bad.rhai:1:1: cannot import \"/etc/passwd\"",
                2,
            ),
            (
                "\nimport \"../../x\" as x;",
                "recipes/bad.rhai:2:1: cannot import \"../../x\"",
                2,
            ),
            (
                "import \"nosuch\" as x;",
                "recipes/bad.rhai:1:1: cannot import \"nosuch\"",
                2,
            ),
            (
                "let n = \"steps\";\nimport n as x;",
                "recipes/bad.rhai:2:1: cannot import \"(computed at run time)\"",
                2,
            ),
            (
                "let x = 1;\nopen_file(\"/etc/shadow\");\nlxc.nosuch();",
                "recipes/bad.rhai:2:1: unknown function `open_file` (and 1 more: run `phoenix recipe lint` for all)",
                2,
            ),
            (
                "sleep(3600);",
                "recipes/bad.rhai:1:1: `sleep` is not available in recipes: it blocks without limit",
                2,
            ),
            (
                "let f = Fn(\"sleep\");\nf.call(3600);",
                "recipes/bad.rhai:2:3: `sleep` is not available in recipes: it blocks without limit",
                1,
            ),
            (
                "let f = Fn(\"open_file\");\nf.call(\"/etc/shadow\");",
                "recipes/bad.rhai:2:3: no such function or method: open_file (&str | ImmutableString | String)",
                1,
            ),
        ];
        for (src, message, code) in cases {
            let err = stopped(src);
            assert!(
                err.to_string().starts_with(message),
                "{src}:\n  got  {err}\n  want {message}"
            );
            assert_eq!(err.exit_code(), *code, "{src}");
        }
    }

    #[test]
    fn certain_lint_errors_refuse_the_recipe_but_doubtful_ones_do_not() {
        let err =
            stopped("fn provision(ct) {\n  lxc.exec(ct, [\"sh\", \"-c\", \"curl x | sh\"]);\n}");
        assert!(
            err.to_string().starts_with(
                "recipes/bad.rhai:2:7: lxc.exec runs `sh`: phoenix never runs a shell"
            ),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
        // A method on an arbitrary value may be a fn pointer in a map: lint only.
        let src = "let m = #{ f: |x| x };\nlet y = m.f(1);";
        Recipe::from_source(Path::new("r.rhai"), src, &Stdlib::Embedded).unwrap();
    }

    #[test]
    fn eval_is_refused_at_compile_time_naming_it() {
        let err = stopped("let x = eval(\"40 + 2\");");
        let RecipeError::Compile { message, line, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*line, 1);
        assert!(message.contains("eval"), "{message}");
    }

    #[test]
    fn import_errors_carry_the_reason() {
        let err = stopped("import \"../../x\" as x;");
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "import \"../../x\" is not a stdlib module name: imports resolve only to modules of stdlib/ by plain name (e.g. \"steps\")"
        );
    }

    #[test]
    fn a_cancelled_run_stops_as_interrupted() {
        let (rt, _t) = runtime("test.rhai", &[]);
        rt.cancel.cancel();
        let (recipe, _l) = compile_with("let i = 0; loop { i += 1; }", &[]);
        let err = recipe.run(&rt).unwrap_err();
        assert!(
            matches!(err, RecipeError::Interrupted { signal: 2, .. }),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 130);
    }

    #[test]
    fn secret_use_is_seen_in_fns_and_imported_modules() {
        let (plain, _a) = compile_with("config.ids();", &[]);
        assert!(!plain.uses_secrets());
        let (direct, _b) = compile_with("fn f() { secret.get(\"hf_token\") }", &[]);
        assert!(direct.uses_secrets());
        let (via, _c) = compile_with(
            "import \"m\" as m;",
            &[
                ("m", "import \"n\" as n;"),
                ("n", "fn t() { secret.get(\"x\") }"),
            ],
        );
        assert!(via.uses_secrets());
        assert_eq!(via.modules.len(), 2);
        assert_eq!(via.secret_names(), ["x"]);
        let (many, _d) = compile_with(
            "let n = \"dyn\"; secret.get(\"b\"); secret.get(\"a\"); secret.get(n); secret.get(\"b\"); secret.has(\"c\");",
            &[],
        );
        assert_eq!(many.secret_names(), ["a", "b"]);
    }

    #[test]
    fn a_thrown_value_is_a_run_failure_with_its_text() {
        let err = stopped("\nthrow \"no GPUs left\";");
        assert_eq!(
            err.to_string(),
            "recipes/bad.rhai:2:1: the recipe threw: no GPUs left"
        );
    }

    #[test]
    fn log_lines_are_redacted() {
        let (rt, _t) = runtime("test.rhai", &[]);
        rt.redactor
            .register("hf_token", "hf_abcdefghijklmnopqrstuvwx");
        let api = crate::api::log::LogApi::new(&rt);
        assert_eq!(
            crate::api::log::emit(
                &api,
                crate::api::log::Level::Info,
                "token hf_abcdefghijklmnopqrstuvwx here"
            ),
            "token «secret:hf_token» here"
        );
    }
}

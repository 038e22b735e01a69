//! The one constructor of the recipe engine: sandbox limits, imports, API handles, logging.
//!
//! Every Rhai [`Engine`] phoenix uses comes from [`new_engine`], so `recipe run`, `recipe
//! lint` and `recipe api` see the same language and the same registered calls.
//!
//! - **Limits** ([`limits`]): operations, call depth, expression depth, string, array and
//!   map sizes, modules, variables and functions. A runaway recipe stops with an error well
//!   within a second, in debug builds too. On top, the boundary's meter
//!   ([`crate::boundary::limits::ScriptMeter`]) stops a script past its CPU budget or its
//!   memory cap, closures and captured values included.
//! - **Language**: strict variables (an undefined name is a compile error), `eval` disabled
//!   (a compile error), no optimisation (the AST stays as written, so lint positions are
//!   exact and the handle names given to the compiler as constants are never folded).
//! - **No outside world**: Rhai itself has no file, process, network or environment access;
//!   phoenix registers none. `print`/`debug` go to the tracing logger with the recipe name,
//!   through the run's [`Redactor`]. The only way a recipe reaches the host is an API handle.
//! - **Imports** resolve only to modules of the stdlib ([`super::stdlib`]) through
//!   [`StdlibResolver`], never through Rhai's `FileModuleResolver` (which accepts `..` and
//!   absolute paths).
//! - **API handles** (`lxc`, `config`, …) are handed out by the engine's variable resolver
//!   (`on_var`), so they work at top level, inside `fn`s and inside stdlib modules (DESIGN.md
//!   §10); a local variable of the same name shadows them. For compiling, the names are
//!   given to the parser as external constants ([`compile_scope`]) so strict variables
//!   accept them.
//! - **Cost**: Rhai's standard package (several hundred functions) is built once per
//!   process and shared by every engine, as Rhai's docs advise; recipes and modules are
//!   compiled and linted with one engine per process ([`compile_engine`]); a run's resolver
//!   takes the modules its recipe already compiled ([`StdlibResolver::with_compiled`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use rhai::module_resolvers::ModuleResolver;
use rhai::packages::{Package, StandardPackage};
use rhai::{AST, Dynamic, Engine, EvalAltResult, Module, OptimizationLevel, Position, Scope};

use crate::exec::{CancelFlag, Redactor};

use super::stdlib::{Stdlib, StdlibError};

/// The sandbox limits (decision: sized for recipes, which only sequence primitives; every
/// wait and loop over host state happens inside Rust primitives, not in script loops).
pub mod limits {
    /// Script operations per run. ≈ 0.2 s of pure script in a debug build.
    pub const MAX_OPERATIONS: u64 = 1_000_000;
    /// Nested function calls (recursion depth).
    pub const MAX_CALL_LEVELS: usize = 32;
    /// Expression nesting at top level.
    pub const MAX_EXPR_DEPTH: usize = 64;
    /// Expression nesting inside functions.
    pub const MAX_FN_EXPR_DEPTH: usize = 32;
    /// Bytes in one string (a pushed unit file or config is far smaller).
    pub const MAX_STRING_SIZE: usize = 1 << 20;
    /// Elements in one array.
    pub const MAX_ARRAY_SIZE: usize = 10_000;
    /// Entries in one object map.
    pub const MAX_MAP_SIZE: usize = 1_000;
    /// Modules imported in one run.
    pub const MAX_MODULES: usize = 16;
    /// Variables in scope at once.
    pub const MAX_VARIABLES: usize = 1_000;
    /// Functions defined in one script.
    pub const MAX_FUNCTIONS: usize = 256;
    /// How often (in operations) the cancel flag is checked.
    pub const CANCEL_CHECK_EVERY: u64 = 256;
}

/// The token a cancelled run terminates with (seen in `ErrorTerminated`).
pub const CANCEL_TOKEN: &str = "phoenix:cancelled";

/// What an engine is built for.
#[derive(Clone, Default)]
pub struct EngineOptions {
    /// Where imports resolve.
    pub stdlib: Option<Stdlib>,
    /// Modules already compiled, `(name, source, ast)`: the resolver evaluates these
    /// instead of compiling them again ([`StdlibResolver::with_compiled`]).
    pub compiled: Vec<(String, String, Arc<AST>)>,
    /// The recipe's file name, on every `print`/`debug` line.
    pub recipe_name: String,
    /// Hides secret values in `print`/`debug` output.
    pub redactor: Redactor,
    /// Stops the script between operations once set (SIGINT/SIGTERM).
    pub cancel: Option<CancelFlag>,
    /// The API handles by name; empty for engines that only compile (lint, docs).
    pub handles: Vec<(&'static str, Dynamic)>,
    /// The run's CPU and memory meter (DESIGN.md §12); `None` for engines that only
    /// compile.
    pub meter: Option<Arc<crate::boundary::limits::ScriptMeter>>,
}

impl std::fmt::Debug for EngineOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineOptions")
            .field("stdlib", &self.stdlib)
            .field("recipe_name", &self.recipe_name)
            .field(
                "handles",
                &self.handles.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Rhai's standard package, built once per process and shared by every engine (building
/// it registers several hundred functions: most of what `Engine::new` costs).
fn standard_package() -> Arc<Module> {
    static PACKAGE: OnceLock<Arc<Module>> = OnceLock::new();
    Arc::clone(PACKAGE.get_or_init(|| StandardPackage::new().as_shared_module()))
}

/// Build the sandboxed engine with every API family registered.
pub fn new_engine(opts: EngineOptions) -> Engine {
    // What `Engine::new` does, with the standard package shared instead of rebuilt (its
    // default `print`/`debug` and file resolver are replaced below anyway).
    let mut engine = Engine::new_raw();
    engine.set_max_strings_interned(rhai::default_limits::MAX_STRINGS_INTERNED);
    engine.register_global_module(standard_package());
    engine
        .set_max_operations(limits::MAX_OPERATIONS)
        .set_max_call_levels(limits::MAX_CALL_LEVELS)
        .set_max_expr_depths(limits::MAX_EXPR_DEPTH, limits::MAX_FN_EXPR_DEPTH)
        .set_max_string_size(limits::MAX_STRING_SIZE)
        .set_max_array_size(limits::MAX_ARRAY_SIZE)
        .set_max_map_size(limits::MAX_MAP_SIZE)
        .set_max_modules(limits::MAX_MODULES)
        .set_max_variables(limits::MAX_VARIABLES)
        .set_max_functions(limits::MAX_FUNCTIONS)
        .set_strict_variables(true)
        .set_optimization_level(OptimizationLevel::None);
    engine.disable_symbol("eval");

    let name = opts.recipe_name.clone();
    let redactor = opts.redactor.clone();
    engine.on_print(move |text| {
        tracing::info!(recipe = %name, "{}", redactor.redact(text));
    });
    let name = opts.recipe_name.clone();
    let redactor = opts.redactor.clone();
    engine.on_debug(move |text, source, pos| {
        tracing::debug!(
            recipe = %name,
            source = source.unwrap_or_default(),
            line = pos.line().unwrap_or(0),
            "{}",
            redactor.redact(text)
        );
    });
    let cancel = opts.cancel.clone();
    let meter = opts.meter.clone();
    engine.on_progress(move |ops| {
        // Rhai swallows errors raised while interpolating or printing a Secret inside a
        // collection; the refusal is parked per thread and ends the script here.
        if let Some(misuse) = crate::api::secret::swallowed_misuse() {
            return Some(misuse);
        }
        if let Some(Err(over)) = meter.as_ref().map(|m| m.check(ops)) {
            return Some(Dynamic::from(over));
        }
        cancel.as_ref().and_then(|cancel| {
            (ops % limits::CANCEL_CHECK_EVERY == 0 && cancel.is_cancelled())
                .then(|| Dynamic::from(CANCEL_TOKEN))
        })
    });

    if !opts.handles.is_empty() {
        let handles: HashMap<&'static str, Dynamic> = opts.handles.into_iter().collect();
        // `on_var` is marked volatile (not deprecated) by Rhai; rhai is pinned exactly.
        #[allow(deprecated)]
        engine.on_var(move |name, index, _ctx| {
            // index > 0: a local variable of that name exists and shadows the handle.
            Ok(if index == 0 {
                handles.get(name).cloned()
            } else {
                None
            })
        });
    }

    engine.set_module_resolver(StdlibResolver::with_compiled(
        opts.stdlib.unwrap_or(Stdlib::Embedded),
        opts.compiled,
    ));
    // Rhai's core package has `sleep(seconds)`, which blocks without counting operations:
    // a recipe could hang the run forever. Waits belong to primitives, which honour SIGINT.
    for (name, why) in UNAVAILABLE {
        engine.register_fn(
            *name,
            move |_: rhai::INT| -> Result<(), Box<EvalAltResult>> { Err(unavailable(name, why)) },
        );
        engine.register_fn(
            *name,
            move |_: rhai::FLOAT| -> Result<(), Box<EvalAltResult>> { Err(unavailable(name, why)) },
        );
    }
    crate::api::register_all(&mut engine);
    engine
}

/// Functions of Rhai's standard library that recipes must not use, with the reason.
pub const UNAVAILABLE: &[(&str, &str)] = &[(
    "sleep",
    "it blocks without limit; waits belong to primitives (lxc.start waits for `running`)",
)];

/// A standard function a recipe may not call (raised inside the engine).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not available in recipes: {why}")]
pub struct Unavailable {
    /// The function.
    pub name: &'static str,
    /// Why, and what to use instead.
    pub why: &'static str,
}

fn unavailable(name: &'static str, why: &'static str) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(Unavailable { name, why }), Position::NONE).into()
}

/// The scope recipes and modules are compiled with: every API handle name as a constant,
/// so strict variables accept them. Never run with it (the values are placeholders).
pub fn compile_scope() -> Scope<'static> {
    let mut scope = Scope::new();
    for name in crate::api::HANDLE_NAMES {
        scope.push_constant(*name, ());
    }
    scope
}

/// The engine recipes and modules are compiled and linted with, built once per process:
/// [`new_engine`] with no handles and no run state. It resolves no import (compiling never
/// does; the stdlib is the resolver's, [`StdlibResolver`]), so one serves every library.
/// Never run a recipe with it.
pub fn compile_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| new_engine(EngineOptions::default()))
}

/// Compile `source` the way every recipe and module is compiled.
pub fn compile(engine: &Engine, source: &str) -> Result<AST, rhai::ParseError> {
    engine.compile_with_scope(&compile_scope(), source)
}

/// Resolves `import "name"` to a stdlib module, and nothing else.
///
/// Modules are compiled and evaluated on first import and cached for the engine's life.
/// An import cycle is an error instead of a stack overflow. A module given compiled
/// ([`StdlibResolver::with_compiled`]) is not compiled again while its source is unchanged.
pub struct StdlibResolver {
    stdlib: Stdlib,
    compiled: HashMap<String, (String, Arc<AST>)>,
    cache: Mutex<HashMap<String, Arc<Module>>>,
    loading: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for StdlibResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdlibResolver")
            .field("stdlib", &self.stdlib)
            .finish_non_exhaustive()
    }
}

/// An import failure as raised inside the engine (the runner downcasts it).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ImportError {
    /// The name does not resolve.
    #[error(transparent)]
    Stdlib(#[from] StdlibError),
    /// The module does not compile.
    #[error("stdlib module \"{name}\" does not compile: {line}:{column}: {message}")]
    Compile {
        /// The module.
        name: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Rhai's message.
        message: String,
    },
    /// The import path is computed at run time, so it cannot be checked before the run.
    #[error("an import path must be a string literal naming a stdlib module")]
    NotLiteral,
    /// Modules import each other in a cycle.
    #[error("stdlib module \"{name}\" imports itself (directly or through another module)")]
    Cycle {
        /// The module.
        name: String,
    },
}

impl StdlibResolver {
    /// A resolver over `stdlib`.
    pub fn new(stdlib: Stdlib) -> Self {
        Self::with_compiled(stdlib, Vec::new())
    }

    /// A resolver over `stdlib` that already has `compiled` modules: `(name, source, ast)`,
    /// as [`StdlibResolver::compile_module`] made them. The module's source is still read
    /// on import; only when it is the source given here is the compiled form used.
    pub fn with_compiled(stdlib: Stdlib, compiled: Vec<(String, String, Arc<AST>)>) -> Self {
        Self {
            stdlib,
            compiled: compiled
                .into_iter()
                .map(|(name, source, ast)| (name, (source, ast)))
                .collect(),
            cache: Mutex::new(HashMap::new()),
            loading: Mutex::new(BTreeSet::new()),
        }
    }

    /// The compiled module `name` (not evaluated), named `stdlib/<name>.rhai`.
    pub fn compile_module(
        &self,
        engine: &Engine,
        name: &str,
    ) -> Result<(AST, String), ImportError> {
        let source = self.stdlib.source(name)?;
        self.compile_source(engine, name, source)
    }

    /// [`StdlibResolver::compile_module`], sharing the compiled form given to
    /// [`StdlibResolver::with_compiled`] when the source is the same.
    fn compile_shared(&self, engine: &Engine, name: &str) -> Result<Arc<AST>, ImportError> {
        let source = self.stdlib.source(name)?;
        match self.compiled.get(name) {
            Some((known, ast)) if *known == source => Ok(Arc::clone(ast)),
            _ => self
                .compile_source(engine, name, source)
                .map(|(ast, _)| Arc::new(ast)),
        }
    }

    fn compile_source(
        &self,
        engine: &Engine,
        name: &str,
        source: String,
    ) -> Result<(AST, String), ImportError> {
        let mut ast = compile(engine, &source).map_err(|e| ImportError::Compile {
            name: name.to_owned(),
            line: e.position().line().unwrap_or(0),
            column: e.position().position().unwrap_or(0),
            message: e.err_type().to_string(),
        })?;
        ast.set_source(format!("stdlib/{name}.rhai"));
        Ok((ast, source))
    }
}

fn raise(err: ImportError, pos: Position) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(err), pos).into()
}

impl ModuleResolver for StdlibResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Arc<Module>, Box<EvalAltResult>> {
        if let Some(m) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Ok(Arc::clone(m));
        }
        if !self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned())
        {
            return Err(raise(
                ImportError::Cycle {
                    name: path.to_owned(),
                },
                pos,
            ));
        }
        let result = self
            .compile_shared(engine, path)
            .map_err(|e| raise(e, pos))
            .and_then(|ast| {
                Module::eval_ast_as_new(Scope::new(), &ast, engine)
                    .map_err(|e| EvalAltResult::ErrorInModule(path.to_owned(), e, pos).into())
            });
        self.loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path);
        let module: Arc<Module> = result?.into();
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), Arc::clone(&module));
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        new_engine(EngineOptions::default())
    }

    #[test]
    fn eval_is_a_compile_error() {
        let err = compile(&engine(), "eval(\"1 + 1\")").unwrap_err();
        assert!(err.to_string().contains("eval"), "{err}");
    }

    #[test]
    fn undefined_variable_is_a_compile_error_but_handles_are_defined() {
        let e = engine();
        let err = compile(&e, "let a = nope + 1;").unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        compile(&e, "fn f() { lxc } let x = config; let y = f();").unwrap();
    }

    #[test]
    fn sleep_is_not_available() {
        for src in [
            "sleep(30);",
            "sleep(30.0);",
            "let f = Fn(\"sleep\"); f.call(30);",
        ] {
            let err = engine().run(src).unwrap_err();
            let EvalAltResult::ErrorRuntime(value, _) = err.unwrap_inner() else {
                panic!("{err:?}")
            };
            assert_eq!(
                value.clone().try_cast::<Unavailable>().unwrap().name,
                "sleep"
            );
        }
    }

    #[test]
    fn print_goes_nowhere_but_the_logger() {
        /// The log lines, captured.
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Capture::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let redactor = Redactor::default();
        redactor.register("hf_token", "hf_SecretValue123");
        let e = new_engine(EngineOptions {
            recipe_name: "r.rhai".into(),
            redactor,
            ..EngineOptions::default()
        });
        tracing::subscriber::with_default(subscriber, || {
            e.run("print(\"hello hf_SecretValue123\"); debug(\"there\");")
                .unwrap();
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let print = text.lines().find(|l| l.contains("hello")).expect(&text);
        assert!(
            print.contains("INFO") && print.contains("recipe=r.rhai"),
            "{print}"
        );
        assert!(!text.contains("hf_SecretValue123"), "{text}");
        let debug = text.lines().find(|l| l.contains("there")).expect(&text);
        assert!(
            debug.contains("DEBUG") && debug.contains("line=1"),
            "{debug}"
        );
    }

    #[test]
    fn import_cycle_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.rhai"), "import \"b\" as b;").unwrap();
        std::fs::write(tmp.path().join("b.rhai"), "import \"a\" as a;").unwrap();
        let e = new_engine(EngineOptions {
            stdlib: Some(Stdlib::Dir(tmp.path().to_owned())),
            ..EngineOptions::default()
        });
        let err = e.run("import \"a\" as a;").unwrap_err();
        let EvalAltResult::ErrorRuntime(value, _) = err.unwrap_inner() else {
            panic!("{err:?}")
        };
        let cause = value.clone().try_cast::<ImportError>().unwrap();
        assert_eq!(
            cause.to_string(),
            "stdlib module \"a\" imports itself (directly or through another module)"
        );
    }
}

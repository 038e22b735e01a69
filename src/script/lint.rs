//! `phoenix recipe lint`: find recipe mistakes before anything runs.
//!
//! Checks, each a finding with file:line:column:
//! - `compile`: the recipe does not compile (Rhai stops at the first such error);
//!   `undefined-variable` is the compile error of a name that is neither a local, a
//!   parameter nor an API handle (the engine runs in strict-variables mode).
//! - `import`: an import that is not a literal stdlib module name, or whose module is
//!   missing or does not compile.
//! - `unknown-function` / `unknown-method` / `arity`: calls to functions or methods that do
//!   not exist, or with the wrong number of arguments. What exists comes from the engine's
//!   own metadata (every registered function with its parameter types, standard library
//!   included), the script's own `fn`s and the `fn`s of imported stdlib modules; a method on
//!   an API handle (`lxc.create(x)`) must be registered for that handle's type.
//! - `shell`: a literal shell as argv\[0\] of `lxc.exec` (`sh`, `bash`, `/bin/sh`, `busybox
//!   sh`, `env bash` …): phoenix never runs a shell (DESIGN.md §1). The same test is
//!   [`shell_in_argv`], the boundary's rule for the primitive's run-time refusal
//!   ([`crate::boundary::argv`]).
//! - `interpreter` (warning): `lxc.exec` hands an interpreter code in a string (`python3
//!   -c`, `perl -e`, `awk '…system…'`). Legal — the shell rule is against injection, not a
//!   sandbox — but such a string is a program nobody reviews as one.
//! - `unavailable`: a standard Rhai function recipes may not use (`sleep`).
//! - `credential` (warning): a string literal that looks like a token or key.
//! - `option` / `duration`: a literal options map passed to a primitive
//!   ([`crate::api::options`]) with a key it does not know (with the closest known key), or
//!   a duration the run would refuse — parsed by [`crate::types::DurationSpec`], the run's
//!   own parser (`humantime`: `"10 min"` passes, `"10 minutes please"` does not).
//! - `mode`: a literal file mode of `lxc.push` that the run refuses (`644` is 0o1204: the
//!   boundary's own check, [`crate::boundary::values::file_mode`], with its hint `0o644`);
//!   a warning for a mode written in decimal that the run would take as another mode
//!   (`444` is 0o674).
//! - `read`: a file that cannot be read, named.
//!
//! Syntax errors point where the mistake is, not where the parser gave up: a missing `;`
//! at the end of the statement before, a missing `}`/`]`/`)` at the unclosed opener.
//!
//! Output: `human` shows each finding with its source line and a caret
//! (`annotate-snippets`), plus a `help:` line where there is a fix to suggest.
//! Exit status: 1 when any error was found (with `--deny-warnings`, any warning too), 0
//! otherwise.

use std::any::TypeId;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use regex::Regex;
use rhai::{Engine, ParseErrorType, Position};
use serde::Serialize;

use super::engine::{self, StdlibResolver};
use super::facts::{CallKind, CallSite, Facts, Literal};
use super::stdlib::Stdlib;

pub use crate::boundary::argv::{SHELLS, WRAPPERS, shell_in_argv};

/// Functions Rhai handles as keywords rather than through its function registry.
const KEYWORDS: &[&str] = &[
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_fn",
    "is_def_var",
];

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Makes lint fail.
    Error,
    /// Reported; lint still passes.
    Warning,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// One problem in a recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file as given on the command line.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Error or warning.
    pub severity: Severity,
    /// Which check (`compile`, `import`, `unknown-function`, `arity`, `shell`, …).
    pub rule: &'static str,
    /// What is wrong and what to do.
    pub message: String,
    /// What to write instead, when there is one fix (`0o644`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The source line the finding points at (for the snippet).
    #[serde(skip)]
    pub source_line: Option<String>,
    /// Whether `recipe run` refuses the recipe for it before touching anything: true for
    /// findings that cannot be false alarms (a shell argv, a call to an API handle method,
    /// a plain or module function that does not exist or gets the wrong arguments).
    #[serde(skip)]
    pub blocks_run: bool,
}

impl Finding {
    /// A finding at `pos` in `file`, without a hint or source line yet.
    fn at(
        file: &str,
        pos: Position,
        severity: Severity,
        rule: &'static str,
        message: String,
        blocks_run: bool,
    ) -> Self {
        Self {
            file: file.to_owned(),
            line: pos.line().unwrap_or(0),
            column: pos.position().unwrap_or(0),
            severity,
            rule,
            message,
            hint: None,
            source_line: None,
            blocks_run,
        }
    }
}

/// Output formats of `recipe lint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `file:line:col: error: message`.
    #[default]
    Human,
    /// A JSON array of findings.
    Json,
    /// GitHub Actions workflow commands (`::error file=…,line=…,col=…::message`).
    Github,
}

/// A registered function as lint sees it.
#[derive(Debug, Clone)]
struct Signature {
    params: usize,
    first: Option<TypeId>,
}

/// Lints recipes against one engine's registered functions.
pub struct Linter {
    tables: Arc<Tables>,
    resolver: StdlibResolver,
}

/// What a linter knows of the engine: built once per process for [`engine::compile_engine`].
struct Tables {
    engine: EngineRef,
    natives: HashMap<String, Vec<Signature>>,
    handles: HashMap<&'static str, TypeId>,
}

/// A pattern of a credential in a string literal (rule `credential`).
struct Credential {
    /// Literal text every match contains: the pattern runs only on a string holding one, so
    /// it is compiled only when a recipe has such a string (most have none, and compiling
    /// the six patterns was a visible part of a process's start).
    needles: &'static [&'static str],
    pattern: &'static str,
    /// What a match looks like, for the message.
    what: &'static str,
    regex: OnceLock<Regex>,
}

impl Credential {
    const fn new(
        needles: &'static [&'static str],
        pattern: &'static str,
        what: &'static str,
    ) -> Self {
        Self {
            needles,
            pattern,
            what,
            regex: OnceLock::new(),
        }
    }

    fn matches(&self, text: &str) -> bool {
        self.needles.iter().any(|n| text.contains(n))
            && self
                .regex
                .get_or_init(|| Regex::new(self.pattern).expect("credential pattern compiles"))
                .is_match(text)
    }
}

/// The credentials the linter recognises, first match wins.
static CREDENTIALS: [Credential; 6] = [
    Credential::new(&["hf_"], r"hf_[A-Za-z0-9]{20,}", "a Hugging Face token"),
    Credential::new(
        &["-----BEGIN "],
        r"-----BEGIN [A-Z ]*(PRIVATE KEY|CERTIFICATE)",
        "a PEM key",
    ),
    Credential::new(
        &["AKIA", "ASIA"],
        r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",
        "an AWS access key id",
    ),
    Credential::new(
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        r"\bgh[pousr]_[A-Za-z0-9]{30,}",
        "a GitHub token",
    ),
    Credential::new(&["sk-"], r"\bsk-[A-Za-z0-9_-]{20,}", "an API secret key"),
    Credential::new(
        &["AGE-SECRET-KEY-1"],
        r"AGE-SECRET-KEY-1[0-9A-Z]{50,}",
        "an age secret key",
    ),
];

/// The engine a linter compiles with: the process's compile engine or one given.
enum EngineRef {
    Shared(&'static Engine),
    Own(Box<Engine>),
}

impl std::ops::Deref for EngineRef {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        match self {
            Self::Shared(e) => e,
            Self::Own(e) => e,
        }
    }
}

impl std::fmt::Debug for Linter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Linter")
            .field("functions", &self.tables.natives.len())
            .finish_non_exhaustive()
    }
}

/// What [`Linter::lint_compiled`] asks about an import: the functions of the stdlib module
/// it names ([`functions_of`]), or why it cannot be imported.
pub type ModuleFns<'a> = dyn Fn(&str) -> Result<Vec<(String, usize)>, engine::ImportError> + 'a;

/// The functions a compiled module defines: `(name, number of parameters)`.
pub fn functions_of(ast: &rhai::AST) -> Vec<(String, usize)> {
    ast.iter_functions()
        .map(|f| (f.name.to_owned(), f.params.len()))
        .collect()
}

impl Tables {
    fn of(engine: EngineRef) -> Self {
        let mut natives: HashMap<String, Vec<Signature>> = HashMap::new();
        for (name, sig) in engine.collect_fn_metadata(
            None,
            |info| {
                Some((
                    info.metadata.name.to_string(),
                    Signature {
                        params: info.metadata.num_params,
                        first: info.metadata.param_types.first().copied(),
                    },
                ))
            },
            true,
        ) {
            natives.entry(name).or_default().push(sig);
        }
        Self {
            engine,
            natives,
            handles: crate::api::handle_types().into_iter().collect(),
        }
    }
}

impl Linter {
    /// A linter for the engine `recipe run` uses, with imports from `stdlib`. What it knows
    /// of the engine is gathered once per process.
    pub fn new(stdlib: Stdlib) -> Self {
        static TABLES: OnceLock<Arc<Tables>> = OnceLock::new();
        let tables = TABLES
            .get_or_init(|| Arc::new(Tables::of(EngineRef::Shared(engine::compile_engine()))));
        Self {
            tables: Arc::clone(tables),
            resolver: StdlibResolver::new(stdlib),
        }
    }

    /// A linter for `engine` (which must come from [`engine::new_engine`]).
    pub fn with_engine(engine: Engine, stdlib: Stdlib) -> Self {
        Self {
            tables: Arc::new(Tables::of(EngineRef::Own(Box::new(engine)))),
            resolver: StdlibResolver::new(stdlib),
        }
    }

    /// Lint every path: a file, or a directory whose `*.rhai` files are linted.
    pub fn lint_paths(&self, paths: &[PathBuf]) -> Vec<Finding> {
        let mut out = Vec::new();
        for path in paths {
            if path.is_dir() {
                let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
                    .collect();
                files.sort();
                for file in files {
                    out.extend(self.lint_file(&file));
                }
            } else {
                out.extend(self.lint_file(path));
            }
        }
        out
    }

    /// Lint one file; a file that cannot be read is an error finding (rule `read`).
    pub fn lint_file(&self, path: &Path) -> Vec<Finding> {
        match crate::boundary::limits::read_input_text(path, crate::boundary::limits::Input::Recipe)
        {
            Ok(source) => self.lint_source(&path.display().to_string(), &source),
            Err(e) => vec![Finding::at(
                &path.display().to_string(),
                Position::NONE,
                Severity::Error,
                "read",
                format!("cannot read {}: {}", path.display(), read_error(&e)),
                true,
            )],
        }
    }

    /// Lint `source`, reporting it as `file`.
    pub fn lint_source(&self, file: &str, source: &str) -> Vec<Finding> {
        let compiler: &Engine = &self.tables.engine;
        match engine::compile(compiler, source) {
            Ok(ast) => {
                let module_fns = |name: &str| {
                    self.resolver
                        .compile_module(compiler, name)
                        .map(|(ast, _)| functions_of(&ast))
                };
                self.lint_compiled(file, source, &Facts::of(&ast), &module_fns)
            }
            Err(e) => {
                let (pos, hint) = syntax_position(source, e.err_type(), e.position());
                let (rule, message) = match e.err_type() {
                    ParseErrorType::VariableUndefined(name) => (
                        "undefined-variable",
                        format!(
                            "undefined variable `{name}` (API objects: {})",
                            crate::api::HANDLE_NAMES.join(", ")
                        ),
                    ),
                    other => ("compile", other.to_string()),
                };
                let finding = Finding {
                    hint,
                    ..Finding::at(file, pos, Severity::Error, rule, message, true)
                };
                with_source_lines(vec![finding], source)
            }
        }
    }

    /// Lint `source`, already compiled into what `facts` says, reporting it as `file`.
    /// `module_fns` gives the functions of the stdlib module an import names, or why it
    /// cannot be imported ([`engine::StdlibResolver::compile_module`]).
    pub fn lint_compiled(
        &self,
        file: &str,
        source: &str,
        facts: &Facts,
        module_fns: &ModuleFns<'_>,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut add = |pos: Position, severity, rule, message: String, blocks_run| {
            out.push(Finding::at(file, pos, severity, rule, message, blocks_run));
        };

        // Imports: each must name a stdlib module that compiles; its fns become known.
        let mut modules: HashMap<String, Vec<(String, usize)>> = HashMap::new();
        for import in &facts.imports {
            let Some(name) = &import.path else {
                add(
                    import.pos,
                    Severity::Error,
                    "import",
                    engine::ImportError::NotLiteral.to_string(),
                    true,
                );
                continue;
            };
            match module_fns(name) {
                Ok(fns) => {
                    modules.insert(import.alias.clone(), fns);
                }
                Err(e) => {
                    add(import.pos, Severity::Error, "import", e.to_string(), true);
                    // Calls into it are unknowable; do not report them as well.
                    modules.insert(import.alias.clone(), Vec::new());
                }
            }
        }

        for call in &facts.calls {
            if let Some((rule, message)) = self.check_call(call, facts, &modules) {
                let certain = match call.kind {
                    CallKind::Function => true,
                    CallKind::Method => call.handle().is_some(),
                };
                add(call.pos, Severity::Error, rule, message, certain);
            }
            if call.is_method_on("lxc", "exec") {
                if let Some(Literal::Array(argv)) = call.args.get(1) {
                    let words: Vec<&str> = argv.iter().map_while(|a| a.as_deref()).collect();
                    if let Some(shell) = shell_in_argv(&words) {
                        add(
                            call.pos,
                            Severity::Error,
                            "shell",
                            format!(
                                "lxc.exec runs `{shell}`: phoenix never runs a shell; pass the program and its arguments as argv"
                            ),
                            true,
                        );
                    } else if let Some(interp) = crate::boundary::argv::code_in_string(&words) {
                        add(
                            call.pos,
                            Severity::Warning,
                            "interpreter",
                            format!(
                                "lxc.exec gives `{interp}` a program in a string: allowed, but nobody reviews that string as code; push a script file with lxc.push and run it"
                            ),
                            false,
                        );
                    }
                }
            }
        }

        for (text, pos) in &facts.strings {
            if let Some(Credential { what, .. }) = CREDENTIALS.iter().find(|c| c.matches(text)) {
                add(
                    *pos,
                    Severity::Warning,
                    "credential",
                    format!(
                        "string literal looks like {what}: keep it in the secret store (`phoenix secret set NAME`) and use secret.get(\"NAME\")"
                    ),
                    false,
                );
            }
        }
        for call in &facts.calls {
            for (pos, severity, rule, message, hint) in literal_checks(call, source) {
                out.push(Finding {
                    hint,
                    ..Finding::at(file, pos, severity, rule, message, false)
                });
            }
        }
        out.sort_by_key(|f| (f.line, f.column, f.severity, f.rule));
        with_source_lines(out, source)
    }

    fn check_call(
        &self,
        call: &CallSite,
        facts: &Facts,
        modules: &HashMap<String, Vec<(String, usize)>>,
    ) -> Option<(&'static str, String)> {
        let given = call.args.len();
        let shown = call.display();
        let script_arities = |fns: &[(String, usize)]| -> Vec<usize> {
            fns.iter()
                .filter(|(n, _)| *n == call.name)
                .map(|(_, a)| *a)
                .collect()
        };
        if let Some(ns) = &call.namespace {
            let fns = modules.get(ns)?;
            if fns.is_empty() {
                return None;
            }
            let arities = script_arities(fns);
            return verdict(&shown, given, &arities, "unknown-function", || {
                format!(
                    "unknown function `{shown}` (module `{ns}` has: {})",
                    list(fns.iter().map(|(n, _)| n.as_str()))
                )
            });
        }
        if KEYWORDS.contains(&call.name.as_str()) {
            return None;
        }
        if let Some((name, why)) = engine::UNAVAILABLE.iter().find(|(n, _)| *n == call.name) {
            return Some((
                "unavailable",
                format!("`{name}` is not available in recipes: {why}"),
            ));
        }
        let script = script_arities(&facts.functions);
        let natives = self
            .tables
            .natives
            .get(&call.name)
            .map_or(&[][..], Vec::as_slice);
        match call.kind {
            CallKind::Function => {
                let mut arities = script;
                arities.extend(natives.iter().map(|s| s.params));
                verdict(&shown, given, &arities, "unknown-function", || {
                    format!("unknown function `{shown}`")
                })
            }
            CallKind::Method => {
                let handle = call
                    .handle()
                    .and_then(|r| self.tables.handles.get(r).map(|t| (r, *t)));
                let mut arities: Vec<usize> = script;
                if let Some((name, ty)) = handle {
                    arities.extend(
                        natives
                            .iter()
                            .filter(|s| s.first == Some(ty))
                            .map(|s| s.params - 1),
                    );
                    return verdict(&shown, given, &arities, "unknown-method", || {
                        format!(
                            "unknown method `{shown}` (`{name}` has: {})",
                            list(self.methods_of(ty).iter().map(String::as_str))
                        )
                    });
                }
                arities.extend(
                    natives
                        .iter()
                        .filter(|s| s.params > 0)
                        .map(|s| s.params - 1),
                );
                verdict(&shown, given, &arities, "unknown-method", || {
                    format!("unknown method `{shown}`")
                })
            }
        }
    }

    /// The method names registered for handle type `ty`, sorted.
    fn methods_of(&self, ty: TypeId) -> Vec<String> {
        let mut v: Vec<String> = self
            .tables
            .natives
            .iter()
            .filter(|(_, sigs)| sigs.iter().any(|s| s.first == Some(ty)))
            .map(|(n, _)| n.clone())
            .collect();
        v.sort();
        v
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let mut v: Vec<&str> = names.filter(|n| !n.contains('$')).collect();
    v.sort_unstable();
    v.dedup();
    if v.is_empty() {
        "nothing registered yet".to_owned()
    } else {
        v.join(", ")
    }
}

fn verdict(
    shown: &str,
    given: usize,
    arities: &[usize],
    unknown_rule: &'static str,
    unknown: impl FnOnce() -> String,
) -> Option<(&'static str, String)> {
    if arities.contains(&given) {
        return None;
    }
    if arities.is_empty() {
        return Some((unknown_rule, unknown()));
    }
    let mut a: Vec<String> = arities.iter().map(ToString::to_string).collect();
    a.sort();
    a.dedup();
    Some((
        "arity",
        format!(
            "`{shown}` takes {} argument(s), got {given}",
            a.join(" or ")
        ),
    ))
}

/// Render findings in `format` (text ends with a newline when there is any).
pub fn render(findings: &[Finding], format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(findings).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
        Format::Human => findings.iter().map(human).collect(),
        Format::Github => findings
            .iter()
            .map(|f| {
                format!(
                    "::{} file={},line={},col={}::{}\n",
                    f.severity,
                    gh_property(&f.file),
                    f.line,
                    f.column,
                    gh_data(&f.message)
                )
            })
            .collect(),
    }
}

/// One finding as text: the message with its rule, the source line with a caret under the
/// column (`annotate-snippets`), and the hint as `help:`; a blank line after it.
fn human(f: &Finding) -> String {
    use annotate_snippets::{Level, Renderer, Snippet};
    let level = match f.severity {
        Severity::Error => Level::Error,
        Severity::Warning => Level::Warning,
    };
    let mut message = level.title(&f.message).id(f.rule);
    let origin;
    if let (Some(text), true) = (&f.source_line, f.line > 0) {
        let span = caret_span(text, f.column);
        message = message.snippet(
            Snippet::source(text)
                .line_start(f.line)
                .origin(&f.file)
                .annotation(level.span(span)),
        );
    } else if f.line > 0 {
        origin = format!("{}:{}:{}", f.file, f.line, f.column);
        message = message.footer(Level::Note.title(&origin));
    }
    if let Some(hint) = &f.hint {
        message = message.footer(Level::Help.title(hint));
    }
    format!("{}\n\n", Renderer::plain().render(message))
}

/// The byte range the caret marks: the identifier or number starting at 1-based character
/// column `column`, else that one character (the end of the line when past it).
fn caret_span(line: &str, column: usize) -> std::ops::Range<usize> {
    let start = line
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(line.len(), |(i, _)| i);
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let rest = &line[start..];
    let len = match rest.chars().next() {
        None => 0,
        Some(c) if word(c) => rest.find(|c: char| !word(c)).unwrap_or(rest.len()),
        Some(c) => c.len_utf8(),
    };
    start..start + len
}

/// The findings with the source line each points at.
fn with_source_lines(mut findings: Vec<Finding>, source: &str) -> Vec<Finding> {
    let lines: Vec<&str> = source.lines().collect();
    for f in &mut findings {
        if f.line > 0 {
            f.source_line = lines.get(f.line - 1).map(|l| (*l).to_owned());
        }
    }
    findings
}

/// A read error in words (`no such file`), without Rust's `(os error 2)`.
fn read_error(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Where a syntax error is: Rhai reports a missing `;` at the next statement and a missing
/// closing bracket at the end of the file; the mistake is at the end of the statement
/// before, and at the bracket that is never closed.
fn syntax_position(
    source: &str,
    err: &ParseErrorType,
    pos: Position,
) -> (Position, Option<String>) {
    let ParseErrorType::MissingToken(token, _) = err else {
        return (pos, None);
    };
    match token.as_str() {
        ";" => match end_of_previous(source, pos) {
            Some(p) => (p, Some("add `;` at the end of this statement".to_owned())),
            None => (pos, None),
        },
        "}" | "]" | ")" => match unclosed(source, token.chars().next().unwrap_or('}')) {
            Some((p, open)) => (p, Some(format!("this `{open}` is never closed"))),
            None => (pos, None),
        },
        _ => (pos, None),
    }
}

/// The position just after the last code character before `pos` (blanks and a line
/// comment skipped).
fn end_of_previous(source: &str, pos: Position) -> Option<Position> {
    let (line, col) = (pos.line()?, pos.position().unwrap_or(1));
    let lines: Vec<&str> = source.lines().collect();
    let mut l = line;
    let mut upto = col.saturating_sub(1);
    loop {
        let text: Vec<char> = lines.get(l.checked_sub(1)?)?.chars().collect();
        let mut code: Vec<char> = text[..upto.min(text.len())].to_vec();
        if let Some(i) = code.windows(2).position(|w| w == ['/', '/']) {
            code.truncate(i);
        }
        if let Some(i) = code.iter().rposition(|c| !c.is_whitespace()) {
            return Some(Position::new(
                u16::try_from(l).ok()?,
                u16::try_from(i + 2).ok()?,
            ));
        }
        l -= 1;
        upto = usize::MAX;
    }
}

/// The last opening bracket of the kind `close` closes that is never closed, with its
/// character (strings and comments skipped).
fn unclosed(source: &str, close: char) -> Option<(Position, char)> {
    let open = match close {
        '}' => '{',
        ']' => '[',
        _ => '(',
    };
    let mut stack: Vec<(char, usize, usize)> = Vec::new();
    for (n, line) in source.lines().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let mut quote: Option<char> = None;
        while i < chars.len() {
            let c = chars[i];
            if let Some(q) = quote {
                if c == '\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            } else if c == '"' || c == '`' || c == '\'' {
                quote = Some(c);
            } else if c == '/' && chars.get(i + 1) == Some(&'/') {
                break;
            } else if matches!(c, '{' | '[' | '(') {
                stack.push((c, n + 1, i + 1));
            } else if matches!(c, '}' | ']' | ')') {
                stack.pop();
            }
            i += 1;
        }
    }
    let (c, line, col) = stack.into_iter().rev().find(|(c, ..)| *c == open)?;
    Some((
        Position::new(u16::try_from(line).ok()?, u16::try_from(col).ok()?),
        c,
    ))
}

/// The checks of literal arguments: options maps ([`crate::api::options`]) and the mode
/// of `lxc.push`.
fn literal_checks(
    call: &CallSite,
    source: &str,
) -> Vec<(Position, Severity, &'static str, String, Option<String>)> {
    let mut out = Vec::new();
    let shown = call.display();
    for m in crate::api::options::ALL {
        if shown != m.call || call.handle().is_none() {
            continue;
        }
        let Some(Literal::Map(entries)) = call.args.get(m.arg) else {
            continue;
        };
        for (key, value, pos) in entries {
            if !m.keys.contains(&key.as_str()) {
                let hint =
                    crate::api::options::did_you_mean(key, m.keys).map(|k| format!("write `{k}`"));
                out.push((
                    *pos,
                    Severity::Error,
                    "option",
                    format!(
                        "{}: {}",
                        m.call,
                        crate::api::options::unknown_key(key, m.keys)
                    ),
                    hint,
                ));
            } else if m.durations.contains(&key.as_str()) {
                if let Literal::Str(text) = value {
                    if let Err(e) = text.parse::<crate::types::DurationSpec>() {
                        out.push((
                            *pos,
                            Severity::Error,
                            "duration",
                            format!("{}: `{key}`: {e}", m.call),
                            None,
                        ));
                    }
                }
            }
        }
    }
    if shown == "lxc.push" && call.handle().is_some() {
        if let Some(Literal::Int(mode, pos)) = call.args.get(3) {
            match crate::boundary::values::file_mode("lxc.push", *mode) {
                Err(refusal) => out.push((
                    *pos,
                    Severity::Error,
                    "mode",
                    refusal.to_string(),
                    octal_hint(*mode),
                )),
                Ok(m) if written_in_decimal(*mode) && !octal_literal(source, *pos) => out.push((
                    *pos,
                    Severity::Warning,
                    "mode",
                    format!(
                        "lxc.push: file mode {mode} is a decimal number, the mode 0o{m:o}; modes are octal"
                    ),
                    octal_hint(*mode),
                )),
                Ok(_) => {}
            }
        }
    }
    out
}

/// `1 <= mode` with three or four digits all 0-7: what someone meant as octal.
fn written_in_decimal(mode: i64) -> bool {
    (100..=7777).contains(&mode) && mode.to_string().chars().all(|c| ('0'..='7').contains(&c))
}

/// Whether the integer literal at `pos` is written with a radix prefix (`0o644`, `0x1a4`).
fn octal_literal(source: &str, pos: Position) -> bool {
    let (Some(line), Some(col)) = (pos.line(), pos.position()) else {
        return false;
    };
    source.lines().nth(line - 1).is_some_and(|l| {
        let rest: String = l.chars().skip(col - 1).take(2).collect();
        matches!(rest.as_str(), "0o" | "0x" | "0b")
    })
}

fn octal_hint(mode: i64) -> Option<String> {
    written_in_decimal(mode).then(|| format!("write the mode as an octal literal: 0o{mode}"))
}

/// Escaping of a workflow command's message (GitHub's `escapeData`).
fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escaping of a workflow command's property (GitHub's `escapeProperty`).
fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// The number of error findings.
pub fn errors(findings: &[Finding]) -> usize {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(src: &str) -> Vec<(usize, usize, &'static str, String)> {
        Linter::new(Stdlib::Embedded)
            .lint_source("r.rhai", src)
            .into_iter()
            .map(|f| (f.line, f.column, f.rule, f.message))
            .collect()
    }

    #[test]
    fn credential_needles_only_skip_strings_the_pattern_cannot_match() {
        // Matches, near misses and strings holding a needle but no credential: the
        // prefiltered check answers as the bare pattern does, for every pattern.
        let samples = [
            "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345",
            "hf_short",
            "xhf_aBcDeFgHiJkLmNoPqRsTuVwXyZ",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "-----BEGIN CERTIFICATE-----",
            "-----BEGIN PUBLIC KEY-----",
            "AKIAIOSFODNN7EXAMPLE",
            "ASIAIOSFODNN7EXAMPL",
            "xAKIAIOSFODNN7EXAMPLE",
            "ghp_0123456789abcdefghijABCDEFGHIJ0123",
            "ghx_0123456789abcdefghijABCDEFGHIJ0123",
            "https://nvidia.github.io/libnvidia-container/gpgkey",
            "sk-abcdefghijklmnopqrstuvwxyz",
            "task-abcdefghijklmnopqrstuvwxyz",
            "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ",
            "AGE-SECRET-KEY-1QQQ",
            "",
            "plain text",
        ];
        for c in &CREDENTIALS {
            let bare = Regex::new(c.pattern).unwrap();
            for text in samples {
                assert_eq!(
                    c.matches(text),
                    bare.is_match(text),
                    "{} on {text:?}",
                    c.what
                );
            }
        }
        let first = |text: &str| CREDENTIALS.iter().find(|c| c.matches(text)).map(|c| c.what);
        assert_eq!(first(samples[0]), Some("a Hugging Face token"));
        assert_eq!(first(samples[3]), Some("a PEM key"));
        assert_eq!(first(samples[6]), Some("an AWS access key id"));
        assert_eq!(first(samples[9]), Some("a GitHub token"));
        assert_eq!(first(samples[12]), Some("an API secret key"));
        assert_eq!(first(samples[14]), Some("an age secret key"));
        assert_eq!(first(samples[11]), None);
    }

    #[test]
    fn syntax_errors_point_at_the_mistake_not_where_the_parser_stopped() {
        assert_eq!(
            lint("let x = 1 // one\n\nlet y = 2;\n"),
            [(
                1,
                10,
                "compile",
                "Expecting ';' to terminate this statement".to_owned()
            )]
        );
        assert_eq!(
            lint("let a = [1];\nif true {\n  let s = \"}\";\n  log.info(s);\n\n"),
            [(
                2,
                9,
                "compile",
                "Expecting '}' to terminate this block".to_owned()
            )]
        );
    }

    #[test]
    fn option_maps_and_modes_are_checked_like_the_run_does() {
        let found = Linter::new(Stdlib::Embedded).lint_source(
            "r.rhai",
            "let ct = 1;\n\
             lxc.exec(ct, [\"true\"], #{ timeout: \"10 min\", read_only: true });\n\
             lxc.exec(ct, [\"true\"], #{ ok_code: [0] });\n\
             vllm.wait_ready(#{}, #{ poll: \"soon\" });\n\
             lxc.push(ct, \"/x\", \"y\", 0o644);\n\
             lxc.push(ct, \"/x\", \"y\", 600);\n",
        );
        let shown: Vec<(usize, usize, &str, Option<&str>)> = found
            .iter()
            .map(|f| (f.line, f.column, f.rule, f.hint.as_deref()))
            .collect();
        assert_eq!(
            shown,
            [
                (3, 27, "option", Some("write `ok_codes`")),
                (4, 25, "duration", None),
                (
                    6,
                    25,
                    "mode",
                    Some("write the mode as an octal literal: 0o600")
                ),
            ]
        );
        assert_eq!(
            render(&found[2..], Format::Human),
            "error[mode]: lxc.push: refused by the boundary (values): file mode 600 (= 0o1130) is outside 0o777; write the mode as an octal literal: 0o600
 --> r.rhai:6:25
  |
6 | lxc.push(ct, \"/x\", \"y\", 600);
  |                         ^^^
  |
  = help: write the mode as an octal literal: 0o600

"
        );
    }

    #[test]
    fn interpreters_given_code_in_a_string_get_a_warning_not_an_error() {
        let found = lint(
            "let ct = config.target();\n\
             lxc.exec(ct, [\"python3\", \"-c\", \"import os; os.system('id')\"]);\n\
             lxc.exec(ct, [\"python3\", \"/opt/setup.py\"]);\n\
             lxc.exec(ct, [\"awk\", \"BEGIN { system(\\\"id\\\") }\"]);\n",
        );
        assert_eq!(
            found,
            [
                (
                    2,
                    5,
                    "interpreter",
                    "lxc.exec gives `python3 -c` a program in a string: allowed, but nobody reviews that string as code; push a script file with lxc.push and run it".to_owned()
                ),
                (
                    4,
                    5,
                    "interpreter",
                    "lxc.exec gives `awk with system()/pipes in its program` a program in a string: allowed, but nobody reviews that string as code; push a script file with lxc.push and run it".to_owned()
                ),
            ]
        );
        let findings = Linter::new(Stdlib::Embedded)
            .lint_source("r.rhai", "lxc.exec(1, [\"perl\", \"-e\", \"1\"]);");
        assert!(findings.iter().all(|f| f.severity == Severity::Warning));
    }

    #[test]
    fn shells_are_found_behind_paths_busybox_and_env() {
        for argv in [
            &["sh", "-e", "x"][..],
            &["/bin/bash"],
            &["busybox", "sh"],
            &["/usr/bin/env", "-i", "A=1", "zsh"],
        ] {
            assert!(shell_in_argv(argv).is_some(), "{argv:?}");
        }
        for argv in [
            &["apt-get", "install"][..],
            &["busybox", "ls"],
            &["shx"],
            &[],
        ] {
            assert_eq!(shell_in_argv(argv), None, "{argv:?}");
        }
    }

    #[test]
    fn known_calls_pass_and_unknown_ones_are_named() {
        let found = lint(
            "let ids = config.ids();\n\
             let t = config.target();\n\
             log.info(\"x\");\n\
             let n = ids.len();\n\
             fn mine(a, b) { a + b }\n\
             mine(1, 2);\n\
             mine(1);\n\
             nosuch(1);\n\
             config.nosuch();\n\
             log.info(\"a\", \"b\");\n",
        );
        assert_eq!(
            found,
            [
                (
                    7,
                    1,
                    "arity",
                    "`mine` takes 2 argument(s), got 1".to_owned()
                ),
                (
                    8,
                    1,
                    "unknown-function",
                    "unknown function `nosuch`".to_owned()
                ),
                (
                    9,
                    8,
                    "unknown-method",
                    "unknown method `config.nosuch` (`config` has: ids, lxc, models_dataset, selected, target)".to_owned()
                ),
                (
                    10,
                    5,
                    "arity",
                    "`log.info` takes 1 argument(s), got 2".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn a_local_named_like_a_handle_is_not_the_handle() {
        assert_eq!(
            lint(
                "let log = [];\nlog.push(1);\nfn f(config) { config.len() }\n\
                 for lxc in [\"a\"] { lxc.trim(); }\n"
            ),
            []
        );
        assert_eq!(lint("let x = [];\nx.nosuch();").len(), 1);
    }

    #[test]
    fn handles_and_imports_are_known_in_fns() {
        assert_eq!(
            lint(
                "import \"steps\" as steps;\n\
                 fn f() { steps::begin(config.target(), \"x\"); steps::nope(); }\n"
            ),
            [(
                2,
                53,
                "unknown-function",
                "unknown function `steps::nope` (module `steps` has: begin, finish, gpu_selector, serves_vllm, targets)"
                    .to_owned()
            )]
        );
    }
}

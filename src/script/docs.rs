//! `phoenix recipe api`: the recipe API reference, generated from the engine.
//!
//! Every function registered on an API handle (`lxc.create`, `config.target`, …) is listed
//! with the parameters and doc comments given at registration
//! (`FuncRegistration::with_params_info`/`with_comments`), followed by the functions of the
//! stdlib modules with their `///` comments. Nothing here is written by hand, so the
//! reference cannot drift from what the engine accepts.
//!
//! Types are shown as a recipe sees them (`string`, `int`, `map`, `array`, `Secret`, …:
//! [`recipe_type`]), never as Rust paths, and the functions phoenix registers only to refuse
//! them (`+`, `==`, `to_string`, `print` … of a `Secret`) are not listed: the reference says
//! once that a `Secret` is opaque.
//!
//! The committed copy is `docs/recipe-api.md`; a test fails when it is stale. After
//! registering, changing or documenting a call, regenerate it with the one command
//!
//! ```text
//! cargo run -q --bin phoenix -- recipe api --format markdown > docs/recipe-api.md
//! ```
//!
//! (`PHOENIX_STDLIB` must be unset so the embedded stdlib is documented.)

use std::any::TypeId;
use std::collections::HashMap;

use rhai::Engine;
use serde::Serialize;

use super::engine::{self, EngineOptions, StdlibResolver};
use super::stdlib::Stdlib;

/// The command that regenerates `docs/recipe-api.md`.
pub const REGENERATE: &str =
    "cargo run -q --bin phoenix -- recipe api --format markdown > docs/recipe-api.md";

/// Output formats of `recipe api`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// The Markdown reference (as committed in `docs/recipe-api.md`).
    #[default]
    Markdown,
    /// A JSON array of entries.
    Json,
}

/// One documented call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The API object (`lxc`) or stdlib module (`steps`) it belongs to.
    pub object: String,
    /// `method` for handle methods, `function` for other registered functions, `stdlib`
    /// for stdlib module functions.
    pub kind: &'static str,
    /// The call as a recipe writes it: `lxc.create`, `steps::begin`.
    pub call: String,
    /// Parameters, `name: Type` where known (the handle itself is not listed).
    pub params: Vec<String>,
    /// The return type, empty when unknown or `()`.
    pub returns: String,
    /// The doc comment, without `///` markers.
    pub doc: String,
}

impl Entry {
    /// `lxc.create(spec: Map) -> i64`.
    pub fn signature(&self) -> String {
        let mut s = format!("{}({})", self.call, self.params.join(", "));
        if !self.returns.is_empty() {
            s.push_str(" -> ");
            s.push_str(&self.returns);
        }
        s
    }
}

/// Every documented call: handle methods in [`crate::api::HANDLE_NAMES`] order, then other
/// registered functions, then stdlib module functions; each group sorted by name and arity.
pub fn entries(stdlib: &Stdlib) -> Vec<Entry> {
    let engine = engine::new_engine(EngineOptions {
        stdlib: Some(stdlib.clone()),
        ..EngineOptions::default()
    });
    let mut out = registered(&engine);
    out.extend(stdlib_entries(&engine, stdlib));
    out
}

fn registered(engine: &Engine) -> Vec<Entry> {
    let handles: HashMap<TypeId, &'static str> = crate::api::handle_types()
        .into_iter()
        .map(|(n, t)| (t, n))
        .collect();
    let order = |object: &str| {
        crate::api::HANDLE_NAMES
            .iter()
            .position(|n| *n == object)
            .unwrap_or(usize::MAX)
    };
    let mut rows: Vec<(usize, usize, Entry)> = engine.collect_fn_metadata(
        None,
        |info| {
            let m = info.metadata;
            let name = m.name.as_str();
            if name.contains('$')
                || name.starts_with("anon")
                || is_internal(name)
                || engine::UNAVAILABLE.iter().any(|(n, _)| *n == name)
            {
                return None;
            }
            let handle = m.param_types.first().and_then(|t| handles.get(t)).copied();
            let skip = usize::from(handle.is_some());
            let params: Vec<String> = m.params_info.iter().skip(skip).map(|p| param(p)).collect();
            let returns = recipe_type(&m.return_type);
            let (object, kind, call) = match handle {
                Some(h) => (h.to_owned(), "method", format!("{h}.{name}")),
                None => (String::new(), "function", name.to_owned()),
            };
            Some((
                order(&object),
                m.num_params,
                Entry {
                    object,
                    kind,
                    call,
                    params,
                    returns,
                    doc: doc_text(m.comments.iter().map(|c| c.as_str())),
                },
            ))
        },
        false,
    );
    rows.sort_by(|a, b| {
        (a.0, &a.2.call, a.1, &a.2.params).cmp(&(b.0, &b.2.call, b.1, &b.2.params))
    });
    rows.into_iter().map(|(.., e)| e).collect()
}

fn stdlib_entries(engine: &Engine, stdlib: &Stdlib) -> Vec<Entry> {
    let resolver = StdlibResolver::new(stdlib.clone());
    let mut out = Vec::new();
    for name in stdlib.names() {
        let Ok((ast, _)) = resolver.compile_module(engine, &name) else {
            continue;
        };
        let mut fns: Vec<Entry> = ast
            .iter_functions()
            .filter(|f| f.access != rhai::FnAccess::Private)
            .map(|f| Entry {
                object: name.clone(),
                kind: "stdlib",
                call: format!("{name}::{}", f.name),
                params: f.params.iter().map(|p| (*p).to_owned()).collect(),
                returns: String::new(),
                doc: doc_text(f.comments.iter().copied()),
            })
            .collect();
        fns.sort_by(|a, b| (&a.call, a.params.len()).cmp(&(&b.call, b.params.len())));
        out.extend(fns);
    }
    out
}

/// `"spec: Map"` becomes `"spec: map"`, `"_: Map"` becomes `"map"`.
fn param(p: &str) -> String {
    match p.split_once(':') {
        Some((n, t)) if matches!(n.trim(), "" | "_" | "?") => recipe_type(t),
        Some((n, t)) => format!("{}: {}", n.trim(), recipe_type(t)),
        None => recipe_type(p),
    }
}

/// The functions registered only to refuse what a recipe may not do with a `Secret`
/// (operators, `print`, `to_string` …): not part of the API a recipe calls.
fn is_internal(name: &str) -> bool {
    !name.chars().all(|c| c.is_alphanumeric() || c == '_')
        || matches!(name, "print" | "debug" | "to_string" | "to_debug")
}

/// A type as a recipe sees it: `i64` → `int`, `&str`/`String` → `string`, `Map` → `map`,
/// `Array` → `array`, `Dynamic` → `any`, Rust paths to their last segment; alternatives
/// (`Map|int`) each; `()` → nothing.
pub fn recipe_type(t: &str) -> String {
    let one = |t: &str| -> String {
        let t = t
            .trim()
            .trim_start_matches("&mut ")
            .trim_start_matches('&')
            .trim();
        if t.starts_with("Result<") || t.contains("Dynamic") {
            return "any".to_owned();
        }
        let last = t.rsplit("::").next().unwrap_or(t);
        match last {
            "" | "()" => String::new(),
            "i64" | "i32" | "u32" | "u64" | "INT" | "int" => "int".to_owned(),
            "f64" | "f32" | "FLOAT" | "float" => "float".to_owned(),
            "str" | "String" | "ImmutableString" | "string" => "string".to_owned(),
            "Map" | "map" => "map".to_owned(),
            "Array" | "array" => "array".to_owned(),
            "bool" => "bool".to_owned(),
            other => other.to_owned(),
        }
    };
    let parts: Vec<String> = t.split('|').map(one).filter(|p| !p.is_empty()).collect();
    parts.join("|")
}

/// Doc comment blocks without their `///` / `/** */` markers.
fn doc_text<'a>(comments: impl Iterator<Item = &'a str>) -> String {
    let mut lines = Vec::new();
    for block in comments {
        let block = block
            .trim()
            .trim_start_matches("/**")
            .trim_end_matches("*/");
        for line in block.lines() {
            let line = line.trim_start();
            let line = line.strip_prefix("///").unwrap_or(line);
            let line = line.strip_prefix("* ").unwrap_or(line);
            lines.push(line.strip_prefix(' ').unwrap_or(line).trim_end().to_owned());
        }
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines.join("\n")
}

/// The reference in `format`.
pub fn render(entries: &[Entry], format: Format) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(entries).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
        Format::Markdown => markdown(entries),
    }
}

fn markdown(entries: &[Entry]) -> String {
    let mut s = String::from(
        "# Recipe API reference\n\n\
         <!-- Generated from the engine by `phoenix recipe api --format markdown`; do not edit.\n",
    );
    s.push_str(&format!("     Regenerate: {REGENERATE} -->\n\n"));
    s.push_str(
        "Recipes reach the host only through these objects; each call below is a method on one\n\
         of them (`config.target()`), or a function of a stdlib module imported by name\n\
         (`import \"steps\" as steps;`).\n\n\
         Types: `string`, `int`, `float`, `bool`, `map` (`#{key: value}`), `array` (`[…]`),\n\
         `any`, `a|b` (either), and `Secret`: an opaque value from `secret.get`/`secret.ensure`\n\
         that only the primitives taking one accept; printing, comparing, concatenating or\n\
         converting it to a string is an error.\n",
    );
    let mut heading = String::new();
    for e in entries {
        let group = match e.kind {
            "method" => format!("`{}`", e.object),
            "stdlib" => format!("stdlib module `{}`", e.object),
            _ => "Other functions".to_owned(),
        };
        if group != heading {
            s.push_str(&format!("\n## {group}\n"));
            heading = group;
        }
        s.push_str(&format!("\n### `{}`\n", e.signature()));
        if !e.doc.is_empty() {
            s.push('\n');
            s.push_str(&e.doc);
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_handle_method_is_listed_with_its_doc() {
        let e = entries(&Stdlib::Embedded);
        let target = e.iter().find(|e| e.call == "config.target").unwrap();
        assert_eq!(target.signature(), "config.target() -> map");
        assert!(target.doc.starts_with("The config entry this run serves"));
        let lxc: Vec<String> = e
            .iter()
            .filter(|e| e.call == "config.lxc")
            .map(Entry::signature)
            .collect();
        assert_eq!(
            lxc,
            [
                "config.lxc(id: int) -> map",
                "config.lxc(id: string) -> map"
            ]
        );
        assert!(
            e.iter()
                .any(|e| e.signature() == "log.info(message: string)")
        );
        assert!(
            e.iter()
                .any(|e| e.signature() == "secret.get(name: string) -> Secret")
        );
        // Recipe-level types only, and no refusing operator of a Secret.
        for e in &e {
            let sig = e.signature();
            assert!(
                !sig.contains("::") || e.kind == "stdlib",
                "{sig}: a Rust path"
            );
            for rust in [
                "i64", "&str", "&mut", "String", "Map", "Array", "Dynamic", "Result",
            ] {
                assert!(!sig.contains(rust), "{sig}: Rust type {rust}");
            }
            let name = e.call.rsplit(['.', ':']).next().unwrap_or_default();
            assert!(!is_internal(name), "{sig}: internal");
        }
        assert!(
            e.iter()
                .any(|e| e.signature() == "steps::begin(entry, name)")
        );
    }

    #[test]
    fn rust_types_become_recipe_types() {
        for (rust, recipe) in [
            ("i64", "int"),
            ("&str", "string"),
            ("rhai::ImmutableString", "string"),
            ("Map|int", "map|int"),
            ("String|Secret", "string|Secret"),
            ("rhai::Array", "array"),
            ("()", ""),
            (
                "core::result::Result<rhai::types::dynamic::Dynamic, alloc::boxed::Box<rhai::types::error::EvalAltResult>>",
                "any",
            ),
        ] {
            assert_eq!(recipe_type(rust), recipe, "{rust}");
        }
    }

    #[test]
    fn doc_markers_are_stripped() {
        assert_eq!(
            doc_text(["/// a\n/// b", "/** c */"].into_iter()),
            "a\nb\nc"
        );
    }
}

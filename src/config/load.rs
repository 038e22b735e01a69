//! Reading a config file into the typed [`Config`]: the passes of the module docs, joined.
//!
//! Every problem is placed at its line:column and the list is sorted by position, so the
//! output reads top to bottom like the file. One pointer gets at most one problem (the
//! schema's, when both passes would report it); duplicate keys are reported besides.

use std::cell::Cell;
use std::collections::HashSet;
use std::path::Path;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::position::Positions;
use super::{At, Config, ConfigError, Finding, Problem, schema, semantic};

/// The result of checking a config text that is valid JSON.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The typed config, when there is no problem.
    pub config: Option<Config>,
    /// Every problem, sorted by position.
    pub problems: Vec<Problem>,
    /// Accepted bash-era forms and other notes, sorted by position.
    pub warnings: Vec<Problem>,
}

/// Read, validate and type the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = read(path)?;
    load_str(path, &text)
}

/// Validate and type config `text` that came from `path`.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let passes = run_passes(path, text)?;
    if passes.problems.is_empty() {
        Ok(passes.config(path))
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: passes.problems,
        })
    }
}

/// Read the config file at `path` (as [`load`] does).
pub fn read(path: &Path) -> Result<String, ConfigError> {
    crate::boundary::limits::read_input_text(path, crate::boundary::limits::Input::Config).map_err(
        |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        },
    )
}

/// Check config `text` from `path` and keep every problem and warning; fails only when the
/// text is not JSON at all.
pub fn check_str(path: &Path, text: &str) -> Result<Checked, ConfigError> {
    let mut passes = run_passes(path, text)?;
    let warnings = passes.warnings.clone();
    let problems = std::mem::take(&mut passes.problems);
    Ok(Checked {
        config: problems.is_empty().then(|| passes.config(path)),
        problems,
        warnings,
    })
}

/// What the passes found: every problem and warning, placed and sorted, and the typed
/// parts of the config.
struct Passes {
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
    models_dataset: Option<crate::types::ModelsParent>,
    lxc: std::collections::BTreeMap<crate::types::Vmid, super::LxcConfig>,
}

impl Passes {
    /// The config (meaningful only without problems), keeping the warnings.
    fn config(self, path: &Path) -> Config {
        Config {
            path: path.to_owned(),
            models_dataset: self.models_dataset,
            lxc: self.lxc,
            warnings: self.warnings,
        }
    }
}

/// Parse, scan, and run the schema and semantic passes over `text`; fails only when the text
/// is not JSON at all.
fn run_passes(path: &Path, text: &str) -> Result<Passes, ConfigError> {
    let (doc, repeats_a_key) = parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    // Only a text with a repeated key needs the scan that finds where (most have none).
    let mut positions = if repeats_a_key {
        Positions::scan(text)
    } else {
        Positions::unscanned(text)
    };

    let mut findings = schema::check(&doc);
    let flagged: HashSet<String> = findings.iter().map(|f| f.pointer.clone()).collect();
    let outcome = semantic::build(&doc, &flagged);
    findings.extend(outcome.findings);

    if !findings.is_empty() || !outcome.warnings.is_empty() {
        positions.index_for(
            findings
                .iter()
                .chain(&outcome.warnings)
                .map(|f| f.pointer.as_str()),
        );
    }
    let mut seen = HashSet::new();
    let mut problems: Vec<Problem> = findings
        .into_iter()
        .filter(|f| seen.insert(f.pointer.clone()))
        .map(|f| place(&positions, f))
        .collect();
    for d in &positions.duplicates {
        problems.push(Problem {
            pointer: d.pointer.clone(),
            line: Some(d.again.line),
            column: Some(d.again.column),
            expected: format!(
                "each key once in an object (first at {}:{})",
                d.first.line, d.first.column
            ),
            found: format!(
                "the key again at {}:{} (JSON keeps only one of them)",
                d.again.line, d.again.column
            ),
        });
    }
    sort(&mut problems);
    let mut warnings: Vec<Problem> = outcome
        .warnings
        .into_iter()
        .map(|f| place(&positions, f))
        .collect();
    sort(&mut warnings);
    Ok(Passes {
        problems,
        warnings,
        models_dataset: outcome.models_dataset,
        lxc: outcome.lxc,
    })
}

/// Parse `text` as `serde_json::from_str::<Value>` does (same value, same errors), and say
/// whether an object in it repeats a key (serde_json keeps the last one without a word).
fn parse(text: &str) -> Result<(Value, bool), serde_json::Error> {
    let repeated = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let doc = Noting(&repeated).deserialize(&mut de)?;
    de.end()?;
    Ok((doc, repeated.get()))
}

/// Builds a [`Value`] as serde_json's own visitor does, noting a repeated key in `0`.
#[derive(Clone, Copy)]
struct Noting<'r>(&'r Cell<bool>);

impl<'de> DeserializeSeed<'de> for Noting<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Noting<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            if members.insert(key, value).is_some() {
                self.0.set(true);
            }
        }
        Ok(Value::Object(members))
    }
}

fn place(positions: &Positions, f: Finding) -> Problem {
    let pos = match f.at {
        At::Key => positions.key(&f.pointer),
        At::Value => positions.value(&f.pointer),
        At::Parent => positions.value(f.pointer.rsplit_once('/').map_or("", |(parent, _)| parent)),
    };
    Problem {
        pointer: f.pointer,
        line: pos.map(|p| p.line),
        column: pos.map(|p| p.column),
        expected: f.expected,
        found: f.found,
    }
}

/// By position (unplaced last), then pointer.
fn sort(problems: &mut [Problem]) {
    problems.sort_by(|a, b| {
        let key = |p: &Problem| (p.line.is_none(), p.line, p.column);
        key(a).cmp(&key(b)).then_with(|| a.pointer.cmp(&b.pointer))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example config: the one config fixture of the whole suite.
    const GOOD: &str = include_str!("../../recipes/phoenix_lxc_configs.json");

    /// 1-based line and column of the first `needle` in `text`.
    fn at(text: &str, needle: &str) -> (usize, usize) {
        let i = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the text"));
        let line = text[..i].matches('\n').count() + 1;
        let col = i - text[..i].rfind('\n').map_or(0, |n| n + 1) + 1;
        (line, col)
    }

    fn problems(text: &str) -> Vec<Problem> {
        match load_str(Path::new("c.json"), text) {
            Err(ConfigError::Invalid { problems, .. }) => problems,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn parse_reads_what_serde_json_reads_and_notes_repeated_keys() {
        for (text, repeated) in [
            (GOOD, false),
            (
                "{\"a\": [1, -2, 3.5, 1e300, true, null, \"x\", {}, []]}",
                false,
            ),
            ("{\"a\": {\"b\": 1, \"b\": 2}}", true),
            ("[{\"k\": 1}, {\"k\": 1, \"\\u006b\": 2}]", true),
            ("{\"k\": 1, \"K\": 2, \"k \": 3}", false),
            ("18446744073709551615", false),
        ] {
            let (doc, noted) = parse(text).unwrap();
            assert_eq!(doc, serde_json::from_str::<Value>(text).unwrap(), "{text}");
            assert_eq!(noted, repeated, "{text}");
        }
        // The same errors, at the same places.
        for text in [
            "{\"a\": 1,}",
            "[1e400]",
            "{\"a\" 1}",
            "[1, 2",
            "{} x",
            "",
            "\"\\ud800\"",
        ] {
            let ours = parse(text).unwrap_err();
            let theirs = serde_json::from_str::<Value>(text).unwrap_err();
            assert_eq!(
                (ours.to_string(), ours.line(), ours.column()),
                (theirs.to_string(), theirs.line(), theirs.column()),
                "{text}"
            );
        }
    }

    #[test]
    fn a_repeated_key_is_still_reported_where_it_stands() {
        let text = "{\"lxc_configs\": {}, \"lxc_configs\": {}}";
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/lxc_configs");
        assert_eq!((p[0].line, p[0].column), (Some(1), Some(21)));
        assert!(p[0].expected.contains("first at 1:2"), "{}", p[0].expected);
    }

    #[test]
    fn good_text_loads() {
        let c = load_str(Path::new("c.json"), GOOD).unwrap();
        assert_eq!(c.lxc.len(), 2);
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn models_dataset_is_a_dataset_inside_a_pool() {
        let with = |v: &str| GOOD.replacen("{\n", &format!("{{\n  \"models_dataset\": {v},\n"), 1);
        let c = load_str(Path::new("c.json"), &with("\"rpool/phoenix/models\"")).unwrap();
        assert_eq!(
            c.models_dataset.as_ref().map(|m| m.as_str()),
            Some("rpool/phoenix/models")
        );
        assert_eq!(
            load_str(Path::new("c.json"), GOOD).unwrap().models_dataset,
            None
        );
        // A pool's root, a path, a number: refused where they stand, naming the field.
        for (bad, found) in [
            ("\"data\"", "string \"data\""),
            ("\"/data/models\"", "string \"/data/models\""),
            ("\"rpool/a b\"", "string \"rpool/a b\""),
        ] {
            let p = problems(&with(bad));
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].pointer, "/models_dataset");
            assert_eq!((p[0].line, p[0].column), (Some(2), Some(21)));
            assert!(
                p[0].expected.contains("`rpool/phoenix/models`"),
                "{}",
                p[0].expected
            );
            assert_eq!(p[0].found, found);
        }
        let p = problems(&with("7"));
        assert_eq!(
            (p[0].pointer.as_str(), p[0].expected.as_str()),
            ("/models_dataset", "string")
        );
        // Too long for children named after a container: the semantic pass says why.
        let long = format!("\"rpool/{}\"", "m".repeat(200));
        let p = problems(&with(&long));
        assert_eq!(p[0].pointer, "/models_dataset");
        assert_eq!(p[0].expected, "at most 191 characters");
    }

    #[test]
    fn schema_problem_has_position_and_no_semantic_echo() {
        let text = GOOD.replacen("\"memory_mb\": 32768", "\"memory_mb\": \"invalid\"", 1);
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/lxc_configs/901/memory_mb");
        let (line, col) = at(&text, "\"invalid\"");
        assert_eq!((p[0].line, p[0].column), (Some(line), Some(col)));
        assert_eq!(p[0].expected, "integer");
        assert_eq!(
            p[0].to_string(),
            format!(
                "{line}:{col}: /lxc_configs/901/memory_mb: expected integer, found string \"invalid\""
            )
        );
    }

    #[test]
    fn schema_and_semantic_problems_together_sorted() {
        let text = GOOD
            .replacen("\"cores\": 8", "\"cores\": 0", 1)
            .replacen("\"name\": \"drdevstral\"", "\"name\": \"-x\"", 1)
            .replacen("\"gw\": \"10.0.0.1\"", "\"gw\": \"10.9.0.1\"", 1);
        let p = problems(&text);
        let got: Vec<(&str, Option<usize>)> =
            p.iter().map(|p| (p.pointer.as_str(), p.line)).collect();
        assert_eq!(
            got,
            [
                ("/lxc_configs/901/name", Some(at(&text, "\"-x\"").0)),
                ("/lxc_configs/901/cores", Some(at(&text, "\"cores\": 0").0)),
                (
                    "/lxc_configs/901/network_config/gw",
                    Some(at(&text, "10.9.0.1").0)
                ),
            ]
        );
    }

    #[test]
    fn missing_field_points_at_its_object() {
        let text = GOOD.replacen("\"cores\": 8,", "", 1);
        let p = problems(&text);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].pointer, "/lxc_configs/901/cores");
        // The `{` of entry 901.
        let (line, col) = at(&text, "\"901\": {");
        assert_eq!((p[0].line, p[0].column), (Some(line), Some(col + 7)));
    }

    #[test]
    fn duplicate_entry_is_an_error_with_both_positions() {
        let text = GOOD.replacen("\"cores\": 8,", "\"cores\": 8, \"cores\": 9,", 1);
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/lxc_configs/901/cores");
        let (line, first) = at(&text, "\"cores\": 8");
        let second = at(&text, "\"cores\": 9").1;
        assert_eq!((p[0].line, p[0].column), (Some(line), Some(second)));
        assert!(
            p[0].expected.contains(&format!("first at {line}:{first}")),
            "{}",
            p[0].expected
        );
    }

    /// The example config changed by `f`, pretty-printed.
    fn edited(f: impl FnOnce(&mut Value)) -> String {
        let mut doc: Value = serde_json::from_str(GOOD).unwrap();
        f(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap()
    }

    #[test]
    fn after_names_entries_of_the_file_without_cycles() {
        let ok = edited(|d| d["lxc_configs"]["902"]["after"] = serde_json::json!([901]));
        let c = load_str(Path::new("c.json"), &ok).unwrap();
        let v = |n| crate::types::Vmid::new(n).unwrap();
        assert_eq!(c.lxc[&v(902)].after, [v(901)]);
        assert!(c.lxc[&v(901)].after.is_empty());

        let text = edited(|d| d["lxc_configs"]["902"]["after"] = serde_json::json!([903]));
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/lxc_configs/902/after/0");
        assert_eq!(
            p[0].expected,
            "the vmid of an entry of this file (901, 902)"
        );
        assert_eq!(p[0].found, "903, which has no entry");
        assert_eq!(p[0].line, Some(at(&text, "903").0));

        let p = problems(&edited(|d| {
            d["lxc_configs"]["902"]["after"] = serde_json::json!([902]);
        }));
        assert_eq!(p[0].pointer, "/lxc_configs/902/after/0");
        assert_eq!(p[0].found, "902, this entry itself");

        let text = edited(|d| {
            d["lxc_configs"]["902"]["after"] = serde_json::json!([901]);
            d["lxc_configs"]["901"]["after"] = serde_json::json!([902]);
        });
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/lxc_configs/901/after");
        assert_eq!(p[0].found, "the cycle 901 → 902 → 901");
        assert!(p[0].expected.contains("no cycle"), "{}", p[0].expected);

        // The schema's rules: integers, each once.
        let p = problems(&edited(|d| {
            d["lxc_configs"]["902"]["after"] = serde_json::json!(["901"]);
        }));
        assert_eq!(p[0].pointer, "/lxc_configs/902/after/0");
        assert_eq!(p[0].expected, "integer");
        let p = problems(&edited(|d| {
            d["lxc_configs"]["902"]["after"] = serde_json::json!([901, 901]);
        }));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/lxc_configs/902/after");
    }

    /// Twelve entries on GPU 0: one warning per entry that shares it (eleven, not one per
    /// pair), each naming the earlier entries, at most five of them.
    #[test]
    fn many_entries_on_one_gpu_give_one_warning_each() {
        let text = edited(|d| {
            let base = d["lxc_configs"]["901"].clone();
            let mut lxc = serde_json::Map::new();
            for i in 0..12u32 {
                let mut e = base.clone();
                e["name"] = serde_json::json!(format!("g{i}"));
                e["network_config"]["ip"] = serde_json::json!(format!("10.0.0.{}/24", 50 + i));
                if let Some(m) = e["network_config"].get_mut("mac") {
                    *m = serde_json::json!(format!("bc:24:11:00:01:{i:02x}"));
                }
                e["gpu_assignment"] = serde_json::json!([0]);
                e["vllm_tensor_parallel_size"] = serde_json::json!(1);
                lxc.insert((901 + i).to_string(), e);
            }
            d["lxc_configs"] = Value::Object(lxc);
        });
        let c = load_str(Path::new("c.json"), &text).unwrap();
        assert_eq!(c.warnings.len(), 11, "{:?}", c.warnings);
        assert!(
            c.warnings[0]
                .found
                .starts_with("GPU 0 also assigned to container 901: allowed"),
            "{}",
            c.warnings[0].found
        );
        assert_eq!(c.warnings[10].pointer, "/lxc_configs/912/gpu_assignment");
        assert!(
            c.warnings[10]
                .found
                .starts_with("GPU 0 also assigned to containers 901, 902, 903, 904, 905, 6 more: "),
            "{}",
            c.warnings[10].found
        );
    }

    #[test]
    fn a_gpu_two_entries_name_is_a_warning_unless_one_is_exclusive() {
        let shared =
            |d: &mut Value| d["lxc_configs"]["902"]["gpu_assignment"] = serde_json::json!([1]);
        let c = load_str(Path::new("c.json"), &edited(shared)).unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let w = &c.warnings[0];
        assert_eq!(w.pointer, "/lxc_configs/902/gpu_assignment");
        assert!(
            w.found
                .starts_with("GPU 1 also assigned to container 901: allowed"),
            "{}",
            w.found
        );
        assert!(w.expected.contains("gpu_exclusive"), "{}", w.expected);

        let p = problems(&edited(|d| {
            shared(d);
            d["lxc_configs"]["901"]["gpu_exclusive"] = serde_json::json!(true);
        }));
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].pointer, "/lxc_configs/902/gpu_assignment");
        assert_eq!(
            p[0].expected,
            "GPUs no other entry names (container 901 sets gpu_exclusive)"
        );
        assert_eq!(p[0].found, "GPU 1 also assigned to container 901");

        // `all` shares every GPU of the other entry; disjoint lists share none.
        let c = load_str(
            Path::new("c.json"),
            &edited(|d| d["lxc_configs"]["902"]["gpu_assignment"] = serde_json::json!("all")),
        )
        .unwrap();
        assert!(
            c.warnings[0].found.starts_with("GPU 0, 1 also assigned"),
            "{:?}",
            c.warnings
        );
        let c = load_str(
            Path::new("c.json"),
            &edited(|d| {
                d["lxc_configs"]["901"]["gpu_assignment"] = serde_json::json!([0]);
                d["lxc_configs"]["901"]["vllm_tensor_parallel_size"] = serde_json::json!(1);
                d["lxc_configs"]["902"]["gpu_assignment"] = serde_json::json!([1]);
                d["lxc_configs"]["902"]["gpu_exclusive"] = serde_json::json!(true);
            }),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn packages_are_debian_names() {
        let c = load_str(
            Path::new("c.json"),
            &edited(|d| {
                d["lxc_configs"]["902"]["packages"] =
                    serde_json::json!(["docker.io", "curl=8.5.0-2ubuntu10.6", "g++"]);
            }),
        )
        .unwrap();
        let names: Vec<&str> = c.lxc[&crate::types::Vmid::new(902).unwrap()]
            .packages
            .iter()
            .map(|p| p.as_str())
            .collect();
        assert_eq!(names, ["docker.io", "curl=8.5.0-2ubuntu10.6", "g++"]);
        for bad in ["-y", "Docker", "curl; rm -rf /", "x", "curl=-1"] {
            let p = problems(&edited(|d| {
                d["lxc_configs"]["902"]["packages"] = serde_json::json!([bad]);
            }));
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert_eq!(p[0].pointer, "/lxc_configs/902/packages/0", "{bad}");
        }
        // The semantic pass names the rule when only it can tell (a leading digit in the
        // version is the schema's rule too; the name rules are the package name's).
        let p = crate::types::PackageName::new("curl=x1").unwrap_err();
        assert!(p.reason.contains("starts with a digit"), "{p}");
    }

    #[test]
    fn syntax_error_has_position() {
        let err = load_str(Path::new("c.json"), "{\n  \"lxc_configs\": {,}\n}").unwrap_err();
        assert!(
            matches!(err, ConfigError::Syntax { line: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn not_an_object_at_all() {
        let p = problems("[]");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].pointer, "");
        assert_eq!(
            p[0].to_string(),
            "1:1: /: expected object, found an array of 0 item(s)"
        );
    }
}

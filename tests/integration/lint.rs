//! `phoenix recipe lint`: the corpus under tests/lint/ against its golden findings, the
//! shipped recipes and stdlib clean, output formats, exit codes and speed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use phoenix::api::lxc::LxcApi;
use phoenix::script::engine::{EngineOptions, new_engine};
use phoenix::script::lint::{self, Format, Linter, Severity};
use phoenix::script::stdlib::Stdlib;
use rhai::{Array, Map};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The linter for the corpus. `lxc.exec` belongs to the lxc family; stand-ins with its
/// arities (`lxc.exec(ct, argv)`, `lxc.exec(ct, argv, opts)`) keep the corpus about lint
/// itself whichever families are merged.
fn corpus_linter() -> Linter {
    let mut engine = new_engine(EngineOptions::default());
    engine.register_fn("exec", |_: LxcApi, _: i64, _: Array| ());
    engine.register_fn("exec", |_: LxcApi, _: i64, _: Array, _: Map| ());
    Linter::with_engine(engine, Stdlib::Embedded)
}

#[test]
fn corpus_gets_exactly_the_golden_findings() {
    std::env::set_current_dir(root()).unwrap();
    let findings = corpus_linter().lint_paths(&[PathBuf::from("tests/lint")]);
    let got = lint::render(&findings, Format::Human);
    let golden = root().join("tests/lint/expected.txt");
    if std::env::var_os("PHOENIX_BLESS").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    let want = std::fs::read_to_string(&golden).unwrap();
    assert!(
        got == want,
        "lint findings differ from tests/lint/expected.txt \
         (after checking the new output, regenerate with \
         `PHOENIX_BLESS=1 cargo test --test integration lint::corpus`)\n--- got\n{got}--- want\n{want}"
    );
}

#[test]
fn shipped_recipes_and_stdlib_compile_and_lint_clean() {
    let linter = Linter::new(Stdlib::Embedded);
    let mut files = Vec::new();
    for dir in ["recipes", "stdlib"] {
        let Ok(entries) = std::fs::read_dir(root().join(dir)) else {
            continue;
        };
        files.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "rhai")),
        );
    }
    assert!(
        files.iter().any(|f| f.ends_with("stdlib/steps.rhai")),
        "{files:?}"
    );
    for file in &files {
        let findings = linter.lint_file(file);
        assert!(
            findings.is_empty(),
            "{}",
            lint::render(&findings, Format::Human)
        );
        let name = file.file_name().unwrap().to_str().unwrap();
        if file.parent().unwrap().ends_with("recipes") {
            phoenix::script::Recipe::load(file, &Stdlib::Embedded)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

fn phoenix(args: &[&str]) -> (i32, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("none.toml"), "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(args)
        .current_dir(root())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PHOENIX_SETTINGS", tmp.path().join("none.toml"))
        .env("PHOENIX_LOG_DIR", tmp.path().join("log"))
        .env("PHOENIX_STATE_DIR", tmp.path().join("state"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn errors_exit_1_warnings_alone_exit_0() {
    let (code, out, err) = phoenix(&["recipe", "lint", "tests/lint/eval.rhai"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.starts_with("tests/lint/eval.rhai:2:11: error: "),
        "{out}"
    );
    assert!(err.contains("lint found 1 error(s)"), "{err}");

    let (code, out, err) = phoenix(&["recipe", "lint", "tests/lint/credentials.rhai"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.contains(": warning: ")), "{out}");

    let (code, out, _) = phoenix(&["recipe", "lint", "stdlib"]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn github_and_json_formats() {
    let (code, out, _) = phoenix(&[
        "recipe",
        "lint",
        "--format",
        "github",
        "tests/lint/undefined_variable.rhai",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "::error file=tests/lint/undefined_variable.rhai,line=4,col=5::undefined variable `containr` \
         (API objects: config, log, lxc, gpu, zfs, undo, secret, http, vllm)\n"
    );
    let (code, out, _) = phoenix(&[
        "recipe",
        "lint",
        "--format",
        "json",
        "tests/lint/credentials.rhai",
    ]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let first = &v.as_array().unwrap()[0];
    assert_eq!(first["file"], "tests/lint/credentials.rhai");
    assert_eq!(first["line"], 2);
    assert_eq!(first["column"], 13);
    assert_eq!(first["severity"], "warning");
    assert_eq!(first["rule"], "credential");
}

#[test]
fn a_missing_file_is_an_error_finding() {
    let findings = Linter::new(Stdlib::Embedded).lint_file(Path::new("tests/lint/nope.rhai"));
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].severity, Severity::Error);
    assert_eq!(findings[0].rule, "read");
}

/// Lint speed: 100 copies of the largest recipe (goal ≤ 500 ms). Run with
/// `cargo test --release --test integration lint::speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn speed_100_copies_of_the_largest_recipe() {
    let mut largest = (0, String::new(), PathBuf::new());
    for dir in ["recipes", "stdlib", "tests/lint"] {
        for e in std::fs::read_dir(root().join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rhai") {
                let text = std::fs::read_to_string(&p).unwrap();
                if text.len() > largest.0 {
                    largest = (text.len(), text, p);
                }
            }
        }
    }
    let start = Instant::now();
    let linter = Linter::new(Stdlib::Embedded);
    let setup = start.elapsed();
    let mut n = 0;
    for i in 0..100 {
        n += linter
            .lint_source(&format!("copy{i}.rhai"), &largest.1)
            .len();
    }
    let total = start.elapsed();
    println!(
        "lint: {} ({} bytes) x100 = {total:?} (linter setup {setup:?}, {n} findings)",
        largest.2.display(),
        largest.0
    );
    assert!(total.as_millis() <= 500, "{total:?}");
}

//! `phoenix recipe lint`: the corpus under tests/lint/ against its golden findings, the
//! shipped recipes and stdlib clean, output formats and exit codes. (Lint speed is measured
//! by `cargo bench --bench phoenix-bench`, not asserted here.)

use std::path::{Path, PathBuf};
use std::process::Command;

use phoenix::script::lint::{self, Format, Linter, Severity};
use phoenix::script::stdlib::Stdlib;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The corpus through the real CLI (`phoenix recipe lint tests/lint`, the engine phoenix
/// runs recipes with): exactly the findings in tests/lint/expected.txt, exit 1.
#[test]
fn corpus_gets_exactly_the_golden_findings() {
    let (code, out, err) = phoenix(&["recipe", "lint", "tests/lint"]);
    assert_eq!(code, 1, "{out}{err}");
    let errors = out.lines().filter(|l| l.starts_with("error[")).count();
    assert!(
        err.contains(&format!("lint found {errors} error(s)")),
        "{err}"
    );
    crate::golden_file::check("tests/lint/expected.txt", &out);
}

#[test]
fn shipped_recipes_and_stdlib_compile_and_lint_clean() {
    let linter = Linter::new(Stdlib::Embedded);
    let mut files = Vec::new();
    for dir in ["recipes", "stdlib"] {
        files.extend(
            std::fs::read_dir(root().join(dir))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "rhai")),
        );
    }
    assert!(
        files.iter().any(|f| f.ends_with("stdlib/steps.rhai"))
            && files.iter().any(|f| f.ends_with("recipes/drdevstral.rhai")),
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
        out.starts_with(
            "error[compile]: reserved keyword 'eval' is disabled\n --> tests/lint/eval.rhai:2:11\n"
        ),
        "{out}"
    );
    assert!(err.contains("lint found 1 error(s)"), "{err}");

    let (code, out, err) = phoenix(&["recipe", "lint", "tests/lint/credentials.rhai"]);
    assert_eq!(code, 0, "{out}{err}");
    let titles: Vec<&str> = out
        .lines()
        .filter(|l| {
            !l.is_empty() && !l.starts_with(' ') && !l.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    assert_eq!(titles.len(), 3, "{out}");
    assert!(
        titles
            .iter()
            .all(|l| l.starts_with("warning[credential]: ")),
        "{out}"
    );

    // --deny-warnings: the same warnings fail the check.
    let (code, out2, err) = phoenix(&[
        "recipe",
        "lint",
        "--deny-warnings",
        "tests/lint/credentials.rhai",
    ]);
    assert_eq!(code, 1, "{out2}{err}");
    assert_eq!(out2, out);
    assert!(
        err.contains("lint found 3 warning(s), denied by --deny-warnings"),
        "{err}"
    );
    let (code, _, _) = phoenix(&["recipe", "lint", "--deny-warnings", "stdlib", "recipes"]);
    assert_eq!(code, 0);

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
         (API objects: config, log, lxc, gpu, zfs, undo, secret, http, vllm, output)\n"
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
    assert_eq!(v["version"], 1);
    assert_eq!(v["errors"], 0);
    let first = &v["findings"].as_array().unwrap()[0];
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
    assert_eq!(
        findings[0].message,
        "cannot read tests/lint/nope.rhai: No such file or directory"
    );
    let (code, out, _) = phoenix(&["recipe", "lint", "tests/lint/nope.rhai"]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "error[read]: cannot read tests/lint/nope.rhai: No such file or directory\n\n"
    );
}

/// Issue 15's must-show: `lxc.push(ct, "/etc/x", "y", 644)` is refused with a hint to
/// write `0o644`, by lint (with the line, a caret under the mode and the column) and by a
/// run, before anything is pushed.
#[test]
fn a_decimal_mode_is_refused_with_the_octal_hint_by_lint_and_by_a_run() {
    let site = crate::boundary::Site::new();
    let recipe = site.recipe(
        "mode.rhai",
        "let ct = config.target();\nlxc.push(ct, \"/etc/x\", \"y\", 644);\n",
    );
    let out = site.phoenix(&["recipe", "lint", recipe.to_str().unwrap()], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    let shown = recipe.display().to_string();
    assert_eq!(
        out.stdout,
        format!(
            "error[mode]: lxc.push: refused by the boundary (values): file mode 644 (= 0o1204) is outside 0o777; write the mode as an octal literal: 0o644
 --> {shown}:2:29
  |
2 | lxc.push(ct, \"/etc/x\", \"y\", 644);
  |                             ^^^
  |
  = help: write the mode as an octal literal: 0o644

"
        )
    );
    let skip = site.log_len();
    let out = site.run(&recipe, &[], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "lxc.push: refused by the boundary (values): file mode 644 (= 0o1204) is outside 0o777; write the mode as an octal literal: 0o644"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !site
            .calls_since(skip)
            .iter()
            .any(|(tool, argv)| tool == "pct" && argv[0] == "push"),
        "the refused push ran"
    );
}

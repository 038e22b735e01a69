//! `secret.template` (issue 16 item 1) through the real `phoenix` binary on an emulated
//! host: the rendered text reaches the container only as a 0600 file (or on stdin) and
//! nowhere else — not argv.log, the journal, the log, stdout/stderr or a dry run's plan, in
//! clear, base64 or hex — and bad templates are refused naming the placeholder before
//! anything is pushed.

use std::path::PathBuf;

use crate::acceptance::{Site, encodings, example_config, files_holding, mode};

const KEY: &str = "sk-TemplateTestKey4Rz8Qw1Lp";
const RENDERED: &str =
    "OPENAI_API_BASE_URL=http://127.0.0.1:8000/v1\nOPENAI_API_KEY=sk-TemplateTestKey4Rz8Qw1Lp\n";

const RECIPE: &str = r#"let ct = lxc.create(config.target());
lxc.start(ct);
lxc.exec(ct, ["mkdir", "-p", "/opt/webui"]);
let env = secret.template("OPENAI_API_BASE_URL=http://127.0.0.1:8000/v1\nOPENAI_API_KEY={key}\n",
                          #{ key: secret.get("webui_key") });
lxc.push(ct, "/opt/webui/.env", env);
let r = lxc.exec(ct, ["cat"], #{ stdin: env });
log.info(`read back: ${r.stdout}`);
"#;

fn site_with_key() -> Site {
    let site = Site::new(&example_config());
    site.ok(&["secret", "init"], b"");
    site.ok(
        &["secret", "set", "webui_key"],
        format!("{KEY}\n").as_bytes(),
    );
    site
}

fn recipe(site: &Site, name: &str, text: &str) -> String {
    let p = site.path(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn a_rendered_template_is_a_0600_file_in_the_ct_and_nowhere_else() {
    let site = site_with_key();
    let r = recipe(&site, "webui.rhai", RECIPE);
    let dry = site.ok(&["recipe", "run", &r, "--lxc", "901", "--dry-run"], b"");
    // The plan shows the push as 0600 and the stdin by its size only.
    assert!(
        dry.stdout.contains(" /opt/webui/.env --perms 0600\n"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout
            .contains(&format!(" -- cat <stdin: {} bytes>\n", RENDERED.len())),
        "{}",
        dry.stdout
    );
    let run = site.ok(&["recipe", "run", &r, "--lxc", "901", "-v"], b"");

    let env_file = site.rootfs("opt/webui/.env");
    assert_eq!(std::fs::read_to_string(&env_file).unwrap(), RENDERED);
    assert_eq!(mode(&env_file), 0o600, "{env_file:?}");
    // What the recipe read back on stdout and logged is the rendered value's mark.
    assert!(
        run.stderr
            .contains("read back: «secret:template-webui_key»"),
        "{}",
        run.stderr
    );
    for out in [&dry, &run] {
        for e in encodings(KEY).iter().chain(&encodings(RENDERED)) {
            assert!(!out.stdout.contains(e.as_str()), "stdout holds {e:?}");
            assert!(!out.stderr.contains(e.as_str()), "stderr holds {e:?}");
        }
    }
    // Every file of the site (argv.log, journal, phoenix.log, markers, the emulated root):
    // only the pushed file holds the key or the rendered text; the scan finds it there.
    assert_eq!(
        files_holding(&site, RENDERED, &[]),
        vec![(env_file.clone(), RENDERED.to_owned())]
    );
    let holding: Vec<PathBuf> = files_holding(&site, KEY, &[])
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(holding, vec![env_file.clone()]);
    let journal = std::fs::read_dir(site.path("state"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .count();
    assert!(journal > 0, "the journal was scanned");
    assert!(site.path("log/phoenix.log").exists(), "the log was scanned");

    // Idempotent: the same content is not pushed again; destroy removes the file's CT.
    let again = site.ok(&["recipe", "run", &r, "--lxc", "901"], b"");
    assert!(!again.stderr.contains(KEY));
    site.ok(&["destroy"], b"");
    assert!(!env_file.exists());
}

#[test]
fn bad_templates_are_refused_naming_the_placeholder_and_push_nothing() {
    let site = site_with_key();
    for (text, want) in [
        (
            r#"secret.template("KEY={key}\nB={base}\n", #{ key: secret.get("webui_key") })"#,
            "secret.template: the placeholder `{base}` has no value in the map (given: key)",
        ),
        (
            r#"secret.template("KEY={key}\n", #{ key: secret.get("webui_key"), url: secret.get("webui_key") })"#,
            "secret.template: `url` is given but the text has no `{url}` placeholder",
        ),
        (
            r#"secret.template("URL={url}\n", #{ url: "http://127.0.0.1" })"#,
            "secret.template: the value of `url` must be a Secret (from secret.get or secret.ensure), found string",
        ),
    ] {
        let body = format!(
            "let ct = lxc.create(config.target());\nlxc.start(ct);\nlet s = {text};\nlxc.push(ct, \"/opt/x.env\", s);\n"
        );
        let r = recipe(&site, "bad.rhai", &body);
        let out = site.phoenix(&["recipe", "run", &r, "--lxc", "901"]);
        assert_eq!(out.code, 1, "{text}: {out:?}");
        assert!(out.stderr.contains(want), "{text}: {}", out.stderr);
        assert!(!out.stderr.contains(KEY));
        assert!(!site.rootfs("opt/x.env").exists(), "{text}: pushed anyway");
    }
    site.ok(&["destroy"], b"");
}

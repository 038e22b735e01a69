//! The boundary of DESIGN.md §12 (issue 12), driven as an attacker would: the real
//! `phoenix` binary against the emulated host.
//!
//! - The adversarial corpus `tests/boundary/*.rhai`: each recipe tries one escape and says,
//!   in its first line (`// expect: …`), the refusal it must get — the call and the rule.
//!   Each must fail (exit 1), print that refusal, issue no mutating command (argv.log) and
//!   leave the emulated host byte-identical.
//! - Variants that need paths of the test's own: symlinks out of a mount root.
//! - `--dry-run` never runs what a recipe marks `read_only`, and says what did run.
//! - A secret read back from a container is redacted in stderr and in `phoenix.log`.
//! - A FIFO, `/dev/zero` or a 100 MB file as recipe, config or key exits 2 at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{emu_snapshot, wait_for};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A scratch phoenix installation with its own emulated host, CT 901 (the example
/// config's target) created and running, and CT 100 made by "someone else" (untagged).
pub(crate) struct Site {
    tmp: tempfile::TempDir,
}

#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Site {
    pub(crate) fn new() -> Self {
        let site = Self {
            tmp: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(site.path("tmp")).unwrap();
        std::fs::create_dir(site.path("recipes")).unwrap();
        let setup = site.recipe(
            "setup.rhai",
            "let ct = lxc.create(config.target());\nlxc.start(ct);\n",
        );
        let out = site.run(&setup, &[], &[]);
        assert_eq!(out.code, 0, "{out:?}");
        site.emu(
            "pct",
            &[
                "create",
                "100",
                "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
                "--hostname",
                "someone-else",
                "--rootfs",
                "local-zfs:8",
            ],
        );
        site
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.path("emu")
    }

    pub(crate) fn recipe(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path("recipes").join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub(crate) fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_phoenix"));
        c.args(args)
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PHOENIX_SETTINGS", "/dev/null")
            .env("PHOENIX_HOST", "emulated")
            .env("PHOENIX_CONFIG", repo("recipes/phoenix_lxc_configs.json"))
            .env("PHOENIX_STATE_DIR", self.path("state"))
            .env("PHOENIX_LOG_DIR", self.path("log"))
            .env("PHOENIX_SECRETS_DIR", self.path("secrets"))
            .env("PHOENIX_SECRET_KEY", self.path("key/secret.key"))
            .env("PHOENIX_EMU_ROOT", self.root())
            .env("PHOENIX_LIFECYCLE_TIMEOUT", "5s")
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c
    }

    /// Run phoenix; a run that has not ended within the wait helper's patience fails the
    /// test naming it (a FIFO that hangs the open must not hang the suite).
    pub(crate) fn phoenix(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut child = self
            .command(args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_for(&format!("phoenix {args:?} to end"), || {
            child.try_wait().unwrap()
        });
        let mut stdout = String::new();
        let mut stderr = String::new();
        use std::io::Read;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        Out {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }

    /// `phoenix recipe run <recipe> --lxc 901 <flags>`.
    pub(crate) fn run(&self, recipe: &Path, flags: &[&str], env: &[(&str, &str)]) -> Out {
        let mut args = vec!["recipe", "run", recipe.to_str().unwrap(), "--lxc", "901"];
        args.extend_from_slice(flags);
        self.phoenix(&args, env)
    }

    pub(crate) fn emu(&self, tool: &str, args: &[&str]) {
        let out = Command::new(self.root().join("bin").join(tool))
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{tool} {args:?}: {out:?}");
    }

    /// The argv.log lines written since `skip` lines, as (tool, argv).
    pub(crate) fn calls_since(&self, skip: usize) -> Vec<(String, Vec<String>)> {
        crate::support::argv_log(&self.root().join("argv.log"), skip)
    }

    pub(crate) fn log_len(&self) -> usize {
        std::fs::read_to_string(self.root().join("argv.log")).map_or(0, |t| t.lines().count())
    }
}

/// Whether a logged call only reads (the queries the boundary itself may make).
fn is_query(tool: &str, argv: &[String]) -> bool {
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    match (tool, a.as_slice()) {
        ("pct", ["status", ..] | ["config", ..]) => true,
        ("pct", ["exec", _, rest @ ..]) => {
            let inner: Vec<&str> = rest
                .iter()
                .copied()
                .skip_while(|w| *w != "--")
                .skip(1)
                .collect();
            matches!(
                inner.as_slice(),
                ["ip", .., "show", "dev", _] | ["test", ..] | ["cat", _]
            )
        }
        ("zfs", ["get" | "list", ..]) => true,
        ("pveversion" | "pvesm" | "nvidia-smi", _) => true,
        _ => false,
    }
}

/// The `// expect: …` line of a corpus recipe.
fn expectation(text: &str) -> &str {
    text.lines()
        .next()
        .and_then(|l| l.strip_prefix("// expect: "))
        .expect("a corpus recipe starts with `// expect: <refusal>`")
}

#[test]
fn every_escape_in_the_corpus_is_refused_naming_call_and_rule_and_changes_nothing() {
    let site = Site::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("tests/boundary"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rhai"))
        .collect();
    files.sort();
    assert!(files.len() >= 40, "the corpus shrank: {files:?}");
    let before = emu_snapshot(&site.root());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let want = expectation(&text);
        let skip = site.log_len();
        let out = site.run(&file, &[], &[]);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(out.code, 1, "{name}: {out:?}");
        assert!(
            out.stderr.contains(&format!("  caused by: {want}")),
            "{name}: want `{want}` in:\n{}",
            out.stderr
        );
        let effects: Vec<_> = site
            .calls_since(skip)
            .into_iter()
            .filter(|(tool, argv)| !is_query(tool, argv))
            .collect();
        assert_eq!(effects, Vec::<(String, Vec<String>)>::new(), "{name}");
        assert!(
            emu_snapshot(&site.root()) == before,
            "{name} changed the emulated host"
        );
    }
}

/// The static refusals issue no host command at all, not even a query.
#[test]
fn the_issue_examples_are_refused_before_any_host_command() {
    let site = Site::new();
    for name in [
        "mount_root.rhai",
        "mount_etc.rhai",
        "mount_etc_pve.rhai",
        "mount_dev.rhai",
        "undo_foreign.rhai",
        "address_foreign.rhai",
    ] {
        let file = repo("tests/boundary").join(name);
        let skip = site.log_len();
        let out = site.run(&file, &[], &[]);
        assert_eq!(out.code, 1, "{name}: {out:?}");
        // Opening the emulated host asks its version; nothing else may reach it.
        let calls: Vec<_> = site
            .calls_since(skip)
            .into_iter()
            .filter(|(tool, _)| tool != "pveversion")
            .collect();
        assert_eq!(calls, Vec::<(String, Vec<String>)>::new(), "{name}");
    }
}

#[test]
fn symlinks_out_of_a_mount_root_are_refused_and_a_plain_directory_is_mounted() {
    let site = Site::new();
    let root = site.path("mounts");
    std::fs::create_dir_all(root.join("data")).unwrap();
    std::fs::create_dir_all(site.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    std::os::unix::fs::symlink(site.path("elsewhere"), root.join("out")).unwrap();
    std::os::unix::fs::symlink("../mounts/data", root.join("self")).unwrap();
    let roots = root.display().to_string();
    let env = [("PHOENIX_MOUNT_ROOTS", roots.as_str())];
    let before = emu_snapshot(&site.root());
    for (source, want) in [
        (
            format!("{roots}/etc"),
            format!(
                "lxc.mount: refused by the boundary (host paths): \"{roots}/etc\" (resolved: /etc) is inside the protected host directory /etc"
            ),
        ),
        (
            format!("{roots}/out/"),
            "is not inside a mount root".to_owned(),
        ),
        (
            format!("{roots}/data/../../elsewhere"),
            "is not inside a mount root".to_owned(),
        ),
    ] {
        let r = site.recipe(
            "sym.rhai",
            &format!("lxc.mount(config.target(), \"{source}\", \"/data\");\n"),
        );
        let out = site.run(&r, &[], &env);
        assert_eq!(out.code, 1, "{source}: {out:?}");
        assert!(
            out.stderr.contains(&want),
            "{source}: want {want}:\n{}",
            out.stderr
        );
        assert!(
            emu_snapshot(&site.root()) == before,
            "{source} changed the host"
        );
    }
    // A symlink that stays inside the root is mounted by its resolved path.
    let r = site.recipe(
        "ok.rhai",
        &format!("lxc.mount(config.target(), \"{roots}/self/\", \"/data\");\n"),
    );
    let out = site.run(&r, &[], &env);
    assert_eq!(out.code, 0, "{out:?}");
    let real = std::fs::canonicalize(root.join("data")).unwrap();
    let conf = std::fs::read_to_string(site.root().join("etc/pve/lxc/901.conf")).unwrap();
    assert!(
        conf.contains(&format!("mp0: {},mp=/data\n", real.display())),
        "{conf}"
    );
    // A mount root that is itself protected is a usage error before anything runs.
    let out = site.run(&r, &[], &[("PHOENIX_MOUNT_ROOTS", "/var")]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("setting mount_roots (PHOENIX_MOUNT_ROOTS): mount root /var (resolved: /var) is or touches the protected directory"),
        "{}",
        out.stderr
    );
}

#[test]
fn undo_steps_are_checked_again_when_destroy_runs_them() {
    let site = Site::new();
    // A journal edited by hand (or written by an older phoenix): a command for the
    // foreign container 100, and a shell for phoenix's own 901.
    let journal = site.path("state/journal.jsonl");
    let mut text = std::fs::read_to_string(&journal).unwrap();
    for (seq, vmid, argv) in [
        (9001, 100, r#"["rm","-rf","/"]"#),
        (9002, 901, r#"["/bin/sh","-c","reboot"]"#),
    ] {
        text.push_str(&format!(
            "{{\"v\":1,\"run\":\"forged\",\"seq\":{seq},\"ts\":0,\"kind\":\"intent\",\"step\":\"undo.push:{vmid}\",\"undo\":{{\"op\":\"exec\",\"vmid\":{vmid},\"argv\":{argv}}}}}\n"
        ));
    }
    std::fs::write(&journal, text).unwrap();
    let skip = site.log_len();
    let out = site.phoenix(&["destroy"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("undo: refused by the boundary (ownership): container 100 is not phoenix's"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "undo: refused by the boundary (shell): refusing to run the shell \"/bin/sh\""
        ),
        "{}",
        out.stdout
    );
    let execs: Vec<_> = site
        .calls_since(skip)
        .into_iter()
        .filter(|(tool, argv)| {
            tool == "pct"
                && argv.first().is_some_and(|a| a == "exec")
                && (argv.get(1).is_some_and(|v| v == "100")
                    || argv.iter().any(|a| a == "/bin/sh" || a == "rm"))
        })
        .collect();
    assert_eq!(execs, Vec::<(String, Vec<String>)>::new());
    assert!(site.root().join("etc/pve/lxc/100.conf").exists());
}

#[test]
fn dry_run_never_runs_what_a_recipe_marks_read_only() {
    let site = Site::new();
    let r = site.recipe(
        "sneaky.rhai",
        "let ct = config.target();\n\
         let probe = lxc.exec(ct, [\"test\", \"-d\", \"/etc\"], #{ ok_codes: [0, 1], read_only: true });\n\
         log.info(`probe planned: ${probe.planned} code: ${probe.code}`);\n\
         let r = lxc.exec(ct, [\"rm\", \"-f\", \"/etc/hostname\"], #{ read_only: true });\n\
         log.info(`rm planned: ${r.planned}`);\n",
    );
    let before = emu_snapshot(&site.root());
    let skip = site.log_len();
    let out = site.run(&r, &["--dry-run"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    // The built-in probe ran for real; the recipe's `rm` was only planned.
    assert!(
        out.stderr.contains("probe planned: false code: 0"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("rm planned: true"), "{}", out.stderr);
    let ran: Vec<_> = site.calls_since(skip);
    assert!(
        !ran.iter().any(|(_, argv)| argv.iter().any(|a| a == "rm")),
        "{ran:?}"
    );
    assert!(
        ran.iter()
            .any(|(_, argv)| argv.ends_with(&["test".into(), "-d".into(), "/etc".into()])),
        "{ran:?}"
    );
    assert!(
        out.stdout
            .starts_with("Dry run of sneaky.rhai on the emulated host: nothing was changed.\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("\n  ~ pct exec 901 --keep-env 0 -- rm -f /etc/hostname\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("\n  ran    pct exec 901 --keep-env 0 -- test -d /etc\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .ends_with("\nPlan: 0 to create, 1 to change, 0 to remove.\n"),
        "{}",
        out.stdout
    );
    assert!(
        emu_snapshot(&site.root()) == before,
        "the dry run changed the host"
    );
}

#[test]
fn a_secret_read_back_from_a_container_is_redacted_in_stderr_and_the_log() {
    let site = Site::new();
    let token = "hf_BoundaryTestToken0123456789abcdef";
    let out = site.phoenix(&["secret", "init"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let mut set = site
        .command(&["secret", "set", "hf_token"], &[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    set.stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let out = set.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let push = site.recipe(
        "push.rhai",
        "lxc.push(config.target(), \"/root/token\", secret.get(\"hf_token\"), 0o600);\n",
    );
    let out = site.run(&push, &[], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    // A recipe that never asks for the secret reads it back, logs it, prints it and fails
    // with it in its error.
    let leak = site.recipe(
        "leak.rhai",
        "let r = lxc.exec(config.target(), [\"cat\", \"/root/token\"]);\n\
         log.info(`token: ${r.stdout}`);\n\
         print(r.stdout);\n\
         throw `leaked ${r.stdout}`;\n",
    );
    let out = site.run(&leak, &["-v"], &[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(!out.stderr.contains(token), "{}", out.stderr);
    assert!(!out.stdout.contains(token), "{}", out.stdout);
    assert!(
        out.stderr.contains("token: «secret:hf_token»"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("the recipe threw: leaked «secret:hf_token»"),
        "{}",
        out.stderr
    );
    let log = std::fs::read_to_string(site.path("log/phoenix.log")).unwrap();
    assert!(!log.contains(token), "phoenix.log holds the token");
    assert!(log.contains("«secret:hf_token»"), "{log}");
}

#[test]
fn a_fifo_dev_zero_or_huge_file_as_recipe_config_or_key_exits_2_at_once() {
    let site = tempfile::tempdir().unwrap();
    let site = Site { tmp: site };
    std::fs::create_dir(site.path("tmp")).unwrap();
    std::fs::create_dir(site.path("recipes")).unwrap();
    let fifo = site.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let big = site.path("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let ok = site.recipe("ok.rhai", "log.info(\"hi\");\n");
    let uses_secret = site.recipe("s.rhai", "secret.get(\"hf_token\");\n");
    let fifo_s = fifo.display().to_string();
    let big_s = big.display().to_string();
    for input in [fifo_s.as_str(), "/dev/zero", big_s.as_str()] {
        let kind = if input == fifo_s {
            "a FIFO: phoenix reads only regular files".to_owned()
        } else if input == "/dev/zero" {
            "a character device: phoenix reads only regular files".to_owned()
        } else {
            "104857600 bytes; at most".to_owned()
        };
        let out = site.phoenix(&["recipe", "run", input], &[]);
        assert_eq!(out.code, 2, "recipe {input}: {out:?}");
        assert!(
            out.stderr.contains(&format!("the recipe file is {kind}")),
            "{}",
            out.stderr
        );
        let out = site.phoenix(
            &["recipe", "run", ok.to_str().unwrap()],
            &[("PHOENIX_CONFIG", input)],
        );
        assert_eq!(out.code, 2, "config {input}: {out:?}");
        assert!(
            out.stderr.contains(&format!("the config file is {kind}")),
            "{}",
            out.stderr
        );
        let out = site.phoenix(
            &["recipe", "run", uses_secret.to_str().unwrap()],
            &[("PHOENIX_SECRET_KEY", input)],
        );
        assert_eq!(out.code, 2, "key {input}: {out:?}");
        assert!(out.stderr.contains("secret key"), "{}", out.stderr);
    }
}

//! What an operator sees (issue 15): the result on stdout, `--json` documents, the demo in
//! a per-user directory as a non-root user, a `destroy` that asks on a terminal, help,
//! completions, the man page and `-v`/`-q`/`RUST_LOG`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The uid/gid the non-root demo runs as (`nobody` on Debian and Ubuntu).
const NOBODY: u32 = 65534;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_phoenix")
}

/// What a finished phoenix process said.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl From<std::process::Output> for Out {
    fn from(o: std::process::Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// phoenix with no PHOENIX_* variable but `XDG_STATE_HOME` in a scratch directory: the
/// emulated host's per-user defaults put everything there.
struct Demo {
    tmp: tempfile::TempDir,
}

impl Demo {
    fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("phoenix/emulated")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("XDG_STATE_HOME", self.tmp.path())
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Out {
        self.command(args).output().unwrap().into()
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.command(args);
        c.envs(env.iter().copied());
        c.output().unwrap().into()
    }
}

/// `recipe run` of the drdevstral flow on the emulated host, `extra` flags appended.
fn flow_args(extra: &[&'static str]) -> Vec<String> {
    let mut v = vec![
        "recipe".to_owned(),
        "run".to_owned(),
        repo("recipes/drdevstral.rhai").display().to_string(),
        "--host".to_owned(),
        "emulated".to_owned(),
        "--config".to_owned(),
        repo("recipes/phoenix_lxc_configs.json")
            .display()
            .to_string(),
    ];
    v.extend(extra.iter().map(|s| (*s).to_owned()));
    v
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The labels of a result block's rows, after its first line.
fn labels(block: &str) -> Vec<String> {
    block
        .lines()
        .skip(1)
        .map(|l| {
            let l = l.strip_prefix("  ").unwrap_or(l);
            let end = l.find("  ").unwrap_or(l.len());
            l[..end].to_owned()
        })
        .collect()
}

/// Every file or directory under the world-writable places a user can write outside their
/// home, owned by `uid`.
fn owned_by(uid: u32, skip: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = [
        "/tmp", "/var/tmp", "/dev/shm", "/run", "/etc", "/var/lib", "/var/log",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.starts_with(skip) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.uid() == uid {
                found.push(p.clone());
            }
            if meta.is_dir() {
                stack.push(p);
            }
        }
    }
    found
}

#[test]
fn issue15_demo_as_a_non_root_user_stays_in_its_per_user_dir_and_prints_only_the_result() {
    // As root the demo runs as `nobody`; as any other user, as that user.
    let root = nix::unistd::geteuid().is_root();
    let user = if root {
        NOBODY
    } else {
        nix::unistd::geteuid().as_raw()
    };
    let home = tempfile::tempdir().unwrap();
    if root {
        let uid = nix::unistd::Uid::from_raw(NOBODY);
        let gid = nix::unistd::Gid::from_raw(NOBODY);
        nix::unistd::chown(home.path(), Some(uid), Some(gid)).unwrap();
    }
    let before = if root {
        owned_by(user, home.path())
    } else {
        Vec::new()
    };
    let phoenix = |args: &[&str]| -> Out {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(home.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", home.path())
            .stdin(Stdio::null());
        if root {
            c.uid(NOBODY).gid(NOBODY);
        }
        c.output().unwrap().into()
    };
    let args = flow_args(&[]);
    let out = phoenix(&strs(&args));
    assert_eq!(out.code, 0, "{out:?}");

    // stdout holds exactly the result block.
    let first = out.stdout.lines().next().unwrap_or_default();
    let head =
        regex::Regex::new(r"^drdevstral\.rhai finished in \d+\.\d s \(run \S+, emulated host\)$")
            .unwrap();
    assert!(head.is_match(first), "{}", out.stdout);
    assert_eq!(
        labels(&out.stdout),
        ["container", "endpoint", "model", "API key", "try", "remove"],
        "{}",
        out.stdout
    );
    let row = |label: &str| -> String {
        out.stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("  {label}"))
                    .map(|r| r.trim().to_owned())
            })
            .unwrap()
    };
    assert!(
        row("container").starts_with("901 drdevstral: running, 127."),
        "{}",
        out.stdout
    );
    assert!(row("endpoint").starts_with("http://127."), "{}", out.stdout);
    assert!(
        row("endpoint").ends_with(":8000/v1 (vLLM, OpenAI API)"),
        "{}",
        out.stdout
    );
    assert_eq!(row("model"), "mistralai/Devstral-Small-2507");
    assert_eq!(
        row("API key"),
        format!("{} secret get vllm_api_key --reveal --host emulated", bin())
    );
    assert_eq!(
        row("remove"),
        format!("{} destroy --lxc 901 --host emulated", bin())
    );
    assert!(
        out.stderr.contains("start lxc.create:901"),
        "{}",
        out.stderr
    );

    // Everything lives under ~/.local/state/phoenix/emulated, nothing anywhere else.
    let state = home.path().join(".local/state/phoenix/emulated");
    for rel in [
        "journal.jsonl",
        "secret.key",
        "secrets",
        "log/phoenix.log",
        "markers",
        "emulated/bin/pct",
    ] {
        assert!(
            state.join(rel).exists(),
            "{rel} is missing under {}",
            state.display()
        );
    }
    // (As another user, files that user's other processes make meanwhile would count too:
    // the scan is exact only for `nobody`, which nothing else here runs as.)
    if root {
        assert_eq!(
            owned_by(user, home.path()),
            before,
            "written outside the per-user dir"
        );
    }

    // The printed commands work as printed (the same user, the same environment).
    let key = phoenix(&[
        "secret",
        "get",
        "vllm_api_key",
        "--reveal",
        "--host",
        "emulated",
    ]);
    assert_eq!(key.code, 0, "{key:?}");
    assert_eq!(key.stdout.trim().len(), 64, "{key:?}");
    let destroy = phoenix(&["destroy", "--lxc", "901", "--host", "emulated"]);
    assert_eq!(destroy.code, 0, "{destroy:?}");
    assert!(
        destroy.stdout.contains("destroy container 901"),
        "{destroy:?}"
    );
    let status = phoenix(&["status", "--host", "emulated"]);
    assert_eq!(
        status.stdout, "nothing phoenix-made is recorded in the journal\n",
        "{status:?}"
    );
}

#[test]
fn issue15_run_json_and_status_report_endpoint_and_live_state() {
    let demo = Demo::new();
    let args = flow_args(&["--json"]);
    let out = demo.run(&strs(&args));
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["ok"], true);
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["host"], "emulated");
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["plan"], Value::Null);
    assert_eq!(v["containers"][0]["vmid"], 901);
    assert_eq!(v["containers"][0]["state"], "running");
    let address = v["containers"][0]["address"].as_str().unwrap().to_owned();
    let e = &v["endpoints"][0];
    assert_eq!(e["url"], format!("http://{address}:8000/v1"));
    assert_eq!(e["api"], "openai");
    assert_eq!(e["model"], "mistralai/Devstral-Small-2507");
    assert_eq!(e["vmid"], 901);
    assert_eq!(e["api_key"]["secret"], "vllm_api_key");
    assert_eq!(
        v["destroy"],
        format!("{} destroy --lxc 901 --host emulated", bin())
    );

    let st = demo.run(&["status", "--json", "--host", "emulated"]);
    assert_eq!(st.code, 0, "{st:?}");
    let s: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(s["version"], 1);
    let c = &s["containers"][0];
    assert_eq!(c["vmid"], 901);
    assert_eq!(c["name"], "drdevstral");
    assert_eq!(c["host"], "emulated");
    assert_eq!(c["state"], "running");
    assert_eq!(c["address"], address.as_str());
    assert_eq!(c["endpoints"][0]["url"], e["url"]);
    assert_eq!(c["endpoints"][0]["listening"], true);
    assert!(c["steps"].as_array().unwrap().len() > 5, "{s}");
    let human = demo.run(&["status", "--host", "emulated"]);
    assert!(
        human.stdout.starts_with(&format!(
            "container 901 drdevstral: running, {address} (emulated host)\n  endpoint"
        )),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("OpenAI API, listening)"),
        "{}",
        human.stdout
    );

    // Stopped (here: destroyed), the journal and the host agree there is nothing.
    assert_eq!(demo.run(&["destroy", "--host", "emulated", "-q"]).code, 0);
    let st = demo.run(&["status", "--json", "--host", "emulated"]);
    let s: Value = serde_json::from_str(&st.stdout).unwrap();
    assert_eq!(s["containers"], serde_json::json!([]));
}

#[test]
fn issue15_pve_host_without_pct_exits_2_before_creating_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let env = [
        ("PHOENIX_SETTINGS", tmp.path().join("none.toml")),
        ("PHOENIX_BIN_DIR", empty.clone()),
        ("PHOENIX_STATE_DIR", tmp.path().join("state")),
        ("PHOENIX_LOG_DIR", tmp.path().join("log")),
        ("PHOENIX_SECRETS_DIR", tmp.path().join("secrets")),
        ("PHOENIX_SECRET_KEY", tmp.path().join("key/secret.key")),
    ];
    std::fs::write(&env[0].1, "").unwrap();
    let phoenix = |args: &[&str]| -> Out {
        Command::new(bin())
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .unwrap()
            .into()
    };
    // drdevstral creates the secret key on first use: not even that may happen.
    let out = phoenix(&[
        "recipe",
        "run",
        repo("recipes/drdevstral.rhai").to_str().unwrap(),
        "--config",
        repo("recipes/phoenix_lxc_configs.json").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr,
        format!(
            "phoenix: error: this is not a Proxmox VE host: {} does not exist. Install phoenix \
             on a Proxmox VE node, or try it here with `--host emulated` (an emulated Proxmox \
             host; nothing leaves this machine)\n",
            empty.join("pct").display()
        )
    );
    assert_eq!(out.stdout, "");
    for (k, p) in &env[2..] {
        assert!(!p.exists(), "{k}: {} was created", p.display());
    }
    // gpu list without a driver says so in words.
    let out = phoenix(&["gpu", "list"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "phoenix: error: no NVIDIA driver on this host: {} does not exist",
            empty.join("nvidia-smi").display()
        )),
        "{}",
        out.stderr
    );
}

/// How many steps the journal holds (status --json).
fn recorded_steps(demo: &Demo) -> usize {
    let out = demo.run(&["status", "--json", "--host", "emulated"]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    v["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["steps"].as_array().unwrap().len())
        .sum::<usize>()
        + v["other"].as_array().unwrap().len()
}

/// Run `phoenix destroy …` with stdin on a pseudo-terminal and `answer` typed into it.
fn destroy_on_a_terminal(demo: &Demo, extra: &[&str], answer: &str) -> Out {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut args = vec!["destroy", "--host", "emulated"];
    args.extend(extra);
    let mut c = demo.command(&args);
    c.stdin(Stdio::from(pty.slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    // The terminal buffers the line until phoenix reads it.
    let mut master = std::fs::File::from(pty.master);
    master.write_all(answer.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    out.into()
}

#[test]
fn issue15_destroy_on_a_terminal_shows_its_plan_and_n_changes_nothing() {
    let demo = Demo::new();
    let args = flow_args(&["-q"]);
    let run = demo.run(&strs(&args));
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "", "-q shows no progress");
    let journal = demo.state().join("journal.jsonl");
    let before = std::fs::read(&journal).unwrap();
    let conf = demo.state().join("emulated/etc/pve/lxc/901.conf");
    let conf_before = std::fs::read(&conf).unwrap();

    let n = recorded_steps(&demo);
    let out = destroy_on_a_terminal(&demo, &[], "n\n");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with(&format!(
            "phoenix destroy will undo {n} step(s):\n  - run [\"systemctl\""
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "WARNING: 3 ZFS dataset(s) will be DESTROYED with everything in them (downloaded \
             model weights): rpool/phoenix/models/drdevstral, rpool/phoenix/models, \
             rpool/phoenix. Add --keep-data to keep them."
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.ends_with(&format!(
            "Undo these {n} step(s)? [y/N] phoenix: error: not confirmed: nothing was changed\n"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        before,
        "the journal changed"
    );
    assert_eq!(
        std::fs::read(&conf).unwrap(),
        conf_before,
        "the container changed"
    );

    // --keep-data: no warning, the datasets stay; "yes" goes ahead.
    let out = destroy_on_a_terminal(&demo, &["--keep-data"], "yes\n");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("WARNING"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("keeping 3 dataset step(s) (--keep-data)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("undone        destroy container 901"),
        "{}",
        out.stdout
    );
    assert!(!conf.exists());
    let st: Value =
        serde_json::from_str(&demo.run(&["status", "--json", "--host", "emulated"]).stdout)
            .unwrap();
    assert_eq!(st["other"].as_array().unwrap().len(), 3, "{st}");

    // --yes asks nothing, even on a terminal.
    let out = destroy_on_a_terminal(&demo, &["--yes"], "");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("[y/N]"), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("undone        destroy dataset rpool/phoenix/models"),
        "{}",
        out.stdout
    );
}

#[test]
fn issue15_quiet_keeps_the_result_and_verbose_shows_phoenix_debug_lines_only() {
    let demo = Demo::new();
    let args = flow_args(&["-v"]);
    let out = demo.run(&strs(&args));
    assert_eq!(out.code, 0, "{out:?}");
    let debug: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("DEBUG"))
        .collect();
    assert!(
        debug
            .iter()
            .any(|l| l.contains("/emulated/bin/pct create 901")),
        "{}",
        out.stderr
    );
    // The readiness wait made HTTP requests; the HTTP client's own lines stay hidden.
    assert!(
        !out.stderr.contains("starting new connection"),
        "{}",
        out.stderr
    );
    let with_rust_log = demo.run_env(&strs(&args), &[("RUST_LOG", "reqwest=debug")]);
    assert_eq!(with_rust_log.code, 0, "{with_rust_log:?}");
    assert!(
        with_rust_log.stderr.contains("starting new connection"),
        "{}",
        with_rust_log.stderr
    );
    assert!(
        !with_rust_log.stderr.contains("INFO"),
        "RUST_LOG replaces the levels"
    );

    let n = recorded_steps(&demo);
    let out = demo.run(&["destroy", "--host", "emulated", "-q"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!("destroy: {n} undone, 0 already gone, 0 left alone, 0 failed\n")
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn issue15_secret_init_quiet_prints_one_line() {
    let demo = Demo::new();
    let out = demo.run(&["secret", "init", "--host", "emulated", "-q"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        format!(
            "created secret key {}\n",
            demo.state().join("secret.key").display()
        )
    );
    assert_eq!(out.stderr, "");
}

#[test]
fn issue15_bare_phoenix_prints_help_completions_and_man_page() {
    let demo = Demo::new();
    let out = demo.run(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("Provision vLLM servers"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.matches("Global options:").count(), 1);
    assert!(out.stdout.contains("  -q, --quiet"), "{}", out.stdout);
    // A command group without its command prints its help too.
    let out = demo.run(&["secret"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("Usage: phoenix secret <COMMAND>"),
        "{}",
        out.stdout
    );

    let out = demo.run(&["completions", "bash"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("complete -F _phoenix"),
        "{}",
        out.stdout
    );
    // Global options complete in subcommands too.
    assert!(
        out.stdout.contains("phoenix__subcmd__recipe__subcmd__run)"),
        "{}",
        out.stdout
    );
    let run_words = out
        .stdout
        .split("phoenix__subcmd__recipe__subcmd__run)")
        .nth(1)
        .and_then(|s| s.lines().find(|l| l.contains("opts=")))
        .unwrap();
    assert!(
        run_words.contains("--host") && run_words.contains("--dry-run"),
        "{run_words}"
    );

    let out = demo.run(&["man"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(".TH phoenix 1"), "{}", out.stdout);
    let dir = demo.tmp.path().join("man1");
    let out = demo.run(&["man", "--out-dir", dir.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    for page in [
        "phoenix.1",
        "phoenix-recipe-run.1",
        "phoenix-destroy.1",
        "phoenix-secret-get.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap();
        assert!(text.contains(".TH "), "{page}");
    }
}

/// Every command's help: examples and exit codes, the global options named in one line (not
/// repeated as a block), and no file named that the repository does not have.
#[test]
fn issue15_every_command_help_has_examples_exit_codes_and_only_real_files() {
    fn leaves(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        let subs: Vec<&clap::Command> = cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help")
            .collect();
        if subs.is_empty() {
            out.push(path);
            return;
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s.get_name().to_owned());
            leaves(s, p, out);
        }
    }
    let mut all = Vec::new();
    leaves(&phoenix::cli::help::command(), Vec::new(), &mut all);
    assert!(all.len() >= 17, "{all:?}");
    let file =
        regex::Regex::new(r"\b((?:docs|recipes|stdlib|schemas|tests)/[\w./-]+|\w+\.md)\b").unwrap();
    let demo = Demo::new();
    let mut texts = vec![demo.run(&["--help"]).stdout];
    for path in &all {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = demo.run(&args);
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        let h = &out.stdout;
        assert!(h.contains("\nExamples:\n  phoenix "), "{args:?}:\n{h}");
        assert!(h.contains("\nExit codes: 0 "), "{args:?}:\n{h}");
        assert!(
            h.contains("\nGlobal options: --config <FILE>, --host"),
            "{args:?}:\n{h}"
        );
        assert!(
            !h.contains("      --config <FILE>"),
            "{args:?} repeats the global options:\n{h}"
        );
        texts.push(out.stdout);
    }
    for text in texts {
        for m in file.find_iter(&text) {
            let name = m.as_str().trim_end_matches('.');
            assert!(
                repo(name).exists(),
                "help names {name}, which the repository lacks"
            );
        }
    }
}

#[test]
fn issue15_a_recipe_reports_its_own_values_and_bad_outputs_are_refused() {
    let demo = Demo::new();
    let config = repo("recipes/phoenix_lxc_configs.json");
    let run = |name: &str, text: &str| -> Out {
        let path = demo.tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        demo.run(&[
            "recipe",
            "run",
            path.to_str().unwrap(),
            "--host",
            "emulated",
            "--config",
            config.to_str().unwrap(),
            "--lxc",
            "902",
        ])
    };
    // No GPU, no server: the block still names the container and the recipe's values.
    let out = run(
        "plain.rhai",
        "output.set(\"answer\", 42);\noutput.set(\"key\", secret.ensure(\"demo_key\"));\n\
         output.endpoint(#{ url: \"http://127.0.0.1:9/\", ct: 902 });\n",
    );
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "  container  902 gateway: absent".to_owned(),
            "  endpoint   http://127.0.0.1:9/".to_owned(),
            "  try        curl -sS http://127.0.0.1:9/".to_owned(),
            "  answer     42".to_owned(),
            format!(
                "  key        {} secret get demo_key --reveal --host emulated",
                bin()
            ),
        ],
        "{}",
        out.stdout
    );
    for (name, text, error) in [
        (
            "scheme.rhai",
            "output.endpoint(#{ url: \"file:///etc/passwd\" });",
            "output.endpoint: `url` \"file:///etc/passwd\" must be http://host… or https://host…",
        ),
        (
            "key.rhai",
            "output.endpoint(#{ url: \"http://a/\", colour: 1 });",
            "output.endpoint: unknown option `colour`",
        ),
        (
            "apikey.rhai",
            "output.endpoint(#{ url: \"http://a/\", api_key: \"sk-plain\" });",
            "output.endpoint: `api_key` must be a secret",
        ),
        (
            "ct.rhai",
            "output.endpoint(#{ url: \"http://a/\", ct: 999 });",
            "output.endpoint: `ct` 999 is not an entry of the loaded config",
        ),
        (
            "value.rhai",
            "output.set(\"list\", [1, 2]);",
            "output.set: `list`: the value must be a string, number, boolean or secret",
        ),
    ] {
        let out = run(name, text);
        assert_eq!(out.code, 1, "{name}: {out:?}");
        assert!(out.stderr.contains(error), "{name}: {}", out.stderr);
        assert_eq!(
            out.stdout, "",
            "{name}: a failed run prints no result block"
        );
    }
    // With --json a failed run still prints its document, with the error.
    let path = demo.tmp.path().join("scheme.rhai");
    let out = demo.run(&[
        "recipe",
        "run",
        path.to_str().unwrap(),
        "--host",
        "emulated",
        "--config",
        config.to_str().unwrap(),
        "--lxc",
        "902",
        "--json",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains("must be http://host"),
        "{v}"
    );
    assert_eq!(v["containers"][0]["vmid"], 902);
    // A failed run left what it made: the warning says how to see and remove it (`recipe
    // test`, which removes it itself, does not say so: tests/integration/recipe_test.rs).
    assert!(
        out.stderr
            .contains("`phoenix status` shows it, `phoenix destroy` removes it"),
        "{}",
        out.stderr
    );
}

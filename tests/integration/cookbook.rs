//! Issue 16 item 3: the cookbook (`recipes/*.rhai` beside drdevstral, `stdlib/portainer.rhai`,
//! `recipes/cookbook_configs.json`) runs on the emulated host and cleans up after itself.
//!
//! Each test is a scratch installation (only `XDG_STATE_HOME` set: the emulated host's
//! per-user defaults put state, secrets and the emulated root under it) running the
//! `phoenix` binary as an operator would, with the example config as shipped.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The example config every cookbook recipe has an entry in.
fn config() -> String {
    repo("recipes/cookbook_configs.json").display().to_string()
}

/// One phoenix invocation's result.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A scratch installation on the emulated host.
struct Kitchen {
    tmp: tempfile::TempDir,
}

impl Kitchen {
    fn new() -> Self {
        Self {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    /// The emulated host's root.
    fn root(&self) -> PathBuf {
        self.tmp.path().join("phoenix/emulated/emulated")
    }

    fn phoenix(&self, args: &[&str]) -> Out {
        let o = Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args(args)
            .args(["--host", "emulated"])
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("XDG_STATE_HOME", self.tmp.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Out {
        let o = self.phoenix(args);
        assert_eq!(o.code, 0, "phoenix {args:?}: {o:?}");
        o
    }

    /// `recipe run recipes/<recipe> --lxc <vmid>` with the example config; must succeed.
    #[track_caller]
    fn run(&self, recipe: &str, vmid: &str) -> Out {
        let path = repo(&format!("recipes/{recipe}")).display().to_string();
        self.ok(&["recipe", "run", &path, "--config", &config(), "--lxc", vmid])
    }

    /// A secret's value, as the operator reads it.
    fn secret(&self, name: &str) -> String {
        let o = self.ok(&["secret", "get", name, "--reveal"]);
        o.stdout.trim().to_owned()
    }

    /// Every command the emulated host received, as `(tool, argv)`.
    fn argv_log(&self) -> Vec<(String, Vec<String>)> {
        crate::support::argv_log(&self.root().join("argv.log"), 0)
    }

    /// The commands run inside container `vmid` (after `pct exec VMID … --`).
    fn execs(&self, vmid: &str) -> Vec<Vec<String>> {
        self.argv_log()
            .into_iter()
            .filter(|(tool, a)| tool == "pct" && a[0] == "exec" && a[1] == vmid)
            .map(|(_, a)| {
                let at = a.iter().position(|x| x == "--").unwrap();
                a[at + 1..].to_vec()
            })
            .collect()
    }

    /// Every file under the scratch directory whose bytes contain `needle`, with its mode.
    fn files_holding(&self, needle: &str) -> Vec<(PathBuf, u32)> {
        let mut found = Vec::new();
        let mut dirs = vec![self.tmp.path().to_owned()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                if meta.is_dir() {
                    dirs.push(e.path());
                } else if meta.is_file() {
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        let rel = e.path().strip_prefix(self.tmp.path()).unwrap().to_owned();
                        found.push((rel, meta.permissions().mode() & 0o7777));
                    }
                }
            }
        }
        found.sort();
        found
    }

    /// What is left after a destroy: container configs on the emulated host and containers
    /// `phoenix status` still lists.
    #[track_caller]
    fn assert_nothing_left(&self) {
        let confs: Vec<_> = std::fs::read_dir(self.root().join("etc/pve/lxc"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(confs.is_empty(), "containers left: {confs:?}");
        let status: Value = serde_json::from_str(&self.ok(&["status", "--json"]).stdout).unwrap();
        assert_eq!(status["containers"], serde_json::json!([]), "{status}");
        assert_eq!(status["other"], serde_json::json!([]), "{status}");
    }
}

/// The address:port in the line of the result block labelled `label`.
fn result_value(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {out}"))
        .trim()
        .to_owned()
}

#[track_caller]
fn assert_refused(addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let e = TcpStream::connect(addr).expect_err("something still listens");
    assert_eq!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{addr}: {e}"
    );
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Issue 16 must-show: every recipe in recipes/ and module in stdlib/ passes `recipe lint`
/// (the cookbook's files by name, so a missing one fails), and the example config is valid.
#[test]
fn issue16_every_recipe_and_stdlib_module_passes_lint() {
    let k = Kitchen::new();
    let mut files = Vec::new();
    for dir in ["recipes", "stdlib"] {
        for e in std::fs::read_dir(repo(dir)).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "rhai") {
                files.push(e.path());
            }
        }
    }
    for want in [
        "recipes/open-webui.rhai",
        "recipes/portainer.rhai",
        "recipes/docker-ce.rhai",
        "recipes/drdevstral.rhai",
        "stdlib/portainer.rhai",
    ] {
        assert!(files.iter().any(|f| f.ends_with(want)), "{want}: {files:?}");
    }
    for f in &files {
        let out = k.phoenix(&["recipe", "lint", f.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{}: {out:?}", f.display());
        assert!(!out.stdout.contains("error"), "{}: {out:?}", f.display());
    }
    let out = k.ok(&["config", "validate", "--config", &config()]);
    assert!(out.stdout.contains("valid, 5 container(s)"), "{out:?}");
}

/// Issue 16 item 3: the Portainer server in its own container, an agent in the vLLM
/// container whose entry asks for one, the admin password only in a 0600 file, and
/// `phoenix destroy` leaving nothing (no container, no server listening).
#[test]
fn issue16_portainer_server_and_agent_run_and_destroy_leaves_nothing() {
    let k = Kitchen::new();
    k.run("drdevstral.rhai", "901");
    let out = k.run("portainer.rhai", "911");
    // The agent runs in 901, started as Portainer's guide says, pinned.
    let agent_run = strs(&[
        "docker",
        "run",
        "-d",
        "--name",
        "portainer_agent",
        "--restart=always",
        "-p",
        "9001:9001",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        "/var/lib/docker/volumes:/var/lib/docker/volumes",
        "-v",
        "/:/host",
        "portainer/agent:2.21.5",
    ]);
    assert!(k.execs("901").contains(&agent_run), "{:?}", k.execs("901"));
    let server_run = k
        .execs("911")
        .into_iter()
        .find(|a| a.len() > 1 && a[1] == "run")
        .expect("docker run in 911");
    assert_eq!(
        server_run[server_run.len() - 3..],
        strs(&[
            "portainer/portainer-ce:2.21.5",
            "--admin-password-file",
            "/run/secrets/portainer-admin-password",
        ])
    );
    // The result names the server's endpoint (it answered its status API) and the agent,
    // at the addresses the host reports.
    let endpoint = result_value(&out.stdout, "endpoint");
    assert!(endpoint.ends_with(":9000 (Portainer)"), "{}", out.stdout);
    let agent = result_value(&out.stdout, "portainer agent drdevstral");
    assert!(
        agent.starts_with("127.") && agent.ends_with(":9001"),
        "{agent}"
    );
    // The admin password: in the container's 0600 file and nowhere else in plain text.
    let password = k.secret("portainer_admin_password");
    assert_eq!(password.len(), 64, "{password}");
    assert_eq!(
        k.files_holding(&password),
        [(
            PathBuf::from(
                "phoenix/emulated/emulated/var/lib/lxc/911/rootfs/etc/portainer/admin-password"
            ),
            0o600
        )]
    );
    // A second run changes nothing in Docker.
    let before = k.execs("911").len();
    k.run("portainer.rhai", "911");
    let again = k.execs("911")[before..].to_vec();
    assert!(
        !again
            .iter()
            .any(|a| a.len() > 1 && (a[1] == "run" || a[1] == "pull")),
        "{again:?}"
    );
    let server = endpoint.trim_end_matches(" (Portainer)");
    let server = server.trim_start_matches("http://").to_owned();
    k.ok(&["destroy", "--yes"]);
    k.assert_nothing_left();
    assert_refused(&server);
}

/// Issue 16 item 3: recipes/docker-ce.rhai adds Docker's apt repository by hand; the undo
/// steps it pushed before each command run on destroy, newest first, while the container
/// still runs, and nothing is left.
#[test]
fn issue16_undo_push_takes_back_what_lxc_exec_did() {
    let k = Kitchen::new();
    let out = k.run("docker-ce.rhai", "912");
    assert!(out.stdout.contains("docker version"), "{out:?}");
    let run = k.execs("912");
    let install = strs(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "docker-ce",
        "docker-ce-cli",
        "containerd.io",
        "docker-buildx-plugin",
        "docker-compose-plugin",
    ]);
    assert!(run.contains(&install), "{run:?}");
    let journal =
        std::fs::read_to_string(k.tmp.path().join("phoenix/emulated/journal.jsonl")).unwrap();
    assert!(
        journal.contains(r#"["rm","-f","/etc/apt/keyrings/docker.asc"]"#),
        "{journal}"
    );
    let before = k.argv_log().len();
    k.ok(&["destroy", "--yes"]);
    let after: Vec<Vec<String>> = k.argv_log()[before..]
        .iter()
        .filter(|(t, a)| t == "pct" && (a[0] == "exec" || a[0] == "destroy"))
        .map(|(_, a)| a.clone())
        .collect();
    let pos = |want: &[&str]| {
        after
            .iter()
            .position(|a| a.ends_with(&strs(want)))
            .unwrap_or_else(|| panic!("{want:?} not run: {after:?}"))
    };
    let purge = pos(&[
        "dpkg",
        "--purge",
        "docker-ce",
        "docker-ce-cli",
        "containerd.io",
        "docker-buildx-plugin",
        "docker-compose-plugin",
    ]);
    let key = pos(&["rm", "-f", "/etc/apt/keyrings/docker.asc"]);
    let destroy = after
        .iter()
        .position(|a| a[0] == "destroy")
        .expect("pct destroy");
    assert!(purge < key && key < destroy, "{after:?}");
    k.assert_nothing_left();
}

/// Issue 16 must-show: a recipe with a typo in a package name fails with apt's message and,
/// rolled back, leaves nothing.
#[test]
fn issue16_a_package_typo_fails_with_apts_message_and_leaves_nothing() {
    let k = Kitchen::new();
    let text = std::fs::read_to_string(repo("recipes/docker-ce.rhai")).unwrap();
    assert!(text.contains("\"docker-compose-plugin\""));
    let typo = k.tmp.path().join("docker-ce.rhai");
    std::fs::write(
        &typo,
        text.replace("\"docker-compose-plugin\"", "\"docker-compose-plugn\""),
    )
    .unwrap();
    let out = k.phoenix(&[
        "recipe",
        "run",
        typo.to_str().unwrap(),
        "--config",
        &config(),
        "--lxc",
        "912",
        "--rollback-on-failure",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("E: Unable to locate package docker-compose-plugn"),
        "{}",
        out.stderr
    );
    k.assert_nothing_left();
}

/// Issue 16 must-show: Open WebUI in a GPU-less container, pointed at the vLLM entry's
/// endpoint as the host reports it, its API key rendered by `secret.template` into a 0600
/// env file: the key is in no argv, log or journal, and every file holding it is a 0600 file
/// inside a container; destroy leaves nothing.
#[test]
fn issue16_open_webui_gets_the_api_key_only_as_a_0600_file() {
    let k = Kitchen::new();
    // Without its backend running, nothing is created.
    let path = repo("recipes/open-webui.rhai").display().to_string();
    let out = k.phoenix(&[
        "recipe",
        "run",
        &path,
        "--config",
        &config(),
        "--lxc",
        "910",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the vLLM container 901 (drdevstral) is not running"),
        "{}",
        out.stderr
    );
    k.assert_nothing_left();

    let vllm = k.run("drdevstral.rhai", "901");
    let backend = result_value(&vllm.stdout, "endpoint");
    let backend = backend.trim_end_matches(" (vLLM, OpenAI API)").to_owned();
    assert!(
        backend.starts_with("http://127.") && backend.ends_with(":8000/v1"),
        "{backend}"
    );
    let out = k.run("open-webui.rhai", "910");
    let endpoint = result_value(&out.stdout, "endpoint");
    assert!(endpoint.ends_with(":3000 (Open WebUI)"), "{}", out.stdout);
    assert_eq!(result_value(&out.stdout, "open webui backend"), backend);

    // The env file: 0600, the key and the backend the host reported.
    let key = k.secret("vllm_api_key");
    let session = k.secret("open_webui_secret_key");
    let env_file = k
        .root()
        .join("var/lib/lxc/910/rootfs/etc/open-webui/open-webui.env");
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        format!(
            "OPENAI_API_BASE_URL={backend}\nOPENAI_API_KEY={key}\nWEBUI_SECRET_KEY={session}\nENABLE_OLLAMA_API=false\n"
        )
    );
    // Docker ran it from the file, pinned.
    let run = k
        .execs("910")
        .into_iter()
        .find(|a| a.len() > 1 && a[1] == "run")
        .expect("docker run in 910");
    assert_eq!(
        run,
        strs(&[
            "docker",
            "run",
            "-d",
            "--name",
            "open-webui",
            "--restart=always",
            "-p",
            "3000:8080",
            "--env-file",
            "/etc/open-webui/open-webui.env",
            "-v",
            "open-webui:/app/backend/data",
            "ghcr.io/open-webui/open-webui:v0.6.18",
        ])
    );
    // Where the keys are: only 0600 files inside the containers (the env file, Docker's
    // own root-only container config, the vLLM server's key file in 901); never argv.log,
    // phoenix's log or journal, the emulator's state, or a container log.
    for secret in [&key, &session] {
        let holders = k.files_holding(secret);
        assert!(
            holders.contains(&(
                PathBuf::from(
                    "phoenix/emulated/emulated/var/lib/lxc/910/rootfs/etc/open-webui/open-webui.env"
                ),
                0o600
            )),
            "{holders:?}"
        );
        for (file, mode) in &holders {
            let f = file.to_str().unwrap();
            assert!(
                f.starts_with("phoenix/emulated/emulated/var/lib/lxc/") && f.contains("/rootfs/"),
                "{f} holds a secret"
            );
            assert_eq!(*mode, 0o600, "{f}");
        }
    }
    // A second run changes nothing in Docker.
    let before = k.execs("910").len();
    k.run("open-webui.rhai", "910");
    let again = k.execs("910")[before..].to_vec();
    assert!(
        !again
            .iter()
            .any(|a| a.len() > 1 && (a[1] == "run" || a[1] == "pull")),
        "{again:?}"
    );
    let ui = endpoint
        .trim_end_matches(" (Open WebUI)")
        .trim_start_matches("http://")
        .to_owned();
    k.ok(&["destroy", "--yes"]);
    k.assert_nothing_left();
    assert_refused(&ui);
}

/// Whether a `recipe test` report ends with "left nothing" (its label column is as wide
/// as the widest label).
fn left_nothing(report: &str) -> bool {
    report
        .lines()
        .last()
        .is_some_and(|l| l.split_whitespace().collect::<Vec<_>>() == ["left", "nothing"])
}

impl Kitchen {
    /// `phoenix recipe test recipes/<recipe>` with the example config; its throw-away host
    /// lives under `tmp/` (TMPDIR), which must be empty again afterwards, and the
    /// installation's own state is never made.
    fn recipe_test(&self, recipe: &Path) -> Out {
        self.recipe_test_lxc(recipe, None)
    }

    /// `phoenix recipe test <recipe>`, serving `--lxc <vmid>` when given.
    fn recipe_test_lxc(&self, recipe: &Path, lxc: Option<&str>) -> Out {
        let tmp = self.tmp.path().join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args(["recipe", "test"])
            .arg(recipe)
            .args(["--config", &config()])
            .args(lxc.map(|v| ["--lxc", v]).into_iter().flatten())
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("XDG_STATE_HOME", self.tmp.path())
            .env("TMPDIR", &tmp)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "left in TMPDIR: {left:?}");
        assert!(
            !self.tmp.path().join("phoenix").exists(),
            "the installation's own state was made"
        );
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Issue 16 must-show: every cookbook recipe passes `phoenix recipe test` with the example
/// config (Open WebUI with its vLLM backend provisioned first): exit 0, its endpoints
/// answered, nothing left.
#[test]
fn issue16_every_cookbook_recipe_passes_recipe_test() {
    let k = Kitchen::new();
    let cases = [
        (
            "open-webui.rhai",
            &[":8000/v1 (vLLM):", ":3000 (Open WebUI):"][..],
            None,
        ),
        ("portainer.rhai", &[":9000 (Portainer):"][..], None),
        ("docker-ce.rhai", &[][..], None),
        ("drdevstral.rhai", &[":8000/v1 (vLLM):"][..], None),
        // `phoenix up`'s recipe for entries that name none: the plain entry 913.
        ("container.rhai", &[][..], Some("913")),
    ];
    // Every recipe the repository ships is here: a new one without a case fails.
    for e in std::fs::read_dir(repo("recipes")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".rhai") {
            assert!(
                cases.iter().any(|c| c.0 == name),
                "{name} has no recipe test case"
            );
        }
    }
    for (recipe, endpoints, lxc) in cases {
        let out = k.recipe_test_lxc(&repo(&format!("recipes/{recipe}")), lxc);
        assert_eq!(out.code, 0, "{recipe}: {out:?}");
        assert!(
            out.stdout.starts_with(&format!(
                "recipe test of {recipe} on a throw-away emulated host: PASS\n"
            )),
            "{}",
            out.stdout
        );
        assert!(left_nothing(&out.stdout), "{}", out.stdout);
        let answered: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| l.starts_with("  endpoint "))
            .collect();
        assert_eq!(answered.len(), endpoints.len(), "{recipe}: {}", out.stdout);
        for (line, want) in answered.iter().zip(endpoints) {
            assert!(
                line.contains(want) && line.contains(": answered HTTP 200 to GET "),
                "{recipe}: {line}"
            );
        }
    }
}

/// Issue 16 must-show: a recipe with a typo in a package name fails `recipe test` with
/// apt's message and leaves nothing.
#[test]
fn issue16_recipe_test_of_a_package_typo_fails_with_apts_message() {
    let k = Kitchen::new();
    let text = std::fs::read_to_string(repo("recipes/docker-ce.rhai")).unwrap();
    let typo = k.tmp.path().join("docker-ce.rhai");
    std::fs::write(
        &typo,
        text.replace("\"docker-compose-plugin\"", "\"docker-compose-plugn\""),
    )
    .unwrap();
    let out = k.recipe_test(&typo);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout
            .starts_with("recipe test of docker-ce.rhai on a throw-away emulated host: FAIL\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("E: Unable to locate package docker-compose-plugn"),
        "{}",
        out.stdout
    );
    assert!(left_nothing(&out.stdout), "{}", out.stdout);
}

/// `recipe test` of an entry whose backend names no recipe is refused before anything is
/// made (exit 2), naming the entries.
#[test]
fn issue16_recipe_test_refuses_a_backend_without_a_recipe() {
    let k = Kitchen::new();
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(config()).unwrap()).unwrap();
    doc["lxc_configs"]["901"]
        .as_object_mut()
        .unwrap()
        .remove("recipe");
    doc.as_object_mut().unwrap().remove("$schema");
    let cfg = k.tmp.path().join("cookbook.json");
    std::fs::write(&cfg, doc.to_string()).unwrap();
    let tmp = k.tmp.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["recipe", "test"])
        .arg(repo("recipes/open-webui.rhai"))
        .arg("--config")
        .arg(&cfg)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("XDG_STATE_HOME", k.tmp.path())
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "entry 910 needs entry 901 running first (openai_backend), which names no recipe"
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

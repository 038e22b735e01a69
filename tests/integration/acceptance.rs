//! Acceptance tests of the seed cases (issue 7 "must show"): each drives the real `phoenix`
//! binary through the drdevstral flow (`recipes/drdevstral.rhai` with the example config)
//! on an emulated host of its own (DESIGN.md §7), one test per seed case, named after it.
//!
//! Every site lives in a temp dir (state, log, marker, secret dirs, the key and the emulated
//! root), names this test process as the owner of its emulated vLLM servers (so a killed
//! test leaves none behind) and uses a short load delay. The host's state is compared with
//! [`crate::support::emu_snapshot`].

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::{emu_snapshot, wait_until};

const VMID: &str = "901";
const CONTAINER: &str = "phoenix-vllm-901";
/// The emulated server's load delay in these tests.
const LOAD_DELAY: &str = "300ms";

pub(crate) type Snapshot = BTreeMap<String, (u32, Vec<u8>)>;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The example config (`recipes/phoenix_lxc_configs.json`) as JSON.
pub(crate) fn example_config() -> Value {
    serde_json::from_slice(&std::fs::read(repo("recipes/phoenix_lxc_configs.json")).unwrap())
        .unwrap()
}

/// The example config with container 901's `field` set to `value`.
pub(crate) fn config_with(field: &str, value: Value) -> Value {
    let mut c = example_config();
    c["lxc_configs"][VMID][field] = value;
    c
}

/// What a finished phoenix process said.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// A scratch phoenix installation with its own emulated host (also used by `gpu_host`).
pub(crate) struct Site {
    tmp: tempfile::TempDir,
    recipe: PathBuf,
    markers: PathBuf,
}

impl Site {
    /// A site whose config file (`lxc.json`) is `config`, pretty-printed.
    pub(crate) fn new(config: &Value) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("tmp")).unwrap();
        std::fs::write(tmp.path().join("phoenix.toml"), "").unwrap();
        std::fs::write(
            tmp.path().join("lxc.json"),
            serde_json::to_string_pretty(config).unwrap(),
        )
        .unwrap();
        let markers = tmp.path().join("markers");
        Self {
            tmp,
            recipe: repo("recipes/drdevstral.rhai"),
            markers,
        }
    }

    /// Use a copy of the recipe whose `vllm.wait_ready` times out after `timeout`.
    fn with_timeout(mut self, timeout: &str) -> Self {
        let text = std::fs::read_to_string(&self.recipe).unwrap();
        let want = r#"timeout: "15m""#;
        assert!(text.contains(want), "the recipe's wait_ready has no {want}");
        let copy = self.path("drdevstral.rhai");
        std::fs::write(&copy, text.replace(want, &format!("timeout: {timeout:?}"))).unwrap();
        self.recipe = copy;
        self
    }

    /// Use a copy of the recipe with `from` replaced by `to` (which must be there).
    fn with_recipe_edit(mut self, from: &str, to: &str) -> Self {
        let text = std::fs::read_to_string(&self.recipe).unwrap();
        assert!(text.contains(from), "the recipe has no {from:?}");
        // Same file name: the config's entry 901 names its recipe `drdevstral.rhai`.
        let dir = self.path(&format!("edited-{}", text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("drdevstral.rhai");
        std::fs::write(&copy, text.replace(from, to)).unwrap();
        self.recipe = copy;
        self
    }

    /// `pct exec 901 -- argv` on the emulated host; its stdout (it must succeed).
    fn ct_exec(&self, argv: &[&str]) -> String {
        let out = Command::new(self.root().join("bin/pct"))
            .args(["exec", VMID, "--"])
            .args(argv)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "pct exec {argv:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// `du -s -b PATH` inside container 901 (sizes as the emulated disks count them).
    fn du(&self, path: &str) -> u64 {
        let out = self.ct_exec(&["du", "-s", "-b", path]);
        out.split_whitespace().next().unwrap().parse().unwrap()
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.path("emu")
    }

    /// A file inside container 901's emulated rootfs.
    pub(crate) fn rootfs(&self, rel: &str) -> PathBuf {
        self.root()
            .join("var/lib/lxc")
            .join(VMID)
            .join("rootfs")
            .join(rel)
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_phoenix"));
        c.args(args)
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PHOENIX_SETTINGS", self.path("phoenix.toml"))
            .env("PHOENIX_HOST", "emulated")
            .env("PHOENIX_CONFIG", self.path("lxc.json"))
            .env("PHOENIX_STATE_DIR", self.path("state"))
            .env("PHOENIX_MARKER_DIR", &self.markers)
            .env("PHOENIX_LOG_DIR", self.path("log"))
            .env("PHOENIX_SECRETS_DIR", self.path("secrets"))
            .env("PHOENIX_SECRET_KEY", self.path("key/secret.key"))
            .env("PHOENIX_EMU_ROOT", self.root())
            .env("PHOENIX_STDLIB", repo("stdlib"))
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    fn phoenix_in(&self, args: &[&str], stdin: &[u8]) -> Out {
        let mut child = self.command(args).spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub(crate) fn phoenix(&self, args: &[&str]) -> Out {
        self.phoenix_in(args, b"")
    }

    pub(crate) fn ok(&self, args: &[&str], stdin: &[u8]) -> Out {
        let out = self.phoenix_in(args, stdin);
        assert_eq!(out.code, 0, "phoenix {args:?}: {out:?}");
        out
    }

    pub(crate) fn run_args(&self, flags: &[&str]) -> Vec<String> {
        let mut args = vec![
            "recipe".to_owned(),
            "run".to_owned(),
            self.recipe.display().to_string(),
        ];
        args.extend(flags.iter().map(|f| (*f).to_owned()));
        args
    }

    /// `phoenix recipe run` of the flow.
    pub(crate) fn run(&self, flags: &[&str]) -> Out {
        let args = self.run_args(flags);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.phoenix(&args)
    }

    /// `phoenix recipe run` of the flow, which must succeed.
    pub(crate) fn run_ok(&self) -> Out {
        let out = self.run(&[]);
        assert_eq!(out.code, 0, "recipe run: {out:?}");
        out
    }

    /// The flow in the background, in a process group of its own.
    fn spawn(&self, flags: &[&str]) -> Child {
        let args = self.run_args(flags);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = self.command(&args);
        c.stdin(Stdio::null()).process_group(0);
        c.spawn().unwrap()
    }

    /// Set the emulated host up (any command that opens the host does), name this test
    /// process the owner of its servers, set a short load delay; the host's state.
    pub(crate) fn prepare(&self) -> Snapshot {
        self.ok(&["gpu", "list"], b"");
        crate::support::own_emulated_root(&self.root());
        self.faults(&[], json!({}));
        emu_snapshot(&self.root())
    }

    /// Write `faults.json`: `faults` and the `vllm` behaviour `vllm` (load delay added).
    fn faults(&self, faults: &[Value], mut vllm: Value) {
        vllm["load_delay"] = json!(LOAD_DELAY);
        let v = json!({"faults": faults, "vllm": vllm});
        std::fs::write(self.root().join("faults.json"), v.to_string()).unwrap();
    }

    /// The emulator's `argv.log`, whole lines only.
    pub(crate) fn calls(&self) -> Vec<Value> {
        // No log yet only before the emulator's first call; any other error fails.
        let text = match std::fs::read_to_string(self.root().join("argv.log")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("argv.log: {e}"),
        };
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Live processes of this site's emulated host: its commands (argv\[0\] under its
    /// `bin/`) and its vLLM servers (`phoenix-emu __vllm-serve ROOT …`).
    fn emulator_processes(&self) -> Vec<i32> {
        let root = self.root();
        let bin = root.join("bin");
        let root = root.display().to_string();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let argv: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let ours = Path::new(&argv[0]).starts_with(&bin)
                || (argv.get(1).map(String::as_str) == Some("__vllm-serve")
                    && argv.get(2) == Some(&root));
            if ours && pid_alive(pid) {
                out.push(pid);
            }
        }
        out
    }

    /// This site's emulated vLLM servers.
    pub(crate) fn servers(&self) -> Vec<i32> {
        let root = self.root().display().to_string();
        self.emulator_processes()
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let argv: Vec<&[u8]> = c.split(|&b| b == 0).collect();
                    argv.get(1) == Some(&&b"__vllm-serve"[..])
                        && argv.get(2) == Some(&root.as_bytes())
                })
            })
            .collect()
    }

    /// Wait until this site's servers are gone; panic naming `what` if they stay.
    pub(crate) fn assert_no_server(&self, what: &str) {
        wait_until(
            &format!("{what}: the vLLM server processes to exit"),
            || self.servers().is_empty(),
        );
    }

    /// Marker files in the configured marker directory.
    fn markers(&self) -> Vec<String> {
        match std::fs::read_dir(&self.markers) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The emulated container's state file.
    fn ct_state(&self) -> Value {
        let path = self
            .root()
            .join("var/lib/lxc")
            .join(VMID)
            .join("emu-state.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The address the emulated server listens on (the container's loopback address).
    pub(crate) fn server_addr(&self) -> SocketAddr {
        let state = self.ct_state();
        let addr: SocketAddr = format!("{}:8000", state["address"].as_str().unwrap())
            .parse()
            .unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        addr
    }

    pub(crate) fn reveal(&self, name: &str) -> String {
        self.ok(&["secret", "get", name, "--reveal"], b"")
            .stdout
            .trim()
            .to_owned()
    }

    /// Nothing phoenix made is left: the host is as `before`, no server runs, no marker,
    /// and `status` lists nothing.
    pub(crate) fn assert_clean(&self, before: &Snapshot, what: &str) {
        self.assert_no_server(what);
        let after = emu_snapshot(&self.root());
        let changed: Vec<&String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        assert!(
            changed.is_empty(),
            "{what}: the emulated host differs from before the run in {changed:?}"
        );
        assert_eq!(self.markers(), Vec::<String>::new(), "{what}: markers left");
        let status = self.phoenix(&["status"]);
        assert_eq!(status.code, 0, "{what}: {status:?}");
        assert!(
            status.stdout.contains("nothing phoenix-made"),
            "{what}: status still lists steps:\n{}",
            status.stdout
        );
    }
}

/// Whether `pid` runs (a zombie counts as gone).
fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// One HTTP GET on loopback; `(status, body)`.
pub(crate) fn http_get(addr: SocketAddr, path: &str, key: &str) -> (u16, String) {
    assert!(addr.ip().is_loopback());
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The words of a systemd `ExecStart=` line (phoenix quotes every argument).
fn exec_start_words(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("no ExecStart= line");
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {}
            '"' => {
                let mut w = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => w.push(chars.next().unwrap()),
                        '"' => break,
                        c => w.push(c),
                    }
                }
                words.push(w);
            }
            c => {
                let mut w = String::from(c);
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                words.push(w);
            }
        }
    }
    words
}

#[test]
fn t101_model_with_a_pipe_deploys() {
    const MODEL: &str = "mistralai/Devstral|Small";
    let site = Site::new(&config_with("vllm_model", json!(MODEL)));
    site.prepare();
    site.run_ok();

    // The unit file inside the container: the model is one word, once, after `--model`
    // (the pinned image's entrypoint refuses a positional; no served name repeats it).
    let unit =
        std::fs::read_to_string(site.rootfs(&format!("etc/systemd/system/{CONTAINER}.service")))
            .unwrap();
    let words = exec_start_words(&unit);
    let image = words
        .iter()
        .position(|w| w.starts_with("vllm/vllm-openai:"))
        .unwrap();
    assert_eq!(words[image + 1..image + 3], ["--model", MODEL], "{words:?}");
    assert!(
        !words.iter().any(|w| w == "--served-model-name"),
        "{words:?}"
    );
    assert_eq!(
        words.iter().filter(|w| w.contains('|')).count(),
        1,
        "{words:?}"
    );

    // What `docker run` received (the emulator's record of the container).
    let state = site.ct_state();
    let ct = state["docker"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "running")
        .expect("no running container");
    assert_eq!(
        ct["args"].as_array().unwrap()[0..2],
        [json!("--model"), json!(MODEL)],
        "{ct}"
    );
    assert_eq!(ct["serve"]["served"], MODEL, "{ct}");
    assert_eq!(ct["serve"]["model"], MODEL, "{ct}");

    // The emulated server lists exactly that id.
    let key = site.reveal("vllm_api_key");
    let (code, body) = http_get(site.server_addr(), "/v1/models", &key);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [MODEL]);
    assert_eq!(v["data"][0]["root"], MODEL);
    site.ok(&["destroy"], b"");
    site.assert_no_server("destroy");
}

#[test]
fn t102_run_then_destroy_leaves_nothing() {
    let site = Site::new(&example_config());
    let before = site.prepare();
    site.run_ok();
    assert_eq!(site.servers().len(), 1, "one vLLM server runs");
    assert!(!site.markers().is_empty());
    assert!(
        !site
            .phoenix(&["status"])
            .stdout
            .contains("nothing phoenix-made"),
        "status lists the run's steps"
    );
    site.ok(&["destroy"], b"");
    site.assert_clean(&before, "destroy after a full run");
}

/// Every file under `dir` (recursively) whose name ends with `suffix`.
fn files_named(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

/// Every regular file under `dir`, recursively (symlinks not followed).
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn t103_custom_marker_dir() {
    let mut site = Site::new(&example_config());
    site.markers = site.path("custom/phoenix-markers");
    site.prepare();
    site.run_ok();
    let markers = site.markers();
    assert!(
        markers.iter().any(|m| m.starts_with("lxc.create%3A901")),
        "{markers:?}"
    );
    // Markers nowhere else: every `.done` file under the site lies in the custom dir.
    let done = files_named(site.tmp.path(), ".done");
    assert_eq!(done.len(), markers.len(), "{done:?}");
    assert!(
        done.iter().all(|p| p.starts_with(&site.markers)),
        "{done:?}"
    );
    let log = site.path("log/phoenix.log");
    assert!(
        std::fs::metadata(&log).is_ok_and(|m| m.len() > 0),
        "{log:?}"
    );
    site.ok(&["destroy"], b"");
    assert_eq!(site.markers(), Vec::<String>::new());
    assert_eq!(files_named(site.tmp.path(), ".done"), Vec::<PathBuf>::new());
    site.assert_no_server("destroy");
}

/// The config line (1-based) and column of the value of `"field": value` for entry 901.
fn position_of(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap();
    let value = at + needle.find(':').unwrap() + 2;
    let line = text[..value].matches('\n').count() + 1;
    let col = value - text[..value].rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, col)
}

/// A run refused with exit 2 before touching anything: no emulated root (so no
/// `argv.log`), no journal, no markers.
fn assert_refused(site: &Site, what: &str) -> Out {
    let out = site.run(&[]);
    assert_eq!(out.code, 2, "{what}: {out:?}");
    assert!(
        !site.root().exists(),
        "{what}: the emulated host was set up"
    );
    assert!(!site.root().join("argv.log").exists(), "{what}");
    assert!(!site.path("state/journal.jsonl").exists(), "{what}");
    assert_eq!(site.markers(), Vec::<String>::new(), "{what}");
    out
}

#[test]
fn t104_injection_in_the_model_fails_validation() {
    let model = "mistralai/Devstral-Small-2507; rm -rf /";
    let site = Site::new(&config_with("vllm_model", json!(model)));
    let out = assert_refused(&site, "injection in vllm_model");
    let text = std::fs::read_to_string(site.path("lxc.json")).unwrap();
    let (line, col) = position_of(&text, &format!("\"vllm_model\": {}", json!(model)));
    assert!(
        out.stderr.contains(&format!(
            "lxc.json:{line}:{col}: /lxc_configs/901/vllm_model: expected a valid model id"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("contains ';'"), "{}", out.stderr);
}

#[test]
fn t108_invalid_memory_is_refused_early() {
    let site = Site::new(&config_with("memory_mb", json!("invalid")));
    let out = assert_refused(&site, "memory_mb \"invalid\"");
    let text = std::fs::read_to_string(site.path("lxc.json")).unwrap();
    let (line, col) = position_of(&text, r#""memory_mb": "invalid""#);
    assert!(
        out.stderr.contains(&format!(
            "lxc.json:{line}:{col}: /lxc_configs/901/memory_mb: expected integer, found string \"invalid\""
        )),
        "{}",
        out.stderr
    );
}

/// One emulated vLLM failure: the faults and behaviour to inject, a recipe timeout, and
/// what the error must say.
struct Failure {
    name: &'static str,
    faults: Vec<Value>,
    vllm: Value,
    timeout: Option<&'static str>,
    says: &'static [&'static str],
}

/// The flow fails with exit 1 and an error naming the stage and showing the log tail;
/// without rollback `destroy` removes what it left, with `--rollback-on-failure` nothing
/// is left at all.
fn fails_and_is_detected(f: &Failure) {
    let mut site = Site::new(&example_config());
    if let Some(t) = f.timeout {
        site = site.with_timeout(t);
    }
    let before = site.prepare();
    for flags in [&[][..], &["--rollback-on-failure"][..]] {
        let what = format!("{} {flags:?}", f.name);
        site.faults(&f.faults, f.vllm.clone());
        let out = site.run(flags);
        assert_eq!(out.code, 1, "{what}: {out:?}");
        for s in f.says {
            assert!(
                out.stderr.contains(s),
                "{what}: no {s:?} in\n{}",
                out.stderr
            );
        }
        site.faults(&[], json!({}));
        if flags.is_empty() {
            assert!(!site.markers().is_empty(), "{what}: the steps before stay");
            site.ok(&["destroy"], b"");
        }
        site.assert_clean(&before, &what);
    }
}

/// The log tail of a server that started: its first log line.
const STARTED: &str = "vLLM API server version";

#[test]
fn t106_failing_vllm_is_detected_image_pull_fails() {
    fails_and_is_detected(&Failure {
        name: "docker pull exits 125",
        faults: vec![json!({"match": ["docker", "pull"], "action": "exit:125"})],
        vllm: json!({}),
        timeout: None,
        says: &[
            "vllm.start: docker pull vllm/vllm-openai:v0.11.0 failed inside container 901",
            "(exit 125)",
        ],
    });
}

#[test]
fn t106_failing_vllm_is_detected_crash_during_load() {
    fails_and_is_detected(&Failure {
        name: "crash",
        faults: vec![],
        vllm: json!({"mode": "crash"}),
        timeout: None,
        says: &[
            "vllm.wait_ready",
            "(stage: loading): the container is no longer running",
            "last log lines of phoenix-vllm-901:",
            "EngineCore failed to start.",
        ],
    });
}

#[test]
fn t106_failing_vllm_is_detected_never_listens() {
    fails_and_is_detected(&Failure {
        name: "never-listen",
        faults: vec![],
        vllm: json!({"mode": "never-listen"}),
        timeout: Some("3s"),
        says: &[
            "(stage: loading): timed out after",
            "last seen: connection refused",
            "last log lines of phoenix-vllm-901:",
            STARTED,
        ],
    });
}

#[test]
fn t106_failing_vllm_is_detected_health_503() {
    fails_and_is_detected(&Failure {
        name: "503",
        faults: vec![],
        vllm: json!({"mode": "503"}),
        timeout: None,
        says: &[
            "(stage: health): GET /health answered 503: the engine is dead",
            "last log lines of phoenix-vllm-901:",
            STARTED,
        ],
    });
}

#[test]
fn t106_failing_vllm_is_detected_wrong_model() {
    fails_and_is_detected(&Failure {
        name: "wrong-model",
        faults: vec![],
        vllm: json!({"mode": "wrong-model"}),
        timeout: None,
        says: &[
            "(stage: models): the server serves [\"facebook/opt-125m\"], not the configured model \"mistralai/Devstral-Small-2507\"",
            "last log lines of phoenix-vllm-901:",
            STARTED,
        ],
    });
}

#[test]
fn t110_kill_during_creation_then_destroy_then_rerun() {
    let site = Site::new(&example_config());
    let before = site.prepare();
    site.faults(
        &[json!({"match": ["pct", "create"], "action": "hang"})],
        json!({}),
    );
    let mut child = site.spawn(&[]);
    wait_until("`pct create` to hang", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("phoenix exited ({status}) before `pct create` hung");
        }
        site.calls()
            .into_iter()
            .any(|c| c["tool"] == "pct" && c["argv"][0] == "create" && c["exit"].is_null())
    });
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
    // The hung `pct create` runs in a group of its own, as after a host crash: end it.
    for pid in site.emulator_processes() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    site.faults(&[], json!({}));
    site.ok(&["destroy"], b"");
    site.assert_clean(&before, "destroy after SIGKILL during pct create");
    site.run_ok();
    assert_eq!(site.servers().len(), 1, "the re-run serves");
    site.ok(&["destroy"], b"");
    site.assert_clean(&before, "destroy after the re-run");
}

/// The ways a secret's bytes could be written down: as is, hex, and base64 at each of
/// the three byte alignments (the part of the encoding that does not depend on the
/// neighbouring bytes), standard and URL-safe alphabets.
pub(crate) fn encodings(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let b = secret.as_bytes();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let mut out = vec![secret.to_owned(), hex.clone(), hex.to_uppercase()];
    for k in 0..3usize {
        let mut data = vec![0u8; k];
        data.extend_from_slice(b);
        for enc in [STANDARD_NO_PAD.encode(&data), URL_SAFE_NO_PAD.encode(&data)] {
            let skip = [0, 2, 3][k];
            out.push(enc[skip..enc.len() - 2].to_owned());
        }
    }
    out
}

pub(crate) fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Files under the site that hold `secret` in any encoding, except `allowed`.
pub(crate) fn files_holding(
    site: &Site,
    secret: &str,
    allowed: &[PathBuf],
) -> Vec<(PathBuf, String)> {
    let encs = encodings(secret);
    let mut found = Vec::new();
    for path in walk(site.tmp.path()) {
        if allowed.contains(&path) || path.starts_with(site.root().join("bin")) {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        for e in &encs {
            if contains(&bytes, e) {
                found.push((path.clone(), e.clone()));
            }
        }
    }
    found
}

pub(crate) fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn req001_secrets_never_reach_argv_env_or_files() {
    const HF: &str = "hf_AcceptanceToken7Qx9Lm2Vz";
    const PW: &str = "root-Pw:acceptance-4T8w!k";
    let site = Site::new(&example_config());
    site.prepare();
    site.ok(&["secret", "init"], b"");
    site.ok(&["secret", "set", "hf_token"], format!("{HF}\n").as_bytes());
    site.ok(
        &["secret", "set", "lxc_root_password"],
        format!("{PW}\n").as_bytes(),
    );
    let run = site.run_ok();
    let key = site.reveal("vllm_api_key");
    assert!(key.len() >= 16, "{key:?}");

    // The flow used them: root's password was set, the token pushed as a 0600 file into the
    // Hugging Face cache on the model dataset, the API key written into the 0600 env file
    // `docker run --env-file` reads (Docker keeps the container's environment in its own
    // 0600 config, as the real one does).
    assert_eq!(site.ct_state()["passwords_set"], json!(["root"]));
    let tokens = files_named(&site.root().join("hostfs"), "/huggingface/token");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let token = tokens[0].clone();
    assert!(!site.rootfs("root/.cache/huggingface/token").exists());
    assert_eq!(std::fs::read_to_string(&token).unwrap().trim(), HF);
    assert_eq!(mode(&token), 0o600, "{token:?}");
    let env_file = site.rootfs(&format!("etc/phoenix-vllm/{CONTAINER}.env"));
    assert_eq!(
        std::fs::read_to_string(&env_file).unwrap(),
        format!("VLLM_API_KEY={key}\n")
    );
    assert_eq!(mode(&env_file), 0o600, "{env_file:?}");
    let docker_configs = files_named(&site.rootfs("var/lib/docker/containers"), "/config.v2.json");
    assert_eq!(docker_configs.len(), 1, "{docker_configs:?}");
    let docker_config = docker_configs[0].clone();
    assert_eq!(mode(&docker_config), 0o600, "{docker_config:?}");

    // argv.log: no argv and no environment holds any of them, in any encoding.
    let log = std::fs::read(site.root().join("argv.log")).unwrap();
    let calls = site.calls();
    // The whole flow ran: up to the service's `systemctl enable --now`.
    assert!(
        calls.iter().any(|c| {
            let argv: Vec<&str> = c["argv"]
                .as_array()
                .map(|a| a.iter().filter_map(|w| w.as_str()).collect())
                .unwrap_or_default();
            argv.contains(&"enable") && argv.iter().any(|w| w.starts_with("phoenix-vllm-"))
        }),
        "the flow ran its commands"
    );
    assert!(
        calls
            .iter()
            .all(|c| c["argv"].is_array() && c["env"].is_object()),
        "every argv.log line records argv and env"
    );
    let servers = site.servers();
    assert_eq!(servers.len(), 1);
    for (name, secret) in [
        ("hf_token", HF),
        ("lxc_root_password", PW),
        ("vllm_api_key", &key),
    ] {
        for e in encodings(secret) {
            assert!(!contains(&log, &e), "argv.log holds {name} as {e:?}");
            assert!(
                !run.stdout.contains(&e) && !run.stderr.contains(&e),
                "output holds {name}"
            );
            // Nor the running server's argv or environment.
            for f in ["cmdline", "environ"] {
                // Read for real: a server that vanished must not pass the check.
                let b = std::fs::read(format!("/proc/{}/{f}", servers[0])).unwrap();
                assert!(f != "cmdline" || !b.is_empty(), "the server is gone");
                assert!(!contains(&b, &e), "the server's {f} holds {name}");
            }
        }
    }
    // Files: state, log, markers, secrets, key, the emulated root (the container's files
    // and `docker logs` of the server included): only the token file, the env file and
    // Docker's own 0600 config of the container hold a secret.
    // (The scan does find them where they belong.)
    assert_eq!(
        files_holding(&site, HF, &[]),
        vec![(token.clone(), HF.to_owned())]
    );
    let holding_key: Vec<PathBuf> = files_holding(&site, &key, &[])
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(holding_key.contains(&env_file), "{holding_key:?}");
    assert!(holding_key.contains(&docker_config), "{holding_key:?}");
    assert_eq!(
        files_holding(&site, HF, std::slice::from_ref(&token)),
        vec![]
    );
    assert_eq!(files_holding(&site, PW, &[]), vec![]);
    assert_eq!(
        files_holding(&site, &key, &[env_file.clone(), docker_config.clone()]),
        vec![]
    );
    // The server's log was scanned: it is there, with vLLM's "non-default args" line.
    let logs = files_named(&site.root(), ".log");
    assert!(
        logs.iter()
            .any(|l| std::fs::read_to_string(l).is_ok_and(|t| t.contains(
                "non-default args: {'host': '0.0.0.0', 'model': 'mistralai/Devstral-Small-2507'"
            ))),
        "{logs:?}"
    );
    site.ok(&["destroy"], b"");
    site.assert_no_server("destroy");
}

/// The command of the README's main job (the words after `target/release/phoenix`).
fn readme_main_job() -> Vec<String> {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("phoenix recipe run") && l.contains("--host emulated"))
        .expect("the README has no main job");
    let (_, rest) = line
        .split_once("target/release/phoenix ")
        .expect("the main job runs target/release/phoenix");
    rest.split_whitespace().map(str::to_owned).collect()
}

/// Issue 11 "must show": the README's main job, run as written (from the repository, on
/// the faithful emulator), serves the configured model, its weights on the model dataset.
/// The readiness ladder compares `/v1/models`' name and `root` with the config, so a server
/// that loaded Qwen/Qwen3-0.6B would fail the run.
#[test]
fn readme_main_job_serves_the_configured_model() {
    let args = readme_main_job();
    assert_eq!(
        args[..4],
        ["recipe", "run", "recipes/drdevstral.rhai", "--host"],
        "{args:?}"
    );
    let site = Site::new(&example_config());
    site.prepare();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = site
        .command(&args)
        .current_dir(repo(""))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // The result block on stdout names the configured model.
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["model", "mistralai/Devstral-Small-2507"]),
        "{stdout}"
    );
    let key = site.reveal("vllm_api_key");
    let (code, body) = http_get(site.server_addr(), "/v1/models", &key);
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["id"], "mistralai/Devstral-Small-2507");
    assert_eq!(v["data"][0]["root"], "mistralai/Devstral-Small-2507");
    // ≈ 47 GB of weights on the dataset mounted at /models, none on the rootfs.
    let on_dataset = site.du("/models/huggingface");
    assert!(on_dataset >= 47_200_000_000, "{on_dataset}");
    assert!(!site.rootfs("root/.cache/huggingface/hub").exists());
    assert!(site.du("/") < 30_000_000_000);
    site.ok(&["destroy"], b"");
    site.assert_no_server("destroy");
}

/// Issue 11 "must show": weights downloaded onto the container's rootfs (a recipe without
/// the dataset) fill its 64 GB next to the ≈ 29 GB image; the run fails naming the cause.
#[test]
fn weights_on_the_rootfs_fill_it_and_the_run_names_the_cause() {
    let site = Site::new(&example_config()).with_recipe_edit("spec.models_dir = \"/models\";", "");
    site.prepare();
    let out = site.run(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "the container is no longer running (the Docker container is gone and phoenix-vllm-901.service is activating/auto-restart): a disk is full (\"No space left on device\" in its log); the weights download into /root/.cache/huggingface: put them on the model dataset (`models_dir`) or give it more space"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("OSError: [Errno 28] No space left on device"),
        "{}",
        out.stderr
    );
    site.ok(&["destroy"], b"");
    site.assert_no_server("destroy");
}

/// Issue 11: downloading is a stage of its own, with visible progress and its own limit:
/// a download three times longer than the load limit does not fail the run.
#[test]
fn a_long_first_download_is_its_own_stage() {
    let site = Site::new(&example_config()).with_recipe_edit(
        r#"#{ timeout: "15m", download_timeout: "6h" }"#,
        r#"#{ timeout: "1s", download_timeout: "1m", progress_every: "100ms" }"#,
    );
    site.prepare();
    site.faults(&[], json!({"download_time": "3s"}));
    let out = site.run(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("downloading the weights: ")
            && out.stderr.contains(" in /models/huggingface ("),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(" GB of weights in ")
            && out.stderr.contains("s (47.2 GB in /models/huggingface)"),
        "{}",
        out.stderr
    );
    site.ok(&["destroy"], b"");
    site.assert_no_server("destroy");
}

//! Crash, signal and fault behaviour of `phoenix recipe run` / `destroy` (issue 6 "must
//! show"), driving the real `phoenix` binary against the emulated host (DESIGN.md §7).
//!
//! The harness is recipe-agnostic: [`FLOW`] names the recipe and config under test. A first
//! run on a scratch root lists every mutating command the flow issues (read from
//! `argv.log` by [`is_mutating`]); each crash test then injects a fault at each of those
//! commands in turn on a fresh root, so a flow that grows more steps is covered without
//! touching the tests.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::{wait_for, wait_until};

/// The flow under test: a recipe, its config and the container it serves.
struct Flow {
    recipe: &'static str,
    config: &'static str,
    vmid: &'static str,
}

/// The seed's drdevstral flow: its config's target entry is 901 (a vLLM model on both
/// GPUs); the vLLM server it starts is an emulated one on loopback.
const FLOW: Flow = Flow {
    recipe: "recipes/drdevstral.rhai",
    config: "recipes/phoenix_lxc_configs.json",
    vmid: "901",
};

/// The emulated vLLM server's load delay in every test (the emulator's default is 1 s).
const LOAD_DELAY: &str = "100ms";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// One line of the emulator's `argv.log`.
#[derive(Debug, Clone)]
struct Call {
    tool: String,
    argv: Vec<String>,
    exit: Option<i64>,
}

impl Call {
    /// The key `faults.json` matches: tool + argv, or the inner argv of `pct exec`.
    fn key(&self) -> Vec<String> {
        if self.tool == "pct" && self.argv.first().map(String::as_str) == Some("exec") {
            if let Some(pos) = self.argv.iter().position(|a| a == "--") {
                let mut inner = self.argv[pos + 1..].to_vec();
                if let Some(first) = inner.first_mut() {
                    *first = first.rsplit('/').next().unwrap_or(first).to_owned();
                }
                if !inner.is_empty() {
                    return inner;
                }
            }
        }
        std::iter::once(self.tool.clone())
            .chain(self.argv.iter().cloned())
            .collect()
    }

    /// The key's stable prefix: the program and its subcommand (and the container for
    /// `pct`), without run ids or temp file names.
    fn prefix(&self) -> Vec<String> {
        let key = self.key();
        let n = if self.tool == "pct" && key[0] == "pct" {
            3
        } else {
            2
        };
        key.into_iter().take(n).collect()
    }

    /// The call with its per-run parts (run ids, host temp file names) blanked, to tell
    /// two calls of the same kind apart across runs.
    fn shape(&self) -> Vec<String> {
        self.key()
            .into_iter()
            .map(|a| if per_run(&a) { "*".to_owned() } else { a })
            .collect()
    }

    fn text(&self) -> String {
        format!("{} {}", self.tool, self.argv.join(" "))
    }
}

/// Whether an argument differs from run to run: a run id, or a host temp file.
fn per_run(arg: &str) -> bool {
    arg.contains("phoenix-run-")
        || arg.contains("phoenix:run=")
        || arg.contains("/phoenix-push-")
        || arg == "<content>"
}

/// Whether a logged call changes the host. Conservative: anything not known to be a query
/// counts as mutating.
fn is_mutating(call: &Call) -> bool {
    let a: Vec<&str> = call.argv.iter().map(String::as_str).collect();
    let sub = a.first().copied().unwrap_or("");
    match call.tool.as_str() {
        "pct" if sub == "exec" => {
            let inner = call.key();
            let inner: Vec<&str> = inner.iter().map(String::as_str).collect();
            !inner_is_query(&inner)
        }
        "pct" => !matches!(
            sub,
            "status" | "config" | "list" | "pending" | "df" | "cpusets" | "listsnapshot" | "help"
        ),
        "zfs" => !matches!(sub, "get" | "list" | "version" | "help"),
        "pvesm" => !matches!(sub, "status" | "list" | "path" | "help"),
        "pveversion" => false,
        "systemctl" => !matches!(
            sub,
            "is-enabled" | "is-active" | "is-failed" | "status" | "show" | "cat"
        ),
        "nvidia-smi" => !a.iter().all(|x| {
            x.starts_with("--query") || x.starts_with("--format") || *x == "-q" || *x == "-L"
        }),
        _ => true,
    }
}

/// Programs run inside a container that only read.
fn inner_is_query(argv: &[&str]) -> bool {
    let sub = argv.get(1).copied().unwrap_or("");
    match argv.first().copied().unwrap_or("") {
        "test" | "[" | "cat" | "ls" | "stat" | "id" | "getent" | "uname" | "readlink" | "head"
        | "grep" | "which" | "true" | "dpkg-query" | "apt-cache" | "du" | "df" => true,
        "ip" => argv.contains(&"show"),
        "systemctl" => matches!(
            sub,
            "is-active" | "is-enabled" | "is-failed" | "status" | "show" | "cat" | "list-units"
        ),
        "docker" => match sub {
            "inspect" | "ps" | "images" | "version" | "info" | "logs" => true,
            "image" | "container" => matches!(
                argv.get(2).copied().unwrap_or(""),
                "inspect" | "ls" | "list"
            ),
            _ => false,
        },
        "nvidia-smi" => argv[1..].iter().all(|x| {
            x.starts_with("--query") || x.starts_with("--format") || *x == "-q" || *x == "-L"
        }),
        _ => false,
    }
}

/// A scratch phoenix installation with its own emulated host.
struct Host {
    tmp: tempfile::TempDir,
    config: PathBuf,
}

/// What a finished phoenix process said.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Host {
    fn new() -> Self {
        Self::with_config(repo(FLOW.config))
    }

    fn with_config(config: PathBuf) -> Self {
        let host = Self {
            tmp: tempfile::tempdir().unwrap(),
            config,
        };
        std::fs::create_dir(host.path("tmp")).unwrap();
        // Any command that opens the host prepares the emulated root.
        let out = host.phoenix(&["gpu", "list"]);
        assert_eq!(out.code, 0, "{out:?}");
        // The emulated vLLM servers end with this test process, whatever happens to it.
        crate::support::own_emulated_root(&host.root());
        host.clear_faults();
        host
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn root(&self) -> PathBuf {
        self.path("emu")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_phoenix"));
        c.args(args)
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PHOENIX_SETTINGS", "/dev/null")
            .env("PHOENIX_HOST", "emulated")
            .env("PHOENIX_CONFIG", &self.config)
            .env("PHOENIX_STATE_DIR", self.path("state"))
            .env("PHOENIX_MARKER_DIR", self.path("state/markers"))
            .env("PHOENIX_LOG_DIR", self.path("log"))
            .env("PHOENIX_SECRETS_DIR", self.path("secrets"))
            .env("PHOENIX_SECRET_KEY", self.path("secret.key"))
            .env("PHOENIX_EMU_ROOT", self.root())
            .env("PHOENIX_LIFECYCLE_TIMEOUT", "5s")
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null());
        c
    }

    fn phoenix(&self, args: &[&str]) -> Out {
        let out = self.command(args).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `phoenix recipe run` of the flow, with extra flags.
    fn run_flow(&self, flags: &[&str]) -> Out {
        let recipe = repo(FLOW.recipe);
        let mut args = vec!["recipe", "run", recipe.to_str().unwrap()];
        args.extend_from_slice(flags);
        self.phoenix(&args)
    }

    /// Start the flow in the background, in its own process group.
    fn spawn_flow(&self, flags: &[&str]) -> Child {
        let recipe = repo(FLOW.recipe);
        let mut args = vec!["recipe", "run", recipe.to_str().unwrap()];
        args.extend_from_slice(flags);
        self.command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    /// Call the emulator directly, as an operator's own `pct`/`zfs` would.
    fn emu(&self, tool: &str, args: &[&str]) {
        let out = Command::new(self.root().join("bin").join(tool))
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Live emulator processes of this host (their argv\[0\] lies under its root).
    fn emulator_processes(&self) -> Vec<i32> {
        let bin = self.root().join("bin");
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            if Path::new(std::str::from_utf8(argv0).unwrap_or("")).starts_with(&bin) {
                out.push(pid);
            }
        }
        out
    }

    fn calls(&self) -> Vec<Call> {
        // No log yet only before the emulator's first call; any other error fails.
        let text = match std::fs::read_to_string(self.root().join("argv.log")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("argv.log: {e}"),
        };
        // A line being appended right now may be read half-written: only whole lines count.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                Call {
                    tool: v["tool"].as_str().unwrap().to_owned(),
                    argv: v["argv"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a.as_str().unwrap().to_owned())
                        .collect(),
                    exit: v["exit"].as_i64(),
                }
            })
            .collect()
    }

    /// Inject `faults` (a list of entries), keeping the short vLLM load delay.
    fn set_faults(&self, faults: &Value) {
        let file = json!({"faults": faults, "vllm": {"load_delay": LOAD_DELAY}});
        std::fs::write(self.root().join("faults.json"), file.to_string()).unwrap();
    }

    /// No fault any more; only the short vLLM load delay.
    fn clear_faults(&self) {
        let file = json!({"vllm": {"load_delay": LOAD_DELAY}});
        std::fs::write(self.root().join("faults.json"), file.to_string()).unwrap();
    }

    /// Live emulated vLLM servers of this host (`phoenix-emu __vllm-serve ROOT …`).
    fn vllm_servers(&self) -> Vec<i32> {
        let root = self.root().display().to_string();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if args.get(1) == Some(&&b"__vllm-serve"[..]) && args.get(2) == Some(&root.as_bytes()) {
                // A zombie has an empty cmdline, so this one still runs.
                out.push(pid);
            }
        }
        out
    }

    /// Wait until no emulated vLLM server of this host runs (a server checks its container
    /// every 200 ms and exits when it is gone).
    fn assert_no_vllm_server(&self, what: &str) {
        wait_until(
            &format!("{what}: the emulated vLLM servers to exit"),
            || self.vllm_servers().is_empty(),
        );
    }

    /// The emulated host's state (see [`crate::support::emu_snapshot`]).
    fn snapshot(&self) -> BTreeMap<String, (u32, Vec<u8>)> {
        crate::support::emu_snapshot(&self.root())
    }

    /// The emulated host's datasets with their user properties.
    fn datasets(&self) -> BTreeMap<String, Vec<String>> {
        crate::support::emu_datasets(&self.root())
    }

    fn containers(&self) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.root().join("etc/pve/lxc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    fn markers(&self) -> Vec<String> {
        match std::fs::read_dir(self.path("state/markers")) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Nothing phoenix made is left: the host is as `before` (a snapshot taken before the
    /// run), no marker, and the journal records nothing.
    fn assert_clean(&self, before: &BTreeMap<String, (u32, Vec<u8>)>, what: &str) {
        let after = self.snapshot();
        let changed: Vec<&String> = before
            .keys()
            .chain(after.keys())
            .filter(|k| before.get(*k) != after.get(*k))
            .collect();
        assert!(
            changed.is_empty(),
            "{what}: the emulated host differs from before the run in {changed:?}\ncontainers: {:?}\ndatasets: {:?}",
            self.containers(),
            self.datasets().keys().collect::<Vec<_>>()
        );
        for (name, props) in self.datasets() {
            assert!(
                !props.iter().any(|p| p.starts_with("phoenix:")),
                "{what}: dataset {name} still carries phoenix:owner"
            );
        }
        assert_eq!(self.markers(), Vec::<String>::new(), "{what}: markers left");
        self.assert_no_vllm_server(what);
        let status = self.phoenix(&["status"]);
        assert_eq!(status.code, 0, "{what}: {status:?}");
        assert!(
            status.stdout.contains("nothing phoenix-made"),
            "{what}: status still lists steps:\n{}",
            status.stdout
        );
    }
}

/// Wait until `argv.log` shows a hung call (`exit: null`); panic if phoenix exits first.
fn wait_hung(host: &Host, child: &mut Child, what: &str) -> Call {
    wait_for(&format!("{what}: a hung call in argv.log"), || {
        if let Some(status) = child.try_wait().unwrap() {
            let (out, err) = drain(child);
            panic!("{what}: phoenix exited ({status}) before the fault hung\n{out}\n{err}");
        }
        host.calls().into_iter().find(|c| c.exit.is_none())
    })
}

fn drain(child: &mut Child) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (out, err)
}

/// Wait for `child` to exit; its exit code (128 + N when killed by signal N) and output.
fn wait_exit(child: &mut Child, what: &str) -> (i32, String, String) {
    use std::os::unix::process::ExitStatusExt;
    // A phoenix that never exits is killed with its group when the wait gives up.
    struct KillOnPanic(i32);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
            }
        }
    }
    let _guard = KillOnPanic(child.id() as i32);
    let status = wait_for(&format!("{what}: phoenix to exit"), || {
        child.try_wait().unwrap()
    });
    let (out, err) = drain(child);
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    (code, out, err)
}

/// SIGKILL phoenix and its process group, then the hung emulator call it was waiting for
/// (phoenix runs each command in a group of its own, which outlives a SIGKILLed phoenix),
/// as a host crash would.
fn crash(host: &Host, child: &mut Child) {
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    let _ = child.wait();
    for pid in host.emulator_processes() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Every call of one undisturbed run of the flow (queries included), in order.
fn flow_calls() -> &'static [Call] {
    static CALLS: OnceLock<Vec<Call>> = OnceLock::new();
    CALLS.get_or_init(|| {
        let host = Host::new();
        let skip = host.calls().len();
        let out = host.run_flow(&[]);
        assert_eq!(out.code, 0, "the flow must succeed undisturbed: {out:?}");
        host.calls()[skip..].to_vec()
    })
}

/// Positions in [`flow_calls`] of the flow's mutating commands.
fn mutating_steps() -> Vec<usize> {
    let steps: Vec<usize> = flow_calls()
        .iter()
        .enumerate()
        .filter(|(_, c)| is_mutating(c))
        .map(|(i, _)| i)
        .collect();
    assert!(
        steps.len() >= 4,
        "the flow issues too few mutating commands: {:?}",
        flow_calls()
    );
    steps
}

/// How many scenarios of one test run at once, each on its own scratch host.
const PARALLEL: usize = 6;

/// Run `scenario` for every position in `positions`, [`PARALLEL`] at a time; panics naming
/// every position whose scenario panicked.
fn for_each_step(positions: &[usize], scenario: impl Fn(usize) + Sync) {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(positions.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&pos) = positions.get(i) else {
                        break;
                    };
                    let run = std::panic::AssertUnwindSafe(|| scenario(pos));
                    if let Err(e) = std::panic::catch_unwind(run) {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failed
                            .lock()
                            .unwrap()
                            .push(format!("scenario {pos}: {msg}"));
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failed.len(),
        positions.len(),
        failed.join("\n\n")
    );
}

/// Fault entries that let the earlier calls matching the prefix of the flow's call at
/// `pos` through (`delay:0s`, counted down by `times`) and apply `action` to it.
fn fault_at(pos: usize, action: &str) -> Value {
    let calls = flow_calls();
    let prefix = calls[pos].prefix();
    let earlier = calls[..pos]
        .iter()
        .filter(|c| c.key().starts_with(&prefix))
        .count();
    json!([
        {"match": prefix, "action": "delay:0s", "times": earlier},
        {"match": prefix, "action": action, "times": 1},
    ])
}

fn ct_conf() -> String {
    format!("{}.conf", FLOW.vmid)
}

/// SIGKILL phoenix while the flow's call at `pos` hangs under `action`; `destroy` then
/// removes everything, and the flow runs again from scratch.
fn crash_destroy_rerun(pos: usize, action: &str) {
    let host = Host::new();
    let before = host.snapshot();
    let what = format!("SIGKILL during {action} at `{}`", flow_calls()[pos].text());
    host.set_faults(&fault_at(pos, action));
    let mut child = host.spawn_flow(&[]);
    let hung = wait_hung(&host, &mut child, &what);
    assert_eq!(hung.shape(), flow_calls()[pos].shape(), "{what}: hung call");
    crash(&host, &mut child);
    host.clear_faults();
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{what}: destroy: {out:?}");
    host.assert_clean(&before, &what);
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{what}: re-run: {out:?}");
    assert_eq!(host.containers(), [ct_conf()], "{what}: re-run");
}

/// Send `sig` to a `--rollback-on-failure` run while the flow's call at `pos` hangs under
/// `action`: phoenix kills the call, undoes its steps and exits 128 + sig, leaving nothing.
fn signal_rolls_back(pos: usize, action: &str, sig: Signal) {
    let host = Host::new();
    let before = host.snapshot();
    let what = format!("{sig} during {action} at `{}`", flow_calls()[pos].text());
    host.set_faults(&fault_at(pos, action));
    let mut child = host.spawn_flow(&["--rollback-on-failure"]);
    let hung = wait_hung(&host, &mut child, &what);
    assert_eq!(hung.shape(), flow_calls()[pos].shape(), "{what}: hung call");
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
    let (code, _, err) = wait_exit(&mut child, &what);
    assert_eq!(code, 128 + sig as i32, "{what}: exit code\n{err}");
    assert_eq!(
        host.emulator_processes(),
        Vec::<i32>::new(),
        "{what}: hung call left"
    );
    host.clear_faults();
    host.assert_clean(&before, &what);
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{what}: re-run: {out:?}");
}

#[test]
fn t102_destroy_after_a_full_run_leaves_nothing() {
    let host = Host::new();
    let before = host.snapshot();
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(host.containers(), [ct_conf()]);
    assert!(!host.markers().is_empty());
    // The scan behind "no vLLM server left" sees the flow's server.
    assert_eq!(host.vllm_servers().len(), 1, "the flow's vLLM server");
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    host.assert_clean(&before, "destroy after a full run");
}

#[test]
fn t110_sigkill_while_each_mutating_command_hangs() {
    for_each_step(&mutating_steps(), |pos| crash_destroy_rerun(pos, "hang"));
}

#[test]
fn t110_sigkill_after_each_mutating_command_succeeded_before_done() {
    for_each_step(&mutating_steps(), |pos| {
        crash_destroy_rerun(pos, "succeed-then-hang");
    });
}

#[test]
fn sigterm_with_rollback_exits_143_leaving_nothing() {
    for_each_step(&mutating_steps(), |pos| {
        signal_rolls_back(pos, "hang", Signal::SIGTERM);
        signal_rolls_back(pos, "succeed-then-hang", Signal::SIGTERM);
    });
}

#[test]
fn sigint_with_rollback_exits_130_leaving_nothing() {
    for_each_step(&mutating_steps(), |pos| {
        signal_rolls_back(pos, "succeed-then-hang", Signal::SIGINT);
    });
}

#[test]
fn a_failed_step_with_rollback_exits_1_leaving_nothing() {
    for_each_step(&mutating_steps(), |pos| {
        let host = Host::new();
        let before = host.snapshot();
        let what = format!("rollback after fail at `{}`", flow_calls()[pos].text());
        host.set_faults(&fault_at(pos, "fail"));
        let out = host.run_flow(&["--rollback-on-failure"]);
        assert_eq!(out.code, 1, "{what}: {out:?}");
        host.clear_faults();
        host.assert_clean(&before, &what);
    });
}

#[test]
fn sigterm_without_rollback_exits_143_and_destroy_removes_the_rest() {
    let steps = mutating_steps();
    let pos = steps[steps.len() / 2];
    let host = Host::new();
    let before = host.snapshot();
    let what = format!("SIGTERM during hang at `{}`", flow_calls()[pos].text());
    host.set_faults(&fault_at(pos, "hang"));
    let mut child = host.spawn_flow(&[]);
    wait_hung(&host, &mut child, &what);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let (code, _, err) = wait_exit(&mut child, &what);
    assert_eq!(code, 143, "{what}\n{err}");
    assert!(err.contains("interrupted"), "{what}: {err}");
    // phoenix killed the hung command (in a process group of its own) before exiting.
    assert_eq!(host.emulator_processes(), Vec::<i32>::new(), "{what}");
    host.clear_faults();
    assert_ne!(
        host.snapshot(),
        before,
        "{what}: the steps before the signal stay"
    );
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{what}: destroy: {out:?}");
    host.assert_clean(&before, &what);
}

#[test]
fn destroy_never_removes_what_phoenix_did_not_tag() {
    let host = Host::new();
    let template = "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst";
    host.emu(
        "pct",
        &[
            "create",
            "950",
            template,
            "--hostname",
            "foreign",
            "--rootfs",
            "local-zfs:8",
        ],
    );
    host.emu("zfs", &["create", "rpool/foreign"]);
    let before = host.snapshot();
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(host.containers(), ["950.conf"]);
    assert!(host.datasets().contains_key("rpool/foreign"));
    host.assert_clean(&before, "destroy beside foreign resources");
}

#[test]
fn a_target_that_exists_untagged_is_refused_and_nothing_changes() {
    let host = Host::new();
    let template = "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst";
    host.emu(
        "pct",
        &[
            "create",
            FLOW.vmid,
            template,
            "--hostname",
            "foreign",
            "--rootfs",
            "local-zfs:8",
        ],
    );
    let before = host.snapshot();
    let skip = host.calls().len();
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "lxc.create: refused by the boundary (ownership): container {} exists but phoenix did not create it",
            FLOW.vmid
        )),
        "{}",
        out.stderr
    );
    let mutated: Vec<String> = host.calls()[skip..]
        .iter()
        .filter(|c| is_mutating(c))
        .map(Call::text)
        .collect();
    assert_eq!(mutated, Vec::<String>::new());
    assert_eq!(host.snapshot(), before);
    // destroy finds nothing of phoenix's, and leaves the foreign container alone.
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(host.snapshot(), before);
}

#[test]
fn destroy_twice_the_second_is_a_no_op() {
    let host = Host::new();
    let before = host.snapshot();
    assert_eq!(host.run_flow(&[]).code, 0);
    assert_eq!(host.phoenix(&["destroy"]).code, 0);
    let skip = host.calls().len();
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("nothing to destroy"), "{}", out.stdout);
    assert_eq!(host.calls().len(), skip, "the second destroy ran commands");
    host.assert_clean(&before, "second destroy");
}

#[test]
fn a_rerun_after_success_issues_no_mutating_command() {
    let host = Host::new();
    assert_eq!(host.run_flow(&[]).code, 0);
    let snap = host.snapshot();
    let skip = host.calls().len();
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    let mutated: Vec<String> = host.calls()[skip..]
        .iter()
        .filter(|c| is_mutating(c))
        .map(Call::text)
        .collect();
    assert_eq!(mutated, Vec::<String>::new());
    assert_eq!(host.snapshot(), snap);
    // A dry run agrees: it plans nothing.
    let out = host.run_flow(&["--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("\nNo changes: the host already matches.\n")
            && out
                .stdout
                .ends_with("\nPlan: 0 to create, 0 to change, 0 to remove.\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_rerun_after_a_failed_step_resumes_and_succeeds() {
    for_each_step(&mutating_steps(), |pos| {
        let host = Host::new();
        let what = format!("fail at `{}`", flow_calls()[pos].text());
        host.set_faults(&fault_at(pos, "fail"));
        let out = host.run_flow(&[]);
        assert_eq!(out.code, 1, "{what}: {out:?}");
        let skip = host.calls().len();
        let out = host.run_flow(&[]);
        assert_eq!(out.code, 0, "{what}: re-run: {out:?}");
        // The re-run redid the failed command's part of the flow and what followed, in the
        // flow's order: never a host-level step (a journaled one) confirmed before the
        // failure, always every host-level step from the failed one on. In-container
        // commands before it may run again where the recipe decides by a check (an
        // `apt-get update` before the failed install), or not at all where the check
        // already passes.
        let redone: Vec<Vec<String>> = host.calls()[skip..]
            .iter()
            .filter(|c| is_mutating(c))
            .map(Call::shape)
            .collect();
        let flow: Vec<&Call> = flow_calls().iter().filter(|c| is_mutating(c)).collect();
        let mut rest = flow.iter().map(|c| c.shape());
        for cmd in &redone {
            assert!(
                rest.any(|c| &c == cmd),
                "{what}: {cmd:?} is not in the flow's order: {redone:?}"
            );
        }
        let host_level =
            |c: &Call| !(c.tool == "pct" && c.argv.first().map(String::as_str) == Some("exec"));
        for (i, c) in flow_calls().iter().enumerate() {
            if !is_mutating(c) || !host_level(c) {
                continue;
            }
            let again = redone.contains(&c.shape());
            if i < pos {
                assert!(!again, "{what}: confirmed step `{}` redone", c.text());
            } else {
                assert!(again, "{what}: step `{}` not redone: {redone:?}", c.text());
            }
        }
        assert_eq!(host.containers(), [ct_conf()], "{what}");
        let status = host.phoenix(&["status"]);
        assert!(
            !status.stdout.contains("not confirmed"),
            "{what}: {}",
            status.stdout
        );
    });
}

#[test]
fn dry_run_queries_prints_the_plan_and_changes_nothing() {
    let host = Host::new();
    let before = host.snapshot();
    let skip = host.calls().len();
    let out = host.run_flow(&["--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    let calls = host.calls()[skip..].to_vec();
    assert!(!calls.is_empty(), "no read-only query ran");
    let mutated: Vec<String> = calls
        .iter()
        .filter(|c| is_mutating(c))
        .map(Call::text)
        .collect();
    assert_eq!(mutated, Vec::<String>::new(), "dry run mutated the host");
    // The plan's mutating commands are exactly those of a real run, in order (run ids and
    // host temp file names aside). It also lists the checks it could not run (in a
    // container not created yet) and non-command actions (a secret to generate).
    // Change lines are `  + tool …`, `  ~ tool …`, `  - tool …` (diff lines are indented
    // further); changes that are not commands (a secret to generate) start with a word
    // that is not a tool.
    assert!(
        !out.stdout.contains(&host.root().display().to_string()),
        "{}",
        out.stdout
    );
    let planned: Vec<Vec<String>> = out
        .stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("  ")?;
            let mut chars = rest.chars();
            matches!(chars.next(), Some('+' | '~' | '-'))
                .then(|| chars.as_str().strip_prefix(' '))
                .flatten()
        })
        .filter(|line| {
            ["pct ", "zfs ", "systemctl ", "pvesm "]
                .iter()
                .any(|t| line.starts_with(t))
        })
        .map(|line| {
            let mut words = line.replace('\'', "");
            words.retain(|ch| ch != '\n');
            let words: Vec<String> = words.split(' ').map(str::to_owned).collect();
            Call {
                tool: words[0].clone(),
                argv: words[1..].to_vec(),
                exit: Some(0),
            }
        })
        .filter(is_mutating)
        .map(|c| c.shape())
        .collect();
    let real: Vec<Vec<String>> = mutating_steps()
        .into_iter()
        .map(|pos| flow_calls()[pos].shape())
        .collect();
    assert_eq!(planned, real, "plan:\n{}", out.stdout);
    // Nothing outside the emulated host either: no secret, no secret key.
    assert!(
        !host.path("secret.key").exists(),
        "dry run made the secret key"
    );
    assert!(
        std::fs::read_dir(host.path("secrets")).map_or(true, |mut d| d.next().is_none()),
        "dry run stored a secret"
    );
    assert_eq!(host.snapshot(), before, "dry run changed the emulated host");
    assert!(
        !host.path("state/journal.jsonl").exists() || {
            let s = host.phoenix(&["status"]);
            s.stdout.contains("nothing phoenix-made")
        }
    );
    assert_eq!(host.markers(), Vec::<String>::new());
}

#[test]
fn a_second_process_on_the_same_container_names_the_holder() {
    let host = Host::new();
    // Keep the first run busy inside its first mutating command.
    let first_mutating = mutating_steps()[0];
    let prefix = flow_calls()[first_mutating].prefix();
    host.set_faults(&json!([{"match": prefix, "action": "hang", "times": 1}]));
    let mut first = host.spawn_flow(&[]);
    wait_lock_held(&host, &mut first, "the first run");
    let out = host.run_flow(&[]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "container {} is locked by phoenix process {}",
            FLOW.vmid,
            first.id()
        )),
        "{}",
        out.stderr
    );
    // The refused second run left the first alone: it still holds the lock and ends
    // through its own signal handling.
    assert_eq!(lock_holder(&host), first.id().to_string());
    kill(Pid::from_raw(first.id() as i32), Signal::SIGTERM).unwrap();
    let (code, _, err) = wait_exit(&mut first, "first run");
    assert_eq!(code, 143, "{err}");
}

/// The pid written in the container's lock file (empty when there is none).
fn lock_holder(host: &Host) -> String {
    let lock = host.path(&format!("state/locks/{}.lock", FLOW.vmid));
    match std::fs::read_to_string(&lock) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => panic!("{}: {e}", lock.display()),
    }
}

/// Wait until `child` holds the container's lock and hangs in its first mutating command
/// (a `hang` fault): it keeps the lock until it is signalled.
fn wait_lock_held(host: &Host, child: &mut Child, what: &str) {
    wait_hung(host, child, what);
    assert_eq!(
        lock_holder(host),
        child.id().to_string(),
        "{what}: hangs without holding the lock"
    );
}

#[test]
fn a_rerun_after_sigkill_resumes_and_destroy_then_removes_everything() {
    for_each_step(&mutating_steps(), |pos| {
        let host = Host::new();
        let before = host.snapshot();
        let what = format!(
            "re-run after SIGKILL during succeed-then-hang at `{}`",
            flow_calls()[pos].text()
        );
        host.set_faults(&fault_at(pos, "succeed-then-hang"));
        let mut child = host.spawn_flow(&[]);
        wait_hung(&host, &mut child, &what);
        crash(&host, &mut child);
        host.clear_faults();
        let out = host.run_flow(&[]);
        assert_eq!(out.code, 0, "{what}: {out:?}");
        assert_eq!(host.containers(), [ct_conf()], "{what}");
        let out = host.phoenix(&["destroy"]);
        assert_eq!(out.code, 0, "{what}: destroy: {out:?}");
        host.assert_clean(&before, &what);
    });
}

/// The mutating commands of `destroy` after an undisturbed run, and the calls before each.
fn destroy_calls() -> &'static [Call] {
    static CALLS: OnceLock<Vec<Call>> = OnceLock::new();
    CALLS.get_or_init(|| {
        let host = Host::new();
        assert_eq!(host.run_flow(&[]).code, 0);
        let skip = host.calls().len();
        let out = host.phoenix(&["destroy"]);
        assert_eq!(out.code, 0, "{out:?}");
        host.calls()[skip..].to_vec()
    })
}

/// Fault entries for the `destroy` call at `pos` (see [`fault_at`]).
fn destroy_fault_at(pos: usize, action: &str) -> Value {
    let calls = destroy_calls();
    let prefix = calls[pos].prefix();
    let earlier = calls[..pos]
        .iter()
        .filter(|c| c.key().starts_with(&prefix))
        .count();
    json!([
        {"match": prefix, "action": "delay:0s", "times": earlier},
        {"match": prefix, "action": action, "times": 1},
    ])
}

#[test]
fn a_destroy_that_fails_or_is_killed_is_finished_by_the_next_one() {
    let positions: Vec<usize> = destroy_calls()
        .iter()
        .enumerate()
        .filter(|(_, c)| is_mutating(c))
        .map(|(i, _)| i)
        .collect();
    assert!(!positions.is_empty());
    const ACTIONS: [&str; 4] = ["fail", "hang", "succeed-then-hang", "sigterm"];
    let scenarios: Vec<usize> = (0..positions.len() * ACTIONS.len()).collect();
    for_each_step(&scenarios, |i| {
        let (pos, action) = (positions[i / ACTIONS.len()], ACTIONS[i % ACTIONS.len()]);
        {
            let host = Host::new();
            let before = host.snapshot();
            let what = format!("destroy with {action} at `{}`", destroy_calls()[pos].text());
            assert_eq!(host.run_flow(&[]).code, 0, "{what}");
            let fault = if action == "sigterm" { "hang" } else { action };
            host.set_faults(&destroy_fault_at(pos, fault));
            if action == "fail" {
                let out = host.phoenix(&["destroy"]);
                assert_eq!(out.code, 3, "{what}: {out:?}");
                assert!(out.stdout.contains("FAILED"), "{what}: {}", out.stdout);
            } else if action == "sigterm" {
                let mut child = host
                    .command(&["destroy"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .process_group(0)
                    .spawn()
                    .unwrap();
                wait_hung(&host, &mut child, &what);
                kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
                let (code, _, err) = wait_exit(&mut child, &what);
                assert_eq!(code, 143, "{what}: {err}");
                assert_eq!(host.emulator_processes(), Vec::<i32>::new(), "{what}");
            } else {
                let mut child = host.command(&["destroy"]).process_group(0).spawn().unwrap();
                let hung = wait_hung(&host, &mut child, &what);
                assert_eq!(hung.shape(), destroy_calls()[pos].shape(), "{what}");
                crash(&host, &mut child);
            }
            host.clear_faults();
            let out = host.phoenix(&["destroy"]);
            assert_eq!(out.code, 0, "{what}: second destroy: {out:?}");
            host.assert_clean(&before, &what);
        }
    });
}

#[test]
fn destroy_refuses_a_container_a_run_holds_naming_its_pid() {
    let host = Host::new();
    let first_mutating = mutating_steps()[0];
    let prefix = flow_calls()[first_mutating].prefix();
    host.set_faults(&json!([{"match": prefix, "action": "hang", "times": 1}]));
    let mut run = host.spawn_flow(&[]);
    wait_lock_held(&host, &mut run, "the run");
    let out = host.phoenix(&["destroy", "--lxc", FLOW.vmid]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("locked by phoenix process {}", run.id())),
        "{}",
        out.stderr
    );
    assert_eq!(lock_holder(&host), run.id().to_string());
    kill(Pid::from_raw(run.id() as i32), Signal::SIGTERM).unwrap();
    let (code, _, err) = wait_exit(&mut run, "run");
    assert_eq!(code, 143, "{err}");
}

#[test]
fn a_sigkill_during_a_push_leaves_no_host_temp_file() {
    for pos in mutating_steps() {
        if flow_calls()[pos].argv.first().map(String::as_str) != Some("push") {
            continue;
        }
        let host = Host::new();
        let what = format!("SIGKILL during `{}`", flow_calls()[pos].text());
        host.set_faults(&fault_at(pos, "succeed-then-hang"));
        let mut child = host.spawn_flow(&[]);
        wait_hung(&host, &mut child, &what);
        crash(&host, &mut child);
        host.clear_faults();
        assert_eq!(host.phoenix(&["destroy"]).code, 0, "{what}");
        // Push files live in the state dir's private tmp/, swept by the destroy.
        for dir in [host.path("tmp"), host.path("state/tmp")] {
            let left: Vec<String> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                left,
                Vec::<String>::new(),
                "{what}: temp files left in {}",
                dir.display()
            );
        }
    }
}

#[test]
fn destroy_keep_data_keeps_the_datasets_and_their_record_until_a_full_destroy() {
    let host = Host::new();
    let before = host.snapshot();
    assert_eq!(host.run_flow(&[]).code, 0);
    let datasets = host.datasets();
    let ours: Vec<&String> = datasets
        .iter()
        .filter(|(_, props)| props.iter().any(|p| p == "phoenix:owner=phoenix"))
        .map(|(name, _)| name)
        .collect();
    assert!(!ours.is_empty(), "the flow makes no dataset");
    let out = host.phoenix(&["destroy", "--keep-data"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(host.containers(), Vec::<String>::new());
    let after = host.datasets();
    for name in &ours {
        assert!(after.contains_key(*name), "--keep-data removed {name}");
        let marker = format!("zfs.dataset%3A{}.done", name.replace('/', "%2F"));
        assert!(
            host.markers().contains(&marker),
            "{marker}: {:?}",
            host.markers()
        );
    }
    let status = host.phoenix(&["status"]);
    for name in &ours {
        assert!(status.stdout.contains(name.as_str()), "{}", status.stdout);
    }
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    host.assert_clean(&before, "destroy after destroy --keep-data");
}

#[test]
fn an_incomplete_rollback_exits_3_and_destroy_finishes_it() {
    let host = Host::new();
    let before = host.snapshot();
    let steps = mutating_steps();
    let last = *steps.last().unwrap();
    let mut faults = fault_at(last, "fail");
    // The rollback's own removal of the container fails too.
    faults
        .as_array_mut()
        .unwrap()
        .push(json!({"match": ["pct", "destroy"], "action": "fail", "times": 1}));
    host.set_faults(&faults);
    let out = host.run_flow(&["--rollback-on-failure"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("could not be rolled back"),
        "{}",
        out.stderr
    );
    assert_eq!(host.containers(), [ct_conf()]);
    host.clear_faults();
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    host.assert_clean(&before, "destroy after an incomplete rollback");
}

#[test]
fn destroy_dry_run_lists_everything_and_changes_nothing() {
    let host = Host::new();
    assert_eq!(host.run_flow(&[]).code, 0);
    let snap = host.snapshot();
    let journal = std::fs::read(host.path("state/journal.jsonl")).unwrap();
    let markers = host.markers();
    let status: Value = serde_json::from_str(&host.phoenix(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status["version"], 1, "{status}");
    let recorded = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["steps"].as_array().unwrap().len())
        .sum::<usize>()
        + status["other"].as_array().unwrap().len();
    assert!(recorded > 0, "{status}");
    let skip = host.calls().len();
    let out = host.phoenix(&["destroy", "--dry-run"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("would: undone"))
            .count(),
        recorded,
        "{}",
        out.stdout
    );
    let mutated: Vec<String> = host.calls()[skip..]
        .iter()
        .filter(|c| is_mutating(c))
        .map(Call::text)
        .collect();
    assert_eq!(
        mutated,
        Vec::<String>::new(),
        "destroy --dry-run changed the host"
    );
    assert_eq!(host.snapshot(), snap);
    assert_eq!(
        std::fs::read(host.path("state/journal.jsonl")).unwrap(),
        journal
    );
    assert_eq!(host.markers(), markers);
}

/// A host whose config is the flow's with a second entry, 952, that the same recipe serves
/// (so both containers share the flow's datasets).
fn two_container_host(dir: &Path) -> Host {
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(repo(FLOW.config)).unwrap()).unwrap();
    let entries = config["lxc_configs"].as_object_mut().unwrap();
    let (_, first) = entries.iter().next().unwrap();
    let mut second = first.clone();
    second["name"] = json!("second");
    second["network_config"]["ip"] = json!("10.0.0.199/24");
    if second["network_config"].get("mac").is_some() {
        second["network_config"]["mac"] = json!("BC:24:11:00:09:52");
    }
    entries.insert("952".into(), second);
    let path = dir.join("two.json");
    std::fs::write(&path, config.to_string()).unwrap();
    Host::with_config(path)
}

#[test]
fn destroy_of_one_container_keeps_a_dataset_another_container_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let host = two_container_host(dir.path());
    let before = host.snapshot();
    assert_eq!(host.run_flow(&["--lxc", FLOW.vmid]).code, 0);
    let out = host.run_flow(&["--lxc", "952"]);
    assert_eq!(out.code, 0, "{out:?}");
    // The phoenix datasets 952 mounts, or whose descendants it mounts.
    let conf = std::fs::read_to_string(host.root().join("etc/pve/lxc/952.conf")).unwrap();
    let shared: Vec<String> = host
        .datasets()
        .into_iter()
        .filter(|(_, props)| props.iter().any(|p| p == "phoenix:owner=phoenix"))
        .map(|(name, _)| name)
        .filter(|name| conf.contains(&format!("/{name},")) || conf.contains(&format!("/{name}/")))
        .collect();
    assert!(!shared.is_empty(), "952 mounts no phoenix dataset:\n{conf}");
    let out = host.phoenix(&["destroy", "--lxc", FLOW.vmid]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(host.containers(), ["952.conf"]);
    for name in &shared {
        assert!(
            host.datasets().contains_key(name),
            "{name}, mounted by 952, was destroyed:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("mounted by container 952"),
            "{}",
            out.stdout
        );
    }
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    host.assert_clean(&before, "destroy of both");
}

#[test]
fn a_second_signal_during_the_rollback_exits_at_once_and_destroy_finishes() {
    let host = Host::new();
    let before = host.snapshot();
    let steps = mutating_steps();
    let last = *steps.last().unwrap();
    let what = format!(
        "second SIGTERM during the rollback of `{}`",
        flow_calls()[last].text()
    );
    host.set_faults(&fault_at(last, "hang"));
    let mut child = host.spawn_flow(&["--rollback-on-failure"]);
    wait_hung(&host, &mut child, &what);
    let hung_before = host.calls().iter().filter(|c| c.exit.is_none()).count();
    // Every command of the rollback hangs now.
    host.set_faults(
        &json!([{"match": ["pct"], "action": "hang"}, {"match": ["zfs"], "action": "hang"}]),
    );
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    wait_until(&format!("{what}: the rollback to run a command"), || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{what}: exited before rolling back"
        );
        host.calls().iter().filter(|c| c.exit.is_none()).count() > hung_before
    });
    // The rollback ignores the first signal; a second one ends phoenix at once.
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let (code, _, err) = wait_exit(&mut child, &what);
    assert_eq!(code, 143, "{what}: {err}");
    // The hung rollback command outlives phoenix in its own process group.
    for pid in host.emulator_processes() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    host.clear_faults();
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{what}: destroy: {out:?}");
    host.assert_clean(&before, &what);
}

#[test]
fn the_classifier_tells_queries_from_changes() {
    let call = |tool: &str, argv: &[&str]| Call {
        tool: tool.to_owned(),
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
        exit: Some(0),
    };
    let exec = |inner: &[&str]| {
        let mut argv = vec!["exec", "901", "--keep-env", "0", "--"];
        argv.extend_from_slice(inner);
        call("pct", &argv)
    };
    for query in [
        call("pct", &["status", "901"]),
        call("pct", &["config", "901"]),
        call("zfs", &["get", "-H", "all", "rpool/m"]),
        call("nvidia-smi", &["--query-gpu=index", "--format=csv"]),
        call("pveversion", &[]),
        call(
            "systemctl",
            &["is-enabled", "--quiet", "phoenix-nvidia-nodes.service"],
        ),
        exec(&["test", "-e", "/etc/x"]),
        exec(&["/usr/bin/docker", "inspect", "vllm"]),
        exec(&["systemctl", "is-active", "vllm"]),
        exec(&["ip", "-j", "-4", "addr", "show", "dev", "eth0"]),
        exec(&["cat", "/etc/phoenix-vllm/phoenix-vllm-901.yaml"]),
        exec(&[
            "docker", "image", "inspect", "--format", "{{.Id}}", "vllm/x:1",
        ]),
        exec(&["docker", "version", "--format", "{{.Server.Version}}"]),
        exec(&["docker", "info", "--format", "{{json .Runtimes}}"]),
        exec(&["docker", "logs", "phoenix-vllm-901"]),
        exec(&["systemctl", "show", "--property=ActiveState", "x.service"]),
        exec(&[
            "nvidia-smi",
            "--query-gpu=driver_version",
            "--format=csv,noheader",
        ]),
    ] {
        assert!(!is_mutating(&query), "{}", query.text());
    }
    for change in [
        call("pct", &["create", "901", "t"]),
        call("pct", &["set", "901", "--mp0", "x"]),
        call("pct", &["push", "901", "a", "b"]),
        call("zfs", &["create", "rpool/m"]),
        call("nvidia-smi", &["-pm", "1"]),
        call(
            "systemctl",
            &["enable", "--now", "phoenix-nvidia-nodes.service"],
        ),
        call(
            "systemctl",
            &["disable", "--now", "phoenix-nvidia-nodes.service"],
        ),
        call("nvidia-modprobe", &["-u", "-c=0"]),
        exec(&["docker", "run", "x"]),
        exec(&["docker", "image", "rm", "x"]),
        exec(&["systemctl", "enable", "--now", "vllm"]),
        exec(&["apt-get", "install", "-y", "x"]),
        exec(&["ip", "link", "set", "eth0", "up"]),
        exec(&["docker", "pull", "vllm/x:1"]),
        exec(&["docker", "rm", "-f", "phoenix-vllm-901"]),
        exec(&["systemctl", "disable", "--now", "x.service"]),
        exec(&["systemctl", "daemon-reload"]),
        exec(&["nvidia-ctk", "runtime", "configure", "--runtime=docker"]),
        exec(&["mkdir", "-p", "-m", "0700", "/etc/phoenix-vllm"]),
        exec(&["chpasswd"]),
        exec(&["docker", "image", "prune", "-f"]),
    ] {
        assert!(is_mutating(&change), "{}", change.text());
    }
}

#[test]
fn a_rollback_keeps_a_dataset_another_run_adopted_and_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let host = two_container_host(dir.path());
    let before = host.snapshot();
    // The run for the first container stops at its last step, after making the dataset.
    let steps = mutating_steps();
    let last = *steps.last().unwrap();
    host.set_faults(&fault_at(last, "hang"));
    let mut first = host.spawn_flow(&["--lxc", FLOW.vmid, "--rollback-on-failure"]);
    wait_hung(&host, &mut first, "first run");
    // Meanwhile the second container's run adopts the dataset and mounts it.
    let out = host.run_flow(&["--lxc", "952"]);
    assert_eq!(out.code, 0, "{out:?}");
    kill(Pid::from_raw(first.id() as i32), Signal::SIGTERM).unwrap();
    let (code, _, err) = wait_exit(&mut first, "first run");
    assert_eq!(code, 143, "{err}");
    assert!(err.contains("mounted by container 952"), "{err}");
    assert_eq!(host.containers(), ["952.conf"]);
    let ours: Vec<String> = host
        .datasets()
        .into_iter()
        .filter(|(_, props)| props.iter().any(|p| p == "phoenix:owner=phoenix"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        !ours.is_empty(),
        "the rollback destroyed the dataset 952 mounts"
    );
    host.clear_faults();
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    host.assert_clean(&before, "destroy after the rollback");
}

/// Start the flow with a vLLM server that loads for a minute, and wait until phoenix waits
/// for it (its service is enabled and the server process runs).
fn spawn_flow_waiting_for_vllm(host: &Host, flags: &[&str], what: &str) -> Child {
    let file = json!({"vllm": {"load_delay": "60s"}});
    std::fs::write(host.root().join("faults.json"), file.to_string()).unwrap();
    let mut child = host.spawn_flow(flags);
    // The ladder checks the container's liveness (`docker inspect`) while it polls: once
    // that call is in argv.log, phoenix is inside `vllm.wait_ready`.
    let enabled = |c: &Call| c.text().contains("systemctl enable --now");
    wait_until(
        &format!("{what}: phoenix to poll the loading server"),
        || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{what}: phoenix exited before the ladder: {:?}",
                drain(&mut child)
            );
            let calls = host.calls();
            calls.iter().position(enabled).is_some_and(|i| {
                calls[i..].iter().any(|c| {
                    c.text()
                        .contains("docker inspect --format {{.State.Status}}")
                })
            })
        },
    );
    assert_eq!(host.vllm_servers().len(), 1, "{what}: no vLLM server runs");
    child
}

#[test]
fn sigkill_while_waiting_for_vllm_then_destroy_leaves_no_server() {
    let host = Host::new();
    let before = host.snapshot();
    let what = "SIGKILL while vllm.wait_ready waits";
    let mut child = spawn_flow_waiting_for_vllm(&host, &[], what);
    crash(&host, &mut child);
    // The server outlives the killed phoenix: it belongs to the container.
    assert_eq!(host.vllm_servers().len(), 1, "{what}");
    host.clear_faults();
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{what}: destroy: {out:?}");
    host.assert_clean(&before, what);
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{what}: re-run: {out:?}");
}

#[test]
fn sigterm_with_rollback_while_waiting_for_vllm_leaves_no_server() {
    let host = Host::new();
    let before = host.snapshot();
    let what = "SIGTERM with --rollback-on-failure while vllm.wait_ready waits";
    let mut child = spawn_flow_waiting_for_vllm(&host, &["--rollback-on-failure"], what);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let (code, _, err) = wait_exit(&mut child, what);
    assert_eq!(code, 143, "{what}: {err}");
    host.clear_faults();
    host.assert_clean(&before, what);
}

// ---- The host's pools (issue 11 item 6, DESIGN.md §11 "Pools are the host's") ----

impl Host {
    /// `phoenix` with extra environment variables.
    fn phoenix_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut c = self.command(args);
        c.envs(env.iter().copied());
        let out = c.output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Give the emulated host these ZFS pools (its settings, read when its ZFS state is
    /// first made: before any `zfs` call).
    fn set_pools(&self, pools: &[&str]) {
        assert!(
            !self.root().join("zfs.json").exists(),
            "ZFS state already made"
        );
        let path = self.root().join("emu.json");
        let mut emu: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        emu["pools"] = json!(pools);
        std::fs::write(&path, emu.to_string()).unwrap();
    }

    fn mutating_calls(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter(|c| is_mutating(c))
            .map(Call::text)
            .collect()
    }
}

#[test]
fn the_models_dataset_defaults_to_the_hosts_one_pool() {
    let host = Host::new();
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{out:?}");
    let conf = std::fs::read_to_string(host.root().join("etc/pve/lxc").join(ct_conf())).unwrap();
    assert!(
        conf.contains("\nmp0: /rpool/phoenix/models/drdevstral,mp=/models\n"),
        "{conf}"
    );
    assert!(
        host.mutating_calls().iter().any(|c| c.starts_with("zfs create")
            && c.ends_with(" rpool/phoenix/models/drdevstral")),
        "{:?}",
        host.mutating_calls()
    );
}

#[test]
fn models_dataset_from_the_environment_no_tank_in_any_argv() {
    let host = Host::new();
    host.set_pools(&["rpool", "tank"]);
    let env = [("PHOENIX_MODELS_DATASET", "rpool/phoenix/models")];
    let out = host.phoenix_env(
        &["recipe", "run", repo(FLOW.recipe).to_str().unwrap()],
        &env,
    );
    assert_eq!(out.code, 0, "{out:?}");
    let calls = host.calls();
    assert!(calls.len() > 20, "a full run: {} calls", calls.len());
    for c in &calls {
        assert!(
            !c.text().contains("tank"),
            "an argv names tank: {}",
            c.text()
        );
    }
    assert!(
        host.datasets()
            .contains_key("rpool/phoenix/models/drdevstral"),
        "{:?}",
        host.datasets().keys().collect::<Vec<_>>()
    );
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    for c in host.calls() {
        assert!(
            !c.text().contains("tank"),
            "destroy names tank: {}",
            c.text()
        );
    }
}

#[test]
fn two_pools_and_no_models_dataset_is_a_usage_error_that_changes_nothing() {
    let host = Host::new();
    host.set_pools(&["rpool", "tank"]);
    let before = host.snapshot();
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 2, "{out:?}");
    let config = repo(FLOW.config);
    assert!(
        out.stderr.contains(&format!(
            "no models dataset is set and this host has 2 ZFS pools (rpool, tank): set `\"models_dataset\": \"<pool>/phoenix/models\"` at the top level of {}, or the setting models_dataset (`--models-dataset`, PHOENIX_MODELS_DATASET,",
            config.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(host.mutating_calls(), Vec::<String>::new());
    assert_eq!(host.containers(), Vec::<String>::new());
    assert_eq!(host.snapshot(), before);
    // Named on the command line, the same run goes ahead on the pool chosen.
    let out = host.run_flow(&["--models-dataset", "tank/llm"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(host.datasets().contains_key("tank/llm/drdevstral"));
}

// ---- An interrupted `pct create` (issue 11 items 5 and 10, DESIGN.md §11) ----

const TEMPLATE: &str = "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst";

impl Host {
    /// The config text of container `vmid`.
    fn conf_of(&self, vmid: &str) -> String {
        std::fs::read_to_string(self.root().join(format!("etc/pve/lxc/{vmid}.conf"))).unwrap()
    }

    /// The host's datasets right below `rpool/data` (the `local-zfs` volumes).
    fn volumes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .datasets()
            .into_keys()
            .filter(|n| n.starts_with("rpool/data/"))
            .collect();
        v.sort();
        v
    }

    /// What someone else's `pct create` of `vmid`, killed halfway, leaves: PVE's
    /// `lock: create` config and a volume.
    fn foreign_create_stub(&self, vmid: &str) {
        self.set_faults(&json!([{"match": ["pct", "create", vmid], "action": "hang-midway"}]));
        let mut child = Command::new(self.root().join("bin/pct"))
            .args(["create", vmid, TEMPLATE, "--rootfs", "local-zfs:8"])
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_hung(self, &mut child, "the foreign create");
        child.kill().unwrap();
        child.wait().unwrap();
        self.clear_faults();
        assert_eq!(self.conf_of(vmid), "lock: create\n");
    }

    /// Start the flow and SIGKILL it (and the emulator) while `pct create` extracts the
    /// template: the container is PVE's `lock: create` stub with a new volume.
    fn crash_during_create(&self, flags: &[&str], what: &str) {
        self.set_faults(&json!([
            {"match": ["pct", "create", FLOW.vmid], "action": "hang-midway", "times": 1}
        ]));
        let skip = self.calls().len();
        let mut child = self.spawn_flow(flags);
        let hung = wait_for(&format!("{what}: pct create hangs"), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{what}: phoenix exited ({status}) before pct create hung");
            }
            self.calls()[skip..]
                .iter()
                .find(|c| c.exit.is_none())
                .cloned()
        });
        assert_eq!(hung.prefix(), ["pct", "create", FLOW.vmid], "{what}");
        crash(self, &mut child);
        self.clear_faults();
        assert_eq!(self.conf_of(FLOW.vmid), "lock: create\n", "{what}");
        assert!(
            self.volumes()
                .contains(&format!("rpool/data/subvol-{}-disk-0", FLOW.vmid)),
            "{what}: {:?}",
            self.volumes()
        );
    }
}

#[test]
fn sigkill_during_pct_create_then_destroy_removes_the_stub_and_a_rerun_succeeds() {
    let host = Host::new();
    host.foreign_create_stub("950");
    let before = host.snapshot();
    let what = "SIGKILL while pct create extracts the template";
    host.crash_during_create(&[], what);
    // PVE refuses to destroy it as it is.
    let skip = host.calls().len();
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{what}: destroy: {out:?}");
    let vmid = FLOW.vmid;
    let done: Vec<String> = host.calls()[skip..]
        .iter()
        .filter(|c| is_mutating(c))
        .map(Call::text)
        .collect();
    assert_eq!(
        done,
        [
            format!("pct unlock {vmid}"),
            format!("pct destroy {vmid} --purge 1"),
            format!("pvesm free local-zfs:subvol-{vmid}-disk-0"),
        ],
        "{what}"
    );
    for c in &host.calls()[skip..] {
        assert!(
            !c.text().contains("950"),
            "{what}: touched the foreign CT: {}",
            c.text()
        );
    }
    // Everything is as before: the foreign stub and its volume included.
    host.assert_clean(&before, what);
    assert_eq!(host.conf_of("950"), "lock: create\n");
    assert_eq!(host.volumes(), ["rpool/data/subvol-950-disk-0"]);
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{what}: re-run: {out:?}");
    assert!(host.conf_of(vmid).contains("\ntags: phoenix;phoenix-run-"));
}

#[test]
fn a_rerun_after_an_interrupted_create_removes_the_stub_and_creates_again() {
    let host = Host::new();
    let before = host.snapshot();
    let what = "re-run after SIGKILL during pct create";
    host.crash_during_create(&[], what);
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 0, "{what}: {out:?}");
    assert!(
        out.stderr
            .contains("removing what an interrupted create left"),
        "{}",
        out.stderr
    );
    // The stub's volume was freed before the create, which took its name again.
    assert_eq!(
        host.volumes(),
        [format!("rpool/data/subvol-{}-disk-0", FLOW.vmid)]
    );
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{what}: destroy: {out:?}");
    host.assert_clean(&before, what);
}

#[test]
fn sigterm_with_rollback_during_pct_create_removes_the_stub() {
    let host = Host::new();
    let before = host.snapshot();
    let what = "SIGTERM with --rollback-on-failure while pct create extracts";
    host.set_faults(&json!([
        {"match": ["pct", "create", FLOW.vmid], "action": "hang-midway", "times": 1}
    ]));
    let mut child = host.spawn_flow(&["--rollback-on-failure"]);
    wait_hung(&host, &mut child, what);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let (code, _, err) = wait_exit(&mut child, what);
    assert_eq!(code, 143, "{what}: {err}");
    host.clear_faults();
    host.assert_clean(&before, what);
}

#[test]
fn a_foreign_locked_stub_on_the_target_is_refused_and_never_touched() {
    let host = Host::new();
    host.foreign_create_stub(FLOW.vmid);
    let before = host.snapshot();
    let skip = host.calls().len();
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "container {} exists but phoenix did not create it (no `phoenix` tag, no journal record of its creation)",
            FLOW.vmid
        )),
        "{}",
        out.stderr
    );
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    let mutated: Vec<String> = host.calls()[skip..]
        .iter()
        .filter(|c| is_mutating(c))
        .map(Call::text)
        .collect();
    assert_eq!(mutated, Vec::<String>::new());
    assert_eq!(host.snapshot(), before);
}

// ---- Dataset ownership is a local property (issue 11 item 9, DESIGN.md §11) ----

#[test]
fn a_dataset_that_only_inherits_phoenix_owner_is_never_adopted_or_destroyed() {
    let host = Host::new();
    let before = host.snapshot();
    assert_eq!(host.run_flow(&[]).code, 0);
    // The operator replaces phoenix's model dataset with one of their own. It inherits
    // phoenix:owner (and even this run's phoenix:run) from the parent phoenix made.
    let ds = "rpool/phoenix/models/drdevstral";
    host.emu("zfs", &["destroy", ds]);
    host.emu("zfs", &["create", ds]);
    let got = Command::new(host.root().join("bin/zfs"))
        .args(["get", "-H", "-o", "value,source", "phoenix:owner", ds])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got.stdout),
        "phoenix\tinherited from rpool/phoenix/models\n"
    );
    // A re-run does not adopt it.
    let out = host.run_flow(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "dataset {ds} exists but has no `phoenix:owner` property of its own (an inherited one does not count)"
        )),
        "{}",
        out.stderr
    );
    // destroy leaves it, and cannot remove the parent that holds it: exit 3, the parent
    // stays recorded.
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "left alone    destroy dataset {ds} [zfs.dataset:{ds}] (dataset {ds} sets no phoenix:owner property of its own)"
        )),
        "{}",
        out.stdout
    );
    assert!(host.datasets().contains_key(ds));
    // Once the operator moved their data away, the next destroy finishes.
    host.emu("zfs", &["destroy", ds]);
    let out = host.phoenix(&["destroy"]);
    assert_eq!(out.code, 0, "{out:?}");
    host.assert_clean(&before, "destroy after the foreign dataset went");
}

//! The process behind an emulated `docker run vllm/vllm-openai…`: argument checks as
//! `vllm serve` makes them, the detached server process, and its entry point.
//!
//! [`spawn`] starts this same executable as `phoenix-emu __vllm-serve ROOT VMID NAME`, its
//! stdin from `/dev/null` and its stdout/stderr appended to the container's log (what
//! `docker logs` reads); [`main`] makes itself a session and process-group leader
//! (`setsid`), reads its parameters from the container's record in the emulated
//! container's state and the behaviour from `faults.json`'s `vllm` object, and runs
//! [`crate::vllm::serve`] on the container's loopback address at the published host port.
//!
//! It serves only while its record names its pid, its emulated container exists and runs,
//! the root exists and the root's `owner` process (if `emu.json` names one) runs, checked
//! every 200 ms, so `pct stop`/`pct destroy`, removing the root, `docker stop`/`rm -f` and
//! a killed test (whose pid is the owner) all end it.
//!
//! Decisions: the default load delay is 1 s (`{"vllm":{"load_delay":"200ms"}}` in
//! `faults.json` changes it, read when the server starts); `max_model_len` is
//! `--max-model-len` or 4096; the API key comes from the `--config` YAML file (mapped
//! through the `-v` binds into the container's files) or `--api-key`. The key is read by
//! the server process and never written to the state or the log.

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::container;
use crate::docker::ServeSpec;
use crate::inner::Ct;
use crate::root::Root;
use crate::vllm::{self, Behaviour, Mode};

/// The hidden first argument that runs the server.
pub const SERVE_ARG: &str = "__vllm-serve";

/// The default load delay.
pub const DEFAULT_LOAD_DELAY: Duration = Duration::from_secs(1);

/// `vllm serve` flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "--model",
    "--tensor-parallel-size",
    "-tp",
    "--pipeline-parallel-size",
    "-pp",
    "--max-model-len",
    "--kv-cache-dtype",
    "--quantization",
    "-q",
    "--quantization-config",
    "--gpu-memory-utilization",
    "--host",
    "--port",
    "--config",
    "--api-key",
    "--dtype",
    "--download-dir",
    "--max-num-seqs",
    "--max-num-batched-tokens",
    "--swap-space",
    "--seed",
    "--tokenizer",
    "--tokenizer-mode",
    "--tool-call-parser",
    "--chat-template",
    "--load-format",
    "--config-format",
    "--generation-config",
    "--revision",
    "--uvicorn-log-level",
    "--limit-mm-per-prompt",
];

/// `vllm serve` flags without a value.
const BOOL_FLAGS: &[&str] = &[
    "--trust-remote-code",
    "--enforce-eager",
    "--enable-prefix-caching",
    "--enable-auto-tool-choice",
    "--disable-log-requests",
    "--disable-log-stats",
    "--enable-chunked-prefill",
];

/// `--kv-cache-dtype` choices.
const KV_DTYPES: &[&str] = &["auto", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "bfloat16"];

fn usage_error(m: &str) -> (i32, String) {
    (
        2,
        format!("usage: vllm serve [model_tag] [options]\nvllm serve: error: {m}\n"),
    )
}

/// Check the arguments after the image as `vllm serve` does; the server's parameters
/// (its `addr` still empty) and the port it listens on inside the Docker container, or
/// `(exit code, log text)`.
pub fn check_args(
    ct: &Ct<'_>,
    args: &[String],
    binds: &[(String, String)],
    gpus: usize,
) -> Result<(ServeSpec, u16), (i32, String)> {
    let mut model = None;
    let mut vals: Vec<(String, String)> = Vec::new();
    let mut served = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if a.starts_with('-') => (f.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        if flag == "--served-model-name" {
            let mut names = Vec::new();
            if let Some(v) = inline {
                names.push(v);
            }
            while i < args.len() && !args[i].starts_with('-') {
                names.push(args[i].clone());
                i += 1;
            }
            if names.is_empty() {
                return Err(usage_error(
                    "argument --served-model-name: expected at least one argument",
                ));
            }
            served = Some(names[0].clone());
        } else if VALUE_FLAGS.contains(&flag.as_str()) {
            let v = match inline {
                Some(v) => v,
                None if i < args.len() => {
                    i += 1;
                    args[i - 1].clone()
                }
                None => {
                    return Err(usage_error(&format!(
                        "argument {flag}: expected one argument"
                    )));
                }
            };
            vals.push((flag, v));
        } else if BOOL_FLAGS.contains(&flag.as_str()) {
        } else if a.starts_with('-') {
            return Err(usage_error(&format!("unrecognized arguments: {a}")));
        } else if model.is_none() {
            model = Some(a.clone());
        } else {
            return Err(usage_error(&format!("unrecognized arguments: {a}")));
        }
    }
    let get = |k: &str| {
        vals.iter()
            .rev()
            .find(|(f, _)| f == k)
            .map(|(_, v)| v.as_str())
    };
    let Some(model) = model.or_else(|| get("--model").map(str::to_owned)) else {
        return Err(usage_error(
            "the following arguments are required: model_tag",
        ));
    };
    let int = |k: &str, alias: &str| -> Result<Option<u64>, (i32, String)> {
        match get(k).or(get(alias)) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| usage_error(&format!("argument {k}: invalid int value: '{v}'"))),
        }
    };
    let port = int("--port", "--port")?.unwrap_or(8000);
    let port = u16::try_from(port)
        .map_err(|_| usage_error(&format!("argument --port: invalid port {port}")))?;
    let tp = int("--tensor-parallel-size", "-tp")?.unwrap_or(1);
    let max_model_len = int("--max-model-len", "--max-model-len")?;
    if let Some(d) = get("--kv-cache-dtype") {
        if !KV_DTYPES.contains(&d) {
            return Err(usage_error(&format!(
                "argument --kv-cache-dtype: invalid choice: '{d}' (choose from {})",
                KV_DTYPES.join(", ")
            )));
        }
    }
    if let Some(q) = get("--quantization-config") {
        if serde_json::from_str::<Value>(q).is_err() {
            return Err(usage_error(&format!(
                "argument --quantization-config: invalid loads value: '{q}'"
            )));
        }
    }
    let config_file = match get("--config") {
        None => None,
        Some(path) => {
            let mapped = binds.iter().find_map(|(src, dst)| {
                let rest = path.strip_prefix(dst.trim_end_matches('/'))?;
                (rest.is_empty() || rest.starts_with('/')).then(|| format!("{src}{rest}"))
            });
            let host = mapped
                .filter(|m| m.starts_with('/'))
                .map(|m| container::resolve(ct.root, ct.vmid, ct.conf, &m))
                .filter(|p| p.is_file());
            match host {
                Some(h) => Some(h),
                None => {
                    return Err((
                        1,
                        format!(
                            "FileNotFoundError: [Errno 2] No such file or directory: '{path}'\n"
                        ),
                    ));
                }
            }
        }
    };
    if gpus == 0 {
        return Err((1, "RuntimeError: Failed to infer device type\n".into()));
    }
    if tp as usize > gpus {
        return Err((
            1,
            format!(
                "ValueError: Tensor parallel size ({tp}) cannot be larger than the number of available GPUs ({gpus}).\n"
            ),
        ));
    }
    Ok((
        ServeSpec {
            addr: None,
            served: served.unwrap_or(model),
            config_file,
            max_model_len,
        },
        port,
    ))
}

/// Start the server for container `name` of `vmid`, detached; its pid.
pub fn spawn(root: &Root, vmid: u32, name: &str, log: &Path) -> std::io::Result<i32> {
    let exe = std::env::current_exe()?;
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    let child = Command::new(exe)
        .arg(SERVE_ARG)
        .arg(root.path())
        .arg(vmid.to_string())
        .arg(name)
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()?;
    i32::try_from(child.id()).map_err(std::io::Error::other)
}

/// The `vllm` object of `faults.json` as a behaviour (defaults when absent).
fn behaviour(root: &Root) -> Result<Behaviour, String> {
    let mut b = Behaviour {
        load_delay: DEFAULT_LOAD_DELAY,
        ..Behaviour::default()
    };
    let Ok(text) = std::fs::read(root.join("faults.json")) else {
        return Ok(b);
    };
    let v: Value = serde_json::from_slice(&text).map_err(|e| format!("faults.json: {e}"))?;
    let cfg = match &v {
        Value::Array(items) => items.iter().find_map(|i| i.get("vllm")).cloned(),
        other => other.get("vllm").cloned(),
    };
    if let Some(cfg) = cfg {
        if let Some(d) = cfg.get("load_delay").and_then(Value::as_str) {
            b.load_delay = crate::faults::parse_duration(d)
                .ok_or_else(|| format!("faults.json: vllm.load_delay {d:?} is not a duration"))?;
        }
        if let Some(m) = cfg.get("mode").and_then(Value::as_str) {
            b.mode = m.parse::<Mode>().map_err(|e| format!("faults.json: {e}"))?;
        }
    }
    Ok(b)
}

/// Whether the record of `name` still names process `me` in a running container.
fn still_mine(root: &Root, vmid: u32, name: &str, me: i32) -> bool {
    if !root.path().join("emu.json").exists() || !container::conf_path(root, vmid).exists() {
        return false;
    }
    if root.settings.owner.is_some_and(|o| !o.alive()) {
        return false;
    }
    let Ok(st) = container::load_state(root, vmid) else {
        return false;
    };
    st.running
        && st.docker.containers.iter().any(|c| {
            c.name == name
                && !c.removed
                && ((c.pid == Some(me) && c.status == "running")
                    || (c.pid.is_none() && c.status == "created"))
        })
}

fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// `phoenix-emu __vllm-serve ROOT VMID NAME`: the server process; its exit code.
pub fn main(args: &[String]) -> i32 {
    let _ = nix::unistd::setsid();
    let [root, vmid, name] = args else {
        eprintln!("phoenix-emu: usage: {SERVE_ARG} ROOT VMID NAME");
        return 2;
    };
    let Ok(vmid) = vmid.parse::<u32>() else {
        return 2;
    };
    let root = match Root::open(Path::new(root)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phoenix-emu: {e}");
            return 1;
        }
    };
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let alive = || still_mine(&root, vmid, name, me);
    // Wait (briefly) until `docker run` recorded this pid.
    let start = Instant::now();
    let spec = loop {
        let st = container::load_state(&root, vmid).unwrap_or_default();
        let rec = st
            .docker
            .containers
            .iter()
            .find(|c| c.name == *name && !c.removed);
        match rec {
            Some(c) if c.pid == Some(me) => break c.serve.clone().map(|s| (s, c.args.clone())),
            Some(c) if c.pid.is_none() && start.elapsed() < Duration::from_secs(10) => {}
            _ => return 0,
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let Some((spec, cargs)) = spec else {
        return 0;
    };
    let mut b = match behaviour(&root) {
        Ok(b) => b,
        Err(m) => {
            eprintln!("ERROR {} [phoenix-emu] {m}", stamp());
            return finish(&root, vmid, name, me, 1);
        }
    };
    if let Some(l) = spec.max_model_len {
        b.max_model_len = l;
    }
    b.api_key = match &spec.config_file {
        Some(p) => read_key(p),
        None => cargs
            .iter()
            .position(|a| a == "--api-key")
            .and_then(|i| cargs.get(i + 1).cloned())
            .or_else(|| {
                cargs
                    .iter()
                    .find_map(|a| a.strip_prefix("--api-key=").map(str::to_owned))
            }),
    };
    eprintln!(
        "INFO {} [api_server.py:1885] vLLM API server version {}",
        stamp(),
        vllm::VERSION
    );
    eprintln!(
        "INFO {} [utils.py:328] non-default args: {{'model': '{}'}}",
        stamp(),
        spec.served
    );
    // The load, logged as vLLM does around it.
    let end = Instant::now() + b.load_delay;
    while Instant::now() < end {
        if !alive() {
            return 0;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    b.load_delay = Duration::ZERO;
    if b.mode == Mode::Crash {
        eprintln!(
            "ERROR {} [core.py:708] EngineCore failed to start.",
            stamp()
        );
        eprintln!("RuntimeError: Engine core initialization failed. See root cause above.");
        return finish(&root, vmid, name, me, 1);
    }
    let Some(addr) = spec
        .addr
        .as_deref()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        // The port is not published: the server runs, nobody can reach it.
        while alive() {
            std::thread::sleep(Duration::from_millis(200));
        }
        return 0;
    };
    if b.mode != Mode::NeverListen {
        eprintln!("INFO:     Started server process [{me}]");
        eprintln!("INFO:     Waiting for application startup.");
        eprintln!("INFO:     Application startup complete.");
    }
    match vllm::serve(addr, &spec.served, b, &alive) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ERROR {} [api_server.py] {e}", stamp());
            finish(&root, vmid, name, me, 1)
        }
    }
}

/// Record the exit (when the record still names this process) and return `code`.
fn finish(root: &Root, vmid: u32, name: &str, me: i32, code: i32) -> i32 {
    if !still_mine(root, vmid, name, me) {
        return code;
    }
    let _ = container::update_state(root, vmid, |st| {
        let mut gone = None;
        if let Some(c) = st
            .docker
            .containers
            .iter_mut()
            .find(|c| c.name == name && c.pid == Some(me))
        {
            c.status = "exited".into();
            c.exit_code = code;
            if c.auto_remove {
                c.removed = true;
                gone = Some(c.name.clone());
            }
        }
        if let Some(n) = gone {
            st.docker.last_exit.insert(n, code);
        }
    });
    code
}

fn read_key(path: &PathBuf) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    vllm::api_key_from_config(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::DockerContainer;

    #[test]
    fn the_server_stays_only_while_its_record_and_container_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("emu.json"), "{}").unwrap();
        let root = Root::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("etc/pve/lxc")).unwrap();
        std::fs::write(container::conf_path(&root, 901), "arch: amd64\n").unwrap();
        let mut st = container::CtState {
            running: true,
            ..Default::default()
        };
        st.docker.containers.push(DockerContainer {
            name: "v".into(),
            pid: Some(42),
            status: "running".into(),
            ..Default::default()
        });
        container::save_state(&root, 901, &st).unwrap();
        assert!(still_mine(&root, 901, "v", 42));
        assert!(!still_mine(&root, 901, "v", 43), "another pid");
        assert!(!still_mine(&root, 901, "w", 42), "another name");
        st.docker.containers[0].status = "exited".into();
        container::save_state(&root, 901, &st).unwrap();
        assert!(!still_mine(&root, 901, "v", 42), "exited");
        st.docker.containers[0].status = "running".into();
        st.running = false;
        container::save_state(&root, 901, &st).unwrap();
        assert!(!still_mine(&root, 901, "v", 42), "container stopped");
        st.running = true;
        container::save_state(&root, 901, &st).unwrap();
        std::fs::remove_file(container::conf_path(&root, 901)).unwrap();
        assert!(!still_mine(&root, 901, "v", 42), "container destroyed");
    }
}

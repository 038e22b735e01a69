//! The process behind an emulated `docker run vllm/vllm-openai…`: its arguments read as
//! the image's entrypoint reads them ([`crate::vllm_args`]), the detached server process,
//! the weights it downloads, and its entry point.
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
//! What it does, in vLLM's order (v0.11.0):
//! 1. logs the version and `log_non_default_args`'s line (`vllm/entrypoints/utils.py`), with
//!    every argument that differs from its default, `--api-key` and `--config` values
//!    included; the API key is `--api-key`'s, else `VLLM_API_KEY` from the container's
//!    environment (`vllm/entrypoints/openai/api_server.py` `build_app`), which is not logged;
//! 2. downloads the weights unless the Hugging Face cache has them: `snapshot_download`
//!    into `<cache>/hub/models--ORG--NAME/` (`$HF_HOME`, default `/root/.cache/huggingface`,
//!    or `--download-dir`), each file growing as `blobs/<hash>.incomplete`, then renamed and
//!    linked from `snapshots/<commit>/` (huggingface_hub `file_download.py`). Sizes come from
//!    [`model_bytes`] and are sparse accounting ([`crate::disk`]) on the filesystem the
//!    cache maps to through the `-v` binds (unbound: the container's writable layer on the
//!    rootfs). A file that does not fit warns as huggingface_hub's `_check_disk_space` does,
//!    fills the disk and ends the process with `OSError: [Errno 28] No space left on device`
//!    (exit 1). vLLM then logs the download time (`vllm/model_executor/model_loader/
//!    weight_utils.py` `download_weights_from_hf`);
//! 3. loads (the load delay) and serves.
//!
//! Decisions: the default load delay is 1 s, a whole first download takes 500 ms
//! (`{"vllm":{"load_delay":"200ms","download_time":"2s"}}` in `faults.json` changes them, read
//! when the server starts; without it, `emu.json`'s latency profile's `"vllm load"`
//! ([`crate::latency`]) sets the load delay); `max_model_len` is `--max-model-len` or 4096; a model given as
//! an absolute path is a local directory (no download).

use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::container;
use crate::disk;
use crate::docker::{DockerContainer, ServeSpec};
use crate::inner::Ct;
use crate::root::Root;
use crate::vllm::{self, Behaviour, Mode};
use crate::vllm_args::{self, Args};

pub use crate::vllm_args::entrypoint_text;

/// The hidden first argument that runs the server.
pub const SERVE_ARG: &str = "__vllm-serve";

/// The default load delay.
pub const DEFAULT_LOAD_DELAY: Duration = Duration::from_secs(1);

/// How long a whole first download takes by default.
pub const DEFAULT_DOWNLOAD_TIME: Duration = Duration::from_millis(500);

/// The Hugging Face cache inside the vLLM container when `HF_HOME` is not set (the
/// image runs as root).
const HF_HOME: &str = "/root/.cache/huggingface";

/// Safetensors shards are at most 5 GB (`transformers` `max_shard_size` default).
const SHARD_BYTES: u64 = 5 * disk::GB;

/// The size of a model's weights (sparse accounting): a small table, and a default.
pub fn model_bytes(model: &str) -> u64 {
    match model {
        // 23.6 B parameters in bf16 (DESIGN.md §11: ≈ 47 GB).
        "mistralai/Devstral-Small-2507" => 47_200_000_000,
        // The images' default model.
        "Qwen/Qwen3-0.6B" => 1_500_000_000,
        _ => 10 * disk::GB,
    }
}

/// A path inside the vLLM container, as a path inside the LXC container: through the
/// longest `-v SRC:DST` bind that holds it, else in the container's writable layer
/// (`/var/lib/docker/overlay2/<id>/diff/…` on the rootfs).
pub fn lxc_path(c: &DockerContainer, path: &str) -> String {
    let mut best: Option<(usize, String)> = None;
    for v in &c.volumes {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dst) = match parts.as_slice() {
            [s, d] | [s, d, _] => (*s, d.trim_end_matches('/')),
            _ => continue,
        };
        let Some(rest) = path.strip_prefix(dst) else {
            continue;
        };
        if !(rest.is_empty() || rest.starts_with('/')) || !src.starts_with('/') {
            continue;
        }
        if best.as_ref().is_none_or(|(n, _)| dst.len() > *n) {
            best = Some((dst.len(), format!("{}{rest}", src.trim_end_matches('/'))));
        }
    }
    best.map_or_else(
        || format!("/var/lib/docker/overlay2/{}/diff{path}", c.id),
        |(_, p)| p,
    )
}

/// The arguments of container `c` read as its image does; a file is opened through the
/// container's binds.
pub fn read_args(ct: &Ct<'_>, c: &DockerContainer) -> Result<Args, vllm_args::Failure> {
    let read = |p: &str| {
        std::fs::read_to_string(ct.path(&lxc_path(c, p)))
            .map_err(|_| format!("FileNotFoundError: [Errno 2] No such file or directory: '{p}'"))
    };
    vllm_args::parse(&c.args, vllm_args::entrypoint(&c.image), &read)
}

/// Check the arguments of a new container `c` as its entrypoint does before it serves; the
/// server's parameters (its `addr` still empty) and the port it listens on inside the
/// Docker container, or `(exit code, log text)`.
pub fn check_args(
    ct: &Ct<'_>,
    c: &DockerContainer,
    gpus: usize,
) -> Result<(ServeSpec, u16), (i32, String)> {
    let a = read_args(ct, c)?;
    let port = u16::try_from(a.port()).map_err(|_| {
        (
            1,
            format!("OverflowError: port must be 0-65535: {}\n", a.port()),
        )
    })?;
    if gpus == 0 {
        return Err((1, "RuntimeError: Failed to infer device type\n".into()));
    }
    let tp = a.tensor_parallel_size();
    if tp < 1 || tp as usize > gpus {
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
            served: a.served().to_owned(),
            model: a.model().to_owned(),
            max_model_len: a.max_model_len().and_then(|l| u64::try_from(l).ok()),
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
        load_delay: crate::latency::vllm_load(&root.settings.latency)?
            .unwrap_or(DEFAULT_LOAD_DELAY),
        download_time: DEFAULT_DOWNLOAD_TIME,
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
        if let Some(d) = cfg.get("download_time").and_then(Value::as_str) {
            b.download_time = crate::faults::parse_duration(d).ok_or_else(|| {
                format!("faults.json: vllm.download_time {d:?} is not a duration")
            })?;
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

/// vLLM's log prefix: `(APIServer pid=1) INFO 10-07 05:12:24 [file:line]`.
fn log(level: &str, at: &str, msg: &str) {
    eprintln!("(APIServer pid=1) {level} {} [{at}] {msg}", stamp());
}

/// `MM-DD HH:MM:SS` (UTC), vLLM's log date format.
fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(secs / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    format!(
        "{month:02}-{day:02} {:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A stable hex digest of `text`, `n` characters (FNV-1a rounds).
fn hex(text: &str, n: usize) -> String {
    let mut s = String::new();
    let mut seed = 0u64;
    while s.len() < n {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        s.push_str(&format!("{h:016x}"));
        seed += 1;
    }
    s.truncate(n);
    s
}

/// Why the download stopped early.
enum Stopped {
    /// The container went away.
    Gone,
    /// A write failed (the log text).
    Failed(String),
}

/// Download `model`'s weights into the Hugging Face hub cache `hub` (a path inside the
/// vLLM container) unless they are there; the bytes written and the time taken.
fn download(
    ct: &Ct<'_>,
    c: &DockerContainer,
    hub: &str,
    model: &str,
    total_time: Duration,
    alive: &dyn Fn() -> bool,
) -> Result<Option<(u64, Duration)>, Stopped> {
    let repo = format!("{hub}/models--{}", model.replace('/', "--"));
    let commit = hex(model, 40);
    let size = model_bytes(model);
    let n = size.div_ceil(SHARD_BYTES).max(1);
    let shards: Vec<(String, u64)> = (1..=n)
        .map(|i| {
            let bytes = if i < n {
                size / n
            } else {
                size - size / n * (n - 1)
            };
            (format!("model-{i:05}-of-{n:05}.safetensors"), bytes)
        })
        .collect();
    let in_ct = |p: &str| lxc_path(c, p);
    let snap = format!("{repo}/snapshots/{commit}");
    let cached = shards
        .iter()
        .all(|(f, _)| std::fs::symlink_metadata(ct.path(&in_ct(&format!("{snap}/{f}")))).is_ok());
    if cached {
        return Ok(None);
    }
    // The server runs as the container's root: in an unprivileged container a dataset
    // bind-mounted from a directory the mapped root does not own refuses the cache's
    // directories (huggingface_hub `file_download.py` `os.makedirs`, a PermissionError).
    if !ct.may_write(&in_ct(&repo)) {
        return Err(Stopped::Failed(format!(
            "PermissionError: [Errno 13] Permission denied: '{repo}'\n"
        )));
    }
    let fs = disk::fs_of(ct.root, ct.vmid, ct.conf, &in_ct(&repo));
    let started = Instant::now();
    let write_small = |rel: &str, text: &str| -> Result<(), Stopped> {
        let p = ct.path(&in_ct(&format!("{snap}/{rel}")));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| Stopped::Failed(format!("OSError: {e}\n")))?;
        }
        std::fs::write(&p, text).map_err(|e| Stopped::Failed(format!("OSError: {e}\n")))
    };
    let _ = std::fs::create_dir_all(ct.path(&in_ct(&format!("{repo}/refs"))));
    let _ = std::fs::write(ct.path(&in_ct(&format!("{repo}/refs/main"))), &commit);
    write_small(
        "config.json",
        &format!("{{\"_name_or_path\": \"{model}\"}}\n"),
    )?;
    let steps: u64 = 20;
    let step_bytes = (size / steps).max(1);
    let pause = total_time / u32::try_from(steps).unwrap_or(20);
    for (file, bytes) in &shards {
        let link = ct.path(&in_ct(&format!("{snap}/{file}")));
        if std::fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        let blob_rel = format!("{repo}/blobs/{}", hex(&format!("{model}/{file}"), 64));
        let blob = ct.path(&in_ct(&blob_rel));
        let partial = ct.path(&in_ct(&format!("{blob_rel}.incomplete")));
        let avail = fs.avail();
        if avail < *bytes {
            // huggingface_hub file_download.py `_check_disk_space`: a warning, then the
            // download goes on until the disk is full.
            eprintln!(
                "/usr/local/lib/python3.12/dist-packages/huggingface_hub/file_download.py:1213: UserWarning: Not enough free disk space to download the file. The expected file size is: {:.2} MB. The target location {repo}/blobs only has {:.2} MB free disk space.",
                *bytes as f64 / 1e6,
                avail as f64 / 1e6
            );
            eprintln!("  warnings.warn(");
        }
        let mut have = disk::apparent(&partial);
        while have < *bytes {
            if !alive() {
                return Err(Stopped::Gone);
            }
            let next = (have + step_bytes).min(*bytes);
            if let Err(m) = disk::grow(&fs, &partial, next) {
                return Err(Stopped::Failed(format!(
                    "OSError: [Errno 28] {m}: '{repo}/blobs/{}.incomplete'\n",
                    hex(&format!("{model}/{file}"), 64)
                )));
            }
            have = next;
            std::thread::sleep(pause);
        }
        std::fs::rename(&partial, &blob).map_err(|e| Stopped::Failed(format!("OSError: {e}\n")))?;
        if let Some(d) = link.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let target = format!("../../blobs/{}", hex(&format!("{model}/{file}"), 64));
        std::os::unix::fs::symlink(target, &link)
            .map_err(|e| Stopped::Failed(format!("OSError: {e}\n")))?;
    }
    Ok(Some((size, started.elapsed())))
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
    // Asked twice before giving up: a state file that cannot be read for a moment (a
    // loaded test machine) does not end a healthy server.
    let alive = || {
        still_mine(&root, vmid, name, me) || {
            std::thread::sleep(Duration::from_millis(50));
            still_mine(&root, vmid, name, me)
        }
    };
    // Wait (briefly) until `docker run` recorded this pid.
    let start = Instant::now();
    let record = loop {
        let st = container::load_state(&root, vmid).unwrap_or_default();
        let rec = st
            .docker
            .containers
            .iter()
            .find(|c| c.name == *name && !c.removed);
        match rec {
            Some(c) if c.pid == Some(me) => break c.clone(),
            Some(c) if c.pid.is_none() && start.elapsed() < Duration::from_secs(10) => {}
            _ => return 0,
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let Some(spec) = record.serve.clone() else {
        // A web application image ([`crate::webapp`]) rather than vLLM.
        return match &record.app {
            Some(app) => {
                let code = crate::webapp::run(app, &alive);
                if code == 0 {
                    code
                } else {
                    finish(&root, vmid, name, me, code)
                }
            }
            None => 0,
        };
    };
    let Ok(Some(conf)) = container::load_conf(&root, vmid) else {
        return 0;
    };
    let ct = Ct {
        root: &root,
        vmid,
        conf: &conf,
    };
    let mut b = match behaviour(&root) {
        Ok(b) => b,
        Err(m) => {
            log("ERROR", "phoenix-emu", &m);
            return finish(&root, vmid, name, me, 1);
        }
    };
    if let Some(l) = spec.max_model_len {
        b.max_model_len = l;
    }
    // The arguments again, as the process reads them (the API key and the log line are
    // never stored in the emulator's state).
    let parsed = match read_args(&ct, &record) {
        Ok(a) => a,
        Err((code, msg)) => {
            eprint!("{msg}");
            return finish(&root, vmid, name, me, code);
        }
    };
    let env = crate::docker::container_env(&ct, &record.id);
    let env_var = |k: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(&format!("{k}=")).map(str::to_owned))
    };
    let keys = parsed.api_keys();
    b.api_key = keys
        .into_iter()
        .next()
        .or_else(|| env_var("VLLM_API_KEY").filter(|k| !k.is_empty()));
    log(
        "INFO",
        "api_server.py:1839",
        &format!("vLLM API server version {}", vllm::VERSION),
    );
    log("INFO", "utils.py:233", &parsed.non_default_line());
    // The weights.
    let model = parsed.model().to_owned();
    if !model.starts_with('/') {
        let hub = match parsed.download_dir() {
            Some(d) => d.trim_end_matches('/').to_owned(),
            None => env_var("HF_HUB_CACHE").unwrap_or_else(|| {
                format!(
                    "{}/hub",
                    env_var("HF_HOME")
                        .unwrap_or_else(|| HF_HOME.to_owned())
                        .trim_end_matches('/')
                )
            }),
        };
        match download(&ct, &record, &hub, &model, b.download_time, &alive) {
            Ok(Some((_, took))) => log(
                "INFO",
                "weight_utils.py:436",
                &format!(
                    "Time spent downloading weights for {model}: {:.6} seconds",
                    took.as_secs_f64()
                ),
            ),
            Ok(None) => {}
            Err(Stopped::Gone) => return 0,
            Err(Stopped::Failed(msg)) => {
                eprintln!(
                    "(EngineCore_DP0 pid=280) ERROR {} [core.py:708] EngineCore failed to start.",
                    stamp()
                );
                eprintln!(
                    "(EngineCore_DP0 pid=280) ERROR {} [core.py:708] Traceback (most recent call last):",
                    stamp()
                );
                eprint!(
                    "(EngineCore_DP0 pid=280) ERROR {} [core.py:708] {msg}",
                    stamp()
                );
                eprintln!(
                    "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {{}}"
                );
                return finish(&root, vmid, name, me, 1);
            }
        }
    }
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
        log("ERROR", "core.py:708", "EngineCore failed to start.");
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
        eprintln!("(APIServer pid=1) INFO:     Started server process [1]");
        eprintln!("(APIServer pid=1) INFO:     Waiting for application startup.");
        eprintln!("(APIServer pid=1) INFO:     Application startup complete.");
    }
    match vllm::serve(addr, &spec.served, &spec.model, b, &alive) {
        Ok(()) => 0,
        Err(e) => {
            log("ERROR", "api_server.py", &e.to_string());
            finish(&root, vmid, name, me, 1)
        }
    }
}

/// Record the exit (when the record still names this process) and return `code`.
fn finish(root: &Root, vmid: u32, name: &str, me: i32, code: i32) -> i32 {
    if !still_mine(root, vmid, name, me) {
        return code;
    }
    let removed = container::update_state(root, vmid, |st| {
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
                gone = Some((c.name.clone(), c.id.clone()));
            }
        }
        gone.map(|(n, id)| {
            st.docker.last_exit.insert(n, code);
            id
        })
    });
    // `--rm`: Docker removes the container, its config and its writable layer.
    if let (Ok(Some(id)), Ok(Some(conf))) = (removed, container::load_conf(root, vmid)) {
        let ct = Ct {
            root,
            vmid,
            conf: &conf,
        };
        crate::docker::forget(&ct, &id);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_latency_profile_sets_the_load_delay_unless_faults_json_does() {
        let dir = tempfile::tempdir().unwrap();
        let emu = dir.path().join("emu.json");
        std::fs::write(&emu, "{}").unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert_eq!(behaviour(&root).unwrap().load_delay, DEFAULT_LOAD_DELAY);

        std::fs::write(&emu, r#"{"latency":{"pct":"300ms","vllm load":"3s"}}"#).unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert_eq!(behaviour(&root).unwrap().load_delay, Duration::from_secs(3));
        std::fs::write(
            dir.path().join("faults.json"),
            r#"{"faults":[],"vllm":{"load_delay":"200ms"}}"#,
        )
        .unwrap();
        assert_eq!(
            behaviour(&root).unwrap().load_delay,
            Duration::from_millis(200)
        );

        std::fs::remove_file(dir.path().join("faults.json")).unwrap();
        std::fs::write(&emu, r#"{"latency":{"vllm load":"later"}}"#).unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert_eq!(
            behaviour(&root).unwrap_err(),
            r#"emu.json: latency."vllm load" = "later" is not a duration"#
        );
    }
}

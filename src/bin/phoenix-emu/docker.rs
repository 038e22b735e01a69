//! `docker` inside an emulated container (DESIGN.md §7, §10 "vLLM details").
//!
//! Present only once `docker.io` is installed (`/usr/bin/docker` in the rootfs; else the
//! program table answers 127). Every command but `version` needs the daemon
//! (`docker.service` active). Emulated: `version`, `info`, `pull`, `image inspect`,
//! `images`, `run`, `ps`, `inspect`, `logs`, `stop`, `rm` (and their `container …`/`image …`
//! spellings), with `--format` Go templates of the forms `{{.A.B}}` and `{{json .A}}`.
//! Flags are parsed as Docker's CLI (pflag) does and unknown ones refused with exit 125.
//!
//! `docker run` of an image named `vllm/vllm-openai…` starts the emulated vLLM server
//! ([`crate::vllm_proc`]) as a detached process on the container's loopback address at
//! the published host port; Open WebUI and Portainer images start the emulated web
//! application ([`crate::webapp`]) the same way; other images run nothing and exit 0 at
//! once. Decisions:
//! - `--gpus` is parsed with Docker's CSV rules, so `device=0,1` without the quotes is
//!   refused as Docker refuses it; GPUs need `nvidia-container-toolkit` in the container,
//!   GPU entries in its PVE config (indices count the container's `/dev/nvidiaN` entries),
//!   and, in an unprivileged container, `no-cgroups = true` (else nvidia-container-cli's
//!   cgroup error), each failing with exit 125 as the real stack does;
//! - the vLLM arguments are checked as the image's entrypoint checks them
//!   ([`crate::vllm_args`]: unknown flag or, on v0.11.0, a positional model: exit 2 in the
//!   log);
//!   `--tensor-parallel-size` larger than the GPUs given fails after start (exit 1);
//! - the registries know the images of [`IMAGES`] with their published tags; any other
//!   reference fails to pull as Docker Hub or ghcr.io answers ([`known_image`]), and a pull
//!   that fits the disk succeeds (a fault makes it fail);
//! - `docker stop` ends the server and records exit code 0 (vLLM shuts down cleanly on
//!   SIGTERM); `rm -f` kills it (137); `rm -f` of a missing container warns and exits 0
//!   (Docker ≥ 20.10);
//! - a `--rm` container whose process is gone counts as removed;
//! - `-e` and `--env-file` are accepted as Docker accepts them (the env file's lines as
//!   docker/cli `opts/parse.go` `parseKeyValueFile` reads them: leading whitespace trimmed,
//!   `#` comments, the value verbatim after the first `=`), and `docker inspect` shows them
//!   (`Config.Env`), so a test can see a secret that reached a container's environment. As
//!   Docker does, the environment is kept in the container's own root-only config,
//!   `/var/lib/docker/containers/<id>/config.v2.json` (0600) in the container's rootfs,
//!   removed with the container, never in the emulator's state file;
//! - `--entrypoint` replaces the image's entrypoint: `true` (`/bin/true`, `/usr/bin/true`)
//!   exits 0, `false` exits 1, anything else is not found (exit 127); without it a vLLM
//!   image runs the emulated server, any other image exits 0;
//! - images have sizes ([`image_bytes`]): a pull stores the unpacked layers in
//!   `/var/lib/docker` on the container's rootfs (sparse accounting, [`crate::disk`]) and
//!   fails with "no space left on device" when they do not fit;
//! - runc inside LXC: with `{"docker":{"runc":"1.3.3"}}` in `faults.json` (the runc of the
//!   container's Docker packages) every container start fails as runc 1.3.3 fails under
//!   LXC's AppArmor profile (opencontainers/runc#4972, moby/moby#51405): "open sysctl
//!   net.ipv4.ip_unprivileged_port_start file: reopen fd 8: permission denied", unless the
//!   LXC container is unconfined (`lxc.apparmor.profile: unconfined`);
//! - a web application container run with `--restart=always` (or `unless-stopped`, when it
//!   was running) starts again when the emulated container boots and the daemon runs
//!   ([`restart_policy_at_boot`]), as Docker's restart policy does; others stay exited;
//! - exit codes of a failed container start as docker/cli `cli/command/container/run.go`
//!   `toStatusError` assigns them: 127 for "executable file not found"/"no such file or
//!   directory", 126 for "permission denied", else 125.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::container::{self, CtState};
use crate::inner::Ct;
use crate::out::Out;

/// Docker's version as Ubuntu 24.04's docker.io reports it.
pub const VERSION: &str = "26.1.3";

/// Docker's state in a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DockerState {
    /// Pulled images (`name:tag`).
    #[serde(default)]
    pub images: Vec<String>,
    /// Containers, removed ones included (marked).
    #[serde(default)]
    pub containers: Vec<DockerContainer>,
    /// The daemon loaded the `nvidia` runtime (configured, then restarted).
    #[serde(default)]
    pub nvidia_runtime: bool,
    /// Exit codes of removed containers, by name.
    #[serde(default)]
    pub last_exit: BTreeMap<String, i32>,
}

/// One Docker container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DockerContainer {
    /// 64 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The image (`name:tag`).
    pub image: String,
    /// The whole `docker run` argv (after `docker`).
    pub run_argv: Vec<String>,
    /// The arguments after the image.
    pub args: Vec<String>,
    /// `--rm`.
    pub auto_remove: bool,
    /// `-p` as `(host, container)`.
    #[serde(default)]
    pub ports: Vec<(u16, u16)>,
    /// `-v` values.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `--gpus` as given.
    #[serde(default)]
    pub gpus: Option<String>,
    /// The server process.
    pub pid: Option<i32>,
    /// `created`, `running`, `exited`.
    pub status: String,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Removed (`docker rm`, or `--rm` after exit).
    pub removed: bool,
    /// Unix seconds.
    pub created: u64,
    /// What the emulated vLLM server needs, for vLLM images.
    #[serde(default)]
    pub serve: Option<ServeSpec>,
    /// What an emulated web application needs, for its images ([`crate::webapp`]).
    #[serde(default)]
    pub app: Option<crate::webapp::AppSpec>,
    /// Its restart policy brings it back when the daemon starts again (set at boot).
    #[serde(default)]
    pub restart_at_boot: bool,
}

/// The `--restart` policy of a `docker run` argv (`no` when absent).
fn restart_policy(run_argv: &[String]) -> String {
    let mut it = run_argv.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--restart=") {
            return v.to_owned();
        }
        if a == "--restart" {
            return it.next().cloned().unwrap_or_default();
        }
    }
    "no".to_owned()
}

/// Whether Docker starts container `c` again when the daemon starts: policy `always`, or
/// `unless-stopped` when it was running when the daemon went away (docs.docker.com, "Start
/// containers automatically": always restarts a manually stopped container only when the
/// daemon restarts; unless-stopped does not restart one that was stopped). Only web
/// application containers are brought back here (the vLLM unit runs `--rm` containers
/// under systemd).
pub fn restarts_at_daemon_start(c: &DockerContainer, was_running: bool) -> bool {
    if c.app.is_none() || c.auto_remove {
        return false;
    }
    let policy = restart_policy(&c.run_argv);
    let policy = policy.split(':').next().unwrap_or("");
    policy == "always" || (policy == "unless-stopped" && was_running)
}

/// After a boot: start the containers marked [`DockerContainer::restart_at_boot`] again when
/// the daemon runs.
pub fn restart_policy_at_boot(ct: &Ct<'_>) {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    let daemon = crate::systemd::docker_running(&st);
    let names: Vec<(String, String)> = st
        .docker
        .containers
        .iter()
        .filter(|c| c.restart_at_boot && !c.removed)
        .map(|c| (c.id.clone(), c.name.clone()))
        .collect();
    for (id, name) in names {
        let marked = container::update_state(ct.root, ct.vmid, |st| {
            if let Some(c) = st.docker.containers.iter_mut().find(|c| c.id == id) {
                c.restart_at_boot = false;
                if daemon {
                    c.status = "created".into();
                    c.pid = None;
                    return true;
                }
            }
            false
        });
        if !matches!(marked, Ok(true)) {
            continue;
        }
        let log = log_path(ct, &id);
        match crate::vllm_proc::spawn(ct.root, ct.vmid, &name, &log) {
            Ok(pid) => {
                let _ = container::update_state(ct.root, ct.vmid, |st| {
                    if let Some(c) = st.docker.containers.iter_mut().find(|c| c.id == id) {
                        c.pid = Some(pid);
                        c.status = "running".into();
                    }
                });
            }
            Err(_) => mark_exited(ct, &id, 127, false),
        }
    }
}

/// The emulated vLLM server's parameters, read by the server process. Nothing secret: the
/// server reads its API key itself (from its arguments, a `--config` file or the
/// container's environment).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServeSpec {
    /// `ip:port` to listen on; `None`: the port is not published.
    pub addr: Option<String>,
    /// The served model name.
    pub served: String,
    /// The model vLLM loads (`--model`, or the image's default).
    #[serde(default)]
    pub model: String,
    /// `--max-model-len`.
    pub max_model_len: Option<u64>,
}

/// Where Docker keeps container `id`'s config (its environment included), inside the
/// container's rootfs: moby `daemon/container` `configFileName`, 0600.
fn config_path(ct: &Ct<'_>, id: &str) -> PathBuf {
    ct.path(&format!("/var/lib/docker/containers/{id}/config.v2.json"))
}

/// Write container `id`'s config (0600, as Docker's `ioutils.AtomicWriteFile(…, 0o600)`).
fn save_config(ct: &Ct<'_>, id: &str, name: &str, env: &[String]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = config_path(ct, id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = json!({"ID": id, "Name": format!("/{name}"), "Config": {"Env": env}}).to_string();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(text.as_bytes())
}

/// Container `id`'s environment (`KEY=value` entries), empty when it has none.
pub fn container_env(ct: &Ct<'_>, id: &str) -> Vec<String> {
    std::fs::read_to_string(config_path(ct, id))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .and_then(|v| {
            v["Config"]["Env"].as_array().map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str().map(str::to_owned))
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// Docker removed container `id`: its config and its writable layer go with it.
pub fn forget(ct: &Ct<'_>, id: &str) {
    for dir in [
        format!("/var/lib/docker/containers/{id}"),
        format!("/var/lib/docker/overlay2/{id}"),
    ] {
        let _ = std::fs::remove_dir_all(ct.path(&dir));
    }
}

/// What a container of an image runs when no `--entrypoint` replaces its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// The emulated vLLM server ([`crate::vllm_proc`]).
    Vllm,
    /// A web application ([`crate::webapp`]) of this kind listening on this container port.
    App(crate::webapp::Kind, u16),
    /// Nothing: it exits 0 at once.
    Exit,
}

/// One repository of the emulated registries.
pub struct KnownImage {
    /// The repository as [`normalize_image`] writes it (`vllm/vllm-openai`,
    /// `ghcr.io/open-webui/open-webui`).
    pub repo: &'static str,
    /// The tags it publishes.
    pub tags: &'static [&'static str],
    /// Its unpacked size.
    pub bytes: u64,
    /// What its entrypoint does.
    pub runs: Runs,
}

/// The images the emulated registries serve: the ones phoenix's recipes and tests run, with
/// tags that exist upstream. Sources: Docker Hub's tag lists (hub.docker.com/r/vllm/vllm-openai/tags,
/// one tag per vllm-project/vllm release; hub.docker.com/r/portainer/portainer-ce/tags and
/// /r/portainer/agent/tags, one per portainer/portainer release, server and agent released
/// together; hub.docker.com/_/busybox, /_/ubuntu, /_/hello-world) and GitHub's container
/// registry (github.com/open-webui/open-webui/pkgs/container/open-webui: a `vX.Y.Z` tag per
/// release, `main` following the branch; v0.6.18 is the release of 2025-07-19 in
/// open-webui's CHANGELOG.md). Sizes: DESIGN.md §11 for vLLM (≈ 29 GB unpacked), the others
/// rounded from the registries' compressed sizes.
pub const IMAGES: &[KnownImage] = &[
    KnownImage {
        repo: "vllm/vllm-openai",
        tags: &[
            "v0.8.5",
            "v0.9.0",
            "v0.9.1",
            "v0.9.2",
            "v0.10.0",
            "v0.10.1",
            "v0.10.1.1",
            "v0.10.2",
            "v0.11.0",
            "v0.11.1",
            "v0.11.2",
            "v0.12.0",
            "v0.13.0",
            "v0.14.0",
            "v0.14.1",
            "latest",
            "nightly",
        ],
        bytes: 29 * crate::disk::GB,
        runs: Runs::Vllm,
    },
    KnownImage {
        repo: "ghcr.io/open-webui/open-webui",
        tags: &["v0.6.5", "v0.6.18", "main"],
        bytes: 4 * crate::disk::GB,
        runs: Runs::App(crate::webapp::Kind::OpenWebui, 8080),
    },
    KnownImage {
        repo: "portainer/portainer-ce",
        tags: &["2.20.3", "2.21.5", "lts", "latest"],
        bytes: 300 * crate::disk::MB,
        runs: Runs::App(crate::webapp::Kind::Portainer, 9000),
    },
    KnownImage {
        repo: "portainer/agent",
        tags: &["2.20.3", "2.21.5", "lts", "latest"],
        bytes: 170 * crate::disk::MB,
        runs: Runs::App(crate::webapp::Kind::PortainerAgent, 9001),
    },
    KnownImage {
        repo: "busybox",
        tags: &["1.36", "1.36.1", "1.37", "1.37.0", "latest"],
        bytes: 5 * crate::disk::MB,
        runs: Runs::Exit,
    },
    KnownImage {
        repo: "ubuntu",
        tags: &["22.04", "jammy", "24.04", "noble", "latest"],
        bytes: 80 * crate::disk::MB,
        runs: Runs::Exit,
    },
    KnownImage {
        repo: "hello-world",
        tags: &["latest"],
        bytes: crate::disk::MB,
        runs: Runs::Exit,
    },
];

/// The registry host of a normalised reference: its first component when that has a `.`
/// or a `:` or is `localhost` (docker/distribution `reference/normalize.go`
/// `splitDockerDomain`), else Docker Hub.
fn registry_of(repo: &str) -> Option<&str> {
    let (first, _) = repo.split_once('/')?;
    (first.contains(['.', ':']) || first == "localhost").then_some(first)
}

/// The known image of a normalised reference (`repo:tag` or `repo@sha256:…`), or the
/// daemon's pull error for it, as the registries answer:
/// - Docker Hub, unknown repository: moby `distribution/errors.go` `translatePullError`'s
///   "pull access denied for R, repository does not exist or may require 'docker login'",
///   with the registry's "denied: requested access to the resource is denied";
/// - Docker Hub, unknown tag: moby `distribution/pull_v2.go` `notFoundError`, "manifest for
///   R:T not found: manifest unknown: manifest unknown";
/// - ghcr.io, unknown repository (or private): `Head "https://ghcr.io/v2/R/manifests/T":
///   denied`, unknown tag: `manifest unknown` (both as users report them, e.g.
///   imagegenius/docker-ai-chat-app#1, dexidp/dex#2328);
/// - any other registry does not resolve here: `Get "https://HOST/v2/": dial tcp: lookup
///   HOST: no such host`.
///
/// A digest of a known repository is accepted (the emulator cannot check digests).
pub fn known_image(image: &str) -> Result<&'static KnownImage, String> {
    let (repo, tag) = match image.split_once('@') {
        Some((r, _)) => (r, None),
        None => match image.rsplit_once(':') {
            Some((r, t)) => (r, Some(t)),
            None => (image, Some("latest")),
        },
    };
    let found = IMAGES.iter().find(|k| k.repo == repo);
    match registry_of(repo) {
        None => {
            let Some(k) = found else {
                return Err(format!(
                    "pull access denied for {repo}, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"
                ));
            };
            match tag {
                Some(t) if !k.tags.contains(&t) => Err(format!(
                    "manifest for {image} not found: manifest unknown: manifest unknown"
                )),
                _ => Ok(k),
            }
        }
        Some("ghcr.io") => {
            let path = repo.trim_start_matches("ghcr.io/");
            let Some(k) = found else {
                return Err(format!(
                    "Head \"https://ghcr.io/v2/{path}/manifests/{}\": denied",
                    tag.unwrap_or("latest")
                ));
            };
            match tag {
                Some(t) if !k.tags.contains(&t) => Err("manifest unknown".to_owned()),
                _ => Ok(k),
            }
        }
        Some(host) => {
            let name = host.split(':').next().unwrap_or(host);
            Err(format!(
                "Get \"https://{host}/v2/\": dial tcp: lookup {name}: no such host"
            ))
        }
    }
}

/// The unpacked size of `image` (its [`IMAGES`] entry; 100 MB for an image pulled before
/// the table knew it).
pub fn image_bytes(image: &str) -> u64 {
    known_image(image).map_or(crate::disk::GB / 10, |k| k.bytes)
}

/// The runc of the container's Docker, from `faults.json`'s `{"docker":{"runc":"X.Y.Z"}}`
/// (unset: the runc of Ubuntu 24.04's original packages, which starts containers).
fn runc_version(ct: &Ct<'_>) -> Option<(u32, u32, u32)> {
    let text = std::fs::read(ct.root.join("faults.json")).ok()?;
    let v: Value = serde_json::from_slice(&text).ok()?;
    let cfg = match &v {
        Value::Array(items) => items.iter().find_map(|i| i.get("docker")).cloned(),
        other => other.get("docker").cloned(),
    }?;
    let mut parts = cfg.get("runc")?.as_str()?.split(['.', '-']);
    let mut n = || parts.next().and_then(|x| x.parse::<u32>().ok());
    Some((n()?, n()?, n().unwrap_or(0)))
}

/// Why runc cannot start a container here, if it cannot: runc 1.3.3 opens
/// `/proc/sys/net/ipv4/ip_unprivileged_port_start` through a reopened fd, which LXC's
/// AppArmor profile denies (opencontainers/runc#4972; moby/moby#51405;
/// containerd/containerd#12484), unless the LXC container runs unconfined.
fn runc_cannot_start(ct: &Ct<'_>) -> Option<String> {
    let v = runc_version(ct)?;
    let unconfined = ct
        .conf
        .lxc
        .iter()
        .any(|(k, v)| k == "lxc.apparmor.profile" && v.trim() == "unconfined");
    (v >= (1, 3, 3) && !unconfined).then(|| {
        "failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: open sysctl net.ipv4.ip_unprivileged_port_start file: reopen fd 8: permission denied: unknown".to_owned()
    })
}

/// Where a container's log lives.
pub fn log_path(ct: &Ct<'_>, id: &str) -> PathBuf {
    container::ct_dir(ct.root, ct.vmid)
        .join("docker-logs")
        .join(format!("{id}.log"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `pid` is a live emulated server (not a zombie, not a reused pid).
pub fn pid_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    if state.is_empty() || state == "Z" || state == "X" {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        c.windows(crate::vllm_proc::SERVE_ARG.len())
            .any(|w| w == crate::vllm_proc::SERVE_ARG.as_bytes())
    })
}

/// `(status, exit code)` of a container as Docker would report it now.
fn effective(c: &DockerContainer) -> (String, i32) {
    if c.status == "running" {
        if let Some(pid) = c.pid {
            if !pid_alive(pid) {
                return ("exited".into(), 137);
            }
        }
    }
    (c.status.clone(), c.exit_code)
}

/// A container that still exists.
fn visible(c: &DockerContainer) -> bool {
    !(c.removed || (c.auto_remove && effective(c).0 == "exited"))
}

/// The container called `name` (or with this id prefix), if it exists.
fn find<'a>(st: &'a CtState, name: &str) -> Option<&'a DockerContainer> {
    let name = name.trim_start_matches('/');
    st.docker
        .containers
        .iter()
        .rev()
        .filter(|c| visible(c))
        .find(|c| c.name == name || (name.len() >= 4 && c.id.starts_with(name)))
}

/// `(status, exit code)` of container `name`, `None` when it does not exist.
pub fn container_status(st: &CtState, name: &str) -> Option<(String, i32)> {
    find(st, name).map(effective)
}

/// The log of container `name` (also of a removed one).
pub fn log_text(ct: &Ct<'_>, st: &CtState, name: &str) -> Option<String> {
    let c = st.docker.containers.iter().rev().find(|c| c.name == name)?;
    std::fs::read_to_string(log_path(ct, &c.id)).ok()
}

/// The last `n` lines of `text` (all when `None`).
pub fn tail(text: &str, n: Option<usize>) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let from = n.map_or(0, |n| lines.len().saturating_sub(n));
    lines[from..].concat()
}

/// Send `sig` to the server's process group (and to the process).
fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    let p = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::killpg(p, sig);
    let _ = nix::sys::signal::kill(p, sig);
}

/// Stop a process: SIGTERM, then SIGKILL after `grace`.
fn terminate(pid: i32, grace: Duration) {
    if !pid_alive(pid) {
        return;
    }
    signal(pid, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    while pid_alive(pid) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    if pid_alive(pid) {
        signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Mark container `id` exited with `code` (removed when `--rm` or `remove`).
fn mark_exited(ct: &Ct<'_>, id: &str, code: i32, remove: bool) {
    let removed = container::update_state(ct.root, ct.vmid, |st| {
        let mut gone = None;
        if let Some(c) = st.docker.containers.iter_mut().find(|c| c.id == id) {
            c.status = "exited".into();
            c.exit_code = code;
            if remove || c.auto_remove {
                c.removed = true;
                gone = Some(c.name.clone());
            }
        }
        let removed = gone.is_some();
        if let Some(n) = gone {
            st.docker.last_exit.insert(n, code);
        }
        removed
    });
    if removed.unwrap_or(false) {
        forget(ct, id);
    }
}

/// Stop container `name` if it runs (systemd's stop of a unit whose main process it is).
pub fn stop_if_running(ct: &Ct<'_>, name: &str) {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    if let Some(c) = find(&st, name) {
        if effective(c).0 == "running" {
            if let Some(pid) = c.pid {
                terminate(pid, Duration::from_secs(2));
            }
            mark_exited(ct, &c.id, 0, false);
        }
    }
}

/// The emulated container stops or is destroyed: kill every server process it has
/// (lock-free; `systemd::boot` records them as exited when it starts again).
pub fn kill_all(root: &crate::root::Root, vmid: u32) {
    let st = container::load_state(root, vmid).unwrap_or_default();
    for c in &st.docker.containers {
        if let Some(pid) = c.pid.filter(|p| c.status == "running" && pid_alive(*p)) {
            signal(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The daemon stops (or restarts): its running containers stop with it.
pub fn daemon_stopping(ct: &Ct<'_>) {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    for c in st.docker.containers.iter().filter(|c| visible(c)) {
        if effective(c).0 == "running" {
            if let Some(pid) = c.pid {
                terminate(pid, Duration::from_secs(2));
            }
            mark_exited(ct, &c.id, 143, false);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Flags (pflag)
// ---------------------------------------------------------------------------------------

/// One flag: long name, short letter, whether it takes a value.
type Flag = (&'static str, Option<char>, bool);

/// Parsed flags and positional arguments.
#[derive(Debug, Default)]
struct Parsed {
    flags: Vec<(&'static str, String)>,
    args: Vec<String>,
}

impl Parsed {
    fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }
}

/// Parse `args` as pflag does. `interspersed: false` stops at the first positional
/// argument (`docker run IMAGE ARGS…`).
fn parse_flags(args: &[String], spec: &[Flag], interspersed: bool) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            p.args.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let Some(f) = spec.iter().find(|f| f.0 == name) else {
                return Err(format!("unknown flag: --{name}"));
            };
            let value = if f.2 {
                match inline {
                    Some(v) => v,
                    None if i < args.len() => {
                        i += 1;
                        args[i - 1].clone()
                    }
                    None => return Err(format!("flag needs an argument: --{name}")),
                }
            } else {
                inline.unwrap_or_else(|| "true".into())
            };
            p.flags.push((f.0, value));
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let Some(f) = spec.iter().find(|f| f.1 == Some(c)) else {
                    return Err(format!("unknown shorthand flag: '{c}' in {a}"));
                };
                if f.2 {
                    let rest: String = chars[j..].iter().collect();
                    let value = if !rest.is_empty() {
                        rest.trim_start_matches('=').to_owned()
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        return Err(format!("flag needs an argument: '{c}' in {a}"));
                    };
                    p.flags.push((f.0, value));
                    break;
                }
                p.flags.push((f.0, "true".into()));
            }
        } else {
            p.args.push(a.clone());
            if !interspersed {
                p.args.extend(args[i..].iter().cloned());
                break;
            }
        }
    }
    Ok(p)
}

const FORMAT: Flag = ("format", Some('f'), true);

const RUN_FLAGS: &[Flag] = &[
    ("rm", None, false),
    ("detach", Some('d'), false),
    ("interactive", Some('i'), false),
    ("tty", Some('t'), false),
    ("privileged", None, false),
    ("init", None, false),
    ("read-only", None, false),
    ("name", None, true),
    ("gpus", None, true),
    ("ipc", None, true),
    ("shm-size", None, true),
    ("publish", Some('p'), true),
    ("volume", Some('v'), true),
    ("env", Some('e'), true),
    ("env-file", None, true),
    ("runtime", None, true),
    ("network", None, true),
    ("net", None, true),
    ("restart", None, true),
    ("entrypoint", None, true),
    ("user", Some('u'), true),
    ("workdir", Some('w'), true),
    ("label", Some('l'), true),
    ("device", None, true),
    ("ulimit", None, true),
    ("cap-add", None, true),
    ("cap-drop", None, true),
    ("hostname", Some('h'), true),
    ("memory", Some('m'), true),
    ("cpus", None, true),
    ("pull", None, true),
    ("platform", None, true),
    ("log-driver", None, true),
    ("log-opt", None, true),
    ("security-opt", None, true),
    ("add-host", None, true),
];

// ---------------------------------------------------------------------------------------
// Templates
// ---------------------------------------------------------------------------------------

/// Render a Go template of the forms `{{.A.B}}`, `{{json .A}}`, `{{.}}` against `v`.
fn template(tpl: &str, v: &Value) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("template: :1: unclosed action in {tpl:?}"));
        };
        let action = after[..end].trim();
        let (json_out, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        let Some(path) = path.strip_prefix('.') else {
            return Err(format!("template: :1: function {path:?} not defined"));
        };
        let mut cur = v;
        for key in path.split('.').filter(|k| !k.is_empty()) {
            cur = cur.get(key).ok_or_else(|| {
                format!("template: :1:{}: executing \"\" at <.{path}>: map has no entry for key \"{key}\"", start + 3)
            })?;
        }
        if json_out {
            out.push_str(&cur.to_string());
        } else {
            out.push_str(&go_text(cur));
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A value as Go's `text/template` prints it.
fn go_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<no value>".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_text).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------

/// `name:tag` (or `name@digest`) for a reference, `None` when malformed.
pub fn normalize_image(r: &str) -> Option<String> {
    let r = r
        .strip_prefix("docker.io/")
        .unwrap_or(r)
        .strip_prefix("library/")
        .unwrap_or_else(|| r.strip_prefix("docker.io/").unwrap_or(r));
    let (name, suffix) = if let Some((n, d)) = r.split_once('@') {
        (n, format!("@{d}"))
    } else {
        match r.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, format!(":{t}")),
            _ => (r, ":latest".to_owned()),
        }
    };
    // A registry host may carry a port (`registry.local:5000/x/y`): docker/distribution
    // `reference/regexp.go` `domainAndPort`.
    let path = match name.split_once('/') {
        Some((host, rest)) if host.contains(':') => {
            let (h, port) = host.split_once(':').unwrap_or((host, ""));
            let ok = !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-".contains(c))
                && !port.is_empty()
                && port.chars().all(|c| c.is_ascii_digit());
            if !ok {
                return None;
            }
            rest
        }
        _ => name,
    };
    let name_ok = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && part
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphanumeric())
        });
    let tag_ok = if let Some(t) = suffix.strip_prefix(':') {
        !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    } else {
        suffix.len() > 8 && suffix.starts_with("@sha256:")
    };
    (name_ok && tag_ok).then(|| format!("{name}{suffix}"))
}

/// A stable fake digest for `text`.
fn digest(text: &str) -> String {
    // FNV-1a 64, four rounds with different seeds: stable and good enough for ids.
    let mut s = String::new();
    for seed in 0u64..4 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for b in text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        s.push_str(&format!("{h:016x}"));
    }
    s
}

fn image_json(name: &str) -> Value {
    let (repo, _) = name.rsplit_once([':', '@']).unwrap_or((name, ""));
    json!({
        "Id": format!("sha256:{}", digest(name)),
        "RepoTags": [name],
        "RepoDigests": [format!("{repo}@sha256:{}", digest(&format!("repo {name}")))],
        "Created": "2025-10-02T19:12:41.120538718Z",
        "Architecture": "amd64",
        "Os": "linux",
    })
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

const NO_DAEMON: &str = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?";

/// `docker …` as run by `pct exec`.
pub fn run(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    docker(ct, args, false, out).0
}

/// `docker …` as systemd's `ExecStart=` runs it: a foreground `docker run` returns once the
/// container started, with its name (the unit's main process).
pub fn run_for_service(ct: &Ct<'_>, args: &[String], out: &mut Out) -> (i32, Option<String>) {
    docker(ct, args, true, out)
}

fn docker(ct: &Ct<'_>, args: &[String], service: bool, out: &mut Out) -> (i32, Option<String>) {
    let Some((cmd, rest)) = args.split_first() else {
        out.out("\nUsage:  docker [OPTIONS] COMMAND\n");
        return (0, None);
    };
    let (cmd, rest): (&str, &[String]) = match (cmd.as_str(), rest.split_first()) {
        ("container", Some((sub, r))) => match sub.as_str() {
            "ls" | "list" => ("ps", r),
            s => (
                match s {
                    "inspect" => "inspect",
                    "logs" => "logs",
                    "stop" => "stop",
                    "rm" | "remove" => "rm",
                    "run" => "run",
                    _ => "container?",
                },
                r,
            ),
        },
        ("image", Some((sub, r))) => match sub.as_str() {
            "inspect" => ("image-inspect", r),
            "pull" => ("pull", r),
            "ls" | "list" => ("images", r),
            _ => ("image?", r),
        },
        (c, _) => (c, rest),
    };
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    let daemon = crate::systemd::docker_running(&st);
    let flag_error = |out: &mut Out, cmd: &str, m: String| {
        out.err(format!("{m}\nSee 'docker {cmd} --help'.\n"));
        (125, None)
    };
    if cmd == "version" {
        let p = match parse_flags(rest, &[FORMAT], true) {
            Ok(p) => p,
            Err(m) => return flag_error(out, cmd, m),
        };
        return (version(daemon, p.get("format"), out), None);
    }
    let known = [
        "info",
        "pull",
        "image-inspect",
        "images",
        "run",
        "ps",
        "inspect",
        "logs",
        "stop",
        "rm",
    ];
    if !known.contains(&cmd) {
        out.err(format!(
            "docker: '{}' is not a docker command.\nSee 'docker --help'\n",
            args.join(" ")
        ));
        return (1, None);
    }
    if !daemon {
        out.err(format!(
            "{}{NO_DAEMON}\n",
            if cmd == "run" { "docker: " } else { "" }
        ));
        return (if cmd == "run" { 125 } else { 1 }, None);
    }
    let spec: &[Flag] = match cmd {
        "info" | "image-inspect" => &[FORMAT],
        "pull" => &[("quiet", Some('q'), false), ("platform", None, true)],
        "images" => &[
            FORMAT,
            ("quiet", Some('q'), false),
            ("all", Some('a'), false),
        ],
        "run" => RUN_FLAGS,
        "ps" => &[
            FORMAT,
            ("all", Some('a'), false),
            ("quiet", Some('q'), false),
            ("no-trunc", None, false),
            ("filter", Some('f'), true),
        ],
        "inspect" => &[FORMAT, ("type", None, true), ("size", Some('s'), false)],
        "logs" => &[
            ("tail", Some('n'), true),
            ("follow", Some('f'), false),
            ("timestamps", Some('t'), false),
        ],
        "stop" => &[("time", Some('t'), true), ("signal", Some('s'), true)],
        _ => &[
            ("force", Some('f'), false),
            ("volumes", Some('v'), false),
            ("link", Some('l'), false),
        ],
    };
    // `-f` is `--format` except for `ps` (`--filter`) and `images` (none).
    let spec: Vec<Flag> = spec
        .iter()
        .map(|f| {
            if f.0 == "format" && matches!(cmd, "ps" | "images") {
                (f.0, None, f.2)
            } else {
                *f
            }
        })
        .collect();
    let p = match parse_flags(rest, &spec, cmd != "run") {
        Ok(p) => p,
        Err(m) => return flag_error(out, cmd, m),
    };
    match cmd {
        "info" => (info(&st, p.get("format"), out), None),
        "pull" => (pull(ct, &p, out), None),
        "image-inspect" => (image_inspect(&st, &p, out), None),
        "images" => (images(&st, &p, out), None),
        "run" => docker_run(ct, &st, &p, service, out),
        "ps" => (ps(&st, &p, out), None),
        "inspect" => (inspect(ct, &st, &p, out), None),
        "logs" => (logs(ct, &st, &p, out), None),
        "stop" => (stop(ct, &st, &p, out), None),
        _ => (rm(ct, &st, &p, out), None),
    }
}

fn version(daemon: bool, format: Option<&str>, out: &mut Out) -> i32 {
    let client = json!({"Version": VERSION, "ApiVersion": "1.45", "Os": "linux", "Arch": "amd64"});
    let v = json!({
        "Client": client,
        "Server": if daemon { json!({"Version": VERSION, "ApiVersion": "1.45", "MinAPIVersion": "1.24", "Os": "linux", "Arch": "amd64"}) } else { Value::Null },
    });
    match format {
        Some(f) => {
            if !daemon && f.contains(".Server") {
                out.err(format!("{NO_DAEMON}\n"));
                return 1;
            }
            match template(f, &v) {
                Ok(s) => out.out(s + "\n"),
                Err(m) => {
                    out.err(m + "\n");
                    return 1;
                }
            }
        }
        None => {
            out.out(format!(
                "Client:\n Version:           {VERSION}\n API version:       1.45\n OS/Arch:           linux/amd64\n"
            ));
            if daemon {
                out.out(format!(
                    "\nServer:\n Engine:\n  Version:          {VERSION}\n  API version:      1.45 (minimum version 1.24)\n  OS/Arch:          linux/amd64\n"
                ));
            }
        }
    }
    if daemon {
        0
    } else {
        out.err(format!("{NO_DAEMON}\n"));
        1
    }
}

fn info(st: &CtState, format: Option<&str>, out: &mut Out) -> i32 {
    let mut runtimes = json!({
        "io.containerd.runc.v2": {"path": "runc"},
        "runc": {"path": "runc"},
    });
    if st.docker.nvidia_runtime {
        runtimes["nvidia"] = json!({"path": "nvidia-container-runtime"});
    }
    let all: Vec<&DockerContainer> = st.docker.containers.iter().filter(|c| visible(c)).collect();
    let running = all.iter().filter(|c| effective(c).0 == "running").count();
    let v = json!({
        "ServerVersion": VERSION,
        "Containers": all.len(),
        "ContainersRunning": running,
        "ContainersStopped": all.len() - running,
        "Images": st.docker.images.len(),
        "Driver": "overlay2",
        "Runtimes": runtimes,
        "DefaultRuntime": "runc",
        "OperatingSystem": "Ubuntu 24.04 LTS",
    });
    match format {
        Some(f) => match template(f, &v) {
            Ok(s) => out.out(s + "\n"),
            Err(m) => {
                out.err(m + "\n");
                return 1;
            }
        },
        None => {
            let names: Vec<&String> = v["Runtimes"]
                .as_object()
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            out.out(format!(
                "Server:\n Containers: {}\n  Running: {running}\n Images: {}\n Server Version: {VERSION}\n Storage Driver: overlay2\n Runtimes: {}\n Default Runtime: runc\n",
                all.len(),
                st.docker.images.len(),
                names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
            ));
        }
    }
    0
}

/// Pull `image` (already normalized) into the state; the output lines. Its unpacked layers
/// take [`image_bytes`] of the rootfs under `/var/lib/docker`; when they do not fit the
/// pull fails as Docker's layer extraction does (nothing is kept).
fn do_pull(ct: &Ct<'_>, image: &str, out: &mut Out) -> Result<(), String> {
    let (repo, tag) = image.rsplit_once([':', '@']).unwrap_or((image, "latest"));
    let st = container::load_state(ct.root, ct.vmid).map_err(|e| e.to_string())?;
    if !st.docker.images.iter().any(|i| i == image) {
        known_image(image)?;
        let layer = format!("/var/lib/docker/overlay2/{}/diff", digest(image));
        let fs = crate::disk::fs_of(ct.root, ct.vmid, ct.conf, &layer);
        let bytes = image_bytes(image);
        if fs.avail() < bytes {
            return Err(format!(
                "failed to register layer: write {layer}/usr/local/lib/python3.12/dist-packages/torch/lib/libtorch_cuda.so: no space left on device"
            ));
        }
        crate::disk::write_sparse(&ct.path(&format!("{layer}/layers")), bytes)
            .map_err(|e| e.to_string())?;
    }
    let had = container::update_state(ct.root, ct.vmid, |st| {
        let had = st.docker.images.iter().any(|i| i == image);
        if !had {
            st.docker.images.push(image.to_owned());
        }
        had
    })
    .map_err(|e| e.to_string())?;
    let dg = digest(&format!("repo {image}"));
    if had {
        out.out(format!(
            "{tag}: Pulling from {repo}\nDigest: sha256:{dg}\nStatus: Image is up to date for {image}\ndocker.io/{image}\n"
        ));
    } else {
        out.out(format!(
            "{tag}: Pulling from {repo}\n{}: Pull complete\nDigest: sha256:{dg}\nStatus: Downloaded newer image for {image}\ndocker.io/{image}\n",
            &digest(image)[..12]
        ));
    }
    Ok(())
}

fn pull(ct: &Ct<'_>, p: &Parsed, out: &mut Out) -> i32 {
    let [image] = p.args.as_slice() else {
        out.err("\"docker pull\" requires exactly 1 argument.\nSee 'docker pull --help'.\n");
        return 1;
    };
    let Some(image) = normalize_image(image) else {
        out.err("invalid reference format\n");
        return 1;
    };
    match do_pull(ct, &image, out) {
        Ok(()) => 0,
        Err(m) => {
            out.err(format!("Error response from daemon: {m}\n"));
            1
        }
    }
}

fn has_image(st: &CtState, r: &str) -> Option<String> {
    let n = normalize_image(r)?;
    st.docker.images.iter().find(|i| **i == n).cloned()
}

fn print_objects(objs: &[Value], format: Option<&str>, out: &mut Out) -> i32 {
    match format {
        Some(f) => {
            for o in objs {
                match template(f, o) {
                    Ok(s) => out.out(s + "\n"),
                    Err(m) => {
                        out.err(m + "\n");
                        return 1;
                    }
                }
            }
        }
        None => {
            out.out(serde_json::to_string_pretty(&Value::Array(objs.to_vec())).unwrap_or_default());
            out.out("\n");
        }
    }
    0
}

fn image_inspect(st: &CtState, p: &Parsed, out: &mut Out) -> i32 {
    if p.args.is_empty() {
        out.err("\"docker image inspect\" requires at least 1 argument.\n");
        return 1;
    }
    let mut objs = Vec::new();
    let mut code = 0;
    for a in &p.args {
        match has_image(st, a) {
            Some(i) => objs.push(image_json(&i)),
            None => {
                out.err(format!("Error response from daemon: No such image: {a}\n"));
                code = 1;
            }
        }
    }
    if !objs.is_empty() || code == 0 {
        let c = print_objects(&objs, p.get("format"), out);
        if code == 0 {
            code = c;
        }
    } else {
        out.out("[]\n");
    }
    code
}

fn images(st: &CtState, p: &Parsed, out: &mut Out) -> i32 {
    if !p.has("quiet") {
        out.out("REPOSITORY   TAG   IMAGE ID   CREATED   SIZE\n");
    }
    for i in &st.docker.images {
        let (repo, tag) = i.rsplit_once([':', '@']).unwrap_or((i, ""));
        let id = &digest(i)[..12];
        if p.has("quiet") {
            out.out(format!("{id}\n"));
        } else {
            out.out(format!("{repo}   {tag}   {id}   2 months ago   20.6GB\n"));
        }
    }
    0
}

fn container_json(ct: &Ct<'_>, c: &DockerContainer) -> Value {
    let (status, code) = effective(c);
    let running = status == "running";
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": "vllm",
        "Args": c.args,
        "State": {
            "Status": status,
            "Running": running,
            "Paused": false,
            "Restarting": false,
            "Dead": false,
            "Pid": if running { c.pid.unwrap_or(0) } else { 0 },
            "ExitCode": code,
        },
        "Image": format!("sha256:{}", digest(&c.image)),
        "Name": format!("/{}", c.name),
        "Config": {"Image": c.image, "Env": container_env(ct, &c.id), "Cmd": c.args},
        "HostConfig": {
            "AutoRemove": c.auto_remove,
            "Binds": c.volumes,
            "PortBindings": c.ports.iter().map(|(h, p)| (format!("{p}/tcp"), json!([{"HostIp": "", "HostPort": h.to_string()}]))).collect::<serde_json::Map<_, _>>(),
            "DeviceRequests": c.gpus.as_ref().map(|g| json!([{"Driver": "", "Capabilities": [["gpu"]], "Options": g}])),
        },
    })
}

fn ps(st: &CtState, p: &Parsed, out: &mut Out) -> i32 {
    let all = p.has("all");
    let mut rows = Vec::new();
    for c in st.docker.containers.iter().filter(|c| visible(c)) {
        let (status, code) = effective(c);
        if !all && status != "running" {
            continue;
        }
        let mut keep = true;
        for f in p.all("filter") {
            let Some((k, v)) = f.split_once('=') else {
                out.err(format!(
                    "Error response from daemon: bad format of filter (expected name=value): {f}\n"
                ));
                return 1;
            };
            keep &= match k {
                "name" => {
                    let (anchored_start, v) = v.strip_prefix('^').map_or((false, v), |r| (true, r));
                    let (anchored_end, v) = v.strip_suffix('$').map_or((false, v), |r| (true, r));
                    match (anchored_start, anchored_end) {
                        (true, true) => c.name == v,
                        (true, false) => c.name.starts_with(v),
                        (false, true) => c.name.ends_with(v),
                        _ => c.name.contains(v),
                    }
                }
                "status" => status == v,
                "id" => c.id.starts_with(v),
                "ancestor" => c.image == normalize_image(v).unwrap_or_default(),
                _ => {
                    out.err(format!(
                        "Error response from daemon: invalid filter '{k}'\n"
                    ));
                    return 1;
                }
            };
        }
        if !keep {
            continue;
        }
        let status_text = if status == "running" {
            "Up 1 second".to_owned()
        } else {
            format!("Exited ({code}) 1 second ago")
        };
        let ports = c
            .ports
            .iter()
            .map(|(h, p)| format!("0.0.0.0:{h}->{p}/tcp"))
            .collect::<Vec<_>>()
            .join(", ");
        rows.push(json!({
            "ID": if p.has("no-trunc") { c.id.clone() } else { c.id[..12].to_owned() },
            "Image": c.image,
            "Command": crate::vllm_proc::entrypoint_text(&c.image),
            "Names": c.name,
            "Status": status_text,
            "State": status,
            "Ports": ports,
            "CreatedAt": c.created.to_string(),
        }));
    }
    if p.has("quiet") {
        for r in &rows {
            out.out(format!("{}\n", go_text(&r["ID"])));
        }
        return 0;
    }
    if let Some(f) = p.get("format") {
        for r in &rows {
            match template(f, r) {
                Ok(s) => out.out(s + "\n"),
                Err(m) => {
                    out.err(m + "\n");
                    return 1;
                }
            }
        }
        return 0;
    }
    out.out("CONTAINER ID   IMAGE   COMMAND   CREATED   STATUS   PORTS   NAMES\n");
    for r in &rows {
        out.out(format!(
            "{}   {}   {}   1 second ago   {}   {}   {}\n",
            go_text(&r["ID"]),
            go_text(&r["Image"]),
            go_text(&r["Command"]),
            go_text(&r["Status"]),
            go_text(&r["Ports"]),
            go_text(&r["Names"])
        ));
    }
    0
}

fn inspect(ct: &Ct<'_>, st: &CtState, p: &Parsed, out: &mut Out) -> i32 {
    if p.args.is_empty() {
        out.err("\"docker inspect\" requires at least 1 argument.\n");
        return 1;
    }
    let kind = p.get("type");
    let mut objs = Vec::new();
    let mut code = 0;
    for a in &p.args {
        let c = (kind != Some("image")).then(|| find(st, a)).flatten();
        let i = (kind != Some("container") && c.is_none())
            .then(|| has_image(st, a))
            .flatten();
        match (c, i) {
            (Some(c), _) => objs.push(container_json(ct, c)),
            (None, Some(i)) => objs.push(image_json(&i)),
            (None, None) => {
                out.err(format!("Error: No such object: {a}\n"));
                code = 1;
            }
        }
    }
    if objs.is_empty() {
        out.out("[]\n");
        return code;
    }
    let c = print_objects(&objs, p.get("format"), out);
    if code == 0 { c } else { code }
}

fn logs(ct: &Ct<'_>, st: &CtState, p: &Parsed, out: &mut Out) -> i32 {
    let [name] = p.args.as_slice() else {
        out.err("\"docker logs\" requires exactly 1 argument.\n");
        return 1;
    };
    let Some(c) = find(st, name) else {
        out.err(format!(
            "Error response from daemon: No such container: {name}\n"
        ));
        return 1;
    };
    let n = match p.get("tail") {
        None | Some("all") => None,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => Some(n),
            Err(_) => {
                out.err(format!("invalid value for --tail: {v}\n"));
                return 1;
            }
        },
    };
    if p.has("follow") {
        while effective(c).0 == "running" && c.pid.is_some_and(pid_alive) {
            std::thread::sleep(Duration::from_millis(100));
            let now = container::load_state(ct.root, ct.vmid).unwrap_or_default();
            if find(&now, name).is_none_or(|x| effective(x).0 != "running") {
                break;
            }
        }
    }
    let text = std::fs::read_to_string(log_path(ct, &c.id)).unwrap_or_default();
    out.out(tail(&text, n));
    0
}

fn stop(ct: &Ct<'_>, st: &CtState, p: &Parsed, out: &mut Out) -> i32 {
    if p.args.is_empty() {
        out.err("\"docker stop\" requires at least 1 argument.\n");
        return 1;
    }
    let grace = match p.get("time") {
        Some(t) => match t.parse::<u64>() {
            Ok(s) => Duration::from_secs(s.min(10)),
            Err(_) => {
                out.err(format!(
                    "invalid argument \"{t}\" for \"-t, --time\" flag\n"
                ));
                return 125;
            }
        },
        None => Duration::from_secs(10),
    };
    let mut code = 0;
    for a in &p.args {
        let Some(c) = find(st, a) else {
            out.err(format!(
                "Error response from daemon: No such container: {a}\n"
            ));
            code = 1;
            continue;
        };
        if effective(c).0 == "running" {
            if let Some(pid) = c.pid {
                terminate(pid, grace);
            }
            mark_exited(ct, &c.id, 0, false);
        }
        out.out(format!("{a}\n"));
    }
    code
}

fn rm(ct: &Ct<'_>, st: &CtState, p: &Parsed, out: &mut Out) -> i32 {
    if p.args.is_empty() {
        out.err("\"docker rm\" requires at least 1 argument.\n");
        return 1;
    }
    let force = p.has("force");
    let mut code = 0;
    for a in &p.args {
        let Some(c) = find(st, a) else {
            out.err(format!(
                "Error response from daemon: No such container: {a}\n"
            ));
            if !force {
                code = 1;
            }
            continue;
        };
        let (status, exit) = effective(c);
        if status == "running" {
            if !force {
                out.err(format!(
                    "Error response from daemon: cannot remove container \"/{}\": container is running: stop the container before removing or force remove\n",
                    c.name
                ));
                code = 1;
                continue;
            }
            if let Some(pid) = c.pid {
                signal(pid, nix::sys::signal::Signal::SIGKILL);
                let start = Instant::now();
                while pid_alive(pid) && start.elapsed() < Duration::from_secs(2) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            mark_exited(ct, &c.id, 137, true);
        } else {
            mark_exited(ct, &c.id, exit, true);
        }
        out.out(format!("{a}\n"));
    }
    code
}

// ---------------------------------------------------------------------------------------
// docker run
// ---------------------------------------------------------------------------------------

/// Docker's CSV split of a `--gpus` value (`"device=0,1"` quoted stays one field).
fn csv_fields(v: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = v.chars().peekable();
    let mut field_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if field_start && !quoted => quoted = true,
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            }
            '"' => return Err(format!("bare \" in non-quoted-field in {v:?}")),
            ',' if !quoted => {
                fields.push(std::mem::take(&mut cur));
                field_start = true;
                continue;
            }
            c => cur.push(c),
        }
        field_start = false;
    }
    if quoted {
        return Err(format!("extraneous or missing \" in quoted-field in {v:?}"));
    }
    fields.push(cur);
    Ok(fields)
}

/// What `--gpus` asks for: `None` = all, else the device indices (or a count).
#[derive(Debug, PartialEq)]
pub enum GpuRequest {
    /// `all` / `count=all`.
    All,
    /// `N` / `count=N`.
    Count(usize),
    /// `device=…`.
    Devices(Vec<String>),
}

/// Parse a `--gpus` value as Docker's `opts.GpuOpts` does.
pub fn parse_gpus(v: &str) -> Result<GpuRequest, String> {
    let fields = csv_fields(v)?;
    let mut req = None;
    for f in &fields {
        let (k, val) = match f.split_once('=') {
            Some((k, val)) => (k, val),
            None if fields.len() == 1 && f == "all" => ("count", "all"),
            None if fields.len() == 1 && f.parse::<usize>().is_ok() => ("count", f.as_str()),
            None => return Err(format!("unexpected key '{f}' in '{f}'")),
        };
        req = Some(match k {
            "count" if val == "all" => GpuRequest::All,
            "count" => GpuRequest::Count(val.parse().map_err(|_| format!("invalid count {val}"))?),
            "device" => GpuRequest::Devices(val.split(',').map(str::to_owned).collect()),
            "capabilities" | "driver" | "options" => continue,
            _ => return Err(format!("unexpected key '{k}' in '{f}'")),
        });
    }
    req.ok_or_else(|| format!("no gpu request in '{v}'"))
}

/// Size as Docker reads it (`16g`, `512m`, `1024`).
fn valid_size(s: &str) -> bool {
    let t = s.trim_end_matches(['b', 'B']);
    let t = t.trim_end_matches(['k', 'K', 'm', 'M', 'g', 'G', 't', 'T']);
    !t.is_empty() && t.parse::<f64>().is_ok()
}

/// `-p [ip:]host:container[/proto]` → `(host, container)`.
fn parse_publish(v: &str) -> Result<(u16, u16), String> {
    let v = v.split('/').next().unwrap_or("");
    let parts: Vec<&str> = v.split(':').collect();
    let (h, c) = match parts.as_slice() {
        [c] => (*c, *c),
        [h, c] | [_, h, c] => (*h, *c),
        _ => return Err(format!("invalid publish opts format: {v}")),
    };
    let port = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {p}"))
    };
    Ok((port(h)?, port(c)?))
}

/// The minors of the GPUs the container can open (`crate::nvctk::visible_minors`: node
/// passed in and allowed by the device cgroup).
pub fn attached_gpus(ct: &Ct<'_>) -> Vec<u32> {
    crate::nvctk::visible_minors(ct)
}

/// An env file's `KEY=value` entries as docker/cli `opts/parse.go` `parseKeyValueFile`
/// reads them: each line's leading whitespace trimmed, empty and `#` lines skipped, the
/// variable name must not contain spaces, the value is taken verbatim after the first `=`
/// (a line without `=` would take the variable from the client's environment, which
/// phoenix's `pct exec` leaves empty: skipped).
pub fn parse_env_file(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (var, value) = match line.split_once('=') {
            Some((v, val)) => (v.trim_start_matches([' ', '\t']), Some(val)),
            None => (line, None),
        };
        if var.contains([' ', '\t']) {
            return Err(format!(
                "poorly formatted environment: variable '{var}' contains whitespaces"
            ));
        }
        if var.is_empty() {
            return Err(format!(
                "poorly formatted environment: no variable name on line '{line}'"
            ));
        }
        if let Some(v) = value {
            out.push(format!("{var}={v}"));
        }
    }
    Ok(out)
}

/// A container start that fails in the runtime (runc, its hooks): the exit code docker/cli
/// `toStatusError` gives it (127 not found, 126 permission denied, else 125).
fn start_error(out: &mut Out, m: &str) -> (i32, Option<String>) {
    out.err(format!("docker: Error response from daemon: {m}.\n"));
    let code = if m.contains("executable file not found") || m.contains("no such file or directory")
    {
        127
    } else if m.contains("permission denied") || m.contains("is a directory") {
        126
    } else {
        125
    };
    (code, None)
}

/// A `docker run` failure before the container starts.
fn run_error(out: &mut Out, m: &str) -> (i32, Option<String>) {
    out.err(format!("docker: {m}.\nSee 'docker run --help'.\n"));
    (125, None)
}

fn daemon_error(out: &mut Out, m: &str) -> (i32, Option<String>) {
    out.err(format!("docker: Error response from daemon: {m}\n"));
    (125, None)
}

fn random_id() -> String {
    let mut b = [0u8; 32];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !ok {
        return digest(&format!("{:?}{}", Instant::now(), std::process::id()));
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn docker_run(
    ct: &Ct<'_>,
    st: &CtState,
    p: &Parsed,
    service: bool,
    out: &mut Out,
) -> (i32, Option<String>) {
    let Some((image_ref, cargs)) = p.args.split_first() else {
        out.err("docker: 'docker run' requires at least 1 argument.\nSee 'docker run --help'.\n");
        return (125, None);
    };
    let Some(image) = normalize_image(image_ref) else {
        return run_error(out, "invalid reference format");
    };
    let auto_remove = p.has("rm");
    if auto_remove && p.get("restart").is_some_and(|r| r != "no") {
        return run_error(out, "Conflicting options: --restart and --rm");
    }
    let name = match p.get("name") {
        Some(n) => {
            let ok = n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !ok {
                return daemon_error(
                    out,
                    &format!(
                        "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed."
                    ),
                );
            }
            n.to_owned()
        }
        None => format!("emu_{}", &random_id()[..8]),
    };
    if let Some(ipc) = p.get("ipc") {
        let ok = matches!(ipc, "host" | "private" | "shareable" | "none" | "")
            || ipc.starts_with("container:");
        if !ok {
            return run_error(out, &format!("invalid IPC mode: {ipc}"));
        }
    }
    if let Some(s) = p.get("shm-size") {
        if !valid_size(s) {
            return run_error(
                out,
                &format!("invalid argument \"{s}\" for \"--shm-size\" flag: invalid size: '{s}'"),
            );
        }
    }
    let mut ports = Vec::new();
    for v in p.all("publish") {
        match parse_publish(v) {
            Ok(x) => ports.push(x),
            Err(m) => {
                return run_error(
                    out,
                    &format!("invalid argument \"{v}\" for \"-p, --publish\" flag: {m}"),
                );
            }
        }
    }
    let mut binds: Vec<(String, String)> = Vec::new();
    for v in p.all("volume") {
        let parts: Vec<&str> = v.split(':').collect();
        let (src, dst) = match parts.as_slice() {
            [s, d] | [s, d, _] => (*s, *d),
            _ => return daemon_error(out, &format!("invalid volume specification: '{v}'")),
        };
        if !dst.starts_with('/')
            || (parts.len() == 3
                && !parts[2]
                    .split(',')
                    .all(|o| matches!(o, "ro" | "rw" | "z" | "Z")))
        {
            return daemon_error(out, &format!("invalid volume specification: '{v}'"));
        }
        if src.starts_with('/') {
            // Docker creates a missing bind source directory.
            let _ = std::fs::create_dir_all(container::resolve(ct.root, ct.vmid, ct.conf, src));
        }
        binds.push((src.to_owned(), dst.to_owned()));
    }
    let mut env: Vec<String> = p.all("env").iter().map(|s| (*s).to_owned()).collect();
    for f in p.all("env-file") {
        match std::fs::read_to_string(container::resolve(ct.root, ct.vmid, ct.conf, f)) {
            Ok(t) => match parse_env_file(&t) {
                Ok(lines) => env.extend(lines),
                Err(m) => return run_error(out, &m),
            },
            Err(_) => return run_error(out, &format!("open {f}: no such file or directory")),
        }
    }
    if let Some(r) = p.get("runtime") {
        if r != "runc" && !(r == "nvidia" && st.docker.nvidia_runtime) {
            return daemon_error(out, &format!("unknown or invalid runtime name: {r}"));
        }
    }
    // GPUs.
    let attached = attached_gpus(ct);
    let mut visible_gpus = 0usize;
    if let Some(g) = p.get("gpus") {
        let req = match parse_gpus(g) {
            Ok(r) => r,
            Err(m) => {
                return run_error(
                    out,
                    &format!("invalid argument \"{g}\" for \"--gpus\" flag: {m}"),
                );
            }
        };
        if !crate::apt::installed(st, "nvidia-container-toolkit") {
            return daemon_error(
                out,
                "could not select device driver \"\" with capabilities: [[gpu]].",
            );
        }
        let hook = "failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: error running hook #0: error running hook: exit status 1, stdout: , stderr: Auto-detected mode as 'legacy'\nnvidia-container-cli: ";
        if ct.conf.get("unprivileged") == Some("1") && !st.nvidia_ctk.no_cgroups() {
            return daemon_error(
                out,
                &format!(
                    "{hook}mount error: failed to add device rules: unable to find any existing device filters attached to the cgroup: bpf_prog_query(BPF_CGROUP_DEVICE) failed: operation not permitted: unknown"
                ),
            );
        }
        if attached.is_empty() {
            return daemon_error(
                out,
                &format!("{hook}initialization error: nvml error: driver not loaded: unknown"),
            );
        }
        visible_gpus = match req {
            GpuRequest::All => attached.len(),
            GpuRequest::Count(n) => n.min(attached.len()),
            GpuRequest::Devices(ds) => {
                for d in &ds {
                    if !d.parse::<usize>().is_ok_and(|i| i < attached.len()) {
                        return daemon_error(
                            out,
                            &format!("{hook}device error: {d}: unknown device: unknown"),
                        );
                    }
                }
                ds.len()
            }
        };
    }
    // The name must be free.
    if let Some(c) = find(st, &name) {
        return daemon_error(
            out,
            &format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                c.id
            ),
        );
    }
    // A host port already published by a running container.
    for (h, _) in &ports {
        let taken = st.docker.containers.iter().any(|c| {
            visible(c) && effective(c).0 == "running" && c.ports.iter().any(|(x, _)| x == h)
        });
        if taken {
            return daemon_error(
                out,
                &format!(
                    "driver failed programming external connectivity on endpoint {name}: Bind for 0.0.0.0:{h} failed: port is already allocated."
                ),
            );
        }
    }
    if has_image(st, &image).is_none() {
        out.err(format!("Unable to find image '{image}' locally\n"));
        let mut sub = Out::default();
        if let Err(m) = do_pull(ct, &image, &mut sub) {
            return daemon_error(out, &m);
        }
        out.err(sub.stdout);
    }
    if let Some(m) = runc_cannot_start(ct) {
        return start_error(out, &m);
    }
    let entrypoint = p.get("entrypoint");
    if let Some(e) = entrypoint {
        let program = e.rsplit('/').next().unwrap_or(e);
        let known = matches!(
            e,
            "true" | "false" | "/bin/true" | "/bin/false" | "/usr/bin/true" | "/usr/bin/false"
        );
        if !known {
            return start_error(
                out,
                &format!(
                    "failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: exec: \"{e}\": executable file not found in $PATH: unknown"
                ),
            );
        }
        // A trivial entrypoint: the container starts, runs it and exits (removed with --rm).
        let code = i32::from(program == "false");
        if !auto_remove {
            let record = DockerContainer {
                id: random_id(),
                name: name.clone(),
                image: image.clone(),
                run_argv: std::iter::once("run".to_owned()).chain(p_argv(p)).collect(),
                args: cargs.to_vec(),
                auto_remove,
                status: "exited".into(),
                exit_code: code,
                created: now(),
                ..DockerContainer::default()
            };
            if let Err(e) =
                container::update_state(ct.root, ct.vmid, |st| st.docker.containers.push(record))
            {
                return daemon_error(out, &e.to_string());
            }
        }
        return (code, None);
    }
    let id = random_id();
    let log = log_path(ct, &id);
    if let Some(dir) = log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = save_config(ct, &id, &name, &env) {
        return daemon_error(out, &e.to_string());
    }
    let runs = known_image(&image).map_or(Runs::Exit, |k| k.runs);
    let is_vllm = runs == Runs::Vllm;
    let network_host = matches!(p.get("network").or(p.get("net")), Some("host"));
    let mut record = DockerContainer {
        id: id.clone(),
        name: name.clone(),
        image: image.clone(),
        run_argv: std::iter::once("run".to_owned()).chain(p_argv(p)).collect(),
        args: cargs.to_vec(),
        auto_remove,
        ports: ports.clone(),
        volumes: p.all("volume").iter().map(|s| (*s).to_owned()).collect(),
        gpus: p.get("gpus").map(str::to_owned),
        pid: None,
        status: "created".into(),
        exit_code: 0,
        removed: false,
        created: now(),
        serve: None,
        app: None,
        restart_at_boot: false,
    };
    if let Runs::App(kind, port) = runs {
        let addr = &st.address;
        let host_port = if network_host {
            Some(port)
        } else {
            ports.iter().find(|(_, c)| *c == port).map(|(h, _)| *h)
        };
        let count = |k: &str| {
            env.iter()
                .filter_map(|e| e.split_once('='))
                .find(|(n, _)| *n == k)
                .map_or(0, |(_, v)| v.split(';').filter(|x| !x.is_empty()).count())
        };
        record.app = Some(crate::webapp::AppSpec {
            kind,
            addr: host_port
                .filter(|_| !addr.is_empty())
                .map(|h| format!("{addr}:{h}")),
            tag: image.rsplit_once(':').map_or("", |(_, t)| t).to_owned(),
            openai_connections: count("OPENAI_API_BASE_URLS").max(count("OPENAI_API_BASE_URL")),
        });
    }
    // What the process does: a vLLM server, or nothing.
    let outcome: Result<ServeSpec, (i32, String)> = if is_vllm {
        crate::vllm_proc::check_args(ct, &record, visible_gpus).map(|(mut spec, port)| {
            let addr = st.address.clone();
            let host_port = if network_host {
                Some(port)
            } else {
                ports.iter().find(|(_, c)| *c == port).map(|(h, _)| *h)
            };
            spec.addr = host_port
                .filter(|_| !addr.is_empty())
                .map(|h| format!("{addr}:{h}"));
            spec
        })
    } else if record.app.is_some() {
        Ok(ServeSpec::default())
    } else {
        Err((0, String::new()))
    };
    let spec = match outcome {
        Ok(s) => s,
        Err((code, msg)) => {
            let _ = std::fs::write(&log, &msg);
            record.status = "exited".into();
            record.exit_code = code;
            record.removed = auto_remove;
            let saved = container::update_state(ct.root, ct.vmid, |st| {
                if auto_remove {
                    st.docker.last_exit.insert(name.clone(), code);
                }
                st.docker.containers.push(record);
            });
            if let Err(e) = saved {
                return daemon_error(out, &e.to_string());
            }
            if p.has("detach") {
                out.out(format!("{id}\n"));
                return (0, Some(name));
            }
            if service {
                return (0, Some(name));
            }
            out.err(msg);
            return (code, Some(name));
        }
    };
    if is_vllm {
        record.serve = Some(spec);
    }
    // Record first (status created), then start, then record the pid: the server only
    // serves while the record names it.
    // The name is checked again under the lock: two concurrent runs cannot both take it.
    let res = container::update_state(ct.root, ct.vmid, |st| match find(st, &name) {
        Some(c) => Err(c.id.clone()),
        None => {
            st.docker.containers.push(record);
            Ok(())
        }
    });
    match res {
        Ok(Ok(())) => {}
        Ok(Err(other)) => {
            return daemon_error(
                out,
                &format!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                ),
            );
        }
        Err(e) => return daemon_error(out, &e.to_string()),
    }
    let pid = match crate::vllm_proc::spawn(ct.root, ct.vmid, &name, &log) {
        Ok(pid) => pid,
        Err(e) => {
            mark_exited(ct, &id, 127, false);
            return daemon_error(out, &format!("failed to start the emulated server: {e}"));
        }
    };
    let _ = container::update_state(ct.root, ct.vmid, |st| {
        if let Some(c) = st.docker.containers.iter_mut().find(|c| c.id == id) {
            c.pid = Some(pid);
            c.status = "running".into();
        }
    });
    if p.has("detach") {
        out.out(format!("{id}\n"));
        return (0, Some(name));
    }
    if service {
        return (0, Some(name));
    }
    // Foreground: wait for the container to end, then show its output.
    while pid_alive(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let now_st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    let code = now_st
        .docker
        .containers
        .iter()
        .find(|c| c.id == id)
        .map_or(137, |c| {
            if c.status == "running" {
                137
            } else {
                c.exit_code
            }
        });
    if now_st
        .docker
        .containers
        .iter()
        .any(|c| c.id == id && c.status == "running")
    {
        mark_exited(ct, &id, code, false);
    }
    out.err(std::fs::read(&log).unwrap_or_default());
    (code, Some(name))
}

/// The flags of `p` back as argv (for the record).
fn p_argv(p: &Parsed) -> Vec<String> {
    let mut v: Vec<String> = p
        .flags
        .iter()
        .flat_map(|(k, val)| [format!("--{k}"), val.clone()])
        .collect();
    v.extend(p.args.iter().cloned());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_follow_dockers_csv_rules() {
        assert_eq!(
            parse_gpus("\"device=0,1\"").unwrap(),
            GpuRequest::Devices(vec!["0".into(), "1".into()])
        );
        assert_eq!(parse_gpus("all").unwrap(), GpuRequest::All);
        assert_eq!(parse_gpus("2").unwrap(), GpuRequest::Count(2));
        assert_eq!(
            parse_gpus("device=0").unwrap(),
            GpuRequest::Devices(vec!["0".into()])
        );
        assert_eq!(
            parse_gpus("device=0,1").unwrap_err(),
            "unexpected key '1' in '1'"
        );
    }

    #[test]
    fn templates_and_flags() {
        let v = json!({"State": {"Status": "running"}, "Runtimes": {"nvidia": {"path": "x"}}});
        assert_eq!(template("{{.State.Status}}", &v).unwrap(), "running");
        assert_eq!(
            template("{{json .Runtimes}}", &v).unwrap(),
            "{\"nvidia\":{\"path\":\"x\"}}"
        );
        assert!(
            template("{{.Nope}}", &v)
                .unwrap_err()
                .contains("map has no entry")
        );
        let args: Vec<String> = [
            "--rm",
            "-d",
            "--name",
            "x",
            "-p8000:8000",
            "--ipc=host",
            "img",
            "--port",
            "1",
        ]
        .map(String::from)
        .to_vec();
        let p = parse_flags(&args, RUN_FLAGS, false).unwrap();
        assert!(p.has("rm") && p.has("detach"));
        assert_eq!(p.get("publish"), Some("8000:8000"));
        assert_eq!(p.get("ipc"), Some("host"));
        assert_eq!(p.args, ["img", "--port", "1"]);
        let bad: Vec<String> = ["--bogus", "img"].map(String::from).to_vec();
        assert_eq!(
            parse_flags(&bad, RUN_FLAGS, false).unwrap_err(),
            "unknown flag: --bogus"
        );
    }

    #[test]
    fn image_references() {
        assert_eq!(
            normalize_image("vllm/vllm-openai:v0.11.0").unwrap(),
            "vllm/vllm-openai:v0.11.0"
        );
        assert_eq!(
            normalize_image("docker.io/library/ubuntu").unwrap(),
            "ubuntu:latest"
        );
        assert!(normalize_image("Vllm/X:1").is_none());
    }
}

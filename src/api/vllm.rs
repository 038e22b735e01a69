//! The `vllm` family: `vllm.start(ct, spec)` runs the `vllm/vllm-openai` image inside a
//! container as a systemd service, and `vllm.wait_ready(server, opts)` walks the readiness
//! ladder of DESIGN.md §5.
//!
//! Everything inside the container goes through the `lxc` primitives ([`lxc::exec`],
//! [`lxc::push`], [`lxc::address`]) or, for read-only queries, the host's `ct_exec` with
//! read-only intent (so `--dry-run` runs them for real). No shell anywhere: the unit's
//! `ExecStart=` is written by a typed builder ([`UnitFile`]) that quotes every argument as a
//! systemd word.
//!
//! Decisions where DESIGN.md is silent:
//! - Names: the Docker container is `phoenix-vllm-<vmid>`, its unit
//!   `/etc/systemd/system/phoenix-vllm-<vmid>.service`, its API key file
//!   `/etc/phoenix-vllm/phoenix-vllm-<vmid>.yaml`.
//! - GPUs: the container sees its passed-through GPUs numbered from 0, so a config entry
//!   with N GPUs gives `--gpus "device=0,…,N-1"` (one argv element, quotes included), `all`
//!   gives `--gpus all`, no GPUs gives no `--gpus`.
//! - `vllm_shm_size` set → `--shm-size`; unset → `--ipc=host` (vLLM's own advice).
//! - `/etc/phoenix-vllm` is mounted (read-only) only when an API key file exists; the
//!   Hugging Face cache `/root/.cache/huggingface` is always mounted (model downloads
//!   survive restarts); `/models` only when the spec names `models_dir`.
//! - The image must be pinned: a tag other than `latest`, or a digest.
//! - The pull is skipped when `docker image inspect` already finds the image.
//! - Idempotence: an unchanged unit, unchanged secret files and an active, enabled service
//!   issue no mutating command; a changed file restarts the service.
//! - Readiness polls fast at first (interval = elapsed/16, at least 25 ms, at most 2 s), so a
//!   server that comes up within 4 s is noticed within 250 ms, and a long load costs one
//!   refused connection every 2 s. The container's liveness is
//!   checked about once a second (`docker inspect`, then `systemctl show` when Docker no
//!   longer knows it: `--rm` removes an exited container, and `Restart=on-failure` shows as
//!   `auto-restart`). On failure the last 50 log lines come from `docker logs`, or from the
//!   unit's journal when the container is gone.

use std::fmt;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, FuncRegistration, Map};
use zeroize::Zeroizing;

use super::http::{self, HttpError, HttpUrl, JsonBody, Seen};
use super::support::{self, known_keys, opt_duration, opt_str, step, vmid_of};
use super::{ApiError, lxc, script_error};
use crate::config::VllmConfig;
use crate::host::{CtStatus, ExecRequest};
use crate::journal::UndoStep;
use crate::runtime::Runtime;
use crate::secret::Secret;
use crate::types::{AbsPath, GpuSelector, Vmid};

crate::api::handle!(
    /// The `vllm` object recipes call methods on.
    VllmApi
);

type RhaiResult<T> = Result<T, Box<rhai::EvalAltResult>>;

/// Docker inside the container (the unit needs an absolute path).
pub const DOCKER: &str = "/usr/bin/docker";
/// The Hugging Face cache inside the container (and inside the vLLM container).
pub const HF_CACHE: &str = "/root/.cache/huggingface";
/// Where API key files live inside the container.
pub const CONFIG_DIR: &str = "/etc/phoenix-vllm";
/// How long `docker pull` may take.
const PULL_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// How long a query inside the container may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the `vllm` family.
#[derive(Debug, thiserror::Error)]
pub enum VllmError {
    /// The container's config entry has no vLLM server.
    #[error("container {vmid} has no vLLM server in the config (no `vllm_model`)")]
    NotConfigured {
        /// The container.
        vmid: Vmid,
    },
    /// A spec value is not acceptable.
    #[error("`{field}`: {message}")]
    Spec {
        /// The field (`image`).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The unit file could not be written.
    #[error(transparent)]
    Unit(#[from] UnitError),
    /// `docker pull` failed (exit 125 for an unknown image, registry or daemon errors).
    #[error("docker pull {image} failed inside container {vmid}")]
    Pull {
        /// The container.
        vmid: Vmid,
        /// The image.
        image: String,
        /// The command's failure, with its stderr.
        #[source]
        source: ApiError,
    },
    /// A primitive underneath failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The HTTP client failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The server did not become ready.
    #[error(transparent)]
    NotReady(Box<NotReadyError>),
    /// A signal asked phoenix to stop.
    #[error("interrupted by a signal")]
    Interrupted,
}

/// Why `vllm.wait_ready` gave up, with everything an operator needs to see.
#[derive(Debug, thiserror::Error)]
#[error(
    "vLLM server {container} at {url} is not ready (stage: {stage}): {reason}; last seen: {last}\nlast log lines of {container}:\n{logs}"
)]
pub struct NotReadyError {
    /// The Docker container.
    pub container: String,
    /// The server's base URL.
    pub url: String,
    /// How far the ladder got.
    pub stage: Stage,
    /// Why it stopped.
    pub reason: NotReady,
    /// The last HTTP status/body or connection failure.
    pub last: SeenText,
    /// The container's last log lines (redacted).
    pub logs: String,
}

impl VllmError {
    /// This error as the [`ApiError`] a recipe sees (`call` names the primitive).
    pub fn into_api(self, call: &'static str) -> ApiError {
        match self {
            Self::Api(e) => e,
            Self::Interrupted | Self::Http(HttpError::Interrupted) => ApiError::Interrupted,
            e => ApiError::spec(call, chain(&e)),
        }
    }
}

/// `err` and its sources, joined with `: `.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

/// The last thing seen, or that nothing was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenText(pub Option<Seen>);

impl fmt::Display for SeenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(s) => write!(f, "{s}"),
            None => f.write_str("nothing (no request made)"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The unit file
// ---------------------------------------------------------------------------------------

/// A value that cannot go into a unit file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unit file {what} {shown} contains a control character (newline, NUL, …): refused")]
pub struct UnitError {
    /// What the value is (`ExecStart argument`).
    pub what: &'static str,
    /// The value, shown safely.
    pub shown: String,
}

/// `arg` as one double-quoted systemd word: `\` and `"` escaped, `%` (specifiers) and `$`
/// (variables) doubled; control characters (newline, NUL, …) refused.
pub fn systemd_word(arg: &str) -> Result<String, UnitError> {
    if arg.chars().any(char::is_control) {
        return Err(UnitError {
            what: "ExecStart argument",
            shown: crate::types::show(arg),
        });
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// One `Exec…=` line: an absolute program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLine {
    /// `-` prefix: a failure is ignored.
    pub ignore_failure: bool,
    /// The program (absolute, plain characters: written unquoted).
    pub program: &'static str,
    /// Its arguments, each written as a quoted word.
    pub args: Vec<String>,
}

impl ExecLine {
    fn render(&self) -> Result<String, UnitError> {
        let mut line = String::new();
        if self.ignore_failure {
            line.push('-');
        }
        line.push_str(self.program);
        for a in &self.args {
            line.push(' ');
            line.push_str(&systemd_word(a)?);
        }
        Ok(line)
    }
}

/// The systemd service unit that runs one vLLM container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// The container id (for the description).
    pub vmid: Vmid,
    /// `ExecStartPre=`.
    pub pre: ExecLine,
    /// `ExecStart=`.
    pub start: ExecLine,
    /// `ExecStop=`.
    pub stop: ExecLine,
}

impl UnitFile {
    /// The unit for `spec`.
    pub fn for_server(spec: &ServerSpec) -> Self {
        Self {
            vmid: spec.vmid,
            pre: ExecLine {
                ignore_failure: true,
                program: DOCKER,
                args: vec!["rm".into(), "-f".into(), spec.container()],
            },
            start: ExecLine {
                ignore_failure: false,
                program: DOCKER,
                args: spec.run_args(),
            },
            stop: ExecLine {
                ignore_failure: false,
                program: DOCKER,
                args: vec!["stop".into(), spec.container()],
            },
        }
    }

    /// The unit text.
    pub fn render(&self) -> Result<String, UnitError> {
        Ok(format!(
            "# Written by phoenix: the vLLM server of container {vmid}.\n\
             # phoenix rewrites this file on every run; change the config entry instead.\n\
             [Unit]\n\
             Description=phoenix vLLM server of container {vmid}\n\
             After=docker.service network-online.target\n\
             Wants=network-online.target\n\
             Requires=docker.service\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStartPre={pre}\n\
             ExecStart={start}\n\
             ExecStop={stop}\n\
             Restart=on-failure\n\
             RestartSec=10\n\
             TimeoutStopSec=120\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            vmid = self.vmid,
            pre = self.pre.render()?,
            start = self.start.render()?,
            stop = self.stop.render()?,
        ))
    }
}

// ---------------------------------------------------------------------------------------
// The server spec
// ---------------------------------------------------------------------------------------

/// Which GPUs the vLLM container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DockerGpus {
    /// No `--gpus`.
    None,
    /// `--gpus all`.
    All,
    /// `--gpus "device=0,…,n-1"`.
    Count(usize),
}

impl DockerGpus {
    /// From the entry's `gpu_assignment`.
    pub fn from_selector(sel: Option<&GpuSelector>) -> Self {
        match sel {
            None => Self::None,
            Some(GpuSelector::All) => Self::All,
            Some(GpuSelector::List(l)) => Self::Count(l.len()),
        }
    }

    /// The `--gpus` value (one argv element; the list form keeps its double quotes so
    /// Docker's CSV parser sees one field, DESIGN.md §10).
    pub fn flag_value(self) -> Option<String> {
        match self {
            Self::None | Self::Count(0) => None,
            Self::All => Some("all".into()),
            Self::Count(n) => Some(format!(
                "\"device={}\"",
                (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",")
            )),
        }
    }
}

/// Everything `vllm.start` needs, validated.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// The container.
    pub vmid: Vmid,
    /// The pinned image.
    pub image: String,
    /// The entry's vLLM settings.
    pub vllm: VllmConfig,
    /// The GPUs.
    pub gpus: DockerGpus,
    /// A directory bound at the same path (`/models`), if the recipe asks.
    pub models_dir: Option<AbsPath>,
    /// The Hugging Face token (delivered as a 0600 file).
    pub hf_token: Option<Secret>,
    /// The API key (delivered in a 0600 YAML file read with `--config`).
    pub api_key: Option<Secret>,
}

impl ServerSpec {
    /// The Docker container's name.
    pub fn container(&self) -> String {
        format!("phoenix-vllm-{}", self.vmid)
    }

    /// The systemd unit's name.
    pub fn unit_name(&self) -> String {
        format!("phoenix-vllm-{}.service", self.vmid)
    }

    /// The unit file's path.
    pub fn unit_path(&self) -> AbsPath {
        abs(&format!("/etc/systemd/system/{}", self.unit_name()))
    }

    /// The API key file's path.
    pub fn config_path(&self) -> AbsPath {
        abs(&format!("{CONFIG_DIR}/{}.yaml", self.container()))
    }

    /// The token file's path.
    pub fn token_path() -> AbsPath {
        abs(&format!("{HF_CACHE}/token"))
    }

    /// The name clients use (`--served-model-name`).
    pub fn served_name(&self) -> String {
        self.vllm
            .served_model_name
            .clone()
            .unwrap_or_else(|| self.vllm.model.to_string())
    }

    /// `docker pull IMAGE` (argv inside the container).
    pub fn pull_argv(&self) -> Vec<String> {
        vec!["docker".into(), "pull".into(), self.image.clone()]
    }

    /// The arguments of `docker run …` (after the program).
    pub fn run_args(&self) -> Vec<String> {
        let v = &self.vllm;
        let port = v.port.to_string();
        let mut a: Vec<String> = vec![
            "run".into(),
            "--rm".into(),
            "--name".into(),
            self.container(),
        ];
        if let Some(g) = self.gpus.flag_value() {
            a.push("--gpus".into());
            a.push(g);
        }
        match &v.shm_size {
            Some(s) => {
                a.push("--shm-size".into());
                a.push(s.to_string());
            }
            None => a.push("--ipc=host".into()),
        }
        a.extend(["-p".into(), format!("{port}:{port}")]);
        a.extend(["-v".into(), format!("{HF_CACHE}:{HF_CACHE}")]);
        if let Some(m) = &self.models_dir {
            a.extend(["-v".into(), format!("{m}:{m}")]);
        }
        if self.api_key.is_some() {
            a.extend(["-v".into(), format!("{CONFIG_DIR}:{CONFIG_DIR}:ro")]);
        }
        a.push(self.image.clone());
        // The image's entrypoint is `vllm serve`: the model is the positional argument.
        a.push(v.model.to_string());
        a.extend([
            "--tensor-parallel-size".into(),
            v.tensor_parallel_size.to_string(),
        ]);
        if let Some(l) = v.max_model_len {
            a.extend(["--max-model-len".into(), l.to_string()]);
        }
        if let Some(d) = v.kv_cache_dtype {
            a.extend(["--kv-cache-dtype".into(), d.as_str().to_owned()]);
        }
        if let Some(q) = &v.quantization {
            a.extend(["--quantization".into(), q.clone()]);
        }
        if let Some(qc) = &v.quantization_config {
            a.extend(["--quantization-config".into(), qc.to_string()]);
        }
        if let Some(u) = v.gpu_memory_utilization {
            a.extend(["--gpu-memory-utilization".into(), u.to_string()]);
        }
        a.extend([
            "--served-model-name".into(),
            self.served_name(),
            "--host".into(),
            "0.0.0.0".into(),
            "--port".into(),
            port,
        ]);
        if self.api_key.is_some() {
            a.extend(["--config".into(), self.config_path().to_string()]);
        }
        a
    }

    /// The API key file's content (`api-key: "…"`), or `None` without a key.
    pub fn config_yaml(&self) -> Result<Option<Zeroizing<Vec<u8>>>, VllmError> {
        let Some(key) = &self.api_key else {
            return Ok(None);
        };
        let bytes = key.expose();
        let text = std::str::from_utf8(bytes).map_err(|_| VllmError::Spec {
            field: "api_key",
            message: format!("{key} is not UTF-8 text"),
        })?;
        if text.is_empty() || text.chars().any(char::is_control) {
            return Err(VllmError::Spec {
                field: "api_key",
                message: format!("{key} is empty or contains a control character"),
            });
        }
        let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() + 16));
        out.extend_from_slice(b"api-key: \"");
        for b in text.bytes() {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\"\n");
        Ok(Some(out))
    }
}

fn abs(p: &str) -> AbsPath {
    // Built from constants and validated ids: always an absolute, plain path.
    AbsPath::new(p).unwrap_or_else(|e| unreachable!("{p}: {e}"))
}

/// Refuse an image reference that is not pinned.
pub fn check_image(image: &str) -> Result<(), VllmError> {
    let bad = |m: &str| VllmError::Spec {
        field: "image",
        message: format!("{}: {m}", crate::types::show(image)),
    };
    if image.is_empty()
        || image.starts_with('-')
        || image
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'\\$`;|&<>".contains(c))
    {
        return Err(bad("not an image reference"));
    }
    if image.contains('@') {
        return Ok(());
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        None => Err(bad(
            "has no tag (that means `latest`): pin a version such as vllm/vllm-openai:v0.11.0",
        )),
        Some((_, "latest")) => Err(bad(
            "`latest` is not pinned: name a version such as vllm/vllm-openai:v0.11.0",
        )),
        Some((_, "")) => Err(bad("has an empty tag")),
        Some(_) => Ok(()),
    }
}

/// What `vllm.start`'s spec map may add to the config entry.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `hf_token`.
    pub hf_token: Option<Secret>,
    /// `api_key`.
    pub api_key: Option<Secret>,
    /// `image`.
    pub image: Option<String>,
    /// `models_dir`.
    pub models_dir: Option<AbsPath>,
}

impl Overrides {
    /// The overrides of a spec map; every other key (a config entry's fields) is left to
    /// the typed config.
    pub fn from_map(spec: &Map) -> Result<Self, ApiError> {
        const CALL: &str = "vllm.start";
        let secret = |key: &str| -> Result<Option<Secret>, ApiError> {
            match spec.get(key) {
                None => Ok(None),
                Some(v) if v.is_unit() => Ok(None),
                Some(v) => v
                    .read_lock::<Secret>()
                    .map(|s| Some(s.clone()))
                    .ok_or_else(|| {
                        ApiError::spec(
                            CALL,
                            format!(
                                "`{key}` must be a secret (secret.get(\"{key}\")), found {}",
                                v.type_name()
                            ),
                        )
                    }),
            }
        };
        let models_dir = opt_str(CALL, spec, "models_dir")?
            .map(|p| AbsPath::new(p).map_err(|source| ApiError::Type { call: CALL, source }))
            .transpose()?;
        Ok(Self {
            hf_token: secret("hf_token")?,
            api_key: secret("api_key")?,
            image: opt_str(CALL, spec, "image")?,
            models_dir,
        })
    }
}

/// Put the typed config entry of `vmid` and the overrides together.
pub fn resolve(
    rt: &Runtime,
    vmid: Vmid,
    spec: &Map,
    o: Overrides,
) -> Result<ServerSpec, VllmError> {
    let entry = match rt.config.get(vmid) {
        Some(e) => e.clone(),
        // Not in the config file: the map itself must be a full entry (validated the same way).
        None => {
            let mut m = spec.clone();
            for k in ["hf_token", "api_key", "image", "models_dir"] {
                m.remove(k);
            }
            m.insert("vmid".into(), Dynamic::from_int(i64::from(vmid.get())));
            lxc::entry_from_map(rt, &m)?
        }
    };
    let vllm = entry
        .vllm
        .clone()
        .ok_or(VllmError::NotConfigured { vmid })?;
    let image = o
        .image
        .or_else(|| vllm.image.clone())
        .unwrap_or_else(|| rt.settings.vllm_image.value.clone());
    check_image(&image)?;
    Ok(ServerSpec {
        vmid,
        image,
        gpus: DockerGpus::from_selector(entry.gpus.as_ref()),
        vllm,
        models_dir: o.models_dir,
        hf_token: o.hf_token,
        api_key: o.api_key,
    })
}

// ---------------------------------------------------------------------------------------
// vllm.start
// ---------------------------------------------------------------------------------------

/// A started server, as `vllm.start` returns it and `vllm.wait_ready` takes it.
#[derive(Debug, Clone)]
pub struct Server {
    /// The container.
    pub vmid: Vmid,
    /// `http://<address the host reports>:PORT`.
    pub url: HttpUrl,
    /// The served model name.
    pub model: String,
    /// The Docker container's name.
    pub container: String,
    /// The systemd unit's name.
    pub unit: String,
    /// The API key, when the API is protected.
    pub api_key: Option<Secret>,
}

impl Server {
    /// The map recipes see: `#{ct, vmid, url, model, container, unit, api_key_set}` (plus the
    /// opaque `api_key` secret when set, for `wait_ready`).
    pub fn to_map(&self, rt: &Runtime) -> Map {
        let mut m = Map::new();
        m.insert(
            "ct".into(),
            Dynamic::from_map(lxc::container_map(self.vmid, rt.config.get(self.vmid))),
        );
        m.insert("vmid".into(), Dynamic::from_int(i64::from(self.vmid.get())));
        m.insert("url".into(), self.url.as_str().trim_end_matches('/').into());
        m.insert("model".into(), self.model.clone().into());
        m.insert("container".into(), self.container.clone().into());
        m.insert("unit".into(), self.unit.clone().into());
        m.insert(
            "api_key_set".into(),
            Dynamic::from_bool(self.api_key.is_some()),
        );
        if let Some(k) = &self.api_key {
            m.insert("api_key".into(), Dynamic::from(k.clone()));
        }
        m
    }

    /// A server map back into a [`Server`].
    pub fn from_map(call: &'static str, m: &Map) -> Result<Self, ApiError> {
        let vmid = vmid_of(call, &Dynamic::from_map(m.clone()))?;
        let need = |k: &str| {
            opt_str(call, m, k)?.ok_or_else(|| {
                ApiError::spec(
                    call,
                    format!("server map has no `{k}` (pass what vllm.start returned)"),
                )
            })
        };
        let url = HttpUrl::parse(&need("url")?).map_err(|e| ApiError::spec(call, e.to_string()))?;
        let api_key = match m.get("api_key") {
            Some(v) if !v.is_unit() => Some(
                v.read_lock::<Secret>()
                    .map(|s| s.clone())
                    .ok_or_else(|| ApiError::spec(call, "`api_key` must be a secret"))?,
            ),
            _ => None,
        };
        Ok(Self {
            vmid,
            url,
            model: need("model")?,
            container: need("container")?,
            unit: opt_str(call, m, "unit")?
                .unwrap_or_else(|| format!("phoenix-vllm-{vmid}.service")),
            api_key,
        })
    }
}

/// Run a read-only query inside the container (runs for real in `--dry-run`).
fn query(
    rt: &Runtime,
    vmid: Vmid,
    argv: &[&str],
    ok_codes: Vec<i32>,
) -> Result<crate::exec::CommandOutput, ApiError> {
    Ok(rt.host.ct_exec(
        vmid,
        &ExecRequest {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            timeout: Some(QUERY_TIMEOUT),
            ok_codes,
            read_only: true,
            ..ExecRequest::default()
        },
    )?)
}

/// A file's content inside the container, `None` when absent.
fn current(
    rt: &Runtime,
    vmid: Vmid,
    path: &AbsPath,
) -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
    let out = query(rt, vmid, &["cat", path.as_str()], vec![0, 1])?;
    Ok((out.code == 0).then(|| Zeroizing::new(out.stdout)))
}

/// A unit's state as `systemctl show` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `ActiveState` (`active`, `activating`, `failed`, `inactive`).
    pub active: String,
    /// `SubState` (`running`, `auto-restart`, `dead`).
    pub sub: String,
    /// `UnitFileState` (`enabled`, `disabled`, empty when not found).
    pub file: String,
}

impl UnitState {
    /// Parse `Key=Value` lines.
    pub fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().to_owned();
                match k.trim() {
                    "ActiveState" => s.active = v,
                    "SubState" => s.sub = v,
                    "UnitFileState" => s.file = v,
                    _ => {}
                }
            }
        }
        s
    }

    /// Running (or starting) and enabled at boot.
    pub fn up(&self) -> bool {
        matches!(self.active.as_str(), "active" | "activating" | "reloading")
            && self.sub != "auto-restart"
            && self.file == "enabled"
    }
}

fn unit_state(rt: &Runtime, vmid: Vmid, unit: &str) -> Result<UnitState, ApiError> {
    let out = query(
        rt,
        vmid,
        &[
            "systemctl",
            "show",
            "--property=ActiveState,SubState,UnitFileState",
            unit,
        ],
        vec![0, 1],
    )?;
    Ok(UnitState::parse(&out.stdout_text()))
}

/// Run a mutating command through `lxc.exec`.
fn run(rt: &Runtime, vmid: Vmid, argv: &[&str], timeout: Duration) -> Result<(), ApiError> {
    lxc::exec(
        rt,
        vmid,
        argv.iter().map(|s| (*s).to_owned()).collect(),
        lxc::ExecOptions {
            timeout: Some(timeout),
            ..lxc::ExecOptions::default()
        },
    )
    .map(drop)
}

/// Write `content` at `path` unless it is already there; whether it changed.
fn put(
    rt: &Runtime,
    vmid: Vmid,
    present: bool,
    path: &AbsPath,
    content: &[u8],
    mode: u32,
) -> Result<bool, ApiError> {
    if present && current(rt, vmid, path)?.is_some_and(|c| c.as_slice() == content) {
        return Ok(false);
    }
    lxc::push(rt, vmid, path, content, mode)?;
    Ok(true)
}

/// Create `dir` (mode 0700) unless it exists; `undo` records an `rmdir` (it only succeeds
/// once the files in it are removed, which undo does first).
fn ensure_dir(
    rt: &Runtime,
    vmid: Vmid,
    present: bool,
    dir: &str,
    undo: bool,
) -> Result<(), ApiError> {
    if present && query(rt, vmid, &["test", "-d", dir], vec![0, 1])?.code == 0 {
        return Ok(());
    }
    let mkdir = || run(rt, vmid, &["mkdir", "-p", "-m", "0700", dir], QUERY_TIMEOUT);
    if undo {
        step(
            rt,
            &format!("vllm.start:{vmid}:mkdir:{dir}"),
            UndoStep::RemoveDir {
                vmid,
                path: AbsPath::new(dir).map_err(|source| ApiError::Type {
                    call: "vllm.start",
                    source,
                })?,
            },
            mkdir,
        )
    } else {
        support::check_cancel(rt)?;
        mkdir()
    }
}

/// `vllm.start(ct, spec)`: pull the image, deliver the secrets as 0600 files, write and
/// enable the systemd unit. Idempotent.
pub fn start(rt: &Runtime, spec: &ServerSpec) -> Result<Server, VllmError> {
    let vmid = spec.vmid;
    let unit_text = UnitFile::for_server(spec).render()?;
    let yaml = spec.config_yaml()?;
    let status = rt.host.ct_status(vmid).map_err(ApiError::from)?;
    if status != CtStatus::Running && !rt.dry_run {
        return Err(VllmError::Spec {
            field: "ct",
            message: format!("container {vmid} is {status}: call lxc.start(ct) before vllm.start"),
        });
    }
    // In a dry run the container may be one this run would create: nothing to ask it.
    let present = status == CtStatus::Running;

    // a. The image, as its own step so a failed pull is seen with its stderr.
    let have_image = present
        && query(
            rt,
            vmid,
            &[
                "docker",
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                &spec.image,
            ],
            vec![0, 1],
        )?
        .code
            == 0;
    if !have_image {
        support::check_cancel(rt)?;
        let argv = spec.pull_argv();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run(rt, vmid, &argv, PULL_TIMEOUT).map_err(|source| VllmError::Pull {
            vmid,
            image: spec.image.clone(),
            source,
        })?;
    }

    // b. The Hugging Face token: the file `token` in the mounted cache, never env or argv.
    let mut secrets_changed = false;
    if let Some(token) = &spec.hf_token {
        ensure_dir(rt, vmid, present, HF_CACHE, false)?;
        secrets_changed |= put(
            rt,
            vmid,
            present,
            &ServerSpec::token_path(),
            token.expose(),
            0o600,
        )?;
    }

    // c. The API key: a 0600 YAML file read with `--config`.
    match &yaml {
        Some(y) => {
            ensure_dir(rt, vmid, present, CONFIG_DIR, true)?;
            secrets_changed |= put(rt, vmid, present, &spec.config_path(), y, 0o600)?;
        }
        None => tracing::warn!(
            %vmid,
            "vLLM server of container {vmid} has no api_key: its OpenAI API is open to anyone who can reach port {}",
            spec.vllm.port
        ),
    }

    // d. The unit.
    let unit = spec.unit_name();
    let unit_changed = put(
        rt,
        vmid,
        present,
        &spec.unit_path(),
        unit_text.as_bytes(),
        0o644,
    )?;

    // e. Enable and start, or restart after a change, or nothing.
    let state = if present {
        unit_state(rt, vmid, &unit)?
    } else {
        UnitState::default()
    };
    if unit_changed {
        support::check_cancel(rt)?;
        run(rt, vmid, &["systemctl", "daemon-reload"], QUERY_TIMEOUT)?;
    }
    if !state.up() {
        let container = spec.container();
        // Both compensations are recorded before the service starts.
        step(
            rt,
            &format!("vllm.start:{vmid}:container"),
            UndoStep::Exec {
                vmid,
                argv: vec!["docker".into(), "rm".into(), "-f".into(), container],
            },
            || {
                step(
                    rt,
                    &format!("vllm.start:{vmid}:service"),
                    UndoStep::Exec {
                        vmid,
                        argv: vec![
                            "systemctl".into(),
                            "disable".into(),
                            "--now".into(),
                            unit.clone(),
                        ],
                    },
                    || {
                        run(
                            rt,
                            vmid,
                            &["systemctl", "enable", "--now", &unit],
                            QUERY_TIMEOUT * 4,
                        )
                    },
                )
            },
        )?;
    } else if unit_changed || secrets_changed {
        support::check_cancel(rt)?;
        tracing::info!(%vmid, "vLLM unit or its files changed: restarting {unit}");
        run(
            rt,
            vmid,
            &["systemctl", "restart", &unit],
            QUERY_TIMEOUT * 4,
        )?;
    } else {
        tracing::info!(%vmid, "vLLM service {unit} is up and unchanged");
    }

    let addr = lxc::address(rt, vmid)?;
    let url = HttpUrl::parse(&format!("http://{addr}:{}/", spec.vllm.port))?;
    Ok(Server {
        vmid,
        url,
        model: spec.served_name(),
        container: spec.container(),
        unit,
        api_key: spec.api_key.clone(),
    })
}

// ---------------------------------------------------------------------------------------
// vllm.wait_ready
// ---------------------------------------------------------------------------------------

/// How far the readiness ladder got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The port does not answer yet (refused, reset, EOF): the model is loading.
    Loading,
    /// The port answers but `/health` is not 200 yet.
    Health,
    /// `/health` is 200; waiting for the model in `/v1/models`.
    Models,
    /// The model is listed; waiting for a one-token completion.
    Completion,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loading => "loading",
            Self::Health => "health",
            Self::Models => "models",
            Self::Completion => "completion",
        })
    }
}

/// Why the ladder stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    /// The total timeout passed.
    Timeout {
        /// How long phoenix waited.
        waited: Duration,
    },
    /// `/health` answered 503: the engine died.
    EngineDead,
    /// `/v1/models` lists other models.
    WrongModel {
        /// The configured served name.
        want: String,
        /// What the server lists.
        found: Vec<String>,
    },
    /// The container is no longer running.
    Exited {
        /// What Docker or systemd said.
        state: String,
    },
    /// The API key was refused.
    Unauthorized {
        /// 401 or 403.
        status: u16,
    },
    /// The one-token completion was refused.
    CompletionRejected {
        /// The status.
        status: u16,
    },
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { waited } => write!(f, "timed out after {:.1}s", waited.as_secs_f64()),
            Self::EngineDead => f.write_str("GET /health answered 503: the engine is dead"),
            Self::WrongModel { want, found } => write!(
                f,
                "the server serves {found:?}, not the configured model {want:?}"
            ),
            Self::Exited { state } => write!(f, "the container is no longer running ({state})"),
            Self::Unauthorized { status } => write!(
                f,
                "the API key was refused (HTTP {status}): the server was started with another key"
            ),
            Self::CompletionRejected { status } => {
                write!(f, "the one-token completion was refused (HTTP {status})")
            }
        }
    }
}

/// What `vllm.wait_ready` accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitOptions {
    /// Total limit (default 15 min).
    pub timeout: Duration,
    /// Also ask for a one-token completion.
    pub completion: bool,
    /// Shortest pause between polls.
    pub poll_min: Duration,
    /// Longest pause between polls.
    pub poll_max: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// How often the container's liveness is checked.
    pub liveness_every: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15 * 60),
            completion: false,
            poll_min: Duration::from_millis(25),
            poll_max: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            liveness_every: Duration::from_secs(1),
        }
    }
}

impl WaitOptions {
    /// From `vllm.wait_ready`'s options map.
    pub fn from_map(m: &Map) -> Result<Self, ApiError> {
        const CALL: &str = "vllm.wait_ready";
        known_keys(
            CALL,
            m,
            &[
                "timeout",
                "completion",
                "poll",
                "max_poll",
                "request_timeout",
            ],
        )?;
        let mut o = Self::default();
        if let Some(d) = opt_duration(CALL, m, "timeout")? {
            o.timeout = d;
        }
        if let Some(d) = opt_duration(CALL, m, "poll")? {
            o.poll_min = d.max(Duration::from_millis(5));
        }
        if let Some(d) = opt_duration(CALL, m, "max_poll")? {
            o.poll_max = d;
        }
        if let Some(d) = opt_duration(CALL, m, "request_timeout")? {
            o.request_timeout = d.max(Duration::from_millis(10));
        }
        if let Some(v) = m.get("completion") {
            o.completion = v.as_bool().map_err(|t| {
                ApiError::spec(CALL, format!("`completion` must be a bool, found {t}"))
            })?;
        }
        o.poll_max = o.poll_max.max(o.poll_min);
        Ok(o)
    }

    /// The pause after `elapsed` of waiting: a sixteenth of it, within the bounds.
    pub fn pause(&self, elapsed: Duration) -> Duration {
        (elapsed / 16).clamp(self.poll_min, self.poll_max)
    }
}

/// What the ladder needs to know about the container besides HTTP.
pub trait Liveness {
    /// `Some(state)` when the container is gone for good; `None` while it runs (or when
    /// that cannot be told).
    fn exited(&self) -> Option<String>;
    /// The container's last log lines.
    fn logs(&self) -> String;
    /// Whether a signal asked phoenix to stop.
    fn cancelled(&self) -> bool;
}

/// What a successful wait saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// How long it took.
    pub waited: Duration,
    /// The model ids `/v1/models` listed.
    pub models: Vec<String>,
}

/// The ids in a `/v1/models` answer.
pub fn model_ids(body: &str) -> Option<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("data")?
        .as_array()?
        .iter()
        .map(|m| m.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        .collect()
}

/// Walk the readiness ladder for `server`.
pub fn wait_ladder(
    server: &Server,
    opts: &WaitOptions,
    live: &dyn Liveness,
) -> Result<Ready, VllmError> {
    if let Some(k) = &server.api_key {
        let mut v = b"Bearer ".to_vec();
        v.extend_from_slice(k.expose());
        let valid = reqwest::header::HeaderValue::from_bytes(&v).is_ok();
        zeroize::Zeroize::zeroize(&mut v);
        if !valid {
            return Err(VllmError::Spec {
                field: "api_key",
                message: format!("{k} cannot be sent in an HTTP header (control characters)"),
            });
        }
    }
    let client = http::client(opts.request_timeout)?;
    let health = server.url.with_path("/health");
    let models = server.url.with_path("/v1/models");
    let completions = server.url.with_path("/v1/completions");
    let bearer = server.api_key.as_ref().map(Secret::expose);
    let started = Instant::now();
    let mut last_live = started;
    let mut stage = Stage::Loading;
    let mut last: Option<Seen>;
    let fail = |stage: Stage, reason: NotReady, last: Option<Seen>| {
        VllmError::NotReady(Box::new(NotReadyError {
            container: server.container.clone(),
            url: server.url.to_string(),
            stage,
            reason,
            last: SeenText(last),
            logs: live.logs(),
        }))
    };
    loop {
        if live.cancelled() {
            return Err(VllmError::Interrupted);
        }
        match stage {
            Stage::Loading | Stage::Health => match http::send(&client, &health, None, None) {
                Err(c) => {
                    last = Some(Seen::Connection(c));
                    stage = Stage::Loading;
                }
                Ok(r) if r.status == 200 => {
                    stage = Stage::Models;
                    continue;
                }
                Ok(r) if r.status == 503 => {
                    return Err(fail(Stage::Health, NotReady::EngineDead, Some(r.seen())));
                }
                Ok(r) => {
                    last = Some(r.seen());
                    stage = Stage::Health;
                }
            },
            Stage::Models => match http::send(&client, &models, bearer, None) {
                Err(c) => {
                    // The server went away after /health: start over.
                    last = Some(Seen::Connection(c));
                    stage = Stage::Loading;
                }
                Ok(r) if r.status == 401 || r.status == 403 => {
                    return Err(fail(
                        Stage::Models,
                        NotReady::Unauthorized { status: r.status },
                        Some(r.seen()),
                    ));
                }
                Ok(r) if r.status == 200 => {
                    last = Some(r.seen());
                    match model_ids(&r.body) {
                        Some(ids) if ids.contains(&server.model) => {
                            if !opts.completion {
                                return Ok(Ready {
                                    waited: started.elapsed(),
                                    models: ids,
                                });
                            }
                            stage = Stage::Completion;
                            continue;
                        }
                        Some(ids) if !ids.is_empty() => {
                            return Err(fail(
                                Stage::Models,
                                NotReady::WrongModel {
                                    want: server.model.clone(),
                                    found: ids,
                                },
                                last,
                            ));
                        }
                        // An empty list or a body that is not the list yet: poll again.
                        _ => {}
                    }
                }
                Ok(r) => last = Some(r.seen()),
            },
            Stage::Completion => {
                let body = serde_json::json!({
                    "model": server.model,
                    "prompt": "Hello",
                    "max_tokens": 1,
                    "temperature": 0,
                })
                .to_string();
                match http::send(&client, &completions, bearer, Some(JsonBody(&body))) {
                    Err(c) => last = Some(Seen::Connection(c)),
                    Ok(r) if r.status == 200 => {
                        return Ok(Ready {
                            waited: started.elapsed(),
                            models: vec![server.model.clone()],
                        });
                    }
                    Ok(r) if r.status == 401 || r.status == 403 => {
                        return Err(fail(
                            Stage::Completion,
                            NotReady::Unauthorized { status: r.status },
                            Some(r.seen()),
                        ));
                    }
                    Ok(r) if (400..500).contains(&r.status) => {
                        return Err(fail(
                            Stage::Completion,
                            NotReady::CompletionRejected { status: r.status },
                            Some(r.seen()),
                        ));
                    }
                    Ok(r) => last = Some(r.seen()),
                }
            }
        }
        let elapsed = started.elapsed();
        if elapsed >= opts.timeout {
            return Err(fail(stage, NotReady::Timeout { waited: elapsed }, last));
        }
        if last_live.elapsed() >= opts.liveness_every {
            last_live = Instant::now();
            if let Some(state) = live.exited() {
                return Err(fail(stage, NotReady::Exited { state }, last));
            }
        }
        let pause = opts
            .pause(elapsed)
            .min(opts.timeout.saturating_sub(elapsed));
        http::sleep_unless(pause, &|| live.cancelled());
    }
}

/// Liveness from the container through the host.
struct HostLiveness<'a> {
    rt: &'a Runtime,
    server: &'a Server,
}

impl Liveness for HostLiveness<'_> {
    fn exited(&self) -> Option<String> {
        let (rt, s) = (self.rt, self.server);
        match rt.host.ct_status(s.vmid) {
            Ok(CtStatus::Running) => {}
            Ok(other) => return Some(format!("container {} is {other}", s.vmid)),
            Err(e) => tracing::debug!("liveness query failed: {e}"),
        }
        let out = query(
            rt,
            s.vmid,
            &[
                "docker",
                "inspect",
                "--format",
                "{{.State.Status}}",
                &s.container,
            ],
            vec![0, 1],
        )
        .map_err(|e| tracing::debug!("liveness query failed: {e}"))
        .ok()?;
        if out.code == 0 {
            let status = out.stdout_text().trim().to_owned();
            return matches!(status.as_str(), "exited" | "dead")
                .then(|| format!("docker reports the container {status}"));
        }
        // Docker no longer knows it (`--rm` removes an exited container): ask systemd.
        let st = unit_state(rt, s.vmid, &s.unit)
            .map_err(|e| tracing::debug!("liveness query failed: {e}"))
            .ok()?;
        let gone = st.active == "failed" || st.active == "inactive" || st.sub == "auto-restart";
        gone.then(|| {
            format!(
                "the Docker container is gone and {} is {}/{}",
                s.unit, st.active, st.sub
            )
        })
    }

    fn logs(&self) -> String {
        let (rt, s) = (self.rt, self.server);
        let lines = |out: crate::exec::CommandOutput| {
            let text = format!("{}{}", out.stdout_text(), out.stderr_text());
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(50)..].join("\n")
        };
        let docker = query(
            rt,
            s.vmid,
            &["docker", "logs", "--tail", "50", &s.container],
            vec![0],
        );
        let text = match docker {
            Ok(out) => lines(out),
            Err(_) => match query(
                rt,
                s.vmid,
                &[
                    "journalctl",
                    "-u",
                    &s.unit,
                    "-n",
                    "50",
                    "--no-pager",
                    "-o",
                    "cat",
                ],
                vec![0],
            ) {
                Ok(out) => lines(out),
                Err(e) => format!("(no logs: {e})"),
            },
        };
        rt.redactor.redact(&text)
    }

    fn cancelled(&self) -> bool {
        self.rt.cancel.is_cancelled()
    }
}

/// `vllm.wait_ready(server, opts)`: the readiness ladder; skipped in a dry run.
pub fn wait_ready(
    rt: &Runtime,
    server: &Server,
    opts: &WaitOptions,
) -> Result<Option<Ready>, VllmError> {
    if rt.dry_run {
        tracing::info!(url = %server.url, "dry run: not waiting for the vLLM server");
        return Ok(None);
    }
    let ready = wait_ladder(server, opts, &HostLiveness { rt, server }).map_err(|e| match e {
        // A server's body is shown in the error: hide any secret value it may echo.
        VllmError::NotReady(mut b) => {
            if let SeenText(Some(Seen::Status { body, .. })) = &mut b.last {
                *body = rt.redactor.redact(body);
            }
            VllmError::NotReady(b)
        }
        e => e,
    })?;
    tracing::info!(url = %server.url, model = %server.model, waited_ms = ready.waited.as_millis() as u64, "vLLM server ready");
    Ok(Some(ready))
}

/// Register the `vllm` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<VllmApi>("Vllm");

    let start_fn = |api: VllmApi, ct: Dynamic, spec: Map| -> RhaiResult<Map> {
        const CALL: &str = "vllm.start";
        let vmid = vmid_of(CALL, &ct).map_err(script_error)?;
        let o = Overrides::from_map(&spec).map_err(script_error)?;
        let rt = api.runtime();
        let spec = resolve(rt, vmid, &spec, o).map_err(|e| script_error(e.into_api(CALL)))?;
        let server = start(rt, &spec).map_err(|e| script_error(e.into_api(CALL)))?;
        Ok(server.to_map(rt))
    };
    FuncRegistration::new("start")
        .with_params_info(["vllm: Vllm", "ct: Map|int", "Map"])
        .with_comments([
            "/// Start the container's vLLM server (from its config entry) as a systemd service",
            "/// running the pinned `vllm/vllm-openai` image. Returns the server",
            "/// `#{ct, vmid, url, model, container, unit, api_key_set}`. Undo: stop and remove.",
        ])
        .register_into_engine(engine, move |api: VllmApi, ct: Dynamic| {
            start_fn(api, ct, Map::new())
        });
    FuncRegistration::new("start")
        .with_params_info(["vllm: Vllm", "ct: Map|int", "spec: Map", "Map"])
        .with_comments([
            "/// Start with a spec: the config entry (`config.target()`), plus optional `hf_token`",
            "/// and `api_key` (secrets, delivered as 0600 files), `image` (pinned) and",
            "/// `models_dir` (bound into the vLLM container at the same path).",
        ])
        .register_into_engine(engine, start_fn);

    let wait_fn = |api: VllmApi, server: Map, opts: Map| -> RhaiResult<Map> {
        const CALL: &str = "vllm.wait_ready";
        let s = Server::from_map(CALL, &server).map_err(script_error)?;
        let o = WaitOptions::from_map(&opts).map_err(script_error)?;
        let ready =
            wait_ready(api.runtime(), &s, &o).map_err(|e| script_error(e.into_api(CALL)))?;
        let mut m = server;
        m.insert("ready".into(), Dynamic::from_bool(ready.is_some()));
        m.insert(
            "waited_ms".into(),
            Dynamic::from_int(ready.map_or(0, |r| {
                i64::try_from(r.waited.as_millis()).unwrap_or(i64::MAX)
            })),
        );
        Ok(m)
    };
    FuncRegistration::new("wait_ready")
        .with_params_info(["vllm: Vllm", "server: Map", "Map"])
        .with_comments([
            "/// Wait until the server answers: port open → GET /health 200 → the model listed by",
            "/// GET /v1/models. Fails fast on a 503 (engine dead), a wrong model or an exited",
            "/// container; times out after 15 min. Errors carry the stage, the last answer and",
            "/// the container's last 50 log lines. Skipped in a dry run.",
        ])
        .register_into_engine(engine, move |api: VllmApi, server: Map| {
            wait_fn(api, server, Map::new())
        });
    FuncRegistration::new("wait_ready")
        .with_params_info(["vllm: Vllm", "server: Map", "opts: Map", "Map"])
        .with_comments([
            "/// Wait with options: `timeout` (`\"15m\"`), `completion` (bool: also a one-token",
            "/// completion), `poll` and `max_poll` (pause bounds), `request_timeout`.",
        ])
        .register_into_engine(engine, wait_fn);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::http::tests::{closed_port, http, server};
    use crate::config::KvCacheDtype;
    use crate::exec::{CommandOutput, HostCommand, RecordingRunner};
    use crate::types::{ModelId, SecretName, Size};
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::{SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// The example config shipped next to the recipes (CT 901 drdevstral, 902 gateway).
    const CONFIG_901: &str = include_str!("../../recipes/phoenix_lxc_configs.json");

    fn vmid() -> Vmid {
        Vmid::new(901).unwrap()
    }

    /// The example entry's vLLM settings, typed (independent of the loader's details).
    fn example_vllm() -> VllmConfig {
        VllmConfig {
            model: ModelId::new("mistralai/Devstral-Small-2507").unwrap(),
            served_model_name: None,
            tensor_parallel_size: 2,
            max_model_len: Some(128_000),
            kv_cache_dtype: Some(KvCacheDtype::Fp8),
            shm_size: Some(Size::new("16g").unwrap()),
            quantization: None,
            quantization_config: None,
            gpu_memory_utilization: None,
            port: 8000,
            image: None,
        }
    }

    fn secret(name: &str, value: &str) -> Secret {
        Secret::new(
            SecretName::new(name).unwrap(),
            Zeroizing::new(value.as_bytes().to_vec()),
        )
    }

    fn example_spec() -> ServerSpec {
        ServerSpec {
            vmid: vmid(),
            image: crate::settings::DEFAULT_VLLM_IMAGE.into(),
            vllm: example_vllm(),
            gpus: DockerGpus::Count(2),
            models_dir: Some(AbsPath::new("/models").unwrap()),
            hf_token: None,
            api_key: Some(secret("vllm_api_key", "sk-test")),
        }
    }

    fn golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            actual, want,
            "golden {name} differs (UPDATE_GOLDEN=1 to accept)"
        );
    }

    #[test]
    fn unit_file_for_the_example_entry_is_golden() {
        let text = UnitFile::for_server(&example_spec()).render().unwrap();
        golden("vllm-901.service", &text);
    }

    #[test]
    fn docker_run_argv_for_the_example_entry() {
        let s = example_spec();
        assert_eq!(
            s.pull_argv(),
            ["docker", "pull", "vllm/vllm-openai:v0.11.0"]
        );
        assert_eq!(
            s.run_args(),
            [
                "run",
                "--rm",
                "--name",
                "phoenix-vllm-901",
                "--gpus",
                "\"device=0,1\"",
                "--shm-size",
                "16g",
                "-p",
                "8000:8000",
                "-v",
                "/root/.cache/huggingface:/root/.cache/huggingface",
                "-v",
                "/models:/models",
                "-v",
                "/etc/phoenix-vllm:/etc/phoenix-vllm:ro",
                "vllm/vllm-openai:v0.11.0",
                "mistralai/Devstral-Small-2507",
                "--tensor-parallel-size",
                "2",
                "--max-model-len",
                "128000",
                "--kv-cache-dtype",
                "fp8",
                "--served-model-name",
                "mistralai/Devstral-Small-2507",
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
                "--config",
                "/etc/phoenix-vllm/phoenix-vllm-901.yaml"
            ]
        );
    }

    #[test]
    fn optional_flags_ipc_host_quantization_and_no_key() {
        let mut s = example_spec();
        s.api_key = None;
        s.models_dir = None;
        s.gpus = DockerGpus::All;
        s.vllm.shm_size = None;
        s.vllm.kv_cache_dtype = None;
        s.vllm.max_model_len = None;
        s.vllm.quantization = Some("fp8".into());
        s.vllm.quantization_config = Some(serde_json::json!({"activation_scheme": "dynamic"}));
        s.vllm.served_model_name = Some("devstral".into());
        let a = s.run_args();
        let joined = a.join(" ");
        assert!(
            joined.contains("--gpus all --ipc=host -p 8000:8000"),
            "{joined}"
        );
        assert!(!joined.contains("/etc/phoenix-vllm"), "{joined}");
        assert!(!joined.contains("--config"), "{joined}");
        assert!(!joined.contains("--max-model-len"), "{joined}");
        assert!(!joined.contains("--quantization-config-type"), "{joined}");
        assert!(
            joined.ends_with(
                "--tensor-parallel-size 2 --quantization fp8 --quantization-config {\"activation_scheme\":\"dynamic\"} --served-model-name devstral --host 0.0.0.0 --port 8000"
            ),
            "{joined}"
        );
        let unit = UnitFile::for_server(&s).render().unwrap();
        assert!(
            unit.contains(r#""--quantization-config" "{\"activation_scheme\":\"dynamic\"}""#),
            "{unit}"
        );
        s.gpus = DockerGpus::None;
        assert!(!s.run_args().contains(&"--gpus".to_owned()));
    }

    #[test]
    fn systemd_words_escape_hostile_values() {
        assert_eq!(systemd_word("plain").unwrap(), "\"plain\"");
        assert_eq!(systemd_word("100%").unwrap(), "\"100%%\"");
        assert_eq!(systemd_word("%n").unwrap(), "\"%%n\"");
        assert_eq!(systemd_word("$HOME ${X}").unwrap(), "\"$$HOME $${X}\"");
        assert_eq!(systemd_word("a\"b").unwrap(), "\"a\\\"b\"");
        assert_eq!(systemd_word("a\\b").unwrap(), "\"a\\\\b\"");
        assert_eq!(systemd_word(";").unwrap(), "\";\"");
        assert_eq!(systemd_word("'x'").unwrap(), "\"'x'\"");
        let e = systemd_word("model\nExecStartPost=/bin/rm -rf /").unwrap_err();
        assert_eq!(e.what, "ExecStart argument");
        assert!(e.to_string().contains("control character"), "{e}");
        assert!(systemd_word("a\0b").is_err());
        assert!(systemd_word("a\rb").is_err());
        // A hostile served name reaches the unit only as one quoted, escaped word.
        let mut s = example_spec();
        s.vllm.served_model_name = Some("x\" \"--trust-remote-code %h $PATH".into());
        let unit = UnitFile::for_server(&s).render().unwrap();
        assert!(
            unit.contains(r#""--served-model-name" "x\" \"--trust-remote-code %%h $$PATH""#),
            "{unit}"
        );
        s.vllm.served_model_name = Some("x\nExecStartPost=/bin/sh".into());
        assert!(UnitFile::for_server(&s).render().is_err());
    }

    #[test]
    fn images_must_be_pinned() {
        for ok in [
            "vllm/vllm-openai:v0.11.0",
            "registry.local:5000/vllm/vllm-openai:v0.11.0",
            "vllm/vllm-openai@sha256:0123abcd",
        ] {
            check_image(ok).unwrap();
        }
        for (bad, why) in [
            ("vllm/vllm-openai", "has no tag"),
            ("vllm/vllm-openai:latest", "`latest` is not pinned"),
            ("registry.local:5000/vllm", "has no tag"),
            ("--privileged", "not an image reference"),
            ("vllm/x:1 ; rm", "not an image reference"),
        ] {
            let e = check_image(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.starts_with("`image`"), "{bad}: {e}");
        }
    }

    #[test]
    fn api_key_yaml_is_quoted() {
        let mut s = example_spec();
        s.api_key = Some(secret("vllm_api_key", "k\"e\\y"));
        let y = s.config_yaml().unwrap().unwrap();
        assert_eq!(y.as_slice(), b"api-key: \"k\\\"e\\\\y\"\n");
        s.api_key = Some(secret("vllm_api_key", "a\nb"));
        let e = s.config_yaml().unwrap_err().to_string();
        assert!(
            e.contains("«secret:vllm_api_key»") && !e.contains("a\nb"),
            "{e}"
        );
        s.api_key = None;
        assert!(s.config_yaml().unwrap().is_none());
    }

    // ----- vllm.start against a PVE host whose commands are answered in-process -----

    /// The state of the fake container 901.
    #[derive(Default)]
    struct FakeCt {
        files: Mutex<BTreeMap<String, (Vec<u8>, String)>>,
        dirs: Mutex<BTreeSet<String>>,
        image: AtomicBool,
        up: AtomicBool,
        pull_fails: AtomicBool,
        /// Executables present in the container.
        installed: Mutex<BTreeSet<String>>,
        docker_running: AtomicBool,
        runtimes: Mutex<String>,
        driver: Mutex<String>,
        /// What `docker inspect` reports: `None` running, `Some("")` no such container.
        docker_state: Mutex<Option<String>>,
    }

    fn out(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput {
            code,
            stdout: stdout.as_bytes().to_vec(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    fn answer(ct: &FakeCt, cmd: &HostCommand) -> CommandOutput {
        let argv = cmd.argv();
        let tool = argv[0].rsplit('/').next().unwrap().to_owned();
        if tool == "nvidia-smi" {
            return if argv[1] == "-q" {
                out(0, "", "")
            } else {
                out(
                    0,
                    "0, 00000000:00:06.0, GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n",
                    "",
                )
            };
        }
        if tool == "pveversion" {
            return out(
                0,
                "pve-manager/8.4.1/2a5fa54a (running kernel: 6.8.12-4-pve)\n",
                "",
            );
        }
        match argv[1].as_str() {
            "status" => out(0, "status: running\n", ""),
            "push" => {
                let content = std::fs::read(&argv[3]).unwrap();
                ct.files
                    .lock()
                    .unwrap()
                    .insert(argv[4].clone(), (content, argv[6].clone()));
                out(0, "", "")
            }
            "exec" => {
                let i = argv.iter().position(|a| a == "--").unwrap();
                let inner: Vec<&str> = argv[i + 1..].iter().map(String::as_str).collect();
                let files = ct.files.lock().unwrap();
                match inner.as_slice() {
                    ["cat", p] => match files.get(*p) {
                        Some((c, _)) => CommandOutput {
                            code: 0,
                            stdout: c.clone(),
                            stderr: Vec::new(),
                        },
                        None => out(1, "", "cat: No such file or directory"),
                    },
                    ["test", "-e", p] => out(i32::from(!files.contains_key(*p)), "", ""),
                    ["test", "-x", p] => out(
                        i32::from(!ct.installed.lock().unwrap().contains(*p)),
                        "",
                        "",
                    ),
                    ["docker", "version", ..] => out(
                        i32::from(!ct.docker_running.load(Ordering::SeqCst)),
                        "27.5.1\n",
                        "",
                    ),
                    ["apt-get", "-q", "update"] => out(0, "", ""),
                    ["systemctl", "is-active", "--quiet", _] => {
                        out(if ct.up.load(Ordering::SeqCst) { 0 } else { 3 }, "", "")
                    }
                    ["apt-get", "install", .., pkg] => {
                        let bin = match *pkg {
                            "docker.io" => "/usr/bin/docker",
                            "nvidia-container-toolkit" => "/usr/bin/nvidia-ctk",
                            other => panic!("unexpected package {other}"),
                        };
                        ct.installed.lock().unwrap().insert(bin.to_owned());
                        out(0, "", "")
                    }
                    ["systemctl", "enable", "--now", "docker.service"] => {
                        ct.docker_running.store(true, Ordering::SeqCst);
                        out(0, "", "")
                    }
                    ["docker", "info", "--format", "{{json .Runtimes}}"] => {
                        out(0, &ct.runtimes.lock().unwrap(), "")
                    }
                    ["nvidia-ctk", "runtime", "configure", "--runtime=docker"] => {
                        *ct.runtimes.lock().unwrap() =
                            r#"{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}"#.into();
                        out(0, "", "")
                    }
                    [
                        "nvidia-ctk",
                        "config",
                        "--set",
                        "nvidia-container-cli.no-cgroups=true",
                        "--in-place",
                    ] => {
                        drop(files);
                        ct.files.lock().unwrap().insert(
                            "/etc/nvidia-container-runtime/config.toml".into(),
                            (
                                b"[nvidia-container-cli]\nno-cgroups = true\n".to_vec(),
                                "0644".into(),
                            ),
                        );
                        out(0, "", "")
                    }
                    [
                        "nvidia-smi",
                        "--query-gpu=driver_version",
                        "--format=csv,noheader",
                    ] => out(
                        0,
                        &{
                            let d = ct.driver.lock().unwrap().clone();
                            format!("{d}\n{d}\n")
                        },
                        "",
                    ),
                    ["test", "-d", d] => {
                        out(i32::from(!ct.dirs.lock().unwrap().contains(*d)), "", "")
                    }
                    ["mkdir", "-p", "-m", "0700", d] => {
                        ct.dirs.lock().unwrap().insert((*d).to_owned());
                        out(0, "", "")
                    }
                    ["docker", "image", "inspect", ..] => out(
                        i32::from(!ct.image.load(Ordering::SeqCst)),
                        "sha256:abc\n",
                        "",
                    ),
                    ["docker", "pull", img] => {
                        if ct.pull_fails.load(Ordering::SeqCst) {
                            out(
                                125,
                                "",
                                &format!(
                                    "Error response from daemon: manifest for {img} not found"
                                ),
                            )
                        } else {
                            ct.image.store(true, Ordering::SeqCst);
                            out(0, "", "")
                        }
                    }
                    ["systemctl", "show", ..] => out(
                        0,
                        if ct.up.load(Ordering::SeqCst) {
                            "ActiveState=active\nSubState=running\nUnitFileState=enabled\n"
                        } else {
                            "ActiveState=inactive\nSubState=dead\nUnitFileState=disabled\n"
                        },
                        "",
                    ),
                    ["systemctl", "enable", "--now", _] => {
                        ct.up.store(true, Ordering::SeqCst);
                        out(0, "", "")
                    }
                    ["systemctl", "daemon-reload" | "restart", ..] => out(0, "", ""),
                    [
                        "docker",
                        "inspect",
                        "--format",
                        "{{.State.Status}}",
                        "phoenix-vllm-901",
                    ] => match ct.docker_state.lock().unwrap().as_deref() {
                        None => out(0, "running\n", ""),
                        Some("") => out(1, "\n", "Error: No such object: phoenix-vllm-901"),
                        Some(state) => out(0, &format!("{state}\n"), ""),
                    },
                    ["docker", "logs", "--tail", "50", "phoenix-vllm-901"] => {
                        out(0, "INFO Starting vLLM API server\n", "WARNING slow disk\n")
                    }
                    ["ip", "-j", "-4", "addr", "show", "dev", "eth0"] => out(
                        0,
                        r#"[{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"127.77.0.5","prefixlen":24}]}]"#,
                        "",
                    ),
                    other => panic!("unexpected command in the container: {other:?}"),
                }
            }
            other => panic!("unexpected pct subcommand {other}: {argv:?}"),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        rt: Arc<Runtime>,
        runner: Arc<RecordingRunner>,
        ct: Arc<FakeCt>,
    }

    fn fixture(dry_run: bool, running: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let mut env = std::collections::HashMap::new();
        std::fs::write(root.join("phoenix.toml"), "").unwrap();
        env.insert(
            "PHOENIX_SETTINGS".to_owned(),
            root.join("phoenix.toml").display().to_string(),
        );
        for (k, d) in [
            ("PHOENIX_STATE_DIR", "state"),
            ("PHOENIX_LOG_DIR", "logs"),
            ("PHOENIX_SECRETS_DIR", "secrets"),
            ("PHOENIX_SECRET_KEY", "key/secret.key"),
            ("PHOENIX_PVE_LXC_DIR", "pve/lxc"),
            ("PHOENIX_DEV_DIR", "dev"),
        ] {
            env.insert(k.to_owned(), root.join(d).display().to_string());
        }
        let settings = crate::settings::Settings::resolve_with(
            &crate::settings::FlagOverrides::default(),
            &move |k| env.get(k).cloned(),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("pve/lxc")).unwrap();
        if running {
            std::fs::write(
                root.join("pve/lxc/901.conf"),
                "hostname: drdevstral\ntags: phoenix\n",
            )
            .unwrap();
        }
        let ct = Arc::new(FakeCt::default());
        let c2 = Arc::clone(&ct);
        let runner = Arc::new(RecordingRunner::new(move |cmd| answer(&c2, cmd)));
        let host = Arc::new(crate::host::pve::PveHost::new(
            crate::host::pve::PvePaths::from_settings(&settings),
            Arc::clone(&runner) as Arc<dyn crate::exec::Runner>,
        ));
        let mut config =
            crate::config::load_str(std::path::Path::new("test-config.json"), CONFIG_901).unwrap();
        let e = config.lxc.get_mut(&vmid()).unwrap();
        e.gpus = Some("0,1".parse().unwrap());
        e.vllm = Some(example_vllm());
        let redactor = crate::exec::Redactor::default();
        let journal = if dry_run {
            crate::journal::Journal::in_memory("r1")
        } else {
            crate::journal::Journal::open(&settings.state_dir.value, "r1").unwrap()
        };
        let rt = Arc::new(Runtime {
            secrets: crate::secret::SecretStore::new(&settings, redactor.clone()),
            settings,
            config: Arc::new(config),
            selected: Vec::new(),
            recipe_name: "drdevstral.rhai".into(),
            host,
            journal,
            redactor,
            dry_run,
            plan: None,
            cancel: crate::exec::CancelFlag::default(),
            run_id: "r1".into(),
            notes: Mutex::new(Vec::new()),
        });
        Fixture {
            _dir: dir,
            rt,
            runner,
            ct,
        }
    }

    /// The inner argv of every mutating command (`pct exec 901 … -- argv`, or `push DEST`).
    fn mutations(runner: &RecordingRunner) -> Vec<String> {
        runner
            .calls()
            .iter()
            .filter(|c| c.is_mutating())
            .map(|c| {
                let a = c.argv();
                if a[1] == "push" {
                    format!("push {} {}", a[4], a[6])
                } else {
                    let i = a.iter().position(|x| x == "--").unwrap();
                    a[i + 1..].join(" ")
                }
            })
            .collect()
    }

    fn spec_map(with_secrets: bool) -> Map {
        let mut m = Map::new();
        m.insert("models_dir".into(), "/models".into());
        if with_secrets {
            m.insert(
                "hf_token".into(),
                Dynamic::from(secret("hf_token", "hf_SECRETTOKEN")),
            );
            m.insert(
                "api_key".into(),
                Dynamic::from(secret("vllm_api_key", "sk-SECRETKEY")),
            );
        }
        m
    }

    #[test]
    fn start_pulls_pushes_enables_and_is_idempotent() {
        let f = fixture(false, true);
        let map = spec_map(true);
        let spec = resolve(&f.rt, vmid(), &map, Overrides::from_map(&map).unwrap()).unwrap();
        assert_eq!(spec.image, "vllm/vllm-openai:v0.11.0");
        let server = start(&f.rt, &spec).unwrap();
        assert_eq!(
            mutations(&f.runner),
            [
                "docker pull vllm/vllm-openai:v0.11.0",
                "mkdir -p -m 0700 /root/.cache/huggingface",
                "push /root/.cache/huggingface/token 0600",
                "mkdir -p -m 0700 /etc/phoenix-vllm",
                "push /etc/phoenix-vllm/phoenix-vllm-901.yaml 0600",
                "push /etc/systemd/system/phoenix-vllm-901.service 0644",
                "systemctl daemon-reload",
                "systemctl enable --now phoenix-vllm-901.service",
            ]
        );
        let files = f.ct.files.lock().unwrap().clone();
        assert_eq!(files["/root/.cache/huggingface/token"].0, b"hf_SECRETTOKEN");
        assert_eq!(
            files["/etc/phoenix-vllm/phoenix-vllm-901.yaml"].0,
            b"api-key: \"sk-SECRETKEY\"\n"
        );
        let unit = String::from_utf8(
            files["/etc/systemd/system/phoenix-vllm-901.service"]
                .0
                .clone(),
        )
        .unwrap();
        assert_eq!(unit, UnitFile::for_server(&spec).render().unwrap());
        // No secret in any argv.
        for c in f.runner.calls() {
            let a = c.argv().join(" ");
            assert!(!a.contains("SECRET"), "{a}");
        }
        // The URL is the address the host reports, never the configured 10.0.0.111.
        assert_eq!(server.url.as_str(), "http://127.77.0.5:8000/");
        let m = server.to_map(&f.rt);
        assert_eq!(
            m["url"].clone().into_string().unwrap(),
            "http://127.77.0.5:8000"
        );
        assert_eq!(
            m["model"].clone().into_string().unwrap(),
            "mistralai/Devstral-Small-2507"
        );
        assert_eq!(
            m["container"].clone().into_string().unwrap(),
            "phoenix-vllm-901"
        );
        assert!(m["api_key_set"].as_bool().unwrap());
        // Undo steps were recorded, compensations in the right order.
        let journal = std::fs::read_to_string(f.rt.journal.path()).unwrap();
        let intents: Vec<serde_json::Value> = journal
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "intent")
            .collect();
        let steps: Vec<&str> = intents
            .iter()
            .map(|v| v["step"].as_str().unwrap())
            .collect();
        assert_eq!(
            steps,
            [
                "lxc.push:901:/root/.cache/huggingface/token",
                "vllm.start:901:mkdir:/etc/phoenix-vllm",
                "lxc.push:901:/etc/phoenix-vllm/phoenix-vllm-901.yaml",
                "lxc.push:901:/etc/systemd/system/phoenix-vllm-901.service",
                "vllm.start:901:container",
                "vllm.start:901:service",
            ]
        );
        assert_eq!(
            intents[4]["undo"]["argv"],
            serde_json::json!(["docker", "rm", "-f", "phoenix-vllm-901"])
        );
        assert_eq!(
            intents[5]["undo"]["argv"],
            serde_json::json!(["systemctl", "disable", "--now", "phoenix-vllm-901.service"])
        );
        assert!(!journal.contains("SECRET"));

        // Second run: nothing mutates.
        let before = f.runner.calls().len();
        start(&f.rt, &spec).unwrap();
        let again: Vec<String> = f.runner.calls()[before..]
            .iter()
            .filter(|c| c.is_mutating())
            .map(|c| c.argv().join(" "))
            .collect();
        assert!(again.is_empty(), "{again:?}");

        // A changed key: the file is replaced and the service restarted.
        let mut changed = spec.clone();
        changed.api_key = Some(secret("vllm_api_key", "sk-OTHER"));
        let before = f.runner.calls().len();
        start(&f.rt, &changed).unwrap();
        let m: Vec<String> = mutations(&f.runner).split_off(
            mutations(&f.runner).len()
                - (f.runner.calls()[before..]
                    .iter()
                    .filter(|c| c.is_mutating())
                    .count()),
        );
        assert_eq!(
            m,
            [
                "push /etc/phoenix-vllm/phoenix-vllm-901.yaml 0600",
                "systemctl restart phoenix-vllm-901.service"
            ]
        );
    }

    #[test]
    fn failed_pull_is_its_own_error_with_stderr() {
        let f = fixture(false, true);
        f.ct.pull_fails.store(true, Ordering::SeqCst);
        let mut map = Map::new();
        map.insert("image".into(), "vllm/vllm-openai:v9.9.9".into());
        let spec = resolve(&f.rt, vmid(), &map, Overrides::from_map(&map).unwrap()).unwrap();
        let e = start(&f.rt, &spec).unwrap_err();
        assert!(matches!(e, VllmError::Pull { .. }), "{e}");
        let text = e.into_api("vllm.start").to_string();
        assert!(
            text.starts_with(
                "vllm.start: docker pull vllm/vllm-openai:v9.9.9 failed inside container 901"
            ),
            "{text}"
        );
        assert!(
            text.contains("exit 125")
                && text.contains("manifest for vllm/vllm-openai:v9.9.9 not found"),
            "{text}"
        );
        // Nothing after the pull ran.
        assert_eq!(
            mutations(&f.runner),
            ["docker pull vllm/vllm-openai:v9.9.9"]
        );
    }

    #[test]
    fn spec_overrides_are_checked() {
        let f = fixture(false, true);
        let mut map = Map::new();
        map.insert("hf_token".into(), "hf_plaintext".into());
        let e = Overrides::from_map(&map).unwrap_err().to_string();
        assert!(e.contains("`hf_token` must be a secret"), "{e}");
        let mut map = Map::new();
        map.insert("image".into(), "vllm/vllm-openai:latest".into());
        let e = resolve(&f.rt, vmid(), &map, Overrides::from_map(&map).unwrap()).unwrap_err();
        assert!(e.to_string().contains("`latest` is not pinned"), "{e}");
        let e = resolve(
            &f.rt,
            Vmid::new(905).unwrap(),
            &Map::new(),
            Overrides::default(),
        )
        .unwrap_err();
        assert!(matches!(e, VllmError::Api(_)), "{e}");
    }

    #[test]
    fn dry_run_records_the_plan_without_a_container() {
        let f = fixture(true, false);
        let spec = resolve(&f.rt, vmid(), &Map::new(), Overrides::default()).unwrap();
        let server = start(&f.rt, &spec).unwrap();
        assert_eq!(
            mutations(&f.runner),
            [
                "docker pull vllm/vllm-openai:v0.11.0",
                "push /etc/systemd/system/phoenix-vllm-901.service 0644",
                "systemctl daemon-reload",
                "systemctl enable --now phoenix-vllm-901.service",
            ]
        );
        assert_eq!(server.url.as_str(), "http://0.0.0.0:8000/");
        assert!(
            wait_ready(&f.rt, &server, &WaitOptions::default())
                .unwrap()
                .is_none()
        );
    }

    // ----- the readiness ladder against loopback servers -----

    struct FakeLive {
        exited: Option<String>,
        checks: AtomicUsize,
        cancel: AtomicBool,
    }

    impl FakeLive {
        fn running() -> Self {
            Self {
                exited: None,
                checks: AtomicUsize::new(0),
                cancel: AtomicBool::new(false),
            }
        }
    }

    impl Liveness for FakeLive {
        fn exited(&self) -> Option<String> {
            self.checks.fetch_add(1, Ordering::SeqCst);
            self.exited.clone()
        }
        fn logs(&self) -> String {
            "INFO loading weights\nERROR CUDA out of memory".into()
        }
        fn cancelled(&self) -> bool {
            self.cancel.load(Ordering::SeqCst)
        }
    }

    fn srv(addr: SocketAddr, key: Option<&str>) -> Server {
        Server {
            vmid: vmid(),
            url: HttpUrl::parse(&format!("http://{addr}/")).unwrap(),
            model: "mistralai/Devstral-Small-2507".into(),
            container: "phoenix-vllm-901".into(),
            unit: "phoenix-vllm-901.service".into(),
            api_key: key.map(|k| secret("vllm_api_key", k)),
        }
    }

    fn quick() -> WaitOptions {
        WaitOptions {
            timeout: Duration::from_secs(5),
            liveness_every: Duration::from_millis(50),
            ..WaitOptions::default()
        }
    }

    const MODELS_OK: &str = r#"{"object":"list","data":[{"id":"mistralai/Devstral-Small-2507","object":"model","owned_by":"vllm","max_model_len":128000}]}"#;

    /// Nothing listens for `delay`, then `answer` serves (the port is bound late, like vLLM).
    fn late_server(
        delay: Duration,
        answer: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (SocketAddr, Arc<Mutex<Option<Instant>>>) {
        let addr = closed_port();
        let bound = Arc::new(Mutex::new(None));
        let b2 = Arc::clone(&bound);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let l = TcpListener::bind(addr).unwrap();
            *b2.lock().unwrap() = Some(Instant::now());
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                let req = crate::api::http::tests::read_request(&mut s);
                let _ = std::io::Write::write_all(&mut s, answer(&req).as_bytes());
            }
        });
        (addr, bound)
    }

    fn route(req: &str) -> String {
        if req.starts_with("GET /health") {
            http(200, "")
        } else if req.starts_with("GET /v1/models") {
            http(200, MODELS_OK)
        } else if req.starts_with("POST /v1/completions") {
            http(200, r#"{"choices":[{"text":" Hi"}]}"#)
        } else {
            http(404, "{\"detail\":\"Not Found\"}")
        }
    }

    #[test]
    fn refused_then_health_then_models() {
        let (addr, _) = late_server(Duration::from_millis(300), route);
        let live = FakeLive::running();
        let r = wait_ladder(&srv(addr, None), &quick(), &live).unwrap();
        assert!(r.waited >= Duration::from_millis(300), "{:?}", r.waited);
        assert_eq!(r.models, ["mistralai/Devstral-Small-2507"]);
        assert!(live.checks.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn eof_while_loading_then_ready() {
        // Accepts and closes (a published port before vLLM listens) for 5 connections.
        let (addr, _) = server(|n, req| if n < 5 { None } else { Some(route(req)) });
        wait_ladder(&srv(addr, None), &quick(), &FakeLive::running()).unwrap();
    }

    #[test]
    fn health_503_fails_fast() {
        let (addr, count) = server(|_, _| Some(http(503, "")));
        let started = Instant::now();
        let e = wait_ladder(&srv(addr, None), &quick(), &FakeLive::running()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let t = e.to_string();
        assert!(
            t.contains("(stage: health): GET /health answered 503: the engine is dead"),
            "{t}"
        );
        assert!(t.contains("last seen: HTTP 503 with an empty body"), "{t}");
        assert!(t.contains("last log lines of phoenix-vllm-901:\nINFO loading weights\nERROR CUDA out of memory"), "{t}");
    }

    #[test]
    fn wrong_model_names_both_ids() {
        let (addr, _) = server(|_, req| {
            Some(if req.starts_with("GET /health") {
                http(200, "")
            } else {
                http(
                    200,
                    r#"{"object":"list","data":[{"id":"facebook/opt-125m","object":"model"}]}"#,
                )
            })
        });
        let e = wait_ladder(&srv(addr, None), &quick(), &FakeLive::running()).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("(stage: models): the server serves [\"facebook/opt-125m\"], not the configured model \"mistralai/Devstral-Small-2507\""),
            "{t}"
        );
    }

    #[test]
    fn timeout_names_stage_last_answer_and_logs() {
        let addr = closed_port();
        let mut o = quick();
        o.timeout = Duration::from_millis(300);
        let started = Instant::now();
        let e = wait_ladder(&srv(addr, None), &o, &FakeLive::running()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        let t = e.to_string();
        assert!(t.contains(&format!("vLLM server phoenix-vllm-901 at http://{addr}/ is not ready (stage: loading): timed out after 0.")), "{t}");
        assert!(t.contains("last seen: connection refused"), "{t}");
        assert!(t.contains("ERROR CUDA out of memory"), "{t}");

        // Stuck at health (200 never comes): the stage says so, with the last status.
        let (addr, _) = server(|_, _| Some(http(500, "boom")));
        let e = wait_ladder(&srv(addr, None), &o, &FakeLive::running()).unwrap_err();
        let t = e.to_string();
        assert!(t.contains("(stage: health): timed out"), "{t}");
        assert!(t.contains("last seen: HTTP 500, body \"boom\""), "{t}");

        // Model list stays empty.
        let (addr, _) = server(|_, req| {
            Some(if req.starts_with("GET /health") {
                http(200, "")
            } else {
                http(200, r#"{"object":"list","data":[]}"#)
            })
        });
        let e = wait_ladder(&srv(addr, None), &o, &FakeLive::running()).unwrap_err();
        assert!(e.to_string().contains("(stage: models): timed out"), "{e}");
    }

    #[test]
    fn exited_container_fails_fast() {
        let addr = closed_port();
        let live = FakeLive {
            exited: Some("docker reports the container exited".into()),
            ..FakeLive::running()
        };
        let started = Instant::now();
        let e = wait_ladder(&srv(addr, None), &quick(), &live).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            e.to_string().contains("(stage: loading): the container is no longer running (docker reports the container exited)"),
            "{e}"
        );
    }

    #[test]
    fn bearer_on_v1_only_and_completion() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = Arc::clone(&seen);
        let (addr, _) = server(move |_, req| {
            s2.lock().unwrap().push(req.to_owned());
            let authed = req
                .to_lowercase()
                .contains("authorization: bearer sk-123\r\n");
            Some(if req.starts_with("GET /health") {
                http(200, "")
            } else if !authed {
                http(401, "{\"error\":\"Unauthorized\"}")
            } else {
                route(req)
            })
        });
        let mut o = quick();
        o.completion = true;
        wait_ladder(&srv(addr, Some("sk-123")), &o, &FakeLive::running()).unwrap();
        let reqs = seen.lock().unwrap().clone();
        assert_eq!(reqs.len(), 3, "{reqs:?}");
        assert!(
            !reqs[0].to_lowercase().contains("authorization"),
            "{}",
            reqs[0]
        );
        assert!(reqs[2].starts_with("POST /v1/completions"), "{}", reqs[2]);
        assert!(reqs[2].contains("\"max_tokens\":1"), "{}", reqs[2]);
        // The wrong key fails fast, and its bytes appear nowhere in the error.
        let e =
            wait_ladder(&srv(addr, Some("sk-wrong")), &quick(), &FakeLive::running()).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("(stage: models): the API key was refused (HTTP 401)"),
            "{t}"
        );
        assert!(!t.contains("sk-wrong"), "{t}");
    }

    #[test]
    fn cancel_interrupts_the_wait() {
        let addr = closed_port();
        let live = FakeLive::running();
        live.cancel.store(true, Ordering::SeqCst);
        let e = wait_ladder(&srv(addr, None), &quick(), &live).unwrap_err();
        assert!(matches!(e, VllmError::Interrupted));
    }

    #[test]
    fn poll_interval_starts_fast_and_is_capped() {
        let o = WaitOptions::default();
        assert_eq!(o.pause(Duration::ZERO), Duration::from_millis(25));
        assert_eq!(
            o.pause(Duration::from_secs(1)),
            Duration::from_micros(62_500)
        );
        assert_eq!(o.pause(Duration::from_secs(4)), Duration::from_millis(250));
        assert_eq!(o.pause(Duration::from_secs(600)), Duration::from_secs(2));
        let mut m = Map::new();
        m.insert("timeout".into(), "2s".into());
        m.insert("completion".into(), Dynamic::from_bool(true));
        let w = WaitOptions::from_map(&m).unwrap();
        assert_eq!((w.timeout, w.completion), (Duration::from_secs(2), true));
        m.insert("attempts".into(), Dynamic::from_int(1));
        assert!(
            WaitOptions::from_map(&m)
                .unwrap_err()
                .to_string()
                .contains("unknown option `attempts`")
        );
    }

    /// An engine with every family registered and the handles resolved by name everywhere
    /// (top level, `fn`s, modules), as DESIGN.md §10 asks of the script engine; `log.info`
    /// (another family, being built) is a no-op here.
    fn script_engine(rt: &Arc<Runtime>) -> rhai::Engine {
        let mut engine = rhai::Engine::new();
        crate::api::register_all(&mut engine);
        engine.register_fn("info", |_: crate::api::log::LogApi, _: &str| {});
        let handles: std::collections::HashMap<&str, Dynamic> =
            crate::api::handles(rt).into_iter().collect();
        // `on_var` is marked deprecated only as "volatile"; the script engine uses it too.
        #[allow(deprecated)]
        engine.on_var(move |name, _, _| Ok(handles.get(name).cloned()));
        engine
    }

    /// The registered methods, called from a script (top level and a `fn`): `vllm.start`
    /// returns the server map, `vllm.wait_ready` fails with the stage and the logs,
    /// `http.probe` answers.
    #[test]
    fn registered_methods_work_from_a_script() {
        let f = fixture(false, true);
        let engine = script_engine(&f.rt);
        let mut scope = rhai::Scope::new();
        let s: Map = engine
            .eval_with_scope(&mut scope, r#"vllm.start(901, #{ models_dir: "/models" })"#)
            .unwrap();
        assert_eq!(
            s["url"].clone().into_string().unwrap(),
            "http://127.77.0.5:8000"
        );
        assert!(!s["api_key_set"].as_bool().unwrap());
        scope.push("server", s);
        // 127.77.0.5 is loopback: nothing listens there, so the ladder stays at `loading`.
        let err = engine
            .eval_with_scope::<Dynamic>(
                &mut scope,
                r#"vllm.wait_ready(server, #{ timeout: "300ms", max_poll: "50ms" })"#,
            )
            .unwrap_err();
        let rhai::EvalAltResult::ErrorRuntime(d, _) = *err else {
            panic!("{err}")
        };
        let api = d.read_lock::<crate::api::SharedApiError>().unwrap().clone();
        let text = api.to_string();
        assert!(text.starts_with("vllm.wait_ready: vLLM server phoenix-vllm-901 at http://127.77.0.5:8000/ is not ready (stage: loading): timed out"), "{text}");
        assert!(text.contains("last seen: connection refused"), "{text}");
        assert!(
            text.contains("INFO Starting vLLM API server\nWARNING slow disk"),
            "{text}"
        );

        let (addr, _) = server(|_, _| Some(http(200, "pong")));
        let body: String = engine
            .eval_with_scope(
                &mut scope,
                &format!(r#"fn p(u) {{ http.probe(u, #{{ attempts: 2 }}) }} p("http://{addr}/ping").body"#),
            )
            .unwrap();
        assert_eq!(body, "pong");
    }

    /// The stdlib modules run against the fake container: Docker and the toolkit are
    /// installed with the exact argv, a second run changes nothing, and a driver mismatch
    /// is a clear error naming both versions.
    #[test]
    fn stdlib_modules_install_idempotently_and_check_the_driver() {
        // `lxc.exec` has no read-only intent yet, so its queries count as mutating: leave
        // them out to see what changes.
        let changes = |r: &RecordingRunner| -> Vec<String> {
            mutations(r)
                .into_iter()
                .filter(|c| {
                    ![
                        "test ",
                        "docker version",
                        "docker info",
                        "cat ",
                        "nvidia-smi ",
                        "systemctl is-active",
                    ]
                    .iter()
                    .any(|q| c.starts_with(q))
                })
                .collect()
        };
        let f = fixture(false, true);
        let mut engine = script_engine(&f.rt);
        let stdlib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib");
        engine.set_module_resolver(rhai::module_resolvers::FileModuleResolver::new_with_path(
            stdlib,
        ));

        engine
            .run(r#"import "docker" as docker; docker::install(901);"#)
            .unwrap();
        assert_eq!(
            changes(&f.runner),
            [
                "apt-get -q update",
                "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold docker.io",
                "systemctl enable --now docker.service",
            ]
        );
        let n = changes(&f.runner).len();
        engine
            .run(r#"import "docker" as docker; docker::install(901);"#)
            .unwrap();
        assert_eq!(changes(&f.runner).len(), n, "{:?}", changes(&f.runner));

        f.ct.installed
            .lock()
            .unwrap()
            .insert("/usr/bin/nvidia-smi".into());
        *f.ct.driver.lock().unwrap() = "550.54.14".into();
        let e = engine
            .run(r#"import "nvidia" as nvidia; nvidia::setup(901, true);"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NVIDIA driver mismatch: the container's userspace is 550.54.14, the host's driver is 580.159.04"),
            "{e}"
        );
        assert_eq!(
            changes(&f.runner)[n..],
            [
                "apt-get -q update",
                "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold nvidia-container-toolkit",
                "nvidia-ctk runtime configure --runtime=docker",
                "systemctl restart docker.service",
                "nvidia-ctk config --set nvidia-container-cli.no-cgroups=true --in-place",
            ]
        );
        *f.ct.driver.lock().unwrap() = "580.159.04".into();
        let n = changes(&f.runner).len();
        engine
            .run(r#"import "nvidia" as nvidia; nvidia::setup(901, true);"#)
            .unwrap();
        assert_eq!(changes(&f.runner).len(), n, "{:?}", changes(&f.runner));

        engine
            .run(
                r#"import "systemd" as systemd;
                   systemd::daemon_reload(901);
                   if !systemd::is_active(901, "phoenix-vllm-901.service") {
                       systemd::enable_now(901, "phoenix-vllm-901.service");
                   }"#,
            )
            .unwrap();
        assert_eq!(
            changes(&f.runner)[n..],
            [
                "systemctl daemon-reload",
                "systemctl enable --now phoenix-vllm-901.service"
            ]
        );
    }

    /// Liveness through the host: Docker's state first, systemd's when Docker no longer
    /// knows the container (`--rm`), and the stopped LXC container itself.
    #[test]
    fn host_liveness_reads_docker_then_systemd() {
        let f = fixture(false, true);
        let s = srv(closed_port(), None);
        let live = HostLiveness {
            rt: &f.rt,
            server: &s,
        };
        assert_eq!(live.exited(), None);
        *f.ct.docker_state.lock().unwrap() = Some("exited".into());
        assert_eq!(
            live.exited().as_deref(),
            Some("docker reports the container exited")
        );
        // Gone from Docker, service still starting: not (yet) a failure.
        *f.ct.docker_state.lock().unwrap() = Some(String::new());
        f.ct.up.store(true, Ordering::SeqCst);
        assert_eq!(live.exited(), None);
        f.ct.up.store(false, Ordering::SeqCst);
        assert_eq!(
            live.exited().as_deref(),
            Some("the Docker container is gone and phoenix-vllm-901.service is inactive/dead")
        );
        assert_eq!(
            live.logs(),
            "INFO Starting vLLM API server\nWARNING slow disk"
        );
        // The LXC container stopped.
        std::fs::remove_file(f._dir.path().join("pve/lxc/901.conf")).unwrap();
        assert_eq!(live.exited().as_deref(), Some("container 901 is absent"));
    }

    /// The stdlib modules and the recipe parse, and define what recipes call.
    #[test]
    fn stdlib_and_recipe_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let engine = rhai::Engine::new();
        for (file, fns) in [
            (
                "stdlib/docker.rhai",
                &["apt_options", "works", "install"][..],
            ),
            (
                "stdlib/nvidia.rhai",
                &[
                    "install_toolkit",
                    "configure_docker",
                    "no_cgroups",
                    "check_driver",
                    "setup",
                ][..],
            ),
            (
                "stdlib/systemd.rhai",
                &["daemon_reload", "is_active", "enable_now"][..],
            ),
            ("recipes/drdevstral.rhai", &[][..]),
        ] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let ast = engine
                .compile(&text)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let defined: Vec<String> = ast.iter_functions().map(|f| f.name.to_string()).collect();
            for f in fns {
                assert!(
                    defined.iter().any(|d| d == f),
                    "{file} lacks fn {f}: {defined:?}"
                );
            }
            // No shell, no environment tricks, no hard-coded container id.
            for bad in ["\"sh\"", "\"bash\"", "\"-c\"", "DEBIAN_FRONTEND", "901"] {
                assert!(!text.contains(bad), "{file} contains {bad}");
            }
        }
    }

    /// Readiness latency: how long after the server bound its port `wait_ready` noticed.
    /// Run with `cargo test --lib vllm::tests::readiness_latency -- --ignored --nocapture`.
    #[test]
    #[ignore = "measurement, prints numbers"]
    fn readiness_latency() {
        for load in [200u64, 1000, 3000, 4000] {
            let (addr, bound) = late_server(Duration::from_millis(load), route);
            let started = Instant::now();
            wait_ladder(&srv(addr, None), &quick(), &FakeLive::running()).unwrap();
            let done = Instant::now();
            let b = bound.lock().unwrap().unwrap();
            println!(
                "load {load} ms: ready noticed {} ms after the port opened (total {} ms)",
                (done - b).as_millis(),
                (done - started).as_millis()
            );
        }
    }
}

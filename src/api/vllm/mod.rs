//! The `vllm` family: `vllm.start(ct, spec)` runs the `vllm/vllm-openai` image inside a
//! container as a systemd service, and `vllm.wait_ready(server, opts)` walks the readiness
//! ladder of DESIGN.md §5.
//!
//! Everything inside the container goes through the `lxc` primitives
//! ([`lxc::exec`](crate::api::lxc::exec), [`lxc::push`](crate::api::lxc::push),
//! [`lxc::address`](crate::api::lxc::address)) or, for read-only queries, the host's
//! `ct_exec` with read-only intent (so `--dry-run` runs them for real). No shell anywhere:
//! the unit's `ExecStart=` is written by a typed builder ([`UnitFile`]) that quotes every
//! argument as a systemd word.
//!
//! What a real host needs (DESIGN.md §11): the model goes with `--model` (the pinned
//! image's api_server entrypoint refuses or ignores a positional); the API key reaches vLLM
//! as `VLLM_API_KEY` from a 0600 env file (a key in argv or a `--config` YAML is printed in
//! vLLM's "non-default args" log line); weights download into the Hugging Face cache on the
//! model dataset, never the rootfs, as a readiness stage of their own; Docker is proven to
//! start a container before the service is written.
//!
//! Decisions where DESIGN.md is silent:
//! - Names: the Docker container is `phoenix-vllm-<vmid>`, its unit
//!   `/etc/systemd/system/phoenix-vllm-<vmid>.service`, its API key file
//!   `/etc/phoenix-vllm/phoenix-vllm-<vmid>.env` (0600, in a 0700 directory).
//! - GPUs: the container sees its passed-through GPUs numbered from 0, so a config entry
//!   with N GPUs gives `--gpus "device=0,…,N-1"` (one argv element, quotes included), `all`
//!   gives `--gpus all`, no GPUs gives no `--gpus`.
//! - `vllm_shm_size` set → `--shm-size`; unset → `--ipc=host` (vLLM's own advice).
//! - The Hugging Face cache is `<models_dir>/huggingface` (on the dataset) when the spec
//!   names `models_dir`, else `/root/.cache/huggingface` (the rootfs; a 47 GB model fills a
//!   64 GB rootfs next to the ≈ 29 GB image); it is bound at `/root/.cache/huggingface` in the
//!   vLLM container, and `models_dir` also at its own path (local models).
//! - `--served-model-name` only when `vllm_served_model_name` differs from the model.
//! - The image must be pinned: a tag other than `latest`, or a digest.
//! - The pull is skipped when `docker image inspect` already finds the image.
//! - Idempotence: an unchanged unit, unchanged secret files and an active, enabled service
//!   issue no mutating command; a changed file restarts the service.
//! - Readiness polls fast at first (interval = elapsed/16, at least 25 ms, at most 2 s), so a
//!   server that comes up within 4 s is noticed within 250 ms, and a long load costs one
//!   refused connection every 2 s. The container's liveness is checked every 2 s at first,
//!   then every eighth of the time waited, at most every 5 s (`docker inspect`; the
//!   host's `pct status` only when that fails; `systemctl show` when Docker no longer knows
//!   it: `--rm` removes an exited container, and `Restart=on-failure` shows as
//!   `auto-restart`). On failure the last 50 log lines come from `docker logs`, or from the
//!   unit's journal when the container is gone.
//!
//! The module is split by concern:
//! - `spec`: the server spec (config entry + overrides) and the `docker run` argv,
//! - `unit`: the systemd unit file and its quoting,
//! - `secrets`: how the API key and the Hugging Face token reach the server,
//! - `start`: the steps of `vllm.start` inside the container,
//! - `ready`: the readiness ladder of `vllm.wait_ready`.

mod ready;
mod secrets;
mod spec;
mod start;
#[cfg(test)]
mod testkit;
mod unit;

pub use ready::{
    Liveness, NotReady, NotReadyError, Ready, SeenText, Stage, WaitOptions, model_ids, wait_ladder,
    wait_ready,
};
pub use spec::{DockerGpus, Overrides, ServerSpec, check_image, resolve};
pub use start::{Server, UnitState, start};
pub use unit::{ExecLine, UnitError, UnitFile, systemd_word};

use std::time::Duration;

use rhai::{Dynamic, Engine, FuncRegistration, Map};

use super::http::HttpError;
use super::support::vmid_of;
use super::{ApiError, script_error};
use crate::types::Vmid;

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
    /// Docker inside the container cannot start a container from the image (found before
    /// the service was written).
    #[error(
        "Docker inside container {vmid} cannot start a container from {image} (docker run exit {code}): {stderr}\nwhat to do: {advice}"
    )]
    DockerCannotStart {
        /// The container.
        vmid: Vmid,
        /// The image.
        image: String,
        /// `docker run`'s exit code.
        code: i64,
        /// Its stderr (redacted).
        stderr: String,
        /// What to do about it.
        advice: &'static str,
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

/// Register the `vllm` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<VllmApi>("Vllm");

    let start_fn = |api: VllmApi, ct: Dynamic, spec: Map| -> RhaiResult<Map> {
        const CALL: &str = "vllm.start";
        let vmid = vmid_of(CALL, &ct).map_err(script_error)?;
        let rt = api.runtime();
        // The boundary first: a container this run may change (DESIGN.md §12).
        rt.boundary()
            .container(CALL, vmid, crate::boundary::Access::Change)
            .map_err(|e| script_error(ApiError::from(e)))?;
        let o = Overrides::from_map(&spec).map_err(script_error)?;
        let spec = resolve(rt, vmid, &spec, o).map_err(|e| script_error(e.into_api(CALL)))?;
        let server = start(rt, &spec).map_err(|e| script_error(e.into_api(CALL)))?;
        Ok(server.to_map(rt))
    };
    FuncRegistration::new("start")
        .with_params_info(["vllm: Vllm", "ct: Map|int", "Map"])
        .with_comments([
            "/// Start the container's vLLM server (from its config entry) as a systemd service",
            "/// running the pinned `vllm/vllm-openai` image, after proving that Docker starts a",
            "/// container from it. Returns the server `#{ct, vmid, url, model, model_root,",
            "/// weights_dir, container, unit, api_key_set}`. Undo: stop and remove.",
        ])
        .register_into_engine(engine, move |api: VllmApi, ct: Dynamic| {
            start_fn(api, ct, Map::new())
        });
    FuncRegistration::new("start")
        .with_params_info(["vllm: Vllm", "ct: Map|int", "spec: Map", "Map"])
        .with_comments([
            "/// Start with a spec: the config entry (`config.target()`), plus optional `hf_token`",
            "/// and `api_key` (secrets, delivered as 0600 files), `image` (pinned) and",
            "/// `models_dir` (the model dataset's mount point: bound into the vLLM container at",
            "/// the same path, and home of the Hugging Face cache, so weights download onto it).",
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
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let bytes = |b: u64| i64::try_from(b).unwrap_or(i64::MAX);
        m.insert(
            "waited_ms".into(),
            Dynamic::from_int(ready.as_ref().map_or(0, |r| ms(r.waited))),
        );
        let downloaded = ready.as_ref().and_then(|r| r.downloaded);
        m.insert(
            "downloaded_bytes".into(),
            Dynamic::from_int(downloaded.map_or(0, |(b, _)| bytes(b))),
        );
        m.insert(
            "download_ms".into(),
            Dynamic::from_int(downloaded.map_or(0, |(_, d)| ms(d))),
        );
        Ok(m)
    };
    FuncRegistration::new("wait_ready")
        .with_params_info(["vllm: Vllm", "server: Map", "Map"])
        .with_comments([
            "/// Wait until the server answers: weights downloading (the cache grows) → port open →",
            "/// GET /health 200 → the model listed by GET /v1/models (name and loaded model). Fails",
            "/// fast on a 503 (engine dead), a wrong model, an exited container or a full disk;",
            "/// the download has its own 6 h limit, the load 15 min from the weights' last growth.",
            "/// Errors carry the stage, the last answer and the container's last 50 log lines.",
            "/// Returns the server map plus `ready`, `waited_ms`, `downloaded_bytes`, `download_ms`.",
            "/// Skipped in a dry run.",
        ])
        .register_into_engine(engine, move |api: VllmApi, server: Map| {
            wait_fn(api, server, Map::new())
        });
    FuncRegistration::new("wait_ready")
        .with_params_info(["vllm: Vllm", "server: Map", "opts: Map", "Map"])
        .with_comments([
            "/// Wait with options: `timeout` (load limit, `\"15m\"`, counted from the weights' last",
            "/// growth), `download_timeout` (`\"6h\"`), `progress_every` (`\"5s\"`: how often the",
            "/// weights' size is read), `completion` (bool: also a one-token completion), `poll`",
            "/// and `max_poll` (pause bounds), `request_timeout`.",
        ])
        .register_into_engine(engine, wait_fn);
}

#[cfg(test)]
mod tests {
    use super::testkit::*;
    use crate::api::http::tests::{http, server};
    use crate::exec::RecordingRunner;
    use rhai::{Dynamic, Map};

    /// The registered methods, called from a script (top level and a `fn`): `vllm.start`
    /// returns the server map, `vllm.wait_ready` fails with the stage and the logs,
    /// `http.probe` answers.
    #[test]
    fn registered_methods_work_from_a_script() {
        let f = fixture(false, true);
        let engine = script_engine(&f.rt);
        let mut scope = rhai::Scope::new();
        let s: Map = eval(
            &engine,
            &mut scope,
            r#"vllm.start(901, #{ models_dir: "/models" })"#,
        )
        .unwrap();
        assert_eq!(
            s["url"].clone().into_string().unwrap(),
            "http://127.77.0.5:8000"
        );
        assert!(!s["api_key_set"].as_bool().unwrap());
        scope.push("server", s);
        // 127.77.0.5 is loopback: nothing listens there, so the ladder stays at `loading`.
        let err = eval::<Dynamic>(
            &engine,
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

        // http.probe works from a fn, and the boundary keeps it to phoenix's containers:
        // a server on another loopback address is refused before any connection.
        let (addr, count) = server(|_, _| Some(http(200, "pong")));
        let err = eval::<Dynamic>(
            &engine,
            &mut scope,
            &format!(
                r#"fn p(u) {{ http.probe(u, #{{ attempts: 2 }}) }} p("http://{addr}/ping").body"#
            ),
        )
        .unwrap_err();
        let rhai::EvalAltResult::ErrorInFunctionCall(_, _, inner, _) = *err else {
            panic!("{err}")
        };
        let rhai::EvalAltResult::ErrorRuntime(d, _) = *inner else {
            panic!("{inner}")
        };
        let text = d
            .read_lock::<crate::api::SharedApiError>()
            .unwrap()
            .to_string();
        assert!(
            text.starts_with(&format!(
                "http.probe: refused by the boundary (network): {} is not the address of a running phoenix-owned container",
                addr.ip()
            )),
            "{text}"
        );
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    /// The stdlib modules run against the fake container: Docker is installed and the
    /// toolkit's runtime configured with the exact argv, a second run changes nothing, and a
    /// driver mismatch is a clear error naming both versions, found before any change.
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
        // The real engine resolves imports to the embedded stdlib/, as recipes do.
        let engine = script_engine(&f.rt);
        let run = |src: &str| eval::<Dynamic>(&engine, &mut rhai::Scope::new(), src).map(drop);

        run(r#"import "docker" as docker; docker::install(901);"#).unwrap();
        assert_eq!(
            changes(&f.runner),
            [
                "apt-get -q update",
                "apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold docker.io",
                "systemctl enable --now docker.service",
            ]
        );
        let n = changes(&f.runner).len();
        run(r#"import "docker" as docker; docker::install(901);"#).unwrap();
        assert_eq!(changes(&f.runner).len(), n, "{:?}", changes(&f.runner));

        f.ct.installed
            .lock()
            .unwrap()
            .insert("/usr/bin/nvidia-smi".into());
        *f.ct.driver.lock().unwrap() = "550.54.14".into();
        let e = run(r#"import "nvidia" as nvidia; nvidia::setup(901, true);"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("NVIDIA driver mismatch: the container's userspace is 550.54.14, the host's driver is 580.159.04"),
            "{e}"
        );
        // A mismatch is found before anything is installed.
        assert_eq!(changes(&f.runner)[n..], [] as [String; 0]);
        // With the matching userspace and the toolkit in place (their installs from NVIDIA's
        // repository or the host's files run against the emulated host in
        // tests/integration/gpu_host.rs), only Docker's runtime is configured.
        *f.ct.driver.lock().unwrap() = "580.159.04".into();
        f.ct.installed
            .lock()
            .unwrap()
            .insert("/usr/bin/nvidia-ctk".into());
        engine
            .run(r#"import "nvidia" as nvidia; nvidia::setup(901, true);"#)
            .unwrap();
        assert_eq!(
            changes(&f.runner)[n..],
            [
                "nvidia-ctk runtime configure --runtime=docker",
                "systemctl restart docker.service",
                "nvidia-ctk config --set nvidia-container-cli.no-cgroups=true --in-place",
            ]
        );
        let n = changes(&f.runner).len();
        run(r#"import "nvidia" as nvidia; nvidia::setup(901, true);"#).unwrap();
        assert_eq!(changes(&f.runner).len(), n, "{:?}", changes(&f.runner));

        run(r#"import "systemd" as systemd;
                   systemd::daemon_reload(901);
                   if !systemd::is_active(901, "phoenix-vllm-901.service") {
                       systemd::enable_now(901, "phoenix-vllm-901.service");
                   }"#)
        .unwrap();
        assert_eq!(
            changes(&f.runner)[n..],
            [
                "systemctl daemon-reload",
                "systemctl enable --now phoenix-vllm-901.service"
            ]
        );
    }

    /// The stdlib modules and the recipe parse with phoenix's own engine (its limits and
    /// disabled symbols), and define what recipes call.
    #[test]
    fn stdlib_and_recipe_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let engine =
            crate::script::engine::new_engine(crate::script::engine::EngineOptions::default());
        for (file, fns) in [
            (
                "stdlib/docker.rhai",
                &["apt_options", "works", "install", "ensure"][..],
            ),
            (
                "stdlib/nvidia.rhai",
                &[
                    "modes",
                    "install_userspace",
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
            let ast = crate::script::engine::compile(&engine, &text)
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
}

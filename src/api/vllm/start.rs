//! The steps of `vllm.start` inside the container: pull the image, prove that Docker can
//! start a container from it, deliver the secrets, write the unit, enable or restart the
//! service; each step idempotent and journaled.
//!
//! Docker is proven before the service exists (DESIGN.md §11): inside an LXC container
//! Docker can fail to start any container (runc 1.3.3 and AppArmor,
//! opencontainers/runc#4972; the NVIDIA hook), and a unit written anyway would only
//! crash-loop. The proof is one `docker run --rm --entrypoint /bin/true` of the pulled image
//! with the service's GPUs, skipped when the service already runs (that proves it too).

use std::time::Duration;

use rhai::{Dynamic, Map};

use super::{CONFIG_DIR, PULL_TIMEOUT, QUERY_TIMEOUT, ServerSpec, UnitFile, VllmError};
use crate::api::http::HttpUrl;
use crate::api::support::{self, opt_str, step, vmid_of};
use crate::api::{ApiError, lxc};
use crate::host::{CtStatus, ExecRequest};
use crate::journal::UndoStep;
use crate::runtime::Runtime;
use crate::secret::Secret;
use crate::types::{AbsPath, Vmid};

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
    /// The configured model (`vllm_model`): `GET /v1/models` names it as each entry's `root`,
    /// so a server that loaded another model under the configured name is caught.
    pub model_root: Option<String>,
    /// Where the weights download to inside the LXC container (the Hugging Face cache),
    /// whose growth shows download progress.
    pub weights_dir: Option<AbsPath>,
}

impl Server {
    /// The map recipes see: `#{ct, vmid, url, model, model_root, weights_dir, container,
    /// unit, api_key_set}` (plus the opaque `api_key` secret when set, for `wait_ready`).
    pub fn to_map(&self, rt: &Runtime) -> Map {
        let mut m = Map::new();
        m.insert(
            "ct".into(),
            Dynamic::from_map(lxc::container_map(self.vmid, rt.config.get(self.vmid))),
        );
        m.insert("vmid".into(), Dynamic::from_int(i64::from(self.vmid.get())));
        m.insert("url".into(), self.url.as_str().trim_end_matches('/').into());
        m.insert("model".into(), self.model.clone().into());
        if let Some(r) = &self.model_root {
            m.insert("model_root".into(), r.clone().into());
        }
        if let Some(w) = &self.weights_dir {
            m.insert("weights_dir".into(), w.to_string().into());
        }
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
            model_root: opt_str(call, m, "model_root")?,
            weights_dir: opt_str(call, m, "weights_dir")?
                .map(|p| AbsPath::new(p).map_err(|source| ApiError::Type { call, source }))
                .transpose()?,
        })
    }
}

/// Run a read-only query inside the container (runs for real in `--dry-run`).
pub(super) fn query(
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

pub(super) fn unit_state(rt: &Runtime, vmid: Vmid, unit: &str) -> Result<UnitState, ApiError> {
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

/// Write `content` at `path` unless it is already there; whether it changed. The file is
/// read once (`cat`; not at all on the rootfs of a container this process created,
/// [`lxc::unread_ok`]); when it is absent its directory `dir` is made first (mode 0700,
/// `mkdir -p`; with `undo`, an `rmdir` is recorded, which only succeeds once the files in
/// it are removed, which undo does first). A file that is there means its directory is.
fn put(
    rt: &Runtime,
    vmid: Vmid,
    present: bool,
    dir: Option<(&str, bool)>,
    path: &AbsPath,
    content: &[u8],
    mode: u32,
) -> Result<bool, ApiError> {
    let current = if present && !lxc::unread_ok(rt, vmid, path)? {
        lxc::file_content(rt, vmid, path)?
    } else {
        None
    };
    let current = current.as_deref().map(Vec::as_slice);
    if current.is_some_and(|c| c == content) {
        return Ok(false);
    }
    if let (None, Some((dir, undo))) = (current, dir) {
        make_dir(rt, vmid, dir, undo)?;
    }
    lxc::push_over(rt, vmid, path, content, mode, current)
}

/// `mkdir -p -m 0700 dir`; `undo` records an `rmdir`.
fn make_dir(rt: &Runtime, vmid: Vmid, dir: &str, undo: bool) -> Result<(), ApiError> {
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

/// `vllm.start(ct, spec)`: pull the image, prove Docker can start it, deliver the secrets
/// as 0600 files, write and enable the systemd unit. Idempotent.
pub fn start(rt: &Runtime, spec: &ServerSpec) -> Result<Server, VllmError> {
    const CALL: &str = "vllm.start";
    let vmid = spec.vmid;
    // The boundary: a container of this run, phoenix's; secrets that go into a token
    // file and a YAML line hold no control characters.
    rt.boundary()
        .container(CALL, vmid, crate::boundary::Access::Change)
        .map_err(ApiError::from)?;
    for secret in [&spec.hf_token, &spec.api_key].into_iter().flatten() {
        crate::boundary::values::secret_bytes(
            CALL,
            &secret.to_string(),
            secret.expose(),
            crate::boundary::values::SecretUse::Line,
        )
        .map_err(ApiError::from)?;
    }
    let unit_text = UnitFile::for_server(spec).render()?;
    let env_file = spec.env_file()?;
    let status = rt.host.ct_status_known(vmid).map_err(ApiError::from)?;
    if status != CtStatus::Running && !rt.dry_run {
        return Err(VllmError::Spec {
            field: "ct",
            message: format!("container {vmid} is {status}: call lxc.start(ct) before vllm.start"),
        });
    }
    // In a dry run the container may be one this run would create: nothing to ask it.
    let present = status == CtStatus::Running;
    let unit = spec.unit_name();
    // On the rootfs of a container this process created, the unit is there only if this
    // process pushed it (an earlier `vllm.start` of the run): otherwise nothing to ask.
    let unit_path = spec.unit_path();
    let no_unit_yet = present
        && lxc::unread_ok(rt, vmid, &unit_path)?
        && !rt.host.ct_pushed_here(vmid, &unit_path);
    let state = if present && !no_unit_yet {
        unit_state(rt, vmid, &unit)?
    } else {
        UnitState::default()
    };

    // a. The image, as its own step so a failed pull is seen with its stderr. A container
    //    this process created has no image worth asking about: `docker pull` of an image
    //    that is there only checks its registry ("Image is up to date").
    let have_image = present
        && !rt.host.ct_created_here(vmid)
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

    // b. Docker proven: a container from the image starts, before any file of the service
    //    is written (a running service has proven it already).
    if !state.up() {
        prove_docker(rt, spec)?;
    }

    // c. The Hugging Face token: the file `token` in the mounted cache, never env or argv.
    let mut secrets_changed = false;
    if let Some(token) = &spec.hf_token {
        let dir = spec.hf_cache_dir();
        secrets_changed |= put(
            rt,
            vmid,
            present,
            Some((dir.as_str(), false)),
            &spec.token_path(),
            token.expose(),
            0o600,
        )?;
    }

    // d. The API key: `VLLM_API_KEY` in a 0600 env file read by `docker run --env-file`.
    match &env_file {
        Some(y) => {
            secrets_changed |= put(
                rt,
                vmid,
                present,
                Some((CONFIG_DIR, true)),
                &spec.env_file_path(),
                y,
                0o600,
            )?;
        }
        None => tracing::warn!(
            %vmid,
            "vLLM server of container {vmid} has no api_key: its OpenAI API is open to anyone who can reach port {}",
            spec.vllm.port
        ),
    }

    // e. The unit.
    let unit_changed = put(
        rt,
        vmid,
        present,
        None,
        &spec.unit_path(),
        unit_text.as_bytes(),
        0o644,
    )?;

    // f. Enable and start, or restart after a change, or nothing. `systemctl enable`
    //    reloads the manager itself before `--now` starts the unit ("Try to reload if
    //    enabled", systemd `src/systemctl/systemctl-enable.c`, v252 and later), so only a
    //    restart needs the explicit reload.
    if unit_changed && state.up() {
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
        model_root: Some(spec.vllm.model.to_string()),
        weights_dir: Some(spec.hf_cache_dir()),
    })
}

/// How long the proof container may take (it only starts `/bin/true`).
const PROBE_TIMEOUT: Duration = Duration::from_secs(120);

/// Start one container from the pulled image with a trivial entrypoint (and the service's
/// GPUs); a failure names the cause and what to do.
fn prove_docker(rt: &Runtime, spec: &ServerSpec) -> Result<(), VllmError> {
    let argv = spec.probe_argv();
    let out = lxc::exec(
        rt,
        spec.vmid,
        argv,
        lxc::ExecOptions {
            timeout: Some(PROBE_TIMEOUT),
            // Every exit code comes back: the failure is explained here.
            ok_codes: (0..=255).collect(),
            ..lxc::ExecOptions::default()
        },
    )?;
    let code = out
        .get("code")
        .and_then(|c| c.as_int().ok())
        .unwrap_or_default();
    let planned = out
        .get("planned")
        .and_then(|p| p.as_bool().ok())
        .unwrap_or(false);
    if code == 0 || planned {
        return Ok(());
    }
    let stderr = out
        .get("stderr")
        .and_then(|s| s.clone().into_string().ok())
        .unwrap_or_default();
    Err(VllmError::DockerCannotStart {
        vmid: spec.vmid,
        image: spec.image.clone(),
        code,
        stderr: stderr.trim().to_owned(),
        advice: docker_advice(&stderr),
    })
}

/// What to do about a `docker run` that could not start a container, from its stderr.
pub fn docker_advice(stderr: &str) -> &'static str {
    if stderr.contains("ip_unprivileged_port_start") {
        // opencontainers/runc#4972 (runc 1.3.3, CVE-2025-52881 fixes) with LXC's AppArmor
        // profile; moby/moby#51405, containerd/containerd#12484.
        "runc (1.3.3 and later) cannot set the sysctl net.ipv4.ip_unprivileged_port_start under the host's LXC AppArmor profile (opencontainers/runc#4972): update the Proxmox host's lxc-pve/AppArmor rules, or give the container `lxc.apparmor.profile: unconfined`, or pin runc/containerd in the container to a release before 1.3.3"
    } else if stderr.contains("nvidia-container-cli") {
        "the NVIDIA container toolkit could not give the container its GPUs: check the GPU passthrough of the LXC container, `no-cgroups = true` for an unprivileged one, and that its NVIDIA userspace matches the host driver"
    } else if stderr.contains("could not select device driver") {
        "Docker has no NVIDIA runtime: install nvidia-container-toolkit in the container and run `nvidia-ctk runtime configure --runtime=docker`, then restart docker.service"
    } else if stderr.contains("no space left on device") {
        "the container's disk is full: give it a larger rootfs (`storage_size_gb`)"
    } else {
        "check Docker inside the container (`docker run --rm IMAGE`); nesting=1 must be set for Docker in LXC"
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::super::{Overrides, WaitOptions, resolve, wait_ready};
    use super::*;
    use std::sync::atomic::Ordering;

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
                "docker run --rm --gpus \"device=0,1\" --entrypoint /bin/true vllm/vllm-openai:v0.11.0",
                "mkdir -p -m 0700 /models/huggingface",
                "push /models/huggingface/token 0600",
                "mkdir -p -m 0700 /etc/phoenix-vllm",
                "push /etc/phoenix-vllm/phoenix-vllm-901.env 0600",
                "push /etc/systemd/system/phoenix-vllm-901.service 0644",
                "systemctl enable --now phoenix-vllm-901.service",
            ]
        );
        let files = f.ct.files.lock().unwrap().clone();
        assert_eq!(files["/models/huggingface/token"].0, b"hf_SECRETTOKEN");
        assert_eq!(
            files["/etc/phoenix-vllm/phoenix-vllm-901.env"].0,
            b"VLLM_API_KEY=sk-SECRETKEY\n"
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
                "lxc.push:901:/models/huggingface/token",
                "vllm.start:901:mkdir:/etc/phoenix-vllm",
                "lxc.push:901:/etc/phoenix-vllm/phoenix-vllm-901.env",
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
                "push /etc/phoenix-vllm/phoenix-vllm-901.env 0600",
                "systemctl restart phoenix-vllm-901.service"
            ]
        );

        // A changed unit of a running service: systemd loads it (`daemon-reload`, which a
        // restart does not do by itself), then the service restarts.
        let mut longer = changed.clone();
        longer.vllm.max_model_len = Some(4096);
        let n = mutations(&f.runner).len();
        start(&f.rt, &longer).unwrap();
        assert_eq!(
            mutations(&f.runner)[n..],
            [
                "push /etc/systemd/system/phoenix-vllm-901.service 0644",
                "systemctl daemon-reload",
                "systemctl restart phoenix-vllm-901.service"
            ]
        );
    }

    /// Issue 11 item 4: Docker that cannot start a container (runc 1.3.3 under LXC's
    /// AppArmor) fails the proof step, naming the cause and what to do, before any file of
    /// the service is written.
    #[test]
    fn docker_that_cannot_start_a_container_fails_before_the_service() {
        let f = fixture(false, true);
        *f.ct.probe_fails.lock().unwrap() = Some((
            126,
            "docker: Error response from daemon: failed to create task for container: failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: error during container init: open sysctl net.ipv4.ip_unprivileged_port_start file: reopen fd 8: permission denied: unknown.\n".into(),
        ));
        let map = spec_map(true);
        let spec = resolve(&f.rt, vmid(), &map, Overrides::from_map(&map).unwrap()).unwrap();
        let e = start(&f.rt, &spec).unwrap_err();
        assert!(
            matches!(e, VllmError::DockerCannotStart { code: 126, .. }),
            "{e}"
        );
        let text = e.into_api("vllm.start").to_string();
        assert!(
            text.starts_with("vllm.start: Docker inside container 901 cannot start a container from vllm/vllm-openai:v0.11.0 (docker run exit 126): docker: Error response from daemon: failed to create task"),
            "{text}"
        );
        assert!(
            text.contains("\nwhat to do: runc (1.3.3 and later) cannot set the sysctl net.ipv4.ip_unprivileged_port_start under the host's LXC AppArmor profile (opencontainers/runc#4972)"),
            "{text}"
        );
        assert_eq!(
            mutations(&f.runner),
            [
                "docker pull vllm/vllm-openai:v0.11.0",
                "docker run --rm --gpus \"device=0,1\" --entrypoint /bin/true vllm/vllm-openai:v0.11.0"
            ]
        );
        assert!(f.ct.files.lock().unwrap().is_empty());
        // The NVIDIA hook is named too.
        assert!(
            docker_advice("stderr: nvidia-container-cli: mount error")
                .contains("NVIDIA container toolkit")
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
    fn dry_run_records_the_plan_without_a_container() {
        let f = fixture(true, false);
        let spec = resolve(&f.rt, vmid(), &Map::new(), Overrides::default()).unwrap();
        let server = start(&f.rt, &spec).unwrap();
        assert_eq!(
            mutations(&f.runner),
            [
                "docker pull vllm/vllm-openai:v0.11.0",
                "docker run --rm --gpus \"device=0,1\" --entrypoint /bin/true vllm/vllm-openai:v0.11.0",
                "push /etc/systemd/system/phoenix-vllm-901.service 0644",
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
}

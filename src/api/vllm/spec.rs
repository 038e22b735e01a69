//! The server spec: a container's config entry plus the recipe's overrides, validated,
//! and the `docker pull` / `docker run` argv built from it.

use rhai::{Dynamic, Map};

use super::{CONFIG_DIR, HF_CACHE, VllmError};
use crate::api::support::opt_str;
use crate::api::{ApiError, lxc};
use crate::config::VllmConfig;
use crate::runtime::Runtime;
use crate::secret::Secret;
use crate::types::{AbsPath, GpuSelector, Vmid};

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
    /// The model dataset's mount point inside the container (`/models`), bound into the
    /// vLLM container at the same path; the Hugging Face cache (downloads) lives on it.
    pub models_dir: Option<AbsPath>,
    /// The Hugging Face token (delivered as the 0600 file `token` in the cache).
    pub hf_token: Option<Secret>,
    /// The API key (delivered as `VLLM_API_KEY` in a 0600 env file, never argv or YAML).
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

    /// The API key's env file (`VLLM_API_KEY=…`, read by `docker run --env-file`).
    pub fn env_file_path(&self) -> AbsPath {
        abs(&format!("{CONFIG_DIR}/{}.env", self.container()))
    }

    /// Where the Hugging Face cache (downloaded weights, the token) lives inside the LXC
    /// container: on the model dataset (`<models_dir>/huggingface`) when there is one, else
    /// `/root/.cache/huggingface` on the container's rootfs. It is bound into the vLLM
    /// container at [`HF_CACHE`], where vLLM's downloads go (the image's default `HF_HOME`).
    pub fn hf_cache_dir(&self) -> AbsPath {
        match &self.models_dir {
            Some(m) => abs(&format!("{}/huggingface", m.as_str().trim_end_matches('/'))),
            None => abs(HF_CACHE),
        }
    }

    /// The token file's path inside the LXC container (`token` in the cache, where
    /// `huggingface_hub` looks for it).
    pub fn token_path(&self) -> AbsPath {
        abs(&format!("{}/token", self.hf_cache_dir()))
    }

    /// The name clients use: `vllm_served_model_name`, else the model (vLLM's default).
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

    /// The proof that Docker starts a container from the image with the service's GPUs:
    /// `docker run --rm [--gpus …] --entrypoint /bin/true IMAGE` (argv inside the
    /// container; the image is Ubuntu-based, `/bin/true` is coreutils').
    pub fn probe_argv(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["docker".into(), "run".into(), "--rm".into()];
        if let Some(g) = self.gpus.flag_value() {
            a.push("--gpus".into());
            a.push(g);
        }
        a.extend([
            "--entrypoint".into(),
            "/bin/true".into(),
            self.image.clone(),
        ]);
        a
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
        a.extend(["-v".into(), format!("{}:{HF_CACHE}", self.hf_cache_dir())]);
        if let Some(m) = &self.models_dir {
            a.extend(["-v".into(), format!("{m}:{m}")]);
        }
        if self.api_key.is_some() {
            // vLLM reads `VLLM_API_KEY` from its environment and does not log it; a key
            // given with `--api-key` or in a `--config` YAML shows in its "non-default args"
            // log line (DESIGN.md §11, fixed upstream only by vllm-project/vllm#52523).
            a.extend(["--env-file".into(), self.env_file_path().to_string()]);
        }
        a.push(self.image.clone());
        // `--model`, never a positional: the pinned image's entrypoint is
        // `python3 -m vllm.entrypoints.openai.api_server`, which exits 2 on a positional
        // (v0.11.0, vllm-project/vllm#27389) or ignores it and serves its default model
        // (early-2026 images, vllm-project/vllm#32292) (DESIGN.md §11).
        a.extend(["--model".into(), v.model.to_string()]);
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
        if let Some(name) = v
            .served_model_name
            .as_ref()
            .filter(|n| **n != v.model.to_string())
        {
            a.extend(["--served-model-name".into(), name.clone()]);
        }
        a.extend(["--host".into(), "0.0.0.0".into(), "--port".into(), port]);
        a
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

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

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
                "/models/huggingface:/root/.cache/huggingface",
                "-v",
                "/models:/models",
                "--env-file",
                "/etc/phoenix-vllm/phoenix-vllm-901.env",
                "vllm/vllm-openai:v0.11.0",
                "--model",
                "mistralai/Devstral-Small-2507",
                "--tensor-parallel-size",
                "2",
                "--max-model-len",
                "128000",
                "--kv-cache-dtype",
                "fp8",
                "--host",
                "0.0.0.0",
                "--port",
                "8000"
            ]
        );
        // The model only ever follows `--model` (issue 11: a positional is refused or
        // ignored by the pinned image's entrypoint).
        let a = s.run_args();
        let image = a
            .iter()
            .position(|x| x == "vllm/vllm-openai:v0.11.0")
            .unwrap();
        assert_eq!(a[image + 1], "--model");
        assert_eq!(
            a.iter()
                .filter(|x| *x == "mistralai/Devstral-Small-2507")
                .count(),
            1
        );
        // A served name equal to the model is vLLM's default: not repeated.
        let mut named = example_spec();
        named.vllm.served_model_name = Some("mistralai/Devstral-Small-2507".into());
        assert_eq!(named.run_args(), a);
        assert_eq!(
            s.probe_argv(),
            [
                "docker",
                "run",
                "--rm",
                "--gpus",
                "\"device=0,1\"",
                "--entrypoint",
                "/bin/true",
                "vllm/vllm-openai:v0.11.0"
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
        assert!(!joined.contains("--env-file"), "{joined}");
        assert!(!joined.contains("--config"), "{joined}");
        // No dataset: the cache is the rootfs's.
        assert!(
            joined.contains("-v /root/.cache/huggingface:/root/.cache/huggingface vllm/"),
            "{joined}"
        );
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
}

//! Reading a config file into the typed [`Config`].
//!
//! Interim loader: JSON syntax and typed conversion only. The schema and semantic passes
//! replace it (see the config issue).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::{
    Config, ConfigError, Features, IpConfig, KvCacheDtype, LxcConfig, Network, Problem, VllmConfig,
};
use crate::types::{
    BridgeName, GpuSelector, Hostname, IfaceName, ModelId, Size, StorageId, Template, Vmid,
};

/// Read, validate and type the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    load_str(path, &text)
}

/// Validate and type config `text` that came from `path`.
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let mut problems = Vec::new();
    let mut lxc = BTreeMap::new();
    let entries = value.get("lxc_configs").and_then(Value::as_object);
    let Some(entries) = entries else {
        return Err(invalid(
            path,
            vec![problem("/lxc_configs", "an object", "nothing")],
        ));
    };
    for (id, entry) in entries {
        let base = format!("/lxc_configs/{id}");
        match typed(id, entry, &base) {
            Ok(c) => {
                lxc.insert(c.vmid, c);
            }
            Err(p) => problems.push(p),
        }
    }
    if !problems.is_empty() {
        return Err(invalid(path, problems));
    }
    Ok(Config {
        path: path.to_owned(),
        lxc,
        warnings: Vec::new(),
    })
}

fn invalid(path: &Path, problems: Vec<Problem>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        problems,
    }
}

fn problem(pointer: &str, expected: &str, found: &str) -> Problem {
    Problem {
        pointer: pointer.to_owned(),
        line: None,
        column: None,
        expected: expected.to_owned(),
        found: found.to_owned(),
    }
}

fn typed(id: &str, e: &Value, base: &str) -> Result<LxcConfig, Problem> {
    let p = |f: &str| format!("{base}/{f}");
    let s = |f: &str| -> Result<String, Problem> {
        e.get(f)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| problem(&p(f), "a string", "something else"))
    };
    let n = |f: &str| -> Result<u64, Problem> {
        e.get(f)
            .and_then(Value::as_u64)
            .ok_or_else(|| problem(&p(f), "an integer", "something else"))
    };
    let bad = |f: &str, err: crate::types::TypeError| problem(&p(f), &err.reason, &err.shown);
    let vmid: Vmid = id.parse().map_err(|err| bad("", err))?;
    let net = e
        .get("network_config")
        .ok_or_else(|| problem(&p("network_config"), "an object", "nothing"))?;
    let ns = |f: &str| net.get(f).and_then(Value::as_str).map(str::to_owned);
    let ip = match ns("ip").as_deref() {
        Some("dhcp") => IpConfig::Dhcp,
        Some(cidr) => IpConfig::Static(
            cidr.parse()
                .map_err(|_| problem(&p("network_config/ip"), "a CIDR", cidr))?,
        ),
        None => return Err(problem(&p("network_config/ip"), "a CIDR", "nothing")),
    };
    let vllm = match e.get("vllm_model").and_then(Value::as_str) {
        Some(m) => Some(VllmConfig {
            model: ModelId::new(m).map_err(|err| bad("vllm_model", err))?,
            served_model_name: None,
            tensor_parallel_size: n("vllm_tensor_parallel_size").unwrap_or(1) as u32,
            max_model_len: n("vllm_max_model_len").ok().map(|v| v as u32),
            kv_cache_dtype: e
                .get("vllm_kv_cache_dtype")
                .and_then(Value::as_str)
                .and_then(KvCacheDtype::parse),
            shm_size: e
                .get("vllm_shm_size")
                .and_then(Value::as_str)
                .and_then(|v| Size::new(v).ok()),
            quantization: e
                .get("vllm_quantization")
                .and_then(Value::as_str)
                .map(str::to_owned),
            quantization_config: None,
            gpu_memory_utilization: None,
            port: n("vllm_port").unwrap_or(8000) as u16,
            image: None,
        }),
        None => None,
    };
    Ok(LxcConfig {
        vmid,
        name: Hostname::new(s("name")?).map_err(|err| bad("name", err))?,
        memory_mb: n("memory_mb")? as u32,
        swap_mb: n("swap_mb").unwrap_or(512) as u32,
        cores: n("cores")? as u32,
        template: Template::new(s("template")?).map_err(|err| bad("template", err))?,
        storage_pool: StorageId::new(s("storage_pool")?).map_err(|err| bad("storage_pool", err))?,
        storage_size_gb: n("storage_size_gb")? as u32,
        network: Network {
            name: IfaceName::new(ns("name").unwrap_or_else(|| "eth0".into()))
                .map_err(|err| bad("network_config/name", err))?,
            bridge: BridgeName::new(ns("bridge").unwrap_or_else(|| "vmbr0".into()))
                .map_err(|err| bad("network_config/bridge", err))?,
            ip,
            gw: ns("gw").and_then(|g| g.parse().ok()),
            dns: Vec::new(),
            mac: None,
            vlan: None,
        },
        features: Features {
            nesting: true,
            ..Features::default()
        },
        unprivileged: e
            .get("unprivileged")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        onboot: false,
        gpus: e
            .get("gpu_assignment")
            .and_then(Value::as_str)
            .map(|g| {
                g.parse::<GpuSelector>()
                    .map_err(|err| bad("gpu_assignment", err))
            })
            .transpose()?,
        vllm,
        recipe: e.get("recipe").and_then(Value::as_str).map(str::to_owned),
    })
}

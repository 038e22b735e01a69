//! The container config file (DESIGN.md §3): typed, schema-checked, semantically validated.
//!
//! `phoenix_lxc_configs.json` is read once, checked against the JSON Schema embedded from
//! `schemas/phoenix_lxc_configs.schema.json`, then checked semantically, and only then turned
//! into the typed [`Config`]. Every problem in the file is collected and reported together
//! with its JSON pointer and line:column, before anything on the host is touched.
//!
//! The passes, in order (see [`load_str`]):
//! 1. serde_json parses the text; a syntax error stops here (nothing else can be trusted).
//! 2. `position` scans the same text for the line:column of every value and for keys
//!    that appear twice in one object (serde_json would silently keep the last one).
//! 3. [`schema`] checks the document against the embedded schema (types, ranges, enums,
//!    unknown fields).
//! 4. `semantic` builds the typed [`Config`] through the validated newtypes of
//!    [`crate::types`] and checks what a schema cannot: vmids, CIDR and gateway, names,
//!    model ids, tensor parallel size against the GPUs, uniqueness across containers. A
//!    field the schema already refused is not checked again, so one mistake is one problem.
//!
//! Decisions where DESIGN.md is silent: `swap_mb` defaults to 512, `unprivileged` to true and
//! `onboot` to false (as PVE); `features` to none set; `network_config.name`/`bridge` to
//! `eth0`/`vmbr0`; a vLLM entry's tensor parallel size to 1 and port to 8000. A static
//! address must carry its prefix (`10.0.0.5` alone is refused, not read as `/32`) and must
//! not be the network or broadcast address; `gw` is refused with `dhcp`. A vLLM entry with
//! tensor parallel size 1 and no GPU is allowed (CPU backends exist); `gpu_assignment: "all"`
//! defers the tensor parallel check to the host. The bash-era string forms of
//! `network_config` and `gpu_assignment` are accepted with a warning; the PVE string form of
//! `features` (`nesting=1,keyctl=1`) and `"all"` are first-class and give none.
//!
//! Across entries (for `phoenix up`): `after` names other entries of the file, never the
//! entry itself, and the `after` graph has no cycle (the cycle is named); a GPU named by
//! two entries is a warning, or an error when either entry sets `gpu_exclusive`. GPUs are
//! compared as written (an index with an index, a UUID with a UUID, `all` with any GPU);
//! `phoenix up` compares them again as the host resolves them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use ipnetwork::Ipv4Network;
use serde::Serialize;

use crate::types::{
    BridgeName, GpuSelector, Hostname, IfaceName, Mac, ModelId, ModelsParent, PackageName, Size,
    StorageId, Template, Vmid,
};

mod load;
mod position;
pub mod schema;
mod semantic;

pub use load::{Checked, check_str, load, load_str, read};

/// vLLM's `--quantization` methods accepted in `vllm_quantization`: the union of vLLM's
/// `QuantizationMethods` over the 2025–2026 releases (the list changes between releases;
/// `vllm serve` of the pinned image has the last word). The schema's enum is checked
/// against it by a unit test.
pub const QUANTIZATIONS: &[&str] = &[
    "aqlm",
    "auto-round",
    "awq",
    "awq_marlin",
    "bitblas",
    "bitsandbytes",
    "compressed-tensors",
    "deepseek_v4_fp8",
    "deepspeedfp",
    "experts_int8",
    "fbgemm_fp8",
    "fp8",
    "fp8_per_block",
    "fp8_per_tensor",
    "gguf",
    "gpt_oss_mxfp4",
    "gptq",
    "gptq_bitblas",
    "gptq_marlin",
    "gptq_marlin_24",
    "hqq",
    "inc",
    "int8_per_channel_weight_only",
    "ipex",
    "marlin",
    "modelopt",
    "modelopt_fp4",
    "modelopt_mixed",
    "modelopt_mxfp8",
    "moe_wna16",
    "mxfp4",
    "mxfp8",
    "online",
    "ptpc_fp8",
    "quark",
    "rtn",
    "torchao",
    "tpu_int8",
];

/// Where a finding points in the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// The member's key (unknown fields, duplicate keys, bad vmids).
    Key,
    /// The value.
    Value,
    /// The object that should hold the (missing) member.
    Parent,
}

/// A problem before it gets its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// JSON pointer.
    pub(crate) pointer: String,
    /// Which part of the member to point at.
    pub(crate) at: At,
    /// What was expected.
    pub(crate) expected: String,
    /// What was found.
    pub(crate) found: String,
}

/// A validated config file.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it came from.
    pub path: PathBuf,
    /// `models_dataset`: the parent of phoenix's model datasets, when the file names one
    /// (the setting of the same name wins over it; see [`crate::settings`]).
    pub models_dataset: Option<ModelsParent>,
    /// Every container, by id.
    pub lxc: BTreeMap<Vmid, LxcConfig>,
    /// Bash-era forms that were normalised, and other non-fatal notes.
    pub warnings: Vec<Problem>,
}

impl Config {
    /// The entry for `vmid`.
    pub fn get(&self, vmid: Vmid) -> Option<&LxcConfig> {
        self.lxc.get(&vmid)
    }
}

/// One container's entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LxcConfig {
    /// The container id (the key of the entry).
    pub vmid: Vmid,
    /// The container's hostname (`name`).
    pub name: Hostname,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Swap in MiB (default 512, as PVE).
    pub swap_mb: u32,
    /// CPU cores.
    pub cores: u32,
    /// The OS template (PVE volume id or absolute path).
    pub template: Template,
    /// Storage for the root disk.
    pub storage_pool: StorageId,
    /// Root disk size in GiB.
    pub storage_size_gb: u32,
    /// The first network interface.
    pub network: Network,
    /// PVE container features.
    pub features: Features,
    /// Unprivileged container (PVE default: true).
    pub unprivileged: bool,
    /// Start at boot.
    pub onboot: bool,
    /// GPUs to pass through, if any.
    pub gpus: Option<GpuSelector>,
    /// The vLLM server, if this container runs one.
    pub vllm: Option<VllmConfig>,
    /// The recipe that serves this entry, if named (e.g. `drdevstral.rhai`), relative to
    /// the config file's directory.
    pub recipe: Option<String>,
    /// The Portainer part this container plays (`portainer_role`), if any.
    pub portainer_role: Option<PortainerRole>,
    /// The entry whose vLLM server this container's application uses (`openai_backend`).
    pub openai_backend: Option<Vmid>,
    /// `gpu_exclusive`: no other entry may name one of this entry's GPUs (without it,
    /// sharing is allowed with a warning).
    pub gpu_exclusive: bool,
    /// `after`: entries `phoenix up` provisions before this one (ids of this config, no
    /// cycle).
    pub after: Vec<Vmid>,
    /// `packages`: Debian packages the default recipe installs.
    pub packages: Vec<PackageName>,
}

/// `portainer_role`: what a container is to Portainer (recipes/portainer.rhai,
/// stdlib/portainer.rhai).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PortainerRole {
    /// Runs the Portainer server.
    Server,
    /// Runs a Portainer agent next to its own workload (e.g. a vLLM container).
    Agent,
}

impl PortainerRole {
    /// The config file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Agent => "agent",
        }
    }
}

/// `network_config`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Network {
    /// Interface name inside the CT (`eth0`).
    pub name: IfaceName,
    /// Host bridge (`vmbr0`).
    pub bridge: BridgeName,
    /// Static address or DHCP.
    pub ip: IpConfig,
    /// Gateway (static only).
    pub gw: Option<Ipv4Addr>,
    /// DNS servers.
    pub dns: Vec<IpAddr>,
    /// Fixed MAC address.
    pub mac: Option<Mac>,
    /// VLAN tag.
    pub vlan: Option<u16>,
}

/// How the interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IpConfig {
    /// A static CIDR.
    Static(Ipv4Network),
    /// DHCP.
    Dhcp,
}

impl fmt::Display for IpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static(n) => write!(f, "{n}"),
            Self::Dhcp => f.write_str("dhcp"),
        }
    }
}

/// PVE `features` flags phoenix manages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Features {
    /// `nesting=1` (needed for Docker inside the CT).
    pub nesting: bool,
    /// `keyctl=1` (Docker in unprivileged CTs).
    pub keyctl: bool,
    /// `fuse=1`.
    pub fuse: bool,
    /// `mknod=1`.
    pub mknod: bool,
}

impl Features {
    /// The `--features` value (`nesting=1,keyctl=1`), or `None` when no flag is set.
    pub fn to_pve(&self) -> Option<String> {
        let mut parts = Vec::new();
        for (on, name) in [
            (self.fuse, "fuse"),
            (self.keyctl, "keyctl"),
            (self.mknod, "mknod"),
            (self.nesting, "nesting"),
        ] {
            if on {
                parts.push(format!("{name}=1"));
            }
        }
        (!parts.is_empty()).then(|| parts.join(","))
    }
}

/// vLLM's KV cache dtypes (`--kv-cache-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KvCacheDtype {
    /// `auto`.
    Auto,
    /// `fp8`.
    Fp8,
    /// `fp8_e4m3`.
    Fp8E4m3,
    /// `fp8_e5m2`.
    Fp8E5m2,
}

impl KvCacheDtype {
    /// Every accepted spelling.
    pub const ALL: &'static [&'static str] = &["auto", "fp8", "fp8_e4m3", "fp8_e5m2"];

    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Fp8 => "fp8",
            Self::Fp8E4m3 => "fp8_e4m3",
            Self::Fp8E5m2 => "fp8_e5m2",
        }
    }

    /// Parse a flag value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "fp8" => Some(Self::Fp8),
            "fp8_e4m3" => Some(Self::Fp8E4m3),
            "fp8_e5m2" => Some(Self::Fp8E5m2),
            _ => None,
        }
    }
}

/// The vLLM server of a container (`vllm_*` fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VllmConfig {
    /// `vllm_model`: the positional model argument of `vllm serve`.
    pub model: ModelId,
    /// `vllm_served_model_name` (default: the model id).
    pub served_model_name: Option<String>,
    /// `vllm_tensor_parallel_size` (1…64, ≤ GPUs assigned).
    pub tensor_parallel_size: u32,
    /// `vllm_max_model_len`.
    pub max_model_len: Option<u32>,
    /// `vllm_kv_cache_dtype`.
    pub kv_cache_dtype: Option<KvCacheDtype>,
    /// `vllm_shm_size` (Docker `--shm-size`); `None` means `--ipc=host`.
    pub shm_size: Option<Size>,
    /// `vllm_quantization` (`--quantization`).
    pub quantization: Option<String>,
    /// `vllm_quantization_config` (JSON for `--quantization-config`).
    pub quantization_config: Option<serde_json::Value>,
    /// `vllm_gpu_memory_utilization` (0 < x ≤ 1).
    pub gpu_memory_utilization: Option<f64>,
    /// `vllm_port` (default 8000).
    pub port: u16,
    /// `vllm_image` (default: the pinned image from settings).
    pub image: Option<String>,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON pointer, e.g. `/lxc_configs/901/memory_mb`.
    pub pointer: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What was expected.
    pub expected: String,
    /// What was found.
    pub found: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "{l}:{c}: ")?;
        }
        write!(
            f,
            "{}: expected {}, found {}",
            if self.pointer.is_empty() {
                "/"
            } else {
                &self.pointer
            },
            self.expected,
            self.found
        )
    }
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid JSON.
    #[error("{path}:{line}:{column}: not valid JSON: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// The file is JSON but breaks the schema or a semantic rule.
    #[error("{path}: {} problem(s):\n{}", problems.len(), render(path, problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// A selected container is not in the config.
    #[error("container {vmid} is not in {path}")]
    UnknownVmid {
        /// The file.
        path: PathBuf,
        /// The id asked for.
        vmid: Vmid,
    },
}

fn render(path: &std::path::Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {}:{p}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

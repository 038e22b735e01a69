//! The `config` family: the validated config, as maps a recipe can read.
//!
//! `config.target()` is the entry this run serves ([`Runtime::target`]: `--lxc`, else the
//! entry whose `recipe` names the recipe, else the only entry), `config.lxc(id)` any entry,
//! `config.ids()` every id, `config.selected()` the entries this run serves (one per run in
//! `phoenix up`). The maps are built from the typed [`LxcConfig`] (already checked
//! by the config loader), so a recipe never sees unvalidated text. Keys follow the config
//! file's field names (`memory_mb`, `network_config`, `vllm_model`, …) so a recipe author
//! reads the same names in both places; `gpus` is the normalised GPU selector (`"0,1"`,
//! `"all"`) and every `vllm_*` key exists, `()` when the entry has no vLLM server.
//! `config.models_dataset()` is the parent dataset of model datasets ([`crate::datasets`]).
//! Decision: the maps are copies; changing one changes nothing else.

use rhai::{Array, Dynamic, Engine, EvalAltResult, FuncRegistration, ImmutableString, Map};

use crate::api::{ApiError, script_error};
use crate::config::{IpConfig, LxcConfig};
use crate::runtime::Runtime;
use crate::types::Vmid;

crate::api::handle!(
    /// The `config` object recipes call methods on.
    ConfigApi
);

fn opt<T: Into<Dynamic>>(v: Option<T>) -> Dynamic {
    v.map_or(Dynamic::UNIT, Into::into)
}

fn text(v: impl ToString) -> Dynamic {
    Dynamic::from(ImmutableString::from(v.to_string()))
}

/// The recipe-facing map of one config entry.
pub fn entry_map(c: &LxcConfig) -> Map {
    let mut m = Map::new();
    let mut put = |k: &str, v: Dynamic| {
        m.insert(k.into(), v);
    };
    put("vmid", Dynamic::from(i64::from(c.vmid.get())));
    put("name", text(c.name.as_str()));
    put("memory_mb", Dynamic::from(i64::from(c.memory_mb)));
    put("swap_mb", Dynamic::from(i64::from(c.swap_mb)));
    put("cores", Dynamic::from(i64::from(c.cores)));
    put("template", text(c.template.as_str()));
    put("storage_pool", text(c.storage_pool.as_str()));
    put(
        "storage_size_gb",
        Dynamic::from(i64::from(c.storage_size_gb)),
    );
    let n = &c.network;
    let mut net = Map::new();
    net.insert("name".into(), text(n.name.as_str()));
    net.insert("bridge".into(), text(n.bridge.as_str()));
    net.insert(
        "ip".into(),
        match n.ip {
            IpConfig::Static(_) => text(n.ip),
            IpConfig::Dhcp => text("dhcp"),
        },
    );
    net.insert("gw".into(), opt(n.gw.map(|g| g.to_string())));
    net.insert(
        "dns".into(),
        Dynamic::from_array(n.dns.iter().map(text).collect()),
    );
    net.insert(
        "mac".into(),
        opt(n.mac.as_ref().map(|m| m.as_str().to_owned())),
    );
    net.insert("vlan".into(), opt(n.vlan.map(i64::from)));
    put("network_config", Dynamic::from_map(net));
    let f = &c.features;
    let mut feat = Map::new();
    for (k, on) in [
        ("nesting", f.nesting),
        ("keyctl", f.keyctl),
        ("fuse", f.fuse),
        ("mknod", f.mknod),
    ] {
        feat.insert(k.into(), Dynamic::from_bool(on));
    }
    put("features", Dynamic::from_map(feat));
    put("unprivileged", Dynamic::from_bool(c.unprivileged));
    put("onboot", Dynamic::from_bool(c.onboot));
    put("gpus", opt(c.gpus.as_ref().map(ToString::to_string)));
    let v = c.vllm.as_ref();
    put("vllm_model", opt(v.map(|v| v.model.as_str().to_owned())));
    put(
        "vllm_served_model_name",
        opt(v.and_then(|v| v.served_model_name.clone())),
    );
    put(
        "vllm_tensor_parallel_size",
        opt(v.map(|v| i64::from(v.tensor_parallel_size))),
    );
    put(
        "vllm_max_model_len",
        opt(v.and_then(|v| v.max_model_len).map(i64::from)),
    );
    put(
        "vllm_kv_cache_dtype",
        opt(v
            .and_then(|v| v.kv_cache_dtype)
            .map(|d| d.as_str().to_owned())),
    );
    put(
        "vllm_shm_size",
        opt(v.and_then(|v| v.shm_size.as_ref()).map(ToString::to_string)),
    );
    put(
        "vllm_quantization",
        opt(v.and_then(|v| v.quantization.clone())),
    );
    put(
        "vllm_quantization_config",
        opt(v
            .and_then(|v| v.quantization_config.as_ref())
            .map(ToString::to_string)),
    );
    put(
        "vllm_gpu_memory_utilization",
        opt(v.and_then(|v| v.gpu_memory_utilization)),
    );
    put("vllm_port", opt(v.map(|v| i64::from(v.port))));
    put("vllm_image", opt(v.and_then(|v| v.image.clone())));
    put("recipe", opt(c.recipe.clone()));
    put(
        "portainer_role",
        opt(c.portainer_role.map(|r| r.as_str().to_owned())),
    );
    put(
        "openai_backend",
        opt(c.openai_backend.map(|v| i64::from(v.get()))),
    );
    put("gpu_exclusive", Dynamic::from_bool(c.gpu_exclusive));
    put(
        "after",
        Dynamic::from_array(
            c.after
                .iter()
                .map(|v| Dynamic::from(i64::from(v.get())))
                .collect(),
        ),
    );
    put(
        "packages",
        Dynamic::from_array(c.packages.iter().map(|p| text(p.as_str())).collect()),
    );
    m
}

/// The entries this run may change ([`Runtime::selection`]), ascending: the one entry
/// each run of `phoenix up` (and of `recipe run` with several `--lxc`) serves, or the
/// default target; empty when there is none.
pub fn selected(rt: &Runtime) -> Vec<&LxcConfig> {
    let mut ids = rt.selection();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().filter_map(|v| rt.config.get(v)).collect()
}

/// The entry this run serves.
pub fn target(rt: &Runtime) -> Result<&LxcConfig, ApiError> {
    rt.target().ok_or_else(|| {
        ApiError::spec(
            "config.target",
            format!(
                "no default entry: {} has {} entries and none names recipe `{}`; choose with --lxc",
                rt.config.path.display(),
                rt.config.lxc.len(),
                rt.recipe_name
            ),
        )
    })
}

/// The entry `id`.
pub fn entry(rt: &Runtime, id: Vmid) -> Result<&LxcConfig, ApiError> {
    rt.config.get(id).ok_or_else(|| {
        ApiError::spec(
            "config.lxc",
            format!(
                "no entry {id} in {} (ids: {})",
                rt.config.path.display(),
                ids(rt)
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// Every id, ascending.
pub fn ids(rt: &Runtime) -> Vec<Vmid> {
    rt.config.lxc.keys().copied().collect()
}

fn vmid_from(call: &'static str, id: i64) -> Result<Vmid, ApiError> {
    let id = u64::try_from(id).map_err(|_| ApiError::spec(call, format!("{id} is not a vmid")))?;
    Vmid::new(id).map_err(|source| ApiError::Type { call, source })
}

type Ret<T> = Result<T, Box<EvalAltResult>>;

/// Register the `config` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ConfigApi>("ConfigApi");
    FuncRegistration::new("target")
        .with_params_info(["config: ConfigApi", "Map"])
        .with_comments([
            "/// The config entry this run serves: the one chosen with `--lxc`, else the entry\n\
             /// whose `recipe` names this recipe, else the only entry. Keys as in the config file\n\
             /// (`vmid`, `name`, `memory_mb`, `network_config`, `vllm_model`, …; `gpus` is the\n\
             /// GPU selector). Fails when no entry is selected.",
        ])
        .register_into_engine(engine, |api: ConfigApi| -> Ret<Map> {
            target(api.runtime())
                .map(entry_map)
                .map_err(script_error)
        });
    FuncRegistration::new("lxc")
        .with_params_info(["config: ConfigApi", "id: i64", "Map"])
        .with_comments([
            "/// The config entry of container `id` as a map (see `config.target()`).\n\
             /// Fails when the config has no such entry.",
        ])
        .register_into_engine(engine, |api: ConfigApi, id: i64| -> Ret<Map> {
            let rt = api.runtime();
            let id = vmid_from("config.lxc", id).map_err(script_error)?;
            entry(rt, id).map(entry_map).map_err(script_error)
        });
    FuncRegistration::new("lxc")
        .with_params_info(["config: ConfigApi", "id: String", "Map"])
        .with_comments(["/// `config.lxc(id)` with the id as a string (`\"901\"`)."])
        .register_into_engine(engine, |api: ConfigApi, id: &str| -> Ret<Map> {
            let rt = api.runtime();
            let id: Vmid = id.parse().map_err(|source| {
                script_error(ApiError::Type {
                    call: "config.lxc",
                    source,
                })
            })?;
            entry(rt, id).map(entry_map).map_err(script_error)
        });
    FuncRegistration::new("models_dataset")
        .with_params_info(["config: ConfigApi", "String"])
        .with_comments([
            "/// The parent ZFS dataset of model datasets on this host (`rpool/phoenix/models`):\n\
             /// the setting `models_dataset` (`--models-dataset`, PHOENIX_MODELS_DATASET, the\n\
             /// settings file), else the config's top-level `models_dataset`, else\n\
             /// `<pool>/phoenix/models` on a host with exactly one ZFS pool. Create model\n\
             /// datasets below it: `zfs.dataset(config.models_dataset() + \"/\" + entry.name, …)`.",
        ])
        .register_into_engine(engine, |api: ConfigApi| -> Ret<ImmutableString> {
            crate::datasets::models_parent(api.runtime())
                .map(|p| ImmutableString::from(p.as_str()))
                .map_err(script_error)
        });
    FuncRegistration::new("selected")
        .with_params_info(["config: ConfigApi", "Array"])
        .with_comments([
            "/// The config entries this run serves, as maps (see `config.target()`), ascending by\n\
             /// vmid: each run of `phoenix up`, and of `recipe run` with several `--lxc`, serves\n\
             /// exactly one entry; empty when no entry is selected.",
        ])
        .register_into_engine(engine, |api: ConfigApi| -> Array {
            selected(api.runtime())
                .into_iter()
                .map(|e| Dynamic::from_map(entry_map(e)))
                .collect()
        });
    FuncRegistration::new("ids")
        .with_params_info(["config: ConfigApi", "Array"])
        .with_comments(["/// Every container id in the config, ascending."])
        .register_into_engine(engine, |api: ConfigApi| -> Array {
            ids(api.runtime())
                .into_iter()
                .map(|v| Dynamic::from(i64::from(v.get())))
                .collect()
        });
}

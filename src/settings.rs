//! Settings and paths (DESIGN.md §4).
//!
//! Every path and tunable phoenix uses is resolved here, once, with this precedence:
//! command-line flag > environment variable > override file (`/etc/phoenix/phoenix.toml`,
//! or the file named by `PHOENIX_SETTINGS`) > default. Each resolved value remembers its
//! source so `phoenix paths` can explain where it came from.
//!
//! Some defaults derive from another setting (markers and the emulated host live under the
//! state directory), so moving `PHOENIX_STATE_DIR` moves them too unless they are set.
//!
//! The emulated host is a demo and a test bed, not a machine to administer, so with
//! `--host emulated` (or `PHOENIX_HOST=emulated`) the defaults are per user and nothing
//! needs root: the state directory is `$XDG_STATE_HOME/phoenix/emulated` (else
//! `~/.local/state/phoenix/emulated`), and the log directory, the secret store and the
//! secret key default to `log/`, `secrets/` and `secret.key` inside it, next to `markers/`
//! and the emulated root `emulated/`. The default override file
//! (`/etc/phoenix/phoenix.toml`) configures the real host and is not read then; a file named
//! by `PHOENIX_SETTINGS` still is. Every value given by flag, environment or file wins, as
//! always.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::types::ModelsParent;

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Env,
    /// The override file.
    File,
    /// The container config file (a value the config may also carry: `models_dataset`).
    Config,
    /// Derived from the host (the models parent on a host with one ZFS pool).
    Host,
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Flag => "flag",
            Self::Env => "env",
            Self::File => "file",
            Self::Config => "config",
            Self::Host => "host",
            Self::Default => "default",
        })
    }
}

/// One resolved value and its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// Which host backend runs the primitives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    /// A Proxmox VE node (`pct`, `pvesm`, `zfs`, `nvidia-smi`).
    Pve,
    /// The emulated Proxmox host (`phoenix-emu`): the `pve` code path against emulated
    /// tools, for demos and tests; nothing leaves the machine.
    Emulated,
    /// A plain Linux host with LXC (`lxc-create`, `lxc-attach`, …).
    Lxc,
}

impl fmt::Display for HostKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pve => "pve",
            Self::Emulated => "emulated",
            Self::Lxc => "lxc",
        })
    }
}

impl std::str::FromStr for HostKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pve" => Ok(Self::Pve),
            "emulated" => Ok(Self::Emulated),
            "lxc" => Ok(Self::Lxc),
            _ => Err(format!("unknown host {s:?}: expected pve, emulated or lxc")),
        }
    }
}

/// Errors while resolving settings.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The override file exists but cannot be read.
    #[error("cannot read settings file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The override file is not valid TOML of the expected shape.
    #[error("settings file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said.
        message: String,
    },
    /// A value (from any source) is not acceptable.
    #[error("setting {key} ({source_kind}) is invalid: {message}")]
    Value {
        /// The setting's name.
        key: &'static str,
        /// Where the bad value came from.
        source_kind: Source,
        /// What is wrong.
        message: String,
    },
}

/// The command-line flags that override settings.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--host`.
    pub host: Option<HostKind>,
    /// `--models-dataset`.
    pub models_dataset: Option<String>,
}

/// Every resolved setting.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The config file (`PHOENIX_CONFIG`).
    pub config: Setting<PathBuf>,
    /// The host backend (`PHOENIX_HOST`).
    pub host: Setting<HostKind>,
    /// Journal, locks and run state (`PHOENIX_STATE_DIR`).
    pub state_dir: Setting<PathBuf>,
    /// Markers of completed steps (`PHOENIX_MARKER_DIR`).
    pub marker_dir: Setting<PathBuf>,
    /// JSON log files (`PHOENIX_LOG_DIR`).
    pub log_dir: Setting<PathBuf>,
    /// The encrypted secret store (`PHOENIX_SECRETS_DIR`).
    pub secrets_dir: Setting<PathBuf>,
    /// The age identity of this host (`PHOENIX_SECRET_KEY`).
    pub secret_key: Setting<PathBuf>,
    /// PVE's container configs (`PHOENIX_PVE_LXC_DIR`).
    pub pve_lxc_dir: Setting<PathBuf>,
    /// Device nodes (`PHOENIX_DEV_DIR`).
    pub dev_dir: Setting<PathBuf>,
    /// sysfs, where the host's cgroup mode and bridges are read (`PHOENIX_SYS_DIR`).
    pub sys_dir: Setting<PathBuf>,
    /// procfs, where the host's memory and CPUs are read (`PHOENIX_PROC_DIR`).
    pub proc_dir: Setting<PathBuf>,
    /// The host's systemd unit directory (`PHOENIX_SYSTEMD_DIR`).
    pub systemd_dir: Setting<PathBuf>,
    /// The NVIDIA driver's `.run` installer on the host, pushed into containers that cannot
    /// download it; unset = download inside the container (`PHOENIX_NVIDIA_INSTALLER`).
    pub nvidia_installer: Setting<Option<PathBuf>>,
    /// A host directory of `.deb` files (driver userspace and/or container toolkit) pushed
    /// into containers instead of using NVIDIA's repositories (`PHOENIX_NVIDIA_DEBS`).
    pub nvidia_debs: Setting<Option<PathBuf>>,
    /// Recipe modules; unset = the stdlib embedded in the binary (`PHOENIX_STDLIB`).
    pub stdlib: Setting<Option<PathBuf>>,
    /// Where host tools are looked up; unset = their standard absolute paths (`PHOENIX_BIN_DIR`).
    pub bin_dir: Setting<Option<PathBuf>>,
    /// Root of the emulated host (`PHOENIX_EMU_ROOT`).
    pub emu_root: Setting<PathBuf>,
    /// PVE version the emulated host reports (`PHOENIX_EMU_PVE_VERSION`).
    pub emu_pve_version: Setting<String>,
    /// LXC's container directory for the `lxc` backend (`PHOENIX_LXC_PATH`).
    pub lxc_path: Setting<PathBuf>,
    /// The vLLM image, pinned (`PHOENIX_VLLM_IMAGE`).
    pub vllm_image: Setting<String>,
    /// How long a container lifecycle command (`pct start|stop|destroy`) may take before it
    /// is killed (`PHOENIX_LIFECYCLE_TIMEOUT`, e.g. `180s`).
    pub lifecycle_timeout: Setting<std::time::Duration>,
    /// The parent of phoenix's model datasets (`PHOENIX_MODELS_DATASET`). Unset here means:
    /// the config's `models_dataset`, else derived from the host ([`crate::datasets`]).
    pub models_dataset: Setting<Option<ModelsParent>>,
    /// Host directories bind mounts may come from, besides phoenix-owned datasets
    /// (`PHOENIX_MOUNT_ROOTS`, `:`-separated absolute paths; default none: DESIGN.md §12).
    pub mount_roots: Setting<Vec<PathBuf>>,
    /// CPU time a recipe's own code may use between primitive calls
    /// (`PHOENIX_SCRIPT_CPU`, e.g. `10s`).
    pub script_cpu: Setting<std::time::Duration>,
    /// Memory a recipe may hold, closures included (`PHOENIX_SCRIPT_MEMORY`, e.g. `512m`).
    pub script_memory: Setting<u64>,
    /// How often a heartbeat line shows a running step when stderr is not a terminal
    /// (`PHOENIX_PROGRESS_INTERVAL`, default `15s`).
    pub progress_interval: Setting<std::time::Duration>,
}

/// The pinned vLLM image (never `latest` by default).
pub const DEFAULT_VLLM_IMAGE: &str = "vllm/vllm-openai:v0.11.0";

/// The default override file.
pub const DEFAULT_SETTINGS_FILE: &str = "/etc/phoenix/phoenix.toml";

/// (name, env var, description) of every setting, in `phoenix paths` order.
pub const KEYS: &[(&str, &str, &str)] = &[
    ("config", "PHOENIX_CONFIG", "container config file"),
    ("host", "PHOENIX_HOST", "host backend"),
    (
        "state_dir",
        "PHOENIX_STATE_DIR",
        "journal, locks, run state",
    ),
    (
        "marker_dir",
        "PHOENIX_MARKER_DIR",
        "markers of completed steps",
    ),
    ("log_dir", "PHOENIX_LOG_DIR", "JSON log files"),
    (
        "secrets_dir",
        "PHOENIX_SECRETS_DIR",
        "encrypted secret store",
    ),
    ("secret_key", "PHOENIX_SECRET_KEY", "host age identity"),
    (
        "pve_lxc_dir",
        "PHOENIX_PVE_LXC_DIR",
        "PVE container configs",
    ),
    ("dev_dir", "PHOENIX_DEV_DIR", "device nodes"),
    (
        "sys_dir",
        "PHOENIX_SYS_DIR",
        "sysfs (host cgroup mode, bridges)",
    ),
    ("proc_dir", "PHOENIX_PROC_DIR", "procfs (host memory, CPUs)"),
    (
        "systemd_dir",
        "PHOENIX_SYSTEMD_DIR",
        "host systemd units (boot-time device nodes)",
    ),
    (
        "nvidia_installer",
        "PHOENIX_NVIDIA_INSTALLER",
        "host NVIDIA .run installer (unset: download in the CT)",
    ),
    (
        "nvidia_debs",
        "PHOENIX_NVIDIA_DEBS",
        "host directory of NVIDIA .deb files (unset: none)",
    ),
    (
        "stdlib",
        "PHOENIX_STDLIB",
        "recipe modules (unset: embedded)",
    ),
    (
        "bin_dir",
        "PHOENIX_BIN_DIR",
        "host tools (unset: standard paths)",
    ),
    ("emu_root", "PHOENIX_EMU_ROOT", "emulated host root"),
    (
        "emu_pve_version",
        "PHOENIX_EMU_PVE_VERSION",
        "emulated PVE version",
    ),
    (
        "lxc_path",
        "PHOENIX_LXC_PATH",
        "LXC container directory (lxc backend)",
    ),
    ("vllm_image", "PHOENIX_VLLM_IMAGE", "vLLM image, pinned"),
    (
        "lifecycle_timeout",
        "PHOENIX_LIFECYCLE_TIMEOUT",
        "limit for pct start/stop/destroy",
    ),
    (
        "models_dataset",
        "PHOENIX_MODELS_DATASET",
        "parent ZFS dataset of the model datasets",
    ),
    (
        "mount_roots",
        "PHOENIX_MOUNT_ROOTS",
        "host dirs bind mounts may come from (:-separated)",
    ),
    (
        "script_cpu",
        "PHOENIX_SCRIPT_CPU",
        "CPU time a recipe's own code may use",
    ),
    (
        "script_memory",
        "PHOENIX_SCRIPT_MEMORY",
        "memory a recipe may hold",
    ),
    (
        "progress_interval",
        "PHOENIX_PROGRESS_INTERVAL",
        "heartbeat of a running step (stderr not a terminal)",
    ),
];

/// What `phoenix paths` shows for an unset models parent (`--json`: `null`).
pub const MODELS_DATASET_UNSET: &str = "(unset: the config's, else <pool>/phoenix/models)";

/// What `phoenix paths` shows for the unset optional setting `name` (`--json`: `null`).
pub fn unset_text(name: &str) -> &'static str {
    match name {
        "models_dataset" => MODELS_DATASET_UNSET,
        "stdlib" => "(unset: embedded)",
        "bin_dir" => "(unset: standard paths)",
        "mount_roots" => "(none)",
        _ => "(unset)",
    }
}

impl Settings {
    /// Resolve from flags, the process environment and the override file.
    pub fn resolve(flags: &FlagOverrides) -> Result<Self, SettingsError> {
        Self::resolve_with(flags, &|k| std::env::var(k).ok())
    }

    /// Resolve with an explicit environment (tests).
    pub fn resolve_with(
        flags: &FlagOverrides,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, SettingsError> {
        let file_path = env("PHOENIX_SETTINGS")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let explicit = file_path.is_some();
        // The host as flag or environment name it, before any file: the emulated host does
        // not read the real host's default override file.
        let early_host = flags.host.or_else(|| {
            env("PHOENIX_HOST")
                .filter(|v| !v.is_empty())
                .and_then(|v| v.parse().ok())
        });
        let file = if !explicit && early_host == Some(HostKind::Emulated) {
            BTreeMap::new()
        } else {
            let file_path = file_path.unwrap_or_else(|| PathBuf::from(DEFAULT_SETTINGS_FILE));
            read_file(&file_path, explicit)?
        };

        let lookup = |key: &'static str, var: &str| -> Option<(String, Source)> {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                return Some((v, Source::Env));
            }
            file.get(key).map(|v| (v.clone(), Source::File))
        };
        let path = |key: &'static str,
                    var: &str,
                    default: PathBuf|
         -> Result<Setting<PathBuf>, SettingsError> {
            match lookup(key, var) {
                Some((v, source)) => Ok(Setting {
                    value: absolute(key, source, &v)?,
                    source,
                }),
                None => Ok(Setting {
                    value: default,
                    source: Source::Default,
                }),
            }
        };
        let opt_path =
            |key: &'static str, var: &str| -> Result<Setting<Option<PathBuf>>, SettingsError> {
                match lookup(key, var) {
                    Some((v, source)) => Ok(Setting {
                        value: Some(absolute(key, source, &v)?),
                        source,
                    }),
                    None => Ok(Setting {
                        value: None,
                        source: Source::Default,
                    }),
                }
            };
        let text = |key: &'static str, var: &str, default: &str| -> Setting<String> {
            match lookup(key, var) {
                Some((value, source)) => Setting { value, source },
                None => Setting {
                    value: default.to_owned(),
                    source: Source::Default,
                },
            }
        };

        let config = match &flags.config {
            Some(p) => Setting {
                value: p.clone(),
                source: Source::Flag,
            },
            None => path(
                "config",
                "PHOENIX_CONFIG",
                PathBuf::from("/etc/phoenix/phoenix_lxc_configs.json"),
            )?,
        };
        let host = match flags.host {
            Some(h) => Setting {
                value: h,
                source: Source::Flag,
            },
            None => match lookup("host", "PHOENIX_HOST") {
                Some((v, source)) => Setting {
                    value: v.parse().map_err(|message| SettingsError::Value {
                        key: "host",
                        source_kind: source,
                        message,
                    })?,
                    source,
                },
                None => Setting {
                    value: HostKind::Pve,
                    source: Source::Default,
                },
            },
        };
        let emulated = host.value == HostKind::Emulated;
        let state_dir = match lookup("state_dir", "PHOENIX_STATE_DIR") {
            Some(_) => path("state_dir", "PHOENIX_STATE_DIR", PathBuf::new())?,
            None if emulated => Setting {
                value: per_user_state_dir(env)?,
                source: Source::Default,
            },
            None => Setting {
                value: PathBuf::from("/var/lib/phoenix"),
                source: Source::Default,
            },
        };
        // Under the state directory for the emulated host, the standard places otherwise.
        let per_user = state_dir.value.clone();
        let system_or_state = move |system: &str, rel: &str| {
            if emulated {
                per_user.join(rel)
            } else {
                PathBuf::from(system)
            }
        };
        let marker_dir = path(
            "marker_dir",
            "PHOENIX_MARKER_DIR",
            state_dir.value.join("markers"),
        )?;
        let emu_root = path(
            "emu_root",
            "PHOENIX_EMU_ROOT",
            state_dir.value.join("emulated"),
        )?;
        let vllm_image = text("vllm_image", "PHOENIX_VLLM_IMAGE", DEFAULT_VLLM_IMAGE);
        if vllm_image.value.starts_with('-')
            || vllm_image
                .value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(SettingsError::Value {
                key: "vllm_image",
                source_kind: vllm_image.source,
                message: "must be an image reference such as vllm/vllm-openai:v0.11.0".into(),
            });
        }
        Ok(Self {
            config,
            host,
            state_dir,
            marker_dir,
            log_dir: path(
                "log_dir",
                "PHOENIX_LOG_DIR",
                system_or_state("/var/log/phoenix", "log"),
            )?,
            secrets_dir: path(
                "secrets_dir",
                "PHOENIX_SECRETS_DIR",
                system_or_state("/etc/phoenix/secrets", "secrets"),
            )?,
            secret_key: path(
                "secret_key",
                "PHOENIX_SECRET_KEY",
                system_or_state("/etc/phoenix/secret.key", "secret.key"),
            )?,
            pve_lxc_dir: path(
                "pve_lxc_dir",
                "PHOENIX_PVE_LXC_DIR",
                PathBuf::from("/etc/pve/lxc"),
            )?,
            dev_dir: path("dev_dir", "PHOENIX_DEV_DIR", PathBuf::from("/dev"))?,
            sys_dir: path("sys_dir", "PHOENIX_SYS_DIR", PathBuf::from("/sys"))?,
            proc_dir: path("proc_dir", "PHOENIX_PROC_DIR", PathBuf::from("/proc"))?,
            systemd_dir: path(
                "systemd_dir",
                "PHOENIX_SYSTEMD_DIR",
                PathBuf::from("/etc/systemd/system"),
            )?,
            nvidia_installer: opt_path("nvidia_installer", "PHOENIX_NVIDIA_INSTALLER")?,
            nvidia_debs: opt_path("nvidia_debs", "PHOENIX_NVIDIA_DEBS")?,
            stdlib: opt_path("stdlib", "PHOENIX_STDLIB")?,
            bin_dir: opt_path("bin_dir", "PHOENIX_BIN_DIR")?,
            emu_root,
            emu_pve_version: text("emu_pve_version", "PHOENIX_EMU_PVE_VERSION", "8.4.1"),
            lxc_path: path(
                "lxc_path",
                "PHOENIX_LXC_PATH",
                PathBuf::from("/var/lib/lxc"),
            )?,
            vllm_image,
            models_dataset: {
                let found = match &flags.models_dataset {
                    Some(v) => Some((v.clone(), Source::Flag)),
                    None => lookup("models_dataset", "PHOENIX_MODELS_DATASET"),
                };
                match found {
                    Some((v, source)) => Setting {
                        value: Some(ModelsParent::new(v).map_err(|e| SettingsError::Value {
                            key: "models_dataset",
                            source_kind: source,
                            message: format!("{} {}", e.shown, e.reason),
                        })?),
                        source,
                    },
                    None => Setting {
                        value: None,
                        source: Source::Default,
                    },
                }
            },
            lifecycle_timeout: {
                let t = text("lifecycle_timeout", "PHOENIX_LIFECYCLE_TIMEOUT", "180s");
                let value = t
                    .value
                    .parse::<crate::types::DurationSpec>()
                    .map_err(|e| SettingsError::Value {
                        key: "lifecycle_timeout",
                        source_kind: t.source,
                        message: e.to_string(),
                    })?
                    .0;
                Setting {
                    value,
                    source: t.source,
                }
            },
            script_cpu: {
                let t = text("script_cpu", "PHOENIX_SCRIPT_CPU", "10s");
                let value = t
                    .value
                    .parse::<crate::types::DurationSpec>()
                    .map_err(|e| SettingsError::Value {
                        key: "script_cpu",
                        source_kind: t.source,
                        message: e.to_string(),
                    })?
                    .0;
                Setting {
                    value,
                    source: t.source,
                }
            },
            script_memory: {
                let t = text("script_memory", "PHOENIX_SCRIPT_MEMORY", "512m");
                Setting {
                    value: size_bytes(&t.value).ok_or_else(|| SettingsError::Value {
                        key: "script_memory",
                        source_kind: t.source,
                        message: format!(
                            "{:?} is not a size such as 512m or 2g (at least 1m)",
                            t.value
                        ),
                    })?,
                    source: t.source,
                }
            },
            progress_interval: {
                let t = text("progress_interval", "PHOENIX_PROGRESS_INTERVAL", "15s");
                let value = t
                    .value
                    .parse::<crate::types::DurationSpec>()
                    .map_err(|e| SettingsError::Value {
                        key: "progress_interval",
                        source_kind: t.source,
                        message: e.to_string(),
                    })?
                    .0;
                if value.is_zero() {
                    return Err(SettingsError::Value {
                        key: "progress_interval",
                        source_kind: t.source,
                        message: format!("{:?} is not a positive duration", t.value),
                    });
                }
                Setting {
                    value,
                    source: t.source,
                }
            },
            mount_roots: match lookup("mount_roots", "PHOENIX_MOUNT_ROOTS") {
                Some((v, source)) => Setting {
                    value: v
                        .split(':')
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            if p.starts_with('/') {
                                absolute("mount_roots", source, p)
                            } else {
                                Err(SettingsError::Value {
                                    key: "mount_roots",
                                    source_kind: source,
                                    message: format!("{p:?} is not an absolute path"),
                                })
                            }
                        })
                        .collect::<Result<_, _>>()?,
                    source,
                },
                None => Setting {
                    value: Vec::new(),
                    source: Source::Default,
                },
            },
        })
    }

    /// Every setting as `(name, env var, value, source)` rows for `phoenix paths`; `None`
    /// for an unset optional setting.
    pub fn rows(&self) -> Vec<(&'static str, &'static str, Option<String>, Source)> {
        let p = |s: &Setting<PathBuf>| (Some(s.value.display().to_string()), s.source);
        let o = |s: &Setting<Option<PathBuf>>| {
            (s.value.as_ref().map(|p| p.display().to_string()), s.source)
        };
        let values = [
            p(&self.config),
            (Some(self.host.value.to_string()), self.host.source),
            p(&self.state_dir),
            p(&self.marker_dir),
            p(&self.log_dir),
            p(&self.secrets_dir),
            p(&self.secret_key),
            p(&self.pve_lxc_dir),
            p(&self.dev_dir),
            p(&self.sys_dir),
            p(&self.proc_dir),
            p(&self.systemd_dir),
            o(&self.nvidia_installer),
            o(&self.nvidia_debs),
            o(&self.stdlib),
            o(&self.bin_dir),
            p(&self.emu_root),
            (
                Some(self.emu_pve_version.value.clone()),
                self.emu_pve_version.source,
            ),
            p(&self.lxc_path),
            (Some(self.vllm_image.value.clone()), self.vllm_image.source),
            (
                Some(crate::types::DurationSpec(self.lifecycle_timeout.value).to_string()),
                self.lifecycle_timeout.source,
            ),
            (
                self.models_dataset.value.as_ref().map(ToString::to_string),
                self.models_dataset.source,
            ),
            (
                (!self.mount_roots.value.is_empty()).then(|| {
                    self.mount_roots
                        .value
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                }),
                self.mount_roots.source,
            ),
            (
                Some(crate::types::DurationSpec(self.script_cpu.value).to_string()),
                self.script_cpu.source,
            ),
            (
                Some(format!("{}m", self.script_memory.value >> 20)),
                self.script_memory.source,
            ),
            (
                Some(crate::types::DurationSpec(self.progress_interval.value).to_string()),
                self.progress_interval.source,
            ),
        ];
        KEYS.iter()
            .zip(values)
            .map(|(&(name, var, _), (value, source))| (name, var, value, source))
            .collect()
    }

    /// The absolute path of host tool `name` (`pct`, `zfs`, …): under `PHOENIX_BIN_DIR` when
    /// set, else its standard location. Never a bare `PATH` lookup.
    pub fn tool(&self, name: &str) -> PathBuf {
        if let Some(dir) = &self.bin_dir.value {
            return dir.join(name);
        }
        let dir = match name {
            "pct" | "pvesm" | "zfs" | "zpool" => "/usr/sbin",
            "lxc-create" | "lxc-start" | "lxc-stop" | "lxc-destroy" | "lxc-info" | "lxc-attach"
            | "lxc-ls" | "lxc-wait" => "/usr/bin",
            _ => "/usr/bin",
        };
        Path::new(dir).join(name)
    }
}

/// `512m`, `2g`, `1048576` as bytes (binary units); at least 1 MiB.
fn size_bytes(v: &str) -> Option<u64> {
    let s = crate::types::Size::new(v).ok()?;
    let text = s.as_str().trim_end_matches('b');
    let (digits, shift) = match text.chars().last()? {
        'k' => (&text[..text.len() - 1], 10),
        'm' => (&text[..text.len() - 1], 20),
        'g' => (&text[..text.len() - 1], 30),
        't' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(1u64 << shift).filter(|b| *b >= 1 << 20)
}

/// The emulated host's default state directory: `$XDG_STATE_HOME/phoenix/emulated`, else
/// `$HOME/.local/state/phoenix/emulated` (XDG Base Directory Specification: a relative
/// `XDG_STATE_HOME` is ignored), with the home directory from the password database when
/// `HOME` is unset.
fn per_user_state_dir(env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf, SettingsError> {
    let absolute = |v: Option<String>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(xdg) = absolute(env("XDG_STATE_HOME")) {
        return Ok(xdg.join("phoenix/emulated"));
    }
    let home = absolute(env("HOME")).or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
            .filter(|d| d.is_absolute())
    });
    home.map(|h| h.join(".local/state/phoenix/emulated"))
        .ok_or_else(|| SettingsError::Value {
            key: "state_dir",
            source_kind: Source::Default,
            message: "the emulated host keeps its state in $XDG_STATE_HOME or ~/.local/state, \
                      and neither HOME nor XDG_STATE_HOME is set: set PHOENIX_STATE_DIR"
                .into(),
        })
}

fn absolute(key: &'static str, source: Source, v: &str) -> Result<PathBuf, SettingsError> {
    let p = PathBuf::from(v);
    if v.contains('\0') || v.contains('\n') {
        return Err(SettingsError::Value {
            key,
            source_kind: source,
            message: "contains a newline or NUL".into(),
        });
    }
    if p.is_absolute() {
        return Ok(p);
    }
    // Relative paths are taken relative to the working directory, like any CLI tool would.
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| SettingsError::Value {
            key,
            source_kind: source,
            message: format!("relative path and no working directory: {e}"),
        })
}

fn read_file(path: &Path, explicit: bool) -> Result<BTreeMap<String, String>, SettingsError> {
    let text = match crate::boundary::limits::read_input_text(
        path,
        crate::boundary::limits::Input::Settings,
    ) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(BTreeMap::new());
        }
        Err(source) => {
            return Err(SettingsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| SettingsError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        if !KEYS.iter().any(|(name, ..)| *name == k) {
            let known: Vec<&str> = KEYS.iter().map(|(n, ..)| *n).collect();
            return Err(SettingsError::Parse {
                path: path.to_owned(),
                message: format!("unknown key `{k}`; known keys: {}", known.join(", ")),
            });
        }
        let toml::Value::String(s) = v else {
            return Err(SettingsError::Parse {
                path: path.to_owned(),
                message: format!("`{k}` must be a string"),
            });
        };
        out.insert(k, s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(env: &[(&str, &str)], flags: FlagOverrides) -> Result<Settings, SettingsError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::resolve_with(&flags, &move |k| env.get(k).cloned())
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("phoenix.toml");
        std::fs::write(
            &file,
            "log_dir = \"/from/file/logs\"\nmarker_dir = \"/from/file/markers\"\nconfig = \"/from/file/c.json\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let s = resolve(
            &[
                ("PHOENIX_SETTINGS", f),
                ("PHOENIX_MARKER_DIR", "/from/env/markers"),
                ("PHOENIX_CONFIG", "/from/env/c.json"),
            ],
            FlagOverrides {
                config: Some("/from/flag/c.json".into()),
                host: None,
                models_dataset: None,
            },
        )
        .unwrap();
        assert_eq!(s.config.value, PathBuf::from("/from/flag/c.json"));
        assert_eq!(s.config.source, Source::Flag);
        assert_eq!(s.marker_dir.value, PathBuf::from("/from/env/markers"));
        assert_eq!(s.marker_dir.source, Source::Env);
        assert_eq!(s.log_dir.value, PathBuf::from("/from/file/logs"));
        assert_eq!(s.log_dir.source, Source::File);
        assert_eq!(s.secret_key.value, PathBuf::from("/etc/phoenix/secret.key"));
        assert_eq!(s.secret_key.source, Source::Default);
    }

    #[test]
    fn models_dataset_flag_env_file_and_unset() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("phoenix.toml");
        std::fs::write(&file, "models_dataset = \"file/pool/m\"\n").unwrap();
        let f = file.to_str().unwrap();
        let flag = |v: Option<&str>| FlagOverrides {
            models_dataset: v.map(str::to_owned),
            ..FlagOverrides::default()
        };
        let env = [("PHOENIX_SETTINGS", f), ("PHOENIX_MODELS_DATASET", "env/m")];
        let s = resolve(&env, flag(Some("flag/m"))).unwrap();
        assert_eq!(
            (
                s.models_dataset.value.unwrap().as_str(),
                s.models_dataset.source
            ),
            ("flag/m", Source::Flag)
        );
        let s = resolve(&env, flag(None)).unwrap();
        assert_eq!(
            (
                s.models_dataset.value.unwrap().as_str(),
                s.models_dataset.source
            ),
            ("env/m", Source::Env)
        );
        let s = resolve(&env[..1], flag(None)).unwrap();
        assert_eq!(
            (
                s.models_dataset.value.unwrap().as_str(),
                s.models_dataset.source
            ),
            ("file/pool/m", Source::File)
        );
        let s = resolve(&[("PHOENIX_SETTINGS", "")], flag(None)).unwrap();
        assert_eq!(s.models_dataset.value, None);
        assert_eq!(s.models_dataset.source, Source::Default);
        let row = s
            .rows()
            .into_iter()
            .find(|r| r.0 == "models_dataset")
            .unwrap();
        assert_eq!(row.1, "PHOENIX_MODELS_DATASET");
        assert_eq!(row.2, None);
        let err = resolve(&[("PHOENIX_MODELS_DATASET", "data")], flag(None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "setting models_dataset (env) is invalid: \"data\" must be a dataset inside a pool (`pool/phoenix/models`), not the pool itself"
        );
        let err = resolve(&[], flag(Some("/rpool/m"))).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("setting models_dataset (flag) is invalid"),
            "{err}"
        );
    }

    #[test]
    fn derived_defaults_follow_state_dir() {
        let s = resolve(
            &[("PHOENIX_STATE_DIR", "/tmp/st"), ("PHOENIX_SETTINGS", "")],
            FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(s.marker_dir.value, PathBuf::from("/tmp/st/markers"));
        assert_eq!(s.emu_root.value, PathBuf::from("/tmp/st/emulated"));
        assert_eq!(s.marker_dir.source, Source::Default);
    }

    #[test]
    fn unknown_key_in_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "markers = \"/x\"\n").unwrap();
        let err = resolve(
            &[("PHOENIX_SETTINGS", file.to_str().unwrap())],
            FlagOverrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown key `markers`"), "{err}");
    }

    #[test]
    fn explicit_missing_settings_file_is_an_error() {
        let err = resolve(
            &[("PHOENIX_SETTINGS", "/nonexistent/p.toml")],
            FlagOverrides::default(),
        )
        .unwrap_err();
        assert!(matches!(err, SettingsError::Read { .. }));
    }

    #[test]
    fn bad_host_names_source() {
        let err = resolve(&[("PHOENIX_HOST", "proxmox")], FlagOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("host (env)"), "{err}");
    }

    #[test]
    fn emulated_host_defaults_live_in_the_per_user_state_dir() {
        let emulated = FlagOverrides {
            host: Some(HostKind::Emulated),
            ..FlagOverrides::default()
        };
        let s = resolve(
            &[("XDG_STATE_HOME", "/home/u/.st"), ("HOME", "/home/u")],
            emulated.clone(),
        )
        .unwrap();
        let base = PathBuf::from("/home/u/.st/phoenix/emulated");
        assert_eq!(s.state_dir.value, base);
        assert_eq!(s.state_dir.source, Source::Default);
        assert_eq!(s.marker_dir.value, base.join("markers"));
        assert_eq!(s.emu_root.value, base.join("emulated"));
        assert_eq!(s.log_dir.value, base.join("log"));
        assert_eq!(s.secrets_dir.value, base.join("secrets"));
        assert_eq!(s.secret_key.value, base.join("secret.key"));
        // A relative XDG_STATE_HOME is ignored (XDG Base Directory Specification).
        let s = resolve(
            &[("XDG_STATE_HOME", "rel"), ("HOME", "/home/u")],
            emulated.clone(),
        )
        .unwrap();
        assert_eq!(
            s.state_dir.value,
            PathBuf::from("/home/u/.local/state/phoenix/emulated")
        );
        // PHOENIX_HOST=emulated does the same; an explicit path still wins.
        let s = resolve(
            &[
                ("PHOENIX_HOST", "emulated"),
                ("HOME", "/home/u"),
                ("PHOENIX_SECRET_KEY", "/k/key"),
            ],
            FlagOverrides::default(),
        )
        .unwrap();
        assert_eq!(
            s.secrets_dir.value,
            PathBuf::from("/home/u/.local/state/phoenix/emulated/secrets")
        );
        assert_eq!(s.secret_key.value, PathBuf::from("/k/key"));
        assert_eq!(s.secret_key.source, Source::Env);
        // The real host keeps the standard places.
        let s = resolve(&[("HOME", "/home/u")], FlagOverrides::default()).unwrap();
        assert_eq!(s.state_dir.value, PathBuf::from("/var/lib/phoenix"));
        assert_eq!(s.secret_key.value, PathBuf::from("/etc/phoenix/secret.key"));
    }

    #[test]
    fn emulated_host_skips_the_default_settings_file_but_reads_an_explicit_one() {
        // The default file cannot be faked here; an explicit one is read as always.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "state_dir = \"/from/file\"\n").unwrap();
        let s = resolve(
            &[("PHOENIX_SETTINGS", file.to_str().unwrap()), ("HOME", "/h")],
            FlagOverrides {
                host: Some(HostKind::Emulated),
                ..FlagOverrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.state_dir.value, PathBuf::from("/from/file"));
        assert_eq!(s.secret_key.value, PathBuf::from("/from/file/secret.key"));
    }

    #[test]
    fn tools_use_bin_dir_or_standard_paths() {
        let s = resolve(&[], FlagOverrides::default()).unwrap();
        assert_eq!(s.tool("pct"), PathBuf::from("/usr/sbin/pct"));
        assert_eq!(s.tool("nvidia-smi"), PathBuf::from("/usr/bin/nvidia-smi"));
        let s = resolve(&[("PHOENIX_BIN_DIR", "/emu/bin")], FlagOverrides::default()).unwrap();
        assert_eq!(s.tool("pct"), PathBuf::from("/emu/bin/pct"));
    }
}

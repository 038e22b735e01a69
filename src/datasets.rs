//! phoenix's ZFS datasets on the host: where they live.
//!
//! Every dataset a recipe makes for model files lives under one parent, the *models
//! parent* (DESIGN.md §11 "Pools are the host's": no pool or dataset name is built in).
//! Its name comes from, first match wins:
//! 1. the setting `models_dataset`: `--models-dataset`, then `PHOENIX_MODELS_DATASET`, then
//!    `models_dataset` in the settings file ([`crate::settings`]);
//! 2. the config file's top-level `models_dataset`;
//! 3. the host: on a host with exactly one ZFS pool, `<pool>/phoenix/models` (a default
//!    Proxmox VE install on ZFS has the one pool `rpool`; PVE keeps its own volumes in
//!    `rpool/data`, so phoenix's datasets sit beside them, in a dataset of their own).
//!
//! Decision: a host with no pool or several pools gets no guess (which pool holds 47 GB of
//! weights is the operator's choice). `recipe run` resolves the parent before anything is
//! touched when the recipe uses it (`config.models_dataset()` or any `zfs` call), so a
//! missing one is a usage error (exit 2) that names both ways to set it.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::host::{Host, HostError};
use crate::runtime::Runtime;
use crate::settings::{Setting, Settings, Source};
use crate::types::ModelsParent;

/// The parent phoenix derives on a host with one pool: `<pool>/` + this.
pub const DERIVED_SUFFIX: &str = "phoenix/models";

/// Why no models parent could be found.
#[derive(Debug, thiserror::Error)]
pub enum DatasetsError {
    /// Nothing set, and the host's pools allow no default.
    #[error("no models dataset is set and {found}: {}", how(config))]
    NoDefault {
        /// The config file that could name it.
        config: PathBuf,
        /// What the host has (`this host has 2 ZFS pools (rpool, data)`).
        found: String,
    },
    /// Nothing set, and the host's pools could not be listed.
    #[error(
        "no models dataset is set and the host's ZFS pools cannot be listed: {}",
        how(config)
    )]
    Host {
        /// The config file that could name it.
        config: PathBuf,
        /// Why the pools could not be listed.
        #[source]
        source: Box<HostError>,
    },
}

/// The two ways to set the models parent, for error messages.
fn how(config: &Path) -> String {
    format!(
        "set `\"models_dataset\": \"<pool>/phoenix/models\"` at the top level of {}, or the setting models_dataset (`--models-dataset`, PHOENIX_MODELS_DATASET, or `models_dataset = \"<pool>/phoenix/models\"` in the settings file)",
        config.display()
    )
}

/// The models parent from settings and config alone (no host query): the setting when set
/// (flag, env, file), else the config's `models_dataset`, else unset.
pub fn configured(settings: &Settings, config: Option<&Config>) -> Setting<Option<ModelsParent>> {
    if settings.models_dataset.value.is_some() {
        return settings.models_dataset.clone();
    }
    match config.and_then(|c| c.models_dataset.clone()) {
        Some(p) => Setting {
            value: Some(p),
            source: Source::Config,
        },
        None => settings.models_dataset.clone(),
    }
}

/// The default on a host with `pools`: `<pool>/phoenix/models` when there is exactly one;
/// otherwise what was found, for the error.
pub fn derive(pools: &[String]) -> Result<ModelsParent, String> {
    match pools {
        [one] => ModelsParent::new(format!("{one}/{DERIVED_SUFFIX}")).map_err(|e| {
            format!(
                "its one ZFS pool {} gives no valid name ({})",
                e.shown, e.reason
            )
        }),
        [] => Err("this host has no ZFS pool".to_owned()),
        many => Err(format!(
            "this host has {} ZFS pools ({})",
            many.len(),
            many.join(", ")
        )),
    }
}

/// The models parent for a run on `host`: [`configured`], else derived from the host's
/// pools ([`derive`]).
pub fn resolve(
    settings: &Settings,
    config: &Config,
    host: &dyn Host,
) -> Result<Setting<ModelsParent>, DatasetsError> {
    let set = configured(settings, Some(config));
    if let Some(value) = set.value {
        return Ok(Setting {
            value,
            source: set.source,
        });
    }
    let pools = host.zfs_pools().map_err(|source| DatasetsError::Host {
        config: config.path.clone(),
        source: Box::new(source),
    })?;
    let value = derive(&pools).map_err(|found| DatasetsError::NoDefault {
        config: config.path.clone(),
        found,
    })?;
    Ok(Setting {
        value,
        source: Source::Host,
    })
}

/// The models parent of run `rt` (what `config.models_dataset()` returns and what a
/// dataset must lie under). `recipe run` has already resolved it into the run's settings
/// when the recipe uses it; otherwise it is resolved now.
pub fn models_parent(rt: &Runtime) -> Result<ModelsParent, DatasetsError> {
    if let Some(p) = &rt.settings.models_dataset.value {
        return Ok(p.clone());
    }
    resolve(&rt.settings, &rt.config, rt.host.as_ref()).map(|s| s.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn one_pool_gives_its_phoenix_models_dataset() {
        assert_eq!(
            derive(&pools(&["rpool"])).unwrap().as_str(),
            "rpool/phoenix/models"
        );
        assert_eq!(
            derive(&pools(&[])).unwrap_err(),
            "this host has no ZFS pool"
        );
        assert_eq!(
            derive(&pools(&["rpool", "data"])).unwrap_err(),
            "this host has 2 ZFS pools (rpool, data)"
        );
    }

    #[test]
    fn the_setting_wins_over_the_config() {
        let config = crate::config::load_str(
            Path::new("c.json"),
            r#"{"models_dataset": "data/models", "lxc_configs": {}}"#,
        )
        .unwrap();
        let settings = |env: &[(&str, &str)]| {
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Settings::resolve_with(&crate::settings::FlagOverrides::default(), &move |k| {
                env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })
            .unwrap()
        };
        let s = settings(&[("PHOENIX_SETTINGS", "")]);
        let got = configured(&s, Some(&config));
        assert_eq!(got.value.unwrap().as_str(), "data/models");
        assert_eq!(got.source, Source::Config);
        assert_eq!(configured(&s, None).value, None);
        let s = settings(&[
            ("PHOENIX_SETTINGS", ""),
            ("PHOENIX_MODELS_DATASET", "rpool/phoenix/models"),
        ]);
        let got = configured(&s, Some(&config));
        assert_eq!(got.value.unwrap().as_str(), "rpool/phoenix/models");
        assert_eq!(got.source, Source::Env);
    }

    #[test]
    fn the_error_names_both_ways_to_set_it() {
        let e = DatasetsError::NoDefault {
            config: PathBuf::from("/etc/phoenix/phoenix_lxc_configs.json"),
            found: "this host has 2 ZFS pools (rpool, data)".into(),
        };
        assert_eq!(
            e.to_string(),
            "no models dataset is set and this host has 2 ZFS pools (rpool, data): set \
             `\"models_dataset\": \"<pool>/phoenix/models\"` at the top level of \
             /etc/phoenix/phoenix_lxc_configs.json, or the setting models_dataset \
             (`--models-dataset`, PHOENIX_MODELS_DATASET, or \
             `models_dataset = \"<pool>/phoenix/models\"` in the settings file)"
        );
    }
}

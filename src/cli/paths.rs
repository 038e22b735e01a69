//! `phoenix paths`: every resolved path and setting with its source (`models_dataset` also
//! from the config file, which the other settings never come from).

use clap::Args;

use super::Context;

/// Arguments of `phoenix paths`.
#[derive(Debug, Args)]
pub struct PathsArgs {
    /// Print JSON: `{version, settings: {name: {value, source, env}}}` (`value` null when unset).
    #[arg(long)]
    pub json: bool,
}

/// Run `phoenix paths`.
pub fn run(ctx: &Context, args: PathsArgs) -> crate::Result<()> {
    // The models parent may also come from the config file: shown with source `config`
    // when the file names it (an unreadable config leaves the row as the settings say).
    let mut settings = ctx.settings.clone();
    if settings.models_dataset.value.is_none() {
        if let Ok(config) = crate::config::load(&settings.config.value) {
            settings.models_dataset = crate::datasets::configured(&settings, Some(&config));
        }
    }
    let rows = settings.rows();
    if args.json {
        let mut map = serde_json::Map::new();
        for (name, var, value, source) in rows {
            map.insert(
                name.to_owned(),
                serde_json::json!({"value": value, "source": source, "env": var}),
            );
        }
        let doc = serde_json::json!({
            "version": crate::report::JSON_VERSION,
            "settings": map,
        });
        let text = serde_json::to_string_pretty(&doc).expect("a map of strings serialises");
        return super::out(&format!("{text}\n"));
    }
    let rows = rows
        .into_iter()
        .map(|(name, var, value, source)| {
            vec![
                name.to_owned(),
                value.unwrap_or_else(|| crate::settings::unset_text(name).to_owned()),
                format!("{source}, {var}"),
            ]
        })
        .collect();
    super::out(&super::table(&["SETTING", "VALUE", "SOURCE"], rows, &[]))
}

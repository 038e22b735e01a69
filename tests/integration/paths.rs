//! `phoenix paths` (seed T-103: markers and logs move with the environment).

use std::process::Command;

#[test]
fn t103_marker_and_log_dirs_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("phoenix.toml");
    std::fs::write(&settings, "secrets_dir = \"/from/file/secrets\"\n").unwrap();
    let markers = dir.path().join("x/markers");
    let logs = dir.path().join("x/logs");
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["paths", "--json", "--config", "/from/flag/c.json"])
        .env_clear()
        .env("PHOENIX_SETTINGS", &settings)
        .env("PHOENIX_MARKER_DIR", &markers)
        .env("PHOENIX_LOG_DIR", &logs)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    // An unset optional setting is null, not a placeholder string.
    assert_eq!(v["settings"]["bin_dir"]["value"], serde_json::Value::Null);
    let v = &v["settings"];
    assert_eq!(v["marker_dir"]["value"], markers.display().to_string());
    assert_eq!(v["marker_dir"]["source"], "env");
    assert_eq!(v["log_dir"]["value"], logs.display().to_string());
    assert_eq!(v["log_dir"]["source"], "env");
    assert_eq!(v["secrets_dir"]["value"], "/from/file/secrets");
    assert_eq!(v["secrets_dir"]["source"], "file");
    assert_eq!(v["config"]["value"], "/from/flag/c.json");
    assert_eq!(v["config"]["source"], "flag");
    assert_eq!(v["secret_key"]["source"], "default");
    assert_eq!(v["marker_dir"]["env"], "PHOENIX_MARKER_DIR");
}

#[test]
fn a_bad_settings_file_is_a_usage_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let settings = dir.path().join("phoenix.toml");
    std::fs::write(&settings, "marker = \"/x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["paths"])
        .env_clear()
        .env("PHOENIX_SETTINGS", &settings)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown key `marker`"), "{err}");
}

#[test]
fn models_dataset_comes_from_the_config_unless_a_setting_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.json");
    std::fs::write(
        &config,
        r#"{"models_dataset": "data/phoenix", "lxc_configs": {}}"#,
    )
    .unwrap();
    let paths = |env: &[(&str, &str)]| -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_phoenix"))
            .args(["paths", "--json"])
            .env_clear()
            .env("PHOENIX_SETTINGS", "/dev/null")
            .env("PHOENIX_CONFIG", &config)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["settings"]
            ["models_dataset"]
            .clone()
    };
    assert_eq!(
        paths(&[]),
        serde_json::json!({"value": "data/phoenix", "source": "config", "env": "PHOENIX_MODELS_DATASET"})
    );
    assert_eq!(
        paths(&[("PHOENIX_MODELS_DATASET", "rpool/phoenix/models")]),
        serde_json::json!({"value": "rpool/phoenix/models", "source": "env", "env": "PHOENIX_MODELS_DATASET"})
    );
    std::fs::write(&config, r#"{"lxc_configs": {}}"#).unwrap();
    assert_eq!(paths(&[])["source"], "default");
    // Unset is null in JSON (the human table explains it).
    assert_eq!(paths(&[])["value"], serde_json::Value::Null);
}

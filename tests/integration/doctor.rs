//! `phoenix doctor` (issue 14 item 3) through the real binary on an emulated host of its
//! own: the example config passes; a host without the template, without the bridge and
//! with too little memory gets those three errors and exit 2, and nothing on it changes;
//! a machine without Proxmox is told to use `--host emulated`. Every command the doctor
//! ran is read from the emulator's `argv.log` and must be a query.

use serde_json::{Value, json};

use crate::acceptance::{Site, example_config};
use crate::support::emu_snapshot;

/// The commands of the emulated host that only read: `(tool, first argument)`; `None`
/// matches any first argument.
const QUERIES: &[(&str, Option<&str>)] = &[
    ("pveversion", None),
    ("pvesm", Some("status")),
    ("pvesm", Some("list")),
    ("nvidia-smi", None),
    ("zfs", Some("list")),
    ("zfs", Some("get")),
    ("systemctl", Some("is-enabled")),
];

/// Every call in `argv.log` is a query; returns `tool arg0 …` of each.
fn assert_read_only(site: &Site) -> Vec<String> {
    let calls = site.calls();
    assert!(!calls.is_empty(), "the doctor asked the host nothing");
    calls
        .iter()
        .map(|c| {
            let tool = c["tool"].as_str().unwrap();
            let argv: Vec<&str> = c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let ok = QUERIES
                .iter()
                .any(|(t, a)| *t == tool && a.is_none_or(|a| argv.first() == Some(&a)));
            assert!(
                ok,
                "the doctor ran a command that is not a query: {tool} {argv:?}"
            );
            std::iter::once(tool)
                .chain(argv)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn json_of(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn doctor_passes_on_the_emulated_host_with_the_example_config() {
    let site = Site::new(&example_config());
    let out = site.phoenix(&["doctor"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .ends_with("passed: this host can take these containers\n"),
        "{}",
        out.stdout
    );
    for line in out.stdout.lines().skip(1) {
        if line.starts_with("passed") {
            continue;
        }
        assert!(line.starts_with("  ok "), "not ok: {line}\n{}", out.stdout);
    }
    for check in [
        "proxmox",
        "vmid",
        "storage",
        "template",
        "bridge",
        "memory",
        "cores",
        "driver",
        "gpu",
        "device-nodes",
        "models-dataset",
    ] {
        assert!(
            out.stdout.contains(&format!("  ok       {check} ")),
            "no {check} line:\n{}",
            out.stdout
        );
    }
    let calls = assert_read_only(&site);
    assert!(
        calls.contains(&"pvesm list local --content vztmpl".to_owned()),
        "{calls:?}"
    );

    let out = site.phoenix(&["doctor", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = json_of(&out.stdout);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["host"], "emulated");
    assert_eq!(doc["containers"], json!([901, 902]));
    assert_eq!(doc["errors"], 0);
    assert_eq!(doc["warnings"], 0);
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["severity"] == "ok" && f["fix"].is_null())
    );
}

#[test]
fn doctor_lists_a_missing_template_a_missing_bridge_and_overcommitted_memory_and_changes_nothing() {
    let site = Site::new(&example_config());
    // The emulated host before its first boot: no bridge, 32 GiB of memory (the example
    // asks for 34 GiB), no template downloaded.
    std::fs::create_dir_all(site.root()).unwrap();
    std::fs::write(
        site.root().join("emu.json"),
        json!({"bridges": [], "memory_mib": 32768, "templates": []}).to_string(),
    )
    .unwrap();
    let out = site.phoenix(&["doctor"]);
    assert_eq!(out.code, 2, "{out:?}");
    let errors: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("  error "))
        .collect();
    assert_eq!(errors.len(), 3, "{}", out.stdout);
    assert!(errors[0].contains("template        template local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst (for 901, 902) is not on storage local"), "{errors:?}");
    assert!(
        errors[1]
            .contains("bridge          bridge vmbr0 (for 901, 902) does not exist on this host"),
        "{errors:?}"
    );
    assert!(errors[2].contains("memory          containers 901, 902 ask for 34816 MiB of memory, 106 % of the host's 32768 MiB: more than it has"), "{errors:?}");
    assert!(out.stdout.contains(
        "fix: pveam update && pveam download local ubuntu-24.04-standard_24.04-2_amd64.tar.zst"
    ));
    assert!(
        out.stderr.contains(
            "phoenix: error: the host preflight found 3 error(s) and 0 warning(s) (its report says what to fix): nothing was changed"
        ),
        "{}",
        out.stderr
    );
    assert_read_only(&site);

    // Nothing on the host changed, and a second run (JSON) says the same.
    let before = emu_snapshot(&site.root());
    let out = site.phoenix(&["doctor", "--json"]);
    assert_eq!(out.code, 2, "{out:?}");
    let doc = json_of(&out.stdout);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["errors"], 3);
    let bad: Vec<(&str, &str)> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] != "ok")
        .map(|f| {
            (
                f["check"].as_str().unwrap(),
                f["severity"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        bad,
        [
            ("template", "error"),
            ("bridge", "error"),
            ("memory", "error")
        ]
    );
    assert!(
        doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] == "error")
            .all(|f| f["fix"].is_string())
    );
    assert_eq!(emu_snapshot(&site.root()), before);
    assert_read_only(&site);
    assert!(
        !site.root().join("etc/pve/lxc/901.conf").exists(),
        "a container was created"
    );
}

#[test]
fn doctor_on_a_machine_without_proxmox_says_to_use_the_emulated_host() {
    let site = Site::new(&example_config());
    let bin = site.path("no-tools");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        site.path("phoenix.toml"),
        format!("bin_dir = {:?}\n", bin.display().to_string()),
    )
    .unwrap();
    let out = site.phoenix(&["doctor", "--host", "pve"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "  error    proxmox  this is not a Proxmox VE host: {} does not exist",
            bin.join("pct").display()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("phoenix doctor --host emulated"),
        "{}",
        out.stdout
    );
    // Nothing was asked of, or written to, an emulated host.
    assert!(!site.root().exists());
}

#[test]
fn doctor_refuses_an_entry_the_config_lacks() {
    let site = Site::new(&example_config());
    let out = site.phoenix(&["doctor", "--lxc", "903"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--lxc 903: ")
            && out.stderr.contains("has no such entry (ids: 901, 902)"),
        "{}",
        out.stderr
    );
    assert!(!site.root().exists(), "the host was opened for a bad --lxc");
}

//! Plans that read like plans (issue 15 item 4): `--dry-run` prints `+`/`~`/`-` changes with
//! tool names and counts, file diffs (never a secret's content), the read-only checks apart;
//! drift that PVE can change in place is set with `pct set` (journaled, so a rollback puts
//! the old values back), drift it cannot change is refused saying what to do.

use std::path::PathBuf;

use crate::boundary::Site;

/// The example config with entry 901 changed by `edit`, written into the site.
fn config_with(site: &Site, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("recipes/phoenix_lxc_configs.json"),
    )
    .unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut doc["lxc_configs"]["901"]);
    let path = site.path("changed.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    path
}

fn conf_of_901(site: &Site) -> String {
    std::fs::read_to_string(site.root().join("etc/pve/lxc/901.conf")).unwrap()
}

fn conf_value(site: &Site, key: &str) -> Option<String> {
    conf_of_901(site)
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_owned))
}

#[test]
fn dry_run_prints_marks_tool_names_diffs_checks_and_counts() {
    let site = Site::new();
    let seed = site.recipe(
        "seed.rhai",
        "lxc.push(config.target(), \"/etc/app.conf\", \"a = 1\\nb = 2\\n\");\n",
    );
    assert_eq!(site.run(&seed, &[], &[]).code, 0);
    let changed = config_with(&site, |e| {
        e["memory_mb"] = 16384.into();
        e["cores"] = 4.into();
    });
    let r = site.recipe(
        "plan.rhai",
        "let ct = lxc.create(config.target());\n\
         lxc.push(ct, \"/etc/app.conf\", \"a = 1\\nb = 3\\n\");\n\
         lxc.push(ct, \"/etc/app.env\", \"TOKEN=not-for-eyes\\n\", 0o600);\n\
         lxc.exec(ct, [\"apt-get\", \"update\"]);\n\
         log.info(\"all set\");\n",
    );
    let before = crate::support::emu_snapshot(&site.root());
    let out = site.run(
        &r,
        &["--dry-run"],
        &[("PHOENIX_CONFIG", changed.to_str().unwrap())],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "Dry run of plan.rhai on the emulated host: nothing was changed.

Changes, in order:
  ~ pct set 901 --memory 16384 --cores 4
  ~ pct push 901 <content> /etc/app.conf --perms 0644
      --- /etc/app.conf
      +++ /etc/app.conf
      @@ -1,2 +1,2 @@
       a = 1
      -b = 2
      +b = 3
  + pct push 901 <content> /etc/app.env --perms 0600
      (content not shown: a mode 0600 file may hold a secret; 19 bytes)
  ~ pct exec 901 --keep-env 0 -- apt-get update

Read-only checks (change nothing):
  ran    pct status 901
  ran    pveversion
  ran    pct exec 901 --keep-env 0 -- cat /etc/app.conf
  ran    pct exec 901 --keep-env 0 -- cat /etc/app.env

Plan: 1 to create, 3 to change, 0 to remove.
"
    );
    // No success line of a real run: no `done` step, no result block, and a recipe's own
    // line says it is a dry run.
    assert!(!out.stderr.contains("done "), "{}", out.stderr);
    assert!(out.stderr.contains("dry run: all set"), "{}", out.stderr);
    assert!(
        !out.stderr
            .lines()
            .any(|l| l.contains("all set") && !l.contains("dry run: all set")),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("not-for-eyes"));
    assert!(!out.stdout.contains(&site.root().display().to_string()));
    assert_eq!(crate::support::emu_snapshot(&site.root()), before);
}

#[test]
fn drift_is_set_in_place_and_a_rollback_restores_the_old_values() {
    let site = Site::new();
    let changed = config_with(&site, |e| {
        e["memory_mb"] = 16384.into();
        e["cores"] = 4.into();
        e["onboot"] = true.into();
        e["network_config"]["dns"] = serde_json::json!(["10.0.0.53"]);
    });
    let env = [("PHOENIX_CONFIG", changed.to_str().unwrap())];
    assert_eq!(conf_value(&site, "memory").as_deref(), Some("32768"));
    assert_eq!(conf_value(&site, "nameserver"), None);

    // A failed run with --rollback-on-failure: set in place, then put back as it was.
    let failing = site.recipe(
        "failing.rhai",
        "lxc.create(config.target());\nthrow \"stop here\";\n",
    );
    let skip = site.log_len();
    let out = site.run(&failing, &["--rollback-on-failure"], &env);
    assert_eq!(out.code, 1, "{out:?}");
    let sets: Vec<Vec<String>> = site
        .calls_since(skip)
        .into_iter()
        .filter(|(tool, argv)| tool == "pct" && argv[0] == "set")
        .map(|(_, argv)| argv)
        .collect();
    assert_eq!(
        sets,
        [
            vec![
                "set",
                "901",
                "--memory",
                "16384",
                "--cores",
                "4",
                "--onboot",
                "1",
                "--nameserver",
                "10.0.0.53"
            ],
            vec![
                "set", "901", "--memory", "32768", "--cores", "8", "--onboot", "0"
            ],
            vec!["set", "901", "--delete", "nameserver"],
        ]
    );
    assert_eq!(conf_value(&site, "memory").as_deref(), Some("32768"));
    assert_eq!(conf_value(&site, "cores").as_deref(), Some("8"));
    assert_eq!(conf_value(&site, "nameserver"), None);

    // A run that succeeds keeps the new values; a second one finds nothing to set.
    let create = site.recipe("create.rhai", "lxc.create(config.target());\n");
    assert_eq!(site.run(&create, &[], &env).code, 0);
    assert_eq!(conf_value(&site, "memory").as_deref(), Some("16384"));
    assert_eq!(conf_value(&site, "onboot").as_deref(), Some("1"));
    assert_eq!(
        conf_value(&site, "nameserver").as_deref(),
        Some("10.0.0.53")
    );
    let out = site.run(&create, &["--dry-run"], &env);
    assert!(
        out.stdout.contains("No changes: the host already matches.")
            && out
                .stdout
                .ends_with("Plan: 0 to create, 0 to change, 0 to remove.\n"),
        "{}",
        out.stdout
    );
    // `destroy` lists the journaled restore among what it would undo.
    let plan = site.phoenix(&["destroy", "--dry-run"], &env);
    assert!(
        format!("{}{}", plan.stdout, plan.stderr)
            .contains("restore memory, cores, onboot, nameserver of 901"),
        "{plan:?}"
    );
}

#[test]
fn drift_pve_cannot_change_in_place_is_refused_saying_what_to_do() {
    let site = Site::new();
    let changed = config_with(&site, |e| {
        e["storage_size_gb"] = 80.into();
        e["memory_mb"] = 16384.into();
    });
    let create = site.recipe("create.rhai", "lxc.create(config.target());\n");
    let skip = site.log_len();
    let out = site.run(
        &create,
        &[],
        &[("PHOENIX_CONFIG", changed.to_str().unwrap())],
    );
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "container 901 exists and differs from its config entry in what PVE cannot change in place:\n  \
             rootfs size: host has \"64G\", config wants \"80G\"; grow it with `pct resize 901 rootfs 80G`\n  \
             memory: host has \"32768\", config wants \"16384\" (pct set can change it in place)"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !site
            .calls_since(skip)
            .iter()
            .any(|(tool, argv)| tool == "pct" && argv[0] == "set"),
        "a refused drift set something"
    );
    assert_eq!(conf_value(&site, "memory").as_deref(), Some("32768"));
}

//! Several containers on one host (issue 14): journal scopes, shared datasets, and the
//! runs of `phoenix up` and of `recipe run` with several `--lxc`.

use serde_json::{Value, json};

use crate::site::{Site, example_config};

/// The example config plus 903, a second vLLM server on GPU 1 (which 901 uses too).
fn two_servers() -> Value {
    let mut c = example_config();
    let mut e = c["lxc_configs"]["901"].clone();
    e["name"] = json!("coder");
    e["network_config"]["ip"] = json!("10.0.0.113/24");
    e["gpu_assignment"] = json!([1]);
    e["vllm_tensor_parallel_size"] = json!(1);
    c["lxc_configs"]["903"] = e;
    c
}

/// Issue 14 "no races": the models parent that 901's run made also holds 903's dataset.
/// 903's run fails after it made its dataset and before it mounted it, so no container
/// mounts that dataset: `destroy --lxc 901` removes 901's container and dataset and leaves
/// the parents (still outstanding, the output says why), so it neither fails nor touches
/// 903's; the full `destroy` then removes the rest.
#[test]
fn destroy_of_one_container_leaves_the_parent_it_shares() {
    let site = Site::new(&two_servers());
    let before = site.prepare("100ms");
    let recipe = crate::site::repo("recipes/drdevstral.rhai");
    let recipe = recipe.to_str().unwrap();
    site.ok(&["recipe", "run", recipe, "--lxc", "901"]);
    site.faults(
        &[json!({"match": ["pct", "set", "903", "--mp0"], "action": "fail"})],
        json!({"load_delay": "100ms"}),
    );
    let failed = site.phoenix(&["recipe", "run", recipe, "--lxc", "903"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stderr.contains("lxc.mount"), "{}", failed.stderr);
    let datasets: Vec<String> = site.datasets().into_keys().collect();
    for d in [
        "rpool/phoenix",
        "rpool/phoenix/models",
        "rpool/phoenix/models/drdevstral",
        "rpool/phoenix/models/coder",
    ] {
        assert!(
            datasets.contains(&d.to_owned()),
            "{d} missing: {datasets:?}"
        );
    }

    let out = site.ok(&["destroy", "--lxc", "901"]);
    for parent in ["rpool/phoenix/models", "rpool/phoenix"] {
        let line = format!(
            "left alone    destroy dataset {parent} [zfs.dataset:{parent}] (it still holds "
        );
        assert!(out.stdout.contains(&line), "{line}\n{}", out.stdout);
    }
    assert_eq!(site.containers(), ["903"]);
    let datasets: Vec<String> = site.datasets().into_keys().collect();
    assert!(!datasets.contains(&"rpool/phoenix/models/drdevstral".to_owned()));
    assert!(datasets.contains(&"rpool/phoenix/models/coder".to_owned()));
    assert!(datasets.contains(&"rpool/phoenix/models".to_owned()));
    // Still outstanding in 901's scope: a second destroy of 901 leaves them again.
    let again = site.ok(&["destroy", "--lxc", "901"]);
    assert!(
        again
            .stdout
            .contains("left alone    destroy dataset rpool/phoenix/models "),
        "{}",
        again.stdout
    );

    site.ok(&["destroy"]);
    site.assert_no_server("destroy");
    assert_eq!(site.containers(), Vec::<String>::new());
    let after = crate::support::emu_snapshot(&site.root());
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "the host differs in {changed:?}");
    let status = site.ok(&["status"]);
    assert!(
        status.stdout.contains("nothing phoenix-made"),
        "{}",
        status.stdout
    );
}

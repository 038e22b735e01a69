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

/// `n` vLLM servers 901, 902, … from the example's first entry: unique names, IPs and
/// MACs, small resources, GPUs 0 and 1 taken in turn (so each GPU is shared: a warning),
/// each naming `drdevstral.rhai` beside the config ([`server_site`] puts it there).
fn servers(n: u64) -> Value {
    let mut c = example_config();
    let base = c["lxc_configs"]["901"].clone();
    let mut lxc = serde_json::Map::new();
    for i in 0..n {
        let mut e = base.clone();
        e["name"] = json!(format!("llm{}", i + 1));
        e["memory_mb"] = json!(2048);
        e["cores"] = json!(1);
        // The vLLM image needs ≈ 29 GB unpacked (the emulator counts it): the example's 64.
        e["network_config"]["ip"] = json!(format!("10.0.0.{}/24", 121 + i));
        e["network_config"]["mac"] = json!(format!("bc:24:11:00:00:{:02x}", i + 1));
        e["gpu_assignment"] = json!([i % 2]);
        e["vllm_tensor_parallel_size"] = json!(1);
        e["recipe"] = json!("drdevstral.rhai");
        lxc.insert((901 + i).to_string(), e);
    }
    c["lxc_configs"] = Value::Object(lxc);
    c
}

/// A site with [`servers`]`(n)` and the shipped drdevstral recipe beside its config.
fn server_site(n: u64) -> Site {
    let site = Site::new(&servers(n));
    std::fs::copy(
        crate::site::repo("recipes/drdevstral.rhai"),
        site.path("drdevstral.rhai"),
    )
    .unwrap();
    site
}

/// Plain containers (the built-in container.rhai, with two packages) 901, 902, … ;
/// `after` lists the ids an entry comes after.
fn plain(n: u64, after: &[(u64, &[u64])]) -> Value {
    let mut c = example_config();
    let base = c["lxc_configs"]["902"].clone();
    let mut lxc = serde_json::Map::new();
    for i in 0..n {
        let vmid = 901 + i;
        let mut e = base.clone();
        e["name"] = json!(format!("box{}", i + 1));
        e["network_config"]["ip"] = json!(format!("10.0.0.{}/24", 131 + i));
        e["packages"] = json!(["curl", "ca-certificates"]);
        if let Some((_, deps)) = after.iter().find(|(v, _)| *v == vmid) {
            e["after"] = json!(deps);
        }
        lxc.insert(vmid.to_string(), e);
    }
    c["lxc_configs"] = Value::Object(lxc);
    c
}

/// The JSON document on stdout.
fn doc(out: &crate::site::Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// The `(vmid, state)` pairs of an `up --json` document.
fn states(doc: &Value) -> Vec<(u64, String)> {
    doc["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["vmid"].as_u64().unwrap(),
                c["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The journal's records, parsed.
fn journal(site: &Site) -> Vec<Value> {
    std::fs::read_to_string(site.path("state/journal.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Index in the journal of the first record of kind `kind` (`run`, `end`) of the run that
/// serves `vmid` (by its `run` record's scope).
fn record_of(records: &[Value], vmid: u64, kind: &str) -> usize {
    let runs: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "run" && r["scope"] == json!(vmid))
        .map(|r| r["run"].as_str().unwrap())
        .collect();
    assert_eq!(runs.len(), 1, "one run serves {vmid}: {runs:?}");
    records
        .iter()
        .position(|r| r["run"] == runs[0] && r["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} record for {vmid}"))
}

/// The `pct` calls that take a container's config lock (create, set, start, stop,
/// destroy) must not overlap for one container: their work intervals (`work_us`) in
/// argv.log, per vmid, one after the other.
fn assert_no_overlapping_config_writes(site: &Site) -> usize {
    let mut by_ct: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
    for call in site.calls() {
        let argv = argv_of(&call);
        let writes = call["tool"] == "pct"
            && matches!(
                argv.first(),
                Some(&("create" | "set" | "start" | "stop" | "destroy"))
            );
        if !writes {
            continue;
        }
        let Some(w) = call["work_us"].as_array() else {
            continue;
        };
        by_ct
            .entry(argv[1].to_owned())
            .or_default()
            .push((w[0].as_u64().unwrap(), w[1].as_u64().unwrap()));
    }
    let mut n = 0;
    for (ct, mut spans) in by_ct {
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "two writes to {ct}.conf overlap: {:?} and {:?}",
                pair[0],
                pair[1]
            );
        }
        n += spans.len();
    }
    n
}

/// Each ready container's endpoint answers `/v1/models` with its model.
fn assert_models_answer(site: &Site, doc: &Value, key: &str) {
    for c in doc["containers"].as_array().unwrap() {
        if c["state"] != "ready" {
            continue;
        }
        let url = c["endpoint"].as_str().unwrap();
        let addr = url
            .strip_prefix("http://")
            .and_then(|u| u.strip_suffix("/v1"))
            .unwrap_or_else(|| panic!("endpoint {url}"));
        let (code, body) = crate::site::http_get(addr.parse().unwrap(), "/v1/models", key);
        assert_eq!(code, 200, "{url}: {body}");
        assert!(
            body.contains("\"mistralai/Devstral-Small-2507\""),
            "{url}: {body}"
        );
    }
    let _ = site;
}

/// Issue 14 "Must show" 1 and 3: `up` of 8 vLLM servers (two GPUs, each shared by four:
/// warnings) ends with all 8 ready, each endpoint answering `/v1/models`, the runs
/// interleaved (they ran at once) and no two writes to one container's config
/// overlapping; then T-102 whole: `destroy --remove-logs` leaves no container, dataset,
/// host unit, marker or log of phoenix's.
#[test]
fn up_of_eight_servers_then_destroy_leaves_nothing() {
    let site = server_site(8);
    let before = site.prepare("300ms");
    let out = site.phoenix(&["up", "--parallel", "8", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    for warning in [
        "GPU 0 also assigned to container 901",
        "GPU 1 also assigned to container 902",
    ] {
        assert!(
            out.stderr.contains(warning),
            "the shared GPU is a warning: {}",
            out.stderr
        );
    }
    let doc = doc(&out);
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["parallel"], 8);
    let want: Vec<(u64, String)> = (901..=908).map(|v| (v, "ready".to_owned())).collect();
    assert_eq!(states(&doc), want);
    assert_eq!(site.containers().len(), 8);
    assert_models_answer(&site, &doc, &site.reveal("vllm_api_key"));
    // They ran at once: some run started before another one ended.
    let records = journal(&site);
    let first_end = (901..=908)
        .map(|v| record_of(&records, v, "end"))
        .min()
        .unwrap();
    let last_start = (901..=908)
        .map(|v| record_of(&records, v, "run"))
        .max()
        .unwrap();
    assert!(last_start < first_end, "the runs did not overlap");
    // Every run carries the batch, and each its own scope.
    let batches: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r["kind"] == "run")
        .map(|r| r["batch"].as_str().unwrap())
        .collect();
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert!(assert_no_overlapping_config_writes(&site) >= 16);
    assert!(!site.markers().is_empty());
    assert!(!site.logs().is_empty());

    let out = site.ok(&["destroy", "--remove-logs", "--yes"]);
    site.assert_no_server("destroy");
    assert_eq!(site.containers(), Vec::<String>::new(), "{}", out.stdout);
    let after = crate::support::emu_snapshot(&site.root());
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "the host differs in {changed:?}");
    assert_eq!(site.markers(), Vec::<String>::new());
    assert_eq!(site.logs(), Vec::<String>::new());
}

/// Issue 14 "Must show" 2: container 3 of 8 cannot start; with `--rollback-on-failure`
/// the other 7 end ready (each answers), 903 is rolled back (no container, no dataset of
/// its own), phoenix exits 1 and the summary names 903 and why.
#[test]
fn a_fault_in_one_of_eight_rolls_back_only_that_one() {
    let site = server_site(8);
    site.prepare("300ms");
    site.faults(
        &[json!({"match": ["pct", "start", "903"], "action": "fail"})],
        json!({"load_delay": "300ms"}),
    );
    let out = site.phoenix(&["up", "--rollback-on-failure"]);
    assert_eq!(out.code, 1, "{out:?}");
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("903 llm3"))
        .unwrap_or_else(|| panic!("no row for 903:\n{}", out.stdout));
    assert!(row.contains("FAILED, rolled back"), "{row}");
    assert!(
        out.stdout.contains("\n903 llm3: ") && out.stdout.contains("lxc.start"),
        "the summary says why:\n{}",
        out.stdout
    );
    assert!(out.stdout.contains("  rollback: undone"), "{}", out.stdout);
    assert!(
        out.stdout.contains("7 of 8 container(s) ready"),
        "{}",
        out.stdout
    );
    for v in [901, 902, 904, 905, 906, 907, 908] {
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{v} ")))
            .unwrap();
        assert!(row.contains(" ready "), "{row}");
    }
    assert!(
        out.stderr
            .contains("1 of the 8 container(s) did not end ready (903)"),
        "{}",
        out.stderr
    );
    let cts = site.containers();
    assert_eq!(cts.len(), 7, "{cts:?}");
    assert!(!cts.contains(&"903".to_owned()));
    assert!(
        !site.datasets().contains_key("rpool/phoenix/models/llm3"),
        "903's dataset is rolled back"
    );
    // The others still serve.
    site.faults(&[], json!({"load_delay": "300ms"}));
    let status = site.ok(&["up", "--json", "--lxc", "901", "--lxc", "902"]);
    assert_models_answer(&site, &doc(&status), &site.reveal("vllm_api_key"));
    site.ok(&["destroy", "--yes"]);
    site.assert_no_server("destroy");
}

/// `after` orders runs: 902 starts only once 901 is ready, even with room for both; and an
/// entry whose predecessor failed is skipped (exit 1) while an independent one goes on.
#[test]
fn after_orders_the_runs_and_a_failed_predecessor_skips_its_followers() {
    let site = Site::new(&plain(3, &[(902, &[901])]));
    site.prepare("100ms");
    let out = site.phoenix(&["up", "--parallel", "3"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("container.rhai"), "{}", out.stdout);
    // container.rhai installed the entry's packages.
    for v in ["901", "902", "903"] {
        let installed = &site.ct_state(v)["apt"]["installed"];
        assert_eq!(installed, &json!(["curl", "ca-certificates"]), "{v}");
    }
    let records = journal(&site);
    assert!(
        record_of(&records, 902, "run") > record_of(&records, 901, "end"),
        "902 started before 901 ended"
    );
    site.ok(&["destroy", "--yes"]);

    std::fs::remove_file(site.path("state/journal.jsonl")).unwrap();
    site.faults(
        &[json!({"match": ["pct", "create", "901"], "action": "fail"})],
        json!({"load_delay": "100ms"}),
    );
    let out = site.phoenix(&["up", "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let doc = doc(&out);
    assert_eq!(
        states(&doc),
        [
            (901, "failed".to_owned()),
            (902, "skipped".to_owned()),
            (903, "ready".to_owned())
        ]
    );
    assert_eq!(
        doc["containers"][1]["error"],
        "not started: it comes after 901, which did not finish"
    );
    assert_eq!(doc["containers"][1]["run"], Value::Null);
    assert_eq!(site.containers(), ["903"]);
}

/// The preflight runs before anything is touched: a missing template and a missing bridge
/// are both listed with their fix, `up` exits 2 and the host is unchanged (no mutating
/// command reached the emulator).
#[test]
fn a_failed_preflight_lists_every_problem_and_changes_nothing() {
    let mut config = plain(2, &[]);
    config["lxc_configs"]["901"]["template"] = json!("local:vztmpl/nothing-here.tar.zst");
    config["lxc_configs"]["902"]["network_config"]["bridge"] = json!("vmbr9");
    let site = Site::new(&config);
    let before = site.prepare("100ms");
    let calls_before = site.calls().len();
    let out = site.phoenix(&["up"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("nothing-here.tar.zst"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("vmbr9"), "{}", out.stderr);
    assert!(
        out.stderr.contains("the host preflight found 2 error(s)"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    let after = crate::support::emu_snapshot(&site.root());
    assert_eq!(before, after);
    for call in &site.calls()[calls_before..] {
        let argv = &call["argv"];
        assert!(
            !(call["tool"] == "pct"
                && matches!(argv[0].as_str(), Some("create" | "start" | "set"))),
            "the preflight ran {call}"
        );
    }
    assert_eq!(site.containers(), Vec::<String>::new());
}

/// `up --dry-run` plans each container's commands and changes nothing.
#[test]
fn up_dry_run_plans_each_container_and_changes_nothing() {
    let site = Site::new(&plain(2, &[]));
    let before = site.prepare("100ms");
    let out = site.ok(&["up", "--dry-run"]);
    for v in ["901 box1", "902 box2"] {
        assert!(
            out.stdout
                .contains(&format!("dry run of container.rhai for {v}: ")),
            "{}",
            out.stdout
        );
    }
    assert!(out.stdout.contains("pct create 901 "), "{}", out.stdout);
    assert!(out.stdout.contains("pct start 902"), "{}", out.stdout);
    assert!(
        out.stdout.contains(
            "pct exec 901 --keep-env 0 -- apt-get install -y -q --no-install-recommends \
             -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold curl ca-certificates"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("nothing was changed"), "{}", out.stdout);
    let mut after = crate::support::emu_snapshot(&site.root());
    let mut before = before;
    before.remove("argv.log");
    after.remove("argv.log");
    assert_eq!(before, after);
}

/// `recipe run` with several `--lxc` runs the recipe for each (it used to serve only the
/// first one, silently), with the summary table.
#[test]
fn recipe_run_with_several_lxc_serves_each() {
    let site = Site::new(&plain(3, &[]));
    site.prepare("100ms");
    let recipe = crate::site::repo("recipes/container.rhai");
    let out = site.ok(&[
        "recipe",
        "run",
        recipe.to_str().unwrap(),
        "--lxc",
        "903",
        "--lxc",
        "901",
    ]);
    assert_eq!(site.containers(), ["901", "903"]);
    assert!(
        out.stdout.contains("2 of 2 container(s) ready"),
        "{}",
        out.stdout
    );
    let records = journal(&site);
    for v in [901, 903] {
        record_of(&records, v, "end");
    }
    site.ok(&["destroy", "--yes"]);
    assert_eq!(site.containers(), Vec::<String>::new());
}

/// SIGTERM while two containers' starts hang: both runs stop, both are rolled back (asked),
/// a third not yet started never starts, and phoenix exits 143.
#[test]
fn sigterm_stops_every_run_and_rolls_back_what_was_asked() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let site = Site::new(&plain(3, &[]));
    let before = site.prepare("100ms");
    site.faults(
        &[json!({"match": ["pct", "start"], "action": "hang"})],
        json!({"load_delay": "100ms"}),
    );
    let child = site.spawn(&["up", "--parallel", "2", "--rollback-on-failure"]);
    crate::support::wait_until("both starts to hang", || {
        site.calls()
            .iter()
            .filter(|c| c["tool"] == "pct" && c["argv"][0] == "start")
            .count()
            == 2
    });
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stdout}\n{stderr}");
    assert!(stdout.contains("interrupted"), "{stdout}");
    assert!(
        stdout.contains("not started: interrupted by a signal"),
        "{stdout}"
    );
    site.faults(&[], json!({"load_delay": "100ms"}));
    assert_eq!(site.containers(), Vec::<String>::new());
    let mut after = crate::support::emu_snapshot(&site.root());
    let mut before = before;
    for s in [&mut before, &mut after] {
        s.remove("argv.log");
        s.remove("faults.json");
    }
    assert_eq!(before, after);
}

/// The argv of one `argv.log` line.
fn argv_of(call: &Value) -> Vec<&str> {
    call["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// One `argv.log` line as `tool argv…`, for messages.
fn call_line(call: &Value) -> String {
    format!(
        "{} {}",
        call["tool"].as_str().unwrap(),
        argv_of(call).join(" ")
    )
}

/// Whether `call` only reads (the bench's classifier, [`crate::hostcmds::reads`]).
fn reads(call: &Value) -> bool {
    let argv: Vec<String> = argv_of(call).into_iter().map(str::to_owned).collect();
    crate::hostcmds::reads(call["tool"].as_str().unwrap(), &argv)
}

/// A run's calls split after the container's address read (the last host command of
/// `vllm.start`): what the run asked before, and what the readiness wait asked after (its
/// liveness checks depend on how long the load takes, so they are not counted).
fn until_address(calls: &[Value]) -> (&[Value], &[Value]) {
    let at = calls
        .iter()
        .position(|c| call_line(c).contains(" -- ip -j -4 addr show"))
        .unwrap_or_else(|| {
            panic!(
                "no address read in {:#?}",
                calls.iter().map(call_line).collect::<Vec<_>>()
            )
        });
    calls.split_at(at + 1)
}

/// `(mutating, read-only, pct)` of `calls`, and the list to show when they differ.
fn counted(calls: &[Value]) -> ((usize, usize, usize), String) {
    let c = crate::hostcmds::count(calls);
    let list: Vec<String> = calls
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                if reads(c) { "read" } else { "MUT " },
                call_line(c)
            )
        })
        .collect();
    ((c.mutating, c.read_only, c.pct), list.join("\n"))
}

/// The host commands one `phoenix up` in `site` adds to the emulator's log.
fn up_calls(site: &Site) -> Vec<Value> {
    let start = site.calls().len();
    site.ok(&["up"]);
    site.calls().split_off(start)
}

/// Assert the (mutating, read-only, pct) counts of `calls` (the run named `what`), up to
/// the address read when `server`; what a server's readiness wait asked after it must only
/// read.
fn assert_counts(calls: &[Value], server: bool, want: (usize, usize, usize), what: &str) {
    let (counted_part, wait) = if server {
        until_address(calls)
    } else {
        (calls, &[][..])
    };
    let (counts, list) = counted(counted_part);
    assert_eq!(counts, want, "{what} (mutating, read-only, pct):\n{list}");
    for c in wait {
        assert!(reads(c), "the wait changed something: {}", call_line(c));
    }
}

/// Issue 14 P2, pinned: the host commands of one vLLM server's first `up` and of its
/// re-run (what `cargo bench` reports). On a real host every `pct` call starts a Perl
/// interpreter (≈ 0.3 s), so a change that adds one must change these numbers on purpose.
/// The readiness wait's liveness checks depend on timing: they are only required to read.
#[test]
fn host_commands_of_one_server_first_run_and_rerun_are_pinned() {
    let site = server_site(1);
    site.prepare("0s");
    let first = up_calls(&site);
    assert_counts(&first, true, (26, 12, 24), "first run");
    // Of those, the host-wide ones, which one `up` asks or does once for all its
    // containers (the bench reports the split): the rest are this container's.
    let wide: Vec<String> = crate::hostcmds::host_wide(&first, &[(901, "llm1")])
        .into_iter()
        .map(|c| {
            // The run id differs from run to run.
            let line = call_line(c);
            match line.split_once("phoenix:run=") {
                Some((a, b)) => format!("{a}phoenix:run=RUN{}", &b[b.find(' ').unwrap()..]),
                None => line,
            }
        })
        .collect();
    assert_eq!(
        wide,
        [
            "zfs list -H -o name -d 0",
            "pveversion ",
            "pvesm status --content rootdir",
            "pvesm list local --content vztmpl",
            "nvidia-smi --query-gpu=index,pci.bus_id,uuid,name,memory.total,driver_version --format=csv,noheader,nounits",
            "nvidia-smi -q",
            "zfs get -H -o property,value,source all rpool/phoenix/models",
            "pvesm list local-zfs",
            "systemctl enable --now phoenix-nvidia-nodes.service",
            "zfs get -H -o property,value,source all rpool/phoenix",
            "zfs create -o phoenix:owner=phoenix -o phoenix:run=RUN rpool/phoenix",
            "zfs create -o phoenix:owner=phoenix -o phoenix:run=RUN rpool/phoenix/models",
        ]
    );
    assert_counts(&up_calls(&site), true, (0, 18, 10), "re-run");
}

/// The same for a plain container (the built-in container.rhai with two packages): the
/// first run and a re-run that changes nothing.
#[test]
fn host_commands_of_one_plain_container_are_pinned() {
    let site = Site::new(&plain(1, &[]));
    site.prepare("0s");
    assert_counts(&up_calls(&site), false, (4, 5, 5), "first run");
    assert_counts(&up_calls(&site), false, (0, 3, 2), "re-run");
}

/// Issue 14 P2 in one `up` of several servers: the host-wide questions (PVE version,
/// storages, templates, GPUs, the GPU nodes unit, the storage's volumes) are asked once for
/// all containers, and a dataset one container's run created is known to the others
/// without a `zfs get`. Pinned: what the three runs asked and changed, without the
/// readiness waits' reads (their number depends on timing; they must only read).
#[test]
fn an_up_of_three_servers_asks_the_host_wide_questions_once() {
    let site = server_site(3);
    site.prepare("0s");
    let calls = up_calls(&site);
    let line = |c: &Value| call_line(c);
    let waits = |c: &Value| {
        let l = line(c);
        [
            " -- du -s -b ",
            " -- docker inspect ",
            " -- docker logs ",
            "pct status ",
        ]
        .iter()
        .any(|w| l.contains(w))
    };
    for c in calls.iter().filter(|c| waits(c)) {
        assert!(reads(c), "the wait changed something: {}", line(c));
    }
    let counted_part: Vec<Value> = calls.iter().filter(|c| !waits(c)).cloned().collect();
    let times = |shape: &str| counted_part.iter().filter(|c| line(c) == shape).count();
    for once in [
        "pveversion ",
        "pvesm status --content rootdir",
        "pvesm list local-zfs",
        "nvidia-smi -q",
        "systemctl enable --now phoenix-nvidia-nodes.service",
    ] {
        assert_eq!(times(once), 1, "{once:?} in:\n{}", counted(&counted_part).1);
    }
    // Each server's dataset is created once; of the three, only the first one's (whose
    // parents this `up` created a moment before, mountpoints unknown) is read back.
    let leaf_reads = counted_part
        .iter()
        .filter(|c| line(c).starts_with("zfs get") && line(c).contains("/models/"))
        .count();
    assert!(leaf_reads <= 1, "{}", counted(&counted_part).1);
    // 23 changes per server, and three for all: the GPU nodes unit and the models'
    // parent datasets (`rpool/phoenix`, `rpool/phoenix/models`).
    let (counts, list) = counted(&counted_part);
    assert_eq!(counts.0, 3 * 23 + 3, "mutating:\n{list}");
    assert!(
        counts.0 + counts.1 <= 3 * 30,
        "more than 30 host commands per container:\n{list}"
    );
}

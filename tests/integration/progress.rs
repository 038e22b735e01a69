//! Progress on stderr (issue 15 item 1 "must show"): the drdevstral flow on an emulated host
//! whose vLLM server loads slowly (`faults.json` `{"vllm":{"load_delay":…}}`, the emulator's
//! knob) shows, on a terminal (`script -qc`, util-linux), a spinner line with the readiness
//! stage and the elapsed time; piped, `start`/`done` lines for each step and `lxc.exec`
//! command, a stage line and heartbeat lines (`PHOENIX_PROGRESS_INTERVAL`); with `-q`,
//! nothing. stdout holds only the result block in every case.
//!
//! The runs wait on the process, never on time: the load delay is long against the
//! heartbeat interval (4 s against 100 ms), so the loading stage is seen whatever the load.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::acceptance::{Out, Site, example_config};

/// The emulated server's load delay here: long enough to see the loading stage.
const LOAD_DELAY: &str = "4s";

/// A prepared site whose vLLM server loads for [`LOAD_DELAY`].
fn slow_site() -> Site {
    let site = Site::new(&example_config());
    site.prepare();
    let faults = json!({"faults": [], "vllm": {"load_delay": LOAD_DELAY}});
    std::fs::write(site.root().join("faults.json"), faults.to_string()).unwrap();
    site
}

/// stdout is the result block of a successful drdevstral run and nothing else.
fn assert_result_block(stdout: &str) {
    let mut lines = stdout.lines();
    let head = lines.next().unwrap_or_default();
    assert!(
        head.starts_with("drdevstral.rhai finished in "),
        "stdout: {stdout}"
    );
    let keys: Vec<&str> = lines
        .map(|l| {
            assert!(l.starts_with("  "), "not a result line: {l:?} in {stdout}");
            l.split_whitespace().next().unwrap()
        })
        .collect();
    assert_eq!(
        keys,
        ["container", "endpoint", "model", "API", "try", "remove"],
        "stdout: {stdout}"
    );
}

#[test]
fn on_a_terminal_a_spinner_shows_the_stage_and_elapsed_time() {
    let site = slow_site();
    let typescript = site.path("typescript");
    let stdout = site.path("stdout.txt");
    // stderr on the pseudo-terminal `script` makes, stdout to a file: the command line is
    // for `script`'s shell (test code; phoenix itself never runs a shell).
    let mut line = vec![env!("CARGO_BIN_EXE_phoenix").to_owned()];
    line.extend(site.run_args(&[]));
    let line = format!(
        "{} > {}",
        shlex::try_join(line.iter().map(String::as_str)).unwrap(),
        shlex::try_quote(stdout.to_str().unwrap()).unwrap()
    );
    let base = site.command(&[]);
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line])
        .arg(&typescript)
        .env_clear()
        .current_dir(base.get_current_dir().unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in base.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    cmd.env("TERM", "xterm");
    let out = cmd
        .output()
        .expect("util-linux `script` runs (apt-get install bsdutils)");
    let term = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    assert!(out.status.success(), "script: {out:?}\n{term}");

    // The live line of the readiness wait: a spinner frame (braille), the step, its stage
    // and the elapsed time in brackets.
    let live = regex::Regex::new(
        r"([\x{2800}-\x{28FF}])(?:\x1b\[0m)? vllm\.wait_ready:901 http://[0-9.]+:8000/ · loading \[(\d+)s\]",
    )
    .unwrap();
    let frames: std::collections::BTreeSet<&str> = live
        .captures_iter(&term)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert!(
        frames.len() >= 2,
        "the spinner turns while loading: {frames:?}\n{term}"
    );
    // Steps and commands had their live lines too; finished ones leave a `done` line.
    assert!(
        term.contains(" lxc.exec:901 apt-get -q update [0s]"),
        "{term}"
    );
    assert!(term.contains("done   lxc.create:901 ("), "{term}");
    assert!(
        term.contains("done   vllm.wait_ready:901 http://"),
        "{term}"
    );
    // Nothing of the result went to the terminal; the file holds only the result block.
    assert!(!term.contains("finished in "), "{term}");
    assert_result_block(&std::fs::read_to_string(&stdout).unwrap());
    site.ok(&["destroy"], b"");
    site.assert_no_server("destroy");
}

#[test]
fn piped_steps_and_heartbeats_are_lines_and_quiet_hides_them() {
    let site = slow_site();
    let mut cmd = site.command(
        &site
            .run_args(&[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    cmd.env("PHOENIX_PROGRESS_INTERVAL", "100ms");
    let out = cmd.output().unwrap();
    let out = Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_eq!(out.code, 0, "{out:?}");
    let err = &out.stderr;
    assert!(!err.contains('\x1b'), "no terminal codes in a pipe: {err}");
    // lxc.exec commands are steps, display-quoted, with the time they took.
    assert!(
        err.contains(" INFO start lxc.exec:901 apt-get -q update\n"),
        "{err}"
    );
    assert!(
        err.contains(" INFO done   lxc.exec:901 apt-get -q update ("),
        "{err}"
    );
    assert!(
        err.contains(" INFO start lxc.exec:901 docker run --rm --gpus '\"device=0,1\"' --entrypoint /bin/true vllm/vllm-openai:v0.11.0\n"),
        "{err}"
    );
    // The wait (a wait, not a change): its stage as a line, then heartbeats naming stage
    // and elapsed time.
    assert!(
        err.contains(" INFO wait  vllm.wait_ready:901 http://"),
        "{err}"
    );
    let stage =
        regex::Regex::new(r" INFO vllm\.wait_ready:901 http://[0-9.]+:8000/ · loading \[\d+s\]\n")
            .unwrap();
    assert!(stage.is_match(err), "{err}");
    let heartbeat = regex::Regex::new(
        r" INFO still waiting: vllm\.wait_ready:901 http://[0-9.]+:8000/ · loading \[\d+s elapsed\]",
    )
    .unwrap();
    assert!(heartbeat.is_match(err), "{err}");
    assert!(
        err.contains(" INFO done   vllm.wait_ready:901 http://"),
        "{err}"
    );
    assert_result_block(&out.stdout);

    // `-q`: the same run again (everything in place) shows no progress, only the result.
    let mut cmd = site.command(
        &site
            .run_args(&["-q"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    cmd.env("PHOENIX_PROGRESS_INTERVAL", "100ms");
    let quiet = cmd.output().unwrap();
    assert!(quiet.status.success(), "{quiet:?}");
    assert_eq!(String::from_utf8_lossy(&quiet.stderr), "");
    assert_result_block(&String::from_utf8_lossy(&quiet.stdout));
    site.ok(&["destroy"], b"");
    site.assert_no_server("destroy");
}

//! `cargo bench --bench phoenix-bench`: issue 14's figures P1-P4, measured side by side in
//! one run and printed as one table next to their goals (never asserted: these machines
//! are shared and noisy). BENCHMARKS.md says how to read and reproduce them.
//!
//! - P1: provisioning N = 1, 2, 4, 8 vLLM containers on the emulated host under the latency
//!   profile of a real Proxmox VE node ([`PROFILE`]: each `pct` call 0.3 s, `pct create`
//!   2 s, `pct start` 1 s, the vLLM load 3 s), with `phoenix up --parallel N` and
//!   `--parallel 1`; the ratio of the N = 8 wall time to one container's critical path
//!   (the N = 1 wall time). Where the binary has no `up` subcommand yet, each container is
//!   one `phoenix recipe run … --lxc VMID`, one after the other, and the table says so.
//! - P2: the host commands of one container's first run and of its re-run (from the
//!   emulator's `argv.log`, mutating and read-only apart), and phoenix's own CPU time per
//!   run: the `--dry-run` path (which runs only read-only probes) and the real first run,
//!   phoenix's process alone (the emulator's calls are its children, counted apart).
//! - P3: readiness detection latency, ready → noticed (emulated load delay 2 s).
//! - P4: a 1,000-container config through `config::load_str`; 100 recipe lints.
//!
//! Environment: `PHOENIX_BENCH_N` (the P1 sizes, comma-separated, default `1,2,4,8`;
//! `none` skips P1), `PHOENIX_BENCH_SCALE` (multiplies the latency profile, default 1;
//! `0.1` gives a quick run whose P1 figures are not the goal's).

mod parts;

use std::time::{Duration, Instant};

use parts::hostcmds::{self, Counts};
use parts::micro::{self, Stats};
use parts::site::{FIRST_VMID, Site};
use serde_json::{Value, json};

/// The latency profile of P1 (issue 14), in milliseconds: every `pct` call (a Perl
/// interpreter's start-up on a real host), `pct create`, `pct start`, the vLLM load.
const PROFILE: [(&str, f64); 4] = [
    ("pct", 300.0),
    ("pct create", 2000.0),
    ("pct start", 1000.0),
    ("vllm load", 3000.0),
];

/// Dry runs timed for P2's CPU figure. The kernel reports a process's own CPU time in
/// 10 ms clock ticks (`/proc/PID/stat`, sampled at each tick): the mean of many runs is
/// what gives it milliseconds.
const DRY_RUNS: usize = 40;

/// One row of the table.
struct Row {
    part: &'static str,
    figure: String,
    value: String,
    goal: String,
    met: Option<bool>,
}

impl Row {
    fn new(part: &'static str, figure: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            part,
            figure: figure.into(),
            value: value.into(),
            goal: String::new(),
            met: None,
        }
    }

    fn goal(mut self, goal: impl Into<String>, met: bool) -> Self {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn spread(s: &Stats) -> String {
    format!("{} ({}–{})", ms(s.median), ms(s.min), ms(s.max))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn progress(msg: &str) {
    eprintln!("phoenix-bench: {msg}");
}

fn main() {
    let load_start = loadavg();
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let sizes = p1_sizes();
    let scale: f64 = std::env::var("PHOENIX_BENCH_SCALE")
        .ok()
        .map(|s| {
            s.parse()
                .ok()
                .filter(|x: &f64| *x >= 0.0)
                .unwrap_or_else(|| panic!("PHOENIX_BENCH_SCALE={s:?} is not a number ≥ 0"))
        })
        .unwrap_or(1.0);
    let up = has_up();

    let mut rows = Vec::new();
    progress("P4 config and lint");
    p4(&mut rows);
    progress("P3 readiness");
    p3(&mut rows);
    progress("P2 host commands and CPU");
    p2(&mut rows, up);
    if !sizes.is_empty() {
        p1(&mut rows, &sizes, scale, up);
    }

    let load_end = loadavg();
    print_table(&rows);
    println!();
    println!(
        "machine: {cpus} CPUs, load average (1/5/15 min) {load_start} at the start, {load_end} at the end; whole run {}",
        secs(started.elapsed())
    );
    println!(
        "P1/P2 path: {}",
        if up {
            "`phoenix up` (this binary has it)"
        } else {
            "no `phoenix up` in this binary: one `phoenix recipe run … --lxc VMID` per container, one after the other"
        }
    );
    if cfg!(debug_assertions) {
        println!(
            "built without optimisations (`--profile dev`): the CPU and in-process figures (P2 CPU, P3, P4) are not release figures"
        );
    }
    if (scale - 1.0).abs() > f64::EPSILON {
        println!(
            "latency profile scaled by {scale} (PHOENIX_BENCH_SCALE): P1 is not comparable with its goal"
        );
    }
}

/// `PHOENIX_BENCH_N`: the P1 sizes.
fn p1_sizes() -> Vec<usize> {
    match std::env::var("PHOENIX_BENCH_N") {
        Err(_) => vec![1, 2, 4, 8],
        Ok(s) if s.trim() == "none" => Vec::new(),
        Ok(s) => {
            let mut v: Vec<usize> = s
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse()
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .unwrap_or_else(|| {
                            panic!(
                                "PHOENIX_BENCH_N={s:?}: give sizes 1-64, comma-separated, or none"
                            )
                        })
                })
                .collect();
            // The critical path is always measured.
            v.push(1);
            v.sort_unstable();
            v.dedup();
            v
        }
    }
}

/// Whether this phoenix binary has the `up` subcommand.
fn has_up() -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(["up", "--help"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn p4(rows: &mut Vec<Row>) {
    let c = micro::config_bench();
    rows.push(
        Row::new(
            "P4",
            format!(
                "config load_str, {} containers ({} KiB), median (min–max) of {}",
                micro::CONTAINERS,
                c.bytes / 1024,
                micro::RUNS
            ),
            spread(&c.load),
        )
        .goal("≤ 50 ms", c.load.median <= Duration::from_millis(50)),
    );
    rows.push(Row::new(
        "P4",
        "  of which serde_json parse / schema validation",
        format!("{} / {}", ms(c.parse.median), ms(c.schema.median)),
    ));
    rows.push(Row::new(
        "P4",
        "  first load (schema compiled once per process)",
        ms(c.first),
    ));
    match micro::lint_bench() {
        Some((name, size, s)) => rows.push(
            Row::new(
                "P4",
                format!("recipe lint ×100 of {name} ({size} B), median (min–max) of 10"),
                spread(&s),
            )
            .goal("≤ 500 ms", s.median <= Duration::from_millis(500)),
        ),
        None => rows.push(Row::new("P4", "recipe lint ×100", "no recipe found")),
    }
}

fn p3(rows: &mut Vec<Row>) {
    let (noticed, total) = micro::readiness_bench();
    rows.push(
        Row::new(
            "P3",
            format!(
                "readiness: ready → noticed, median (min–max) of {}",
                micro::READY_RUNS
            ),
            spread(&noticed),
        )
        .goal("≤ 100 ms", noticed.median <= Duration::from_millis(100)),
    );
    rows.push(Row::new(
        "P3",
        format!(
            "  whole wait with a {} s load delay",
            micro::LOAD_DELAY.as_secs()
        ),
        ms(total.median),
    ));
}

/// The phoenix commands that provision every container of `site` (`up`, or one `recipe
/// run` per container when the binary has no `up`).
fn provision_commands(site: &Site, up: bool, parallel: usize, dry_run: bool) -> Vec<Vec<String>> {
    let mut cmds = if up {
        vec![vec![
            "up".to_owned(),
            "--parallel".to_owned(),
            parallel.to_string(),
        ]]
    } else {
        site.vmids()
            .into_iter()
            .map(|v| {
                vec![
                    "recipe".to_owned(),
                    "run".to_owned(),
                    site.recipe(),
                    "--lxc".to_owned(),
                    v,
                ]
            })
            .collect()
    };
    if dry_run {
        for c in &mut cmds {
            c.push("--dry-run".to_owned());
        }
    }
    cmds
}

/// Run `cmds` in `site` one after the other; stop the bench when one fails (a failed run's
/// figures mean nothing). Wall time of all, phoenix's own CPU time of all and that of the
/// emulator calls it made.
fn run_all(site: &Site, cmds: &[Vec<String>], what: &str) -> (Duration, Duration, Duration) {
    let start = Instant::now();
    let mut own = Duration::ZERO;
    let mut children = Duration::ZERO;
    for c in cmds {
        let args: Vec<&str> = c.iter().map(String::as_str).collect();
        let run = site.phoenix(&args);
        if run.code != 0 {
            eprintln!(
                "phoenix-bench: {what}: `phoenix {}` exited {}:\n{}\n{}",
                c.join(" "),
                run.code,
                run.stdout,
                run.stderr
            );
            std::process::exit(1);
        }
        own += run.own_cpu;
        children += run.children_cpu;
    }
    (start.elapsed(), own, children)
}

fn counts_value(c: &Counts) -> String {
    format!(
        "{} ({} mutating, {} read-only; {} pct)",
        c.total(),
        c.mutating,
        c.read_only,
        c.pct
    )
}

/// Write `lines` under `target/phoenix-bench/`; the path.
fn write_report(name: &str, lines: &[String]) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/phoenix-bench");
    let path = dir.join(name);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, lines.join("\n") + "\n");
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(&path)
        .display()
        .to_string()
}

fn p2(rows: &mut Vec<Row>, up: bool) {
    // CPU: dry runs on a fresh host (the first run's plan).
    let fresh = Site::new(1, None);
    let dry = provision_commands(&fresh, up, 1, true);
    let mut own = Vec::new();
    let mut total = Vec::new();
    for _ in 0..DRY_RUNS {
        for c in &dry {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            let run = fresh.phoenix(&args);
            assert_eq!(run.code, 0, "dry run: {}", run.stderr);
            own.push(run.own_cpu);
            total.push(run.total_cpu);
        }
    }
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / u32::try_from(v.len()).unwrap_or(1);
    let own_mean = mean(&own);
    rows.push(
        Row::new(
            "P2",
            format!("phoenix CPU per --dry-run (first-run plan), own process, mean of {DRY_RUNS}"),
            ms(own_mean),
        )
        .goal("≤ 25 ms", own_mean <= Duration::from_millis(25)),
    );
    rows.push(Row::new(
        "P2",
        "  with the read-only probes it runs (rusage, median)",
        ms(Stats::of(total).median),
    ));
    drop(fresh);

    // Host commands: a first run and a re-run of one container.
    let site = Site::new(1, None);
    let cmds = provision_commands(&site, up, 1, false);
    let before = site.log_len();
    let (wall, first_own, first_emu) = run_all(&site, &cmds, "P2 first run");
    let calls = site.calls();
    let calls_first = calls[before..].to_vec();
    let first = hostcmds::count(&calls_first);
    let first_file = write_report("p2-first-run.txt", &hostcmds::breakdown(&calls_first));
    let mid = calls.len();
    let (_, rerun_own, rerun_emu) = run_all(&site, &cmds, "P2 re-run");
    let calls = site.calls();
    let rerun = hostcmds::count(&calls[mid..]);
    let rerun_file = write_report("p2-rerun.txt", &hostcmds::breakdown(&calls[mid..]));
    // Of those, the host-wide ones: asked or done once per `up` whatever its size.
    let wide = hostcmds::host_wide(&calls_first, &[(FIRST_VMID, "bench-0")]).len();
    let own = first.total() - wide;
    rows.push(
        Row::new(
            "P2",
            format!("host commands, first run of one container (list: {first_file})"),
            format!(
                "{} = {wide} host-wide + {own} for the container",
                counts_value(&first)
            ),
        )
        .goal("≤ 30 per container", own <= 30),
    );
    rows.push(Row::new(
        "P2",
        format!("host commands per container, re-run (list: {rerun_file})"),
        counts_value(&rerun),
    ));
    rows.push(Row::new(
        "P2",
        format!(
            "phoenix CPU, real first run / re-run, own process (first run took {})",
            secs(wall)
        ),
        format!("{} / {}", ms(first_own), ms(rerun_own)),
    ));
    rows.push(Row::new(
        "P2",
        "  the emulator's calls, first run / re-run (children, not phoenix)",
        format!("{} / {}", ms(first_emu), ms(rerun_emu)),
    ));
}

fn profile(scale: f64) -> Value {
    let mut p = serde_json::Map::new();
    for (k, v) in PROFILE {
        p.insert(k.into(), json!(format!("{}ms", (v * scale).round())));
    }
    Value::Object(p)
}

/// The modelled host latency of the calls `calls` under the profile (what a real host
/// would spend in `pct` alone), plus one vLLM load.
fn modelled(calls: &[Value], scale: f64) -> Duration {
    let get = |k: &str| PROFILE.iter().find(|(n, _)| *n == k).map_or(0.0, |p| p.1);
    let mut total = get("vllm load");
    for c in calls.iter().filter(|c| c["tool"] == "pct") {
        let key = format!("pct {}", c["argv"][0].as_str().unwrap_or_default());
        total += if PROFILE.iter().any(|(n, _)| *n == key) {
            get(&key)
        } else {
            get("pct")
        };
    }
    Duration::from_secs_f64(total * scale / 1e3)
}

fn p1(rows: &mut Vec<Row>, sizes: &[usize], scale: f64, up: bool) {
    let profile = profile(scale);
    let mut critical = None;
    let mut last = None;
    let mut shared = None;
    let mut single = None;
    for &n in sizes {
        let parallels: Vec<usize> = if up && n > 1 { vec![1, n] } else { vec![1] };
        let mut walls = Vec::new();
        for &p in &parallels {
            progress(&format!("P1 N = {n}, --parallel {p}"));
            let site = Site::new(n, Some(&profile));
            let cmds = provision_commands(&site, up, p, false);
            let before = site.log_len();
            let (wall, _, _) = run_all(&site, &cmds, &format!("P1 N = {n}"));
            if n == 1 {
                let calls = site.calls();
                critical = Some((wall, modelled(&calls[before..], scale)));
                single = Some(hostcmds::count(&calls[before..]));
            }
            if up && n > 1 && p == n {
                shared = Some((n, hostcmds::count(&site.calls()[before..])));
            }
            walls.push((p, wall));
        }
        let (seq, par) = (walls[0].1, walls.get(1).map(|w| w.1));
        let value = match par {
            Some(par) => format!(
                "{} (--parallel 1: {}; speed-up {:.2}×)",
                secs(par),
                secs(seq),
                seq.as_secs_f64() / par.as_secs_f64()
            ),
            None if n == 1 || !up => format!("{} (one after the other)", secs(seq)),
            None => secs(seq),
        };
        rows.push(Row::new(
            "P1",
            format!(
                "wall time, N = {n}{}",
                if up && n > 1 {
                    format!(" --parallel {n}")
                } else {
                    String::new()
                }
            ),
            value,
        ));
        last = Some((n, par.unwrap_or(seq)));
    }
    // One `up` of N containers asks the host-wide questions (version, storages, GPUs,
    // parent datasets, the GPU nodes unit) once for all of them.
    if let Some((n, c)) = shared {
        let per = c.total() as f64 / n as f64;
        rows.push(
            Row::new(
                "P2",
                format!("host commands per container in one `up` of N = {n} (first run)"),
                format!(
                    "{per:.1} ({} in all: {} mutating, {} read-only; {} pct)",
                    c.total(),
                    c.mutating,
                    c.read_only,
                    c.pct
                ),
            )
            .goal("≤ 30", per <= 30.0),
        );
        // What each container beyond the first adds: the host-wide questions are not
        // repeated, the readiness wait's checks are (they depend on the load's length).
        if let Some(one) = single {
            let more = (c.total() as f64 - one.total() as f64) / (n - 1) as f64;
            rows.push(Row::new(
                "P2",
                format!(
                    "  each container beyond the first (N = {n} against N = 1, both with latency)"
                ),
                format!("{more:.1} ({} for N = 1)", one.total()),
            ));
        }
    }
    let Some((one, floor)) = critical else { return };
    rows.push(Row::new(
        "P1",
        "  critical path (N = 1) of which modelled host latency",
        format!("{} of {}", secs(floor), secs(one)),
    ));
    if let Some((n, wall)) = last {
        let ratio = wall.as_secs_f64() / one.as_secs_f64();
        let row = Row::new(
            "P1",
            format!("ratio wall(N = {n}) / critical path"),
            format!("{ratio:.2}"),
        );
        rows.push(if n == 8 {
            row.goal("≤ 1.2 at N = 8", ratio <= 1.2)
        } else {
            row
        });
    }
}

fn print_table(rows: &[Row]) {
    let headers = ["", "figure", "measured", "goal", "met"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.part.to_owned(),
                r.figure.clone(),
                r.value.clone(),
                r.goal.clone(),
                match r.met {
                    Some(true) => "yes".into(),
                    Some(false) => "NO".into(),
                    None => String::new(),
                },
            ]
        })
        .collect();
    let mut widths = headers.map(|h| h.chars().count());
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c) {
            *w = (*w).max(s.chars().count());
        }
    }
    let line = |c: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in c.iter().zip(widths).enumerate() {
            if i > 0 {
                s.push_str(" | ");
            }
            s.push_str(cell);
            s.push_str(&" ".repeat(w - cell.chars().count()));
        }
        println!("{}", s.trim_end());
    };
    line(&headers.map(str::to_owned));
    line(&widths.map(|w| "-".repeat(w)));
    for c in &cells {
        line(c);
    }
}

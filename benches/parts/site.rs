//! A scratch phoenix installation with its own emulated host, for P1 and P2: a temp dir
//! holding the settings, state, log, marker and secret dirs, a generated config of N vLLM
//! containers, a copy of `recipes/drdevstral.rhai` next to it, and the emulated root.
//!
//! Every phoenix run is measured from outside: its own CPU time and
//! the CPU time of the children it reaped (the emulator's calls), read from
//! `/proc/<pid>/stat` while the exited process is still a zombie (`waitid(WNOWAIT)`), and
//! the precise total of both from `getrusage(RUSAGE_CHILDREN)` around the reaping.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// The model each generated container serves: small, so eight of them fit the emulated
/// pool's accounting (the seed's Devstral is ≈ 47 GB each).
pub const MODEL: &str = "Qwen/Qwen3-0.6B";

/// The first vmid of a generated config.
pub const FIRST_VMID: u32 = 9001;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The generated config: `n` vLLM containers with unique ids, names, addresses and MACs,
/// each on one of the emulated host's two GPUs (so from two on, GPUs are shared).
pub fn config(n: usize) -> Value {
    let mut entries = serde_json::Map::new();
    for i in 0..n {
        let vmid = FIRST_VMID + u32::try_from(i).expect("small n");
        entries.insert(
            vmid.to_string(),
            json!({
                "name": format!("bench-{i}"),
                "memory_mb": 16384,
                "cores": 4,
                "template": "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
                "storage_pool": "local-zfs",
                "storage_size_gb": 32,
                "network_config": {
                    "name": "eth0",
                    "bridge": "vmbr0",
                    "ip": format!("10.10.0.{}/24", 10 + i),
                    "gw": "10.10.0.1",
                    "mac": format!("52:54:00:be:00:{i:02x}"),
                },
                "features": { "nesting": true, "keyctl": true },
                "unprivileged": false,
                "gpu_assignment": [i % 2],
                "vllm_model": MODEL,
                "vllm_tensor_parallel_size": 1,
                "vllm_port": 8000,
                "recipe": "drdevstral.rhai",
            }),
        );
    }
    json!({ "lxc_configs": entries })
}

/// What one phoenix process did, measured from outside.
#[derive(Debug)]
pub struct Run {
    /// Its exit code (`-1`: killed by a signal).
    pub code: i32,
    /// What it printed.
    pub stdout: String,
    /// What it logged.
    pub stderr: String,
    /// Its own CPU time, user + system, all threads (`/proc` clock ticks: 10 ms grain).
    pub own_cpu: Duration,
    /// The CPU time of the children it waited for (the emulator's calls; ticks).
    pub children_cpu: Duration,
    /// Both together, from `getrusage` (microsecond grain).
    pub total_cpu: Duration,
}

/// A scratch installation.
pub struct Site {
    tmp: tempfile::TempDir,
    recipe: PathBuf,
    /// How many containers its config has.
    pub n: usize,
}

impl Site {
    /// A site with `n` generated containers whose emulated host (prepared by a first
    /// read-only command) has the latency profile `latency` (`None`: none).
    pub fn new(n: usize, latency: Option<&Value>) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("phoenix-bench-")
            .tempdir()
            .expect("a temp dir");
        let site = Self {
            recipe: tmp.path().join("drdevstral.rhai"),
            tmp,
            n,
        };
        std::fs::create_dir(site.path("tmp")).expect("tmp dir");
        std::fs::write(site.path("phoenix.toml"), "").expect("settings file");
        std::fs::write(
            site.path("lxc.json"),
            serde_json::to_string_pretty(&config(n)).expect("JSON"),
        )
        .expect("config file");
        std::fs::copy(repo("recipes/drdevstral.rhai"), &site.recipe).expect("recipe copy");
        let out = site.phoenix(&["gpu", "list"]);
        assert_eq!(out.code, 0, "phoenix gpu list: {}", out.stderr);
        // The emulated vLLM servers end with this process, should the bench be killed.
        let mut emu = site.emu_settings();
        emu["owner"] = json!({ "pid": std::process::id(), "start": own_start_time() });
        if let Some(profile) = latency {
            emu["latency"] = profile.clone();
        }
        std::fs::write(site.root().join("emu.json"), emu.to_string()).expect("emu.json");
        site
    }

    /// `<site>/<rel>`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The emulated host's root.
    pub fn root(&self) -> PathBuf {
        self.path("emu")
    }

    /// The site's copy of the recipe.
    pub fn recipe(&self) -> String {
        self.recipe.display().to_string()
    }

    /// The vmids of the generated config.
    pub fn vmids(&self) -> Vec<String> {
        (0..self.n)
            .map(|i| (FIRST_VMID + u32::try_from(i).expect("small n")).to_string())
            .collect()
    }

    fn emu_settings(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.root().join("emu.json")).expect("emu.json"))
            .expect("emu.json is JSON")
    }

    /// Run `phoenix args…` in the site and measure it.
    pub fn phoenix(&self, args: &[&str]) -> Run {
        let mut c = Command::new(env!("CARGO_BIN_EXE_phoenix"));
        c.args(args)
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PHOENIX_SETTINGS", self.path("phoenix.toml"))
            .env("PHOENIX_HOST", "emulated")
            .env("PHOENIX_CONFIG", self.path("lxc.json"))
            .env("PHOENIX_STATE_DIR", self.path("state"))
            .env("PHOENIX_MARKER_DIR", self.path("markers"))
            .env("PHOENIX_LOG_DIR", self.path("log"))
            .env("PHOENIX_SECRETS_DIR", self.path("secrets"))
            .env("PHOENIX_SECRET_KEY", self.path("key/secret.key"))
            .env("PHOENIX_EMU_ROOT", self.root())
            .env("PHOENIX_STDLIB", repo("stdlib"))
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        measure(c)
    }

    /// How many calls the emulator has logged so far.
    pub fn log_len(&self) -> usize {
        self.calls().len()
    }

    /// The emulator's `argv.log`, whole lines only.
    pub fn calls(&self) -> Vec<Value> {
        let text = match std::fs::read_to_string(self.root().join("argv.log")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("argv.log: {e}"),
        };
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("argv.log line is JSON"))
            .collect()
    }
}

impl Drop for Site {
    /// Stop the site's emulated vLLM servers before the temp dir goes: they serve only while
    /// `emu.json` exists, checked every 200 ms.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.root().join("emu.json"));
        let root = self.root().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && !servers_of(&root).is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Live processes whose command line names `root` (its emulated vLLM servers).
fn servers_of(root: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("__vllm-serve") && c.contains(root)
            }) && stat_fields(*pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name (field 3, the state, first).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// This process's start time in clock ticks since boot (`/proc/self/stat` field 22).
fn own_start_time() -> u64 {
    let me = i32::try_from(std::process::id()).expect("pid");
    stat_fields(me)
        .and_then(|f| f.get(19)?.parse().ok())
        .expect("own start time")
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times.
fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

fn ticks(f: &[String], i: usize) -> Duration {
    let t: u64 = f.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_micros(t * 1_000_000 / clock_ticks())
}

fn children_usage() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let us = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    us(u.user_time()) + us(u.system_time())
}

/// Spawn `c`, drain its output, and measure it (see the module docs).
pub fn measure(mut c: Command) -> Run {
    let mut child = c.spawn().expect("spawn phoenix");
    let pid = i32::try_from(child.id()).expect("pid");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    // Exited but not reaped: its /proc entry still holds its times.
    waitid(
        Id::Pid(Pid::from_raw(pid)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
    )
    .expect("waitid");
    let fields = stat_fields(pid).unwrap_or_default();
    // Fields 14-17 (utime, stime, cutime, cstime) at indices 11-14 of what follows field 2.
    let own_cpu = ticks(&fields, 11) + ticks(&fields, 12);
    let children_cpu = ticks(&fields, 13) + ticks(&fields, 14);
    let before = children_usage();
    let status = child.wait().expect("reap phoenix");
    let total_cpu = children_usage().saturating_sub(before);
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        own_cpu,
        children_cpu,
        total_cpu,
    }
}

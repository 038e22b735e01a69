//! A scratch phoenix installation with an emulated host of its own, driven through the real
//! `phoenix` binary: the harness of the multi-container tests (`phoenix up`, `recipe run`
//! with several `--lxc`, progress output).
//!
//! Every site lives in a temp dir (state, log, marker, secret dirs, the key and the emulated
//! root), names this test process as the owner of its emulated vLLM servers (so a killed
//! test leaves none behind) and sets the emulated servers' load delay. The acceptance and
//! fault tests keep their own single-container harnesses (`acceptance::Site`,
//! `faults::Host`) for now; this one is written so that they can move onto it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{emu_datasets, emu_snapshot, wait_until};

/// The host's files, as [`emu_snapshot`] reads them.
pub(crate) type Snapshot = BTreeMap<String, (u32, Vec<u8>)>;

/// A repository path.
pub(crate) fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// What a finished phoenix process said.
#[derive(Debug)]
pub(crate) struct Out {
    /// Exit code (-1 when killed by a signal).
    pub(crate) code: i32,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

/// One phoenix installation and its emulated host.
pub(crate) struct Site {
    tmp: tempfile::TempDir,
    /// Extra environment for every phoenix command.
    env: Vec<(String, String)>,
}

impl Site {
    /// A site whose config file (`lxc.json`) is `config`, pretty-printed.
    pub(crate) fn new(config: &Value) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("tmp")).unwrap();
        std::fs::write(tmp.path().join("phoenix.toml"), "").unwrap();
        let site = Self {
            tmp,
            env: Vec::new(),
        };
        site.write_config(config);
        site
    }

    /// Replace the config file.
    pub(crate) fn write_config(&self, config: &Value) {
        std::fs::write(
            self.path("lxc.json"),
            serde_json::to_string_pretty(config).unwrap(),
        )
        .unwrap();
    }

    /// Add `key=value` to the environment of every later phoenix command.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// `rel` inside the site.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// The emulated host's root.
    pub(crate) fn root(&self) -> PathBuf {
        self.path("emu")
    }

    /// A phoenix command with the site's environment (and nothing inherited but `PATH`).
    pub(crate) fn command(&self, args: &[&str]) -> Command {
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
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Run phoenix to its end.
    pub(crate) fn phoenix(&self, args: &[&str]) -> Out {
        let out = self.command(args).output().unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Run phoenix, which must exit 0.
    pub(crate) fn ok(&self, args: &[&str]) -> Out {
        let out = self.phoenix(args);
        assert_eq!(out.code, 0, "phoenix {args:?}: {out:?}");
        out
    }

    /// Start phoenix in the background, in a process group of its own.
    pub(crate) fn spawn(&self, args: &[&str]) -> Child {
        use std::os::unix::process::CommandExt;
        let mut c = self.command(args);
        c.process_group(0);
        c.spawn().unwrap()
    }

    /// Set the emulated host up (any command that opens the host does), name this test
    /// process the owner of its servers, set the servers' load delay; the host's state.
    pub(crate) fn prepare(&self, load_delay: &str) -> Snapshot {
        self.ok(&["gpu", "list"]);
        crate::support::own_emulated_root(&self.root());
        self.faults(&[], json!({ "load_delay": load_delay }));
        emu_snapshot(&self.root())
    }

    /// Write `faults.json`: command `faults` and the `vllm` behaviour.
    pub(crate) fn faults(&self, faults: &[Value], vllm: Value) {
        let v = json!({"faults": faults, "vllm": vllm});
        std::fs::write(self.root().join("faults.json"), v.to_string()).unwrap();
    }

    /// The emulator's `argv.log`, whole lines only.
    pub(crate) fn calls(&self) -> Vec<Value> {
        let text = match std::fs::read_to_string(self.root().join("argv.log")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => panic!("argv.log: {e}"),
        };
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The containers the emulated host has (their config files).
    pub(crate) fn containers(&self) -> Vec<String> {
        let dir = self.root().join("etc/pve/lxc");
        let mut out: Vec<String> = match std::fs::read_dir(dir) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter_map(|n| n.strip_suffix(".conf").map(str::to_owned))
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }

    /// The emulated host's datasets with their user properties.
    pub(crate) fn datasets(&self) -> BTreeMap<String, Vec<String>> {
        emu_datasets(&self.root())
    }

    /// The emulated container's state file.
    pub(crate) fn ct_state(&self, vmid: &str) -> Value {
        let path = self
            .root()
            .join("var/lib/lxc")
            .join(vmid)
            .join("emu-state.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Where container `vmid`'s emulated server listens on `port` (its loopback address).
    pub(crate) fn server_addr(&self, vmid: &str, port: u16) -> SocketAddr {
        let state = self.ct_state(vmid);
        let addr: SocketAddr = format!("{}:{port}", state["address"].as_str().unwrap())
            .parse()
            .unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        addr
    }

    /// The value of a stored secret.
    pub(crate) fn reveal(&self, name: &str) -> String {
        self.ok(&["secret", "get", name, "--reveal"])
            .stdout
            .trim()
            .to_owned()
    }

    /// This site's emulated vLLM servers.
    pub(crate) fn servers(&self) -> Vec<i32> {
        let root = self.root().display().to_string();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let argv: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if argv.get(1) == Some(&&b"__vllm-serve"[..])
                && argv.get(2) == Some(&root.as_bytes())
                && pid_alive(pid)
            {
                out.push(pid);
            }
        }
        out
    }

    /// Wait until this site's servers are gone; panic naming `what` if they stay.
    pub(crate) fn assert_no_server(&self, what: &str) {
        wait_until(
            &format!("{what}: the vLLM server processes to exit"),
            || self.servers().is_empty(),
        );
    }

    /// Marker files.
    pub(crate) fn markers(&self) -> Vec<String> {
        match std::fs::read_dir(self.path("markers")) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Log files phoenix wrote.
    pub(crate) fn logs(&self) -> Vec<String> {
        match std::fs::read_dir(self.path("log")) {
            Ok(d) => d
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Whether `pid` runs (a zombie counts as gone).
pub(crate) fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// One HTTP GET on loopback with a bearer key; `(status, body)`.
pub(crate) fn http_get(addr: SocketAddr, path: &str, key: &str) -> (u16, String) {
    assert!(addr.ip().is_loopback());
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The example config (`recipes/phoenix_lxc_configs.json`) as JSON.
pub(crate) fn example_config() -> Value {
    serde_json::from_slice(&std::fs::read(repo("recipes/phoenix_lxc_configs.json")).unwrap())
        .unwrap()
}

//! Programs inside an emulated container (`pct exec <vmid> -- …`): apt-get, docker,
//! systemctl, nvidia-ctk, nvidia-smi, and the emulated vLLM server that `docker run
//! vllm/vllm-openai…` starts on the container's loopback address. Loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use phoenix::host::emulated;
use phoenix::settings::{FlagOverrides, Settings};
use tempfile::TempDir;

use crate::support::wait_until;

/// A unit for container 901 as an operator writes one for the pinned image: the model
/// with `--model`, the API key as `VLLM_API_KEY` from a 0600 env file, the Hugging Face cache
/// on `/models` (written here, not read from phoenix's golden: the emulator is tested on
/// its own).
const UNIT_901: &str = r#"[Unit]
Description=vLLM server
Requires=docker.service

[Service]
ExecStartPre=-/usr/bin/docker rm -f phoenix-vllm-901
ExecStart=/usr/bin/docker run --rm --name phoenix-vllm-901 --gpus "\"device=0,1\"" --shm-size 16g -p 8000:8000 -v /models/huggingface:/root/.cache/huggingface -v /models:/models --env-file /etc/phoenix-vllm/phoenix-vllm-901.env vllm/vllm-openai:v0.11.0 --model mistralai/Devstral-Small-2507 --tensor-parallel-size 2 --max-model-len 128000 --kv-cache-dtype fp8 --host 0.0.0.0 --port 8000
ExecStop=/usr/bin/docker stop phoenix-vllm-901
Restart=on-failure

[Install]
WantedBy=multi-user.target
"#;

/// The unit of phoenix's first slice: a positional model, the key in a `--config` YAML.
fn old_unit(image: &str) -> String {
    format!(
        "[Unit]\nRequires=docker.service\n[Service]\nExecStart=/usr/bin/docker run --rm --name phoenix-vllm-901 --gpus all -p 8000:8000 -v /root/.cache/huggingface:/root/.cache/huggingface -v /etc/phoenix-vllm:/etc/phoenix-vllm:ro {image} mistralai/Devstral-Small-2507 --served-model-name mistralai/Devstral-Small-2507 --host 0.0.0.0 --port 8000 --config /etc/phoenix-vllm/phoenix-vllm-901.yaml\nRestart=on-failure\n[Install]\nWantedBy=multi-user.target\n"
    )
}

const MODEL: &str = "mistralai/Devstral-Small-2507";
const IMAGE: &str = "vllm/vllm-openai:v0.11.0";
const GPU_LINES: &str = "lxc.cgroup2.devices.allow: c 195:* rwm\nlxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\nlxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file\nlxc.mount.entry: /dev/nvidiactl dev/nvidiactl none bind,optional,create=file\n";
const APT_OPTS: &[&str] = &[
    "-y",
    "-q",
    "--no-install-recommends",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
];

/// One emulated host with container 901 (running), in a temp dir.
struct Emu {
    _dir: TempDir,
    root: PathBuf,
}

impl Emu {
    /// A host whose container 901 has `features` and, with `gpus`, the two GPUs; its
    /// rootfs holds 128 GiB (the image and a downloaded model fit).
    fn new(features: &str, gpus: bool, unprivileged: bool) -> Self {
        Self::with_rootfs(features, gpus, unprivileged, "128")
    }

    /// The same with a rootfs of `gib` GiB.
    fn with_rootfs(features: &str, gpus: bool, unprivileged: bool, gib: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("emulated");
        let state = dir.path().join("state");
        let settings = Settings::resolve_with(&FlagOverrides::default(), &|k| match k {
            "PHOENIX_EMU_ROOT" => Some(root.display().to_string()),
            "PHOENIX_STATE_DIR" => Some(state.display().to_string()),
            _ => None,
        })
        .unwrap();
        emulated::prepare(&settings).unwrap();
        // This test process owns the root's servers: killed, it leaves none behind.
        crate::support::set_owner(&root, std::process::id());
        let emu = Self { _dir: dir, root };
        let unpriv = if unprivileged { "1" } else { "0" };
        emu.ok(
            "pct",
            &[
                "create",
                "901",
                "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst",
                "--hostname",
                "drdevstral",
                "--memory",
                "4096",
                "--rootfs",
                &format!("local-zfs:{gib}"),
                "--net0",
                "name=eth0,bridge=vmbr0,ip=dhcp",
                "--features",
                features,
                "--unprivileged",
                unpriv,
            ],
        );
        if gpus {
            let path = emu.root.join("etc/pve/lxc/901.conf");
            let mut text = std::fs::read_to_string(&path).unwrap();
            text.push_str(GPU_LINES);
            std::fs::write(&path, text).unwrap();
        }
        emu.ok("pct", &["start", "901"]);
        emu
    }

    fn run(&self, tool: &str, args: &[&str]) -> Output {
        Command::new(self.root.join("bin").join(tool))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, tool: &str, args: &[&str]) -> String {
        let o = self.run(tool, args);
        assert!(
            o.status.success(),
            "{tool} {args:?} failed ({:?}): {}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `pct exec 901 -- argv…`.
    fn exec(&self, argv: &[&str]) -> Output {
        let mut a = vec!["exec", "901", "--"];
        a.extend_from_slice(argv);
        self.run("pct", &a)
    }

    /// `pct exec` that must succeed; its stdout.
    fn exec_ok(&self, argv: &[&str]) -> String {
        let o = self.exec(argv);
        assert!(
            o.status.success(),
            "{argv:?} failed ({:?}): {}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Push `content` to `dest` in container 901.
    fn push(&self, dest: &str, content: &str, perms: &str) {
        let src = self.root.join("push.tmp");
        std::fs::write(&src, content).unwrap();
        self.ok(
            "pct",
            &["push", "901", src.to_str().unwrap(), dest, "--perms", perms],
        );
    }

    fn faults(&self, v: serde_json::Value) {
        std::fs::write(self.root.join("faults.json"), v.to_string()).unwrap();
    }

    /// The container's loopback address, as `ip -j -4 addr show dev eth0` reports it.
    fn address(&self) -> String {
        let out = self.exec_ok(&["ip", "-j", "-4", "addr", "show", "dev", "eth0"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["addr_info"][0]["local"].as_str().unwrap().to_owned()
    }

    fn state(&self) -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(self.root.join("var/lib/lxc/901/emu-state.json")).unwrap(),
        )
        .unwrap()
    }

    /// NVIDIA's libnvidia-container repository added as its install guide says (curl and
    /// gnupg2 from Ubuntu, the dearmored key, the list with `signed-by`) and the lists fetched;
    /// the driver userspace of the host's version put in place.
    fn nvidia_repo(&self) {
        self.exec_ok(&["apt-get", "-q", "update"]);
        let mut argv = vec!["apt-get", "install"];
        argv.extend_from_slice(APT_OPTS);
        argv.extend_from_slice(&["ca-certificates", "curl", "gnupg2"]);
        self.exec_ok(&argv);
        self.exec_ok(&[
            "curl",
            "-fsSL",
            "-o",
            "/tmp/nvidia.gpgkey",
            "https://nvidia.github.io/libnvidia-container/gpgkey",
        ]);
        self.exec_ok(&[
            "gpg",
            "--batch",
            "--yes",
            "--dearmor",
            "-o",
            "/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg",
            "/tmp/nvidia.gpgkey",
        ]);
        self.push(
            "/etc/apt/sources.list.d/nvidia-container-toolkit.list",
            "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n",
            "0644",
        );
        self.exec_ok(&["apt-get", "-q", "update"]);
        self.push(
            "/usr/bin/nvidia-smi",
            "phoenix-emu nvidia-smi 580.159.04\n",
            "0755",
        );
    }

    /// docker.io and the toolkit installed, the nvidia runtime configured, Docker restarted.
    fn docker_ready(&self) {
        self.nvidia_repo();
        let mut argv = vec!["apt-get", "install"];
        argv.extend_from_slice(APT_OPTS);
        argv.extend_from_slice(&["docker.io", "nvidia-container-toolkit"]);
        self.exec_ok(&argv);
        self.exec_ok(&["nvidia-ctk", "runtime", "configure", "--runtime=docker"]);
        self.exec_ok(&["systemctl", "restart", "docker.service"]);
    }

    /// The API key's env file and the unit pushed, daemon reloaded.
    fn unit_ready(&self, key: &str) {
        self.ok(
            "pct",
            &[
                "exec",
                "901",
                "--",
                "mkdir",
                "-p",
                "-m",
                "0700",
                "/etc/phoenix-vllm",
            ],
        );
        self.push(
            "/etc/phoenix-vllm/phoenix-vllm-901.env",
            &format!("VLLM_API_KEY={key}\n"),
            "0600",
        );
        self.push(
            "/etc/systemd/system/phoenix-vllm-901.service",
            UNIT_901,
            "0644",
        );
        self.exec_ok(&["systemctl", "daemon-reload"]);
    }

    /// The server's pid from `docker inspect`.
    fn server_pid(&self) -> i32 {
        let out = self.exec_ok(&[
            "docker",
            "inspect",
            "--format",
            "{{.State.Pid}}",
            "phoenix-vllm-901",
        ]);
        out.trim().parse().unwrap()
    }
}

/// `du -s -b PATH` inside container 901.
fn du(emu: &Emu, path: &str) -> u64 {
    let out = emu.exec_ok(&["du", "-s", "-b", path]);
    let (n, p) = out.trim_end().split_once('\t').unwrap();
    assert_eq!(p, path);
    n.parse().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// One HTTP request; `(status, body)`, or the connect error.
fn http(addr: SocketAddr, path: &str, key: Option<&str>) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// Wait until `addr` accepts connections.
fn wait_up(addr: SocketAddr) {
    wait_until(&format!("a server to listen on {addr}"), || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok()
    });
}

/// Assert that nothing listens on `addr`: the connection is refused (not reset, not
/// timed out).
#[track_caller]
fn assert_refused(addr: SocketAddr) {
    let e = TcpStream::connect(addr).expect_err("something listens");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

/// Whether process `pid` exists (a zombie counts as gone).
fn pid_exists(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
    })
}

/// Wait until process `pid` is gone; `what` names the cause.
fn wait_gone(pid: i32, what: &str) {
    wait_until(&format!("process {pid} to end: {what}"), || {
        !pid_exists(pid)
    });
}

/// dpkg-query as dpkg 1.22 answers `-W` for exact names: the installed ones in the format
/// (escapes expanded), a name matching nothing on stderr with exit 1; `-f=X` is the format
/// `=X` (dpkg's short options take the rest of the argument).
#[test]
fn dpkg_query_shows_installed_packages_and_names_the_rest() {
    let emu = Emu::new("nesting=1", false, false);
    emu.exec_ok(&["apt-get", "-q", "update"]);
    let mut argv = vec!["apt-get", "install"];
    argv.extend_from_slice(APT_OPTS);
    argv.push("curl");
    emu.exec_ok(&argv);
    let o = emu.exec(&[
        "dpkg-query",
        "-W",
        "--showformat=${Package} ${db:Status-Status}\\n",
        "curl",
        "ca-certificates",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "curl installed\n");
    assert_eq!(
        stderr(&o),
        "dpkg-query: no packages found matching ca-certificates\n"
    );
    let o = emu.exec(&["dpkg-query", "-W", "-f=${Package}\n", "curl"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "=curl\n");
    let o = emu.exec(&["dpkg-query", "curl"]);
    assert_eq!(o.status.code(), Some(2));
}

/// `stat` as GNU coreutils 9.4 answers `-L --format`: a line per path that is there (the
/// format, a newline added), "cannot statx" for each that is not, exit 1 when any is not.
#[test]
fn stat_shows_what_is_there_and_names_the_rest() {
    let emu = Emu::new("nesting=1", false, false);
    emu.push("/usr/bin/tool", "x", "0755");
    emu.push("/etc/tool.conf", "x", "0640");
    let o = emu.exec(&[
        "stat",
        "-L",
        "--format=%a %n",
        "--",
        "/usr/bin/tool",
        "/nowhere/x",
        "/etc/tool.conf",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "755 /usr/bin/tool\n640 /etc/tool.conf\n");
    assert_eq!(
        stderr(&o),
        "stat: cannot statx '/nowhere/x': No such file or directory\n"
    );
    let o = emu.exec(&["stat", "-c", "%n:%a", "/etc/tool.conf"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "/etc/tool.conf:640\n");
    let o = emu.exec(&["stat", "/etc/tool.conf", "-Z"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).starts_with("stat: invalid option -- 'Z'"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn apt_get_installs_known_packages_and_refuses_the_rest() {
    let emu = Emu::new("nesting=1", false, false);
    // Fresh template: empty package lists.
    let o = emu.exec(&["apt-get", "install", "-y", "docker.io"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(
        stderr(&o).contains("E: Unable to locate package docker.io"),
        "{}",
        stderr(&o)
    );
    emu.exec_ok(&["apt-get", "-q", "update"]);
    let o = emu.exec(&["apt-get", "install", "-y", "docker.io", "no-such-pkg"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(stderr(&o).contains("E: Unable to locate package no-such-pkg"));
    let o = emu.exec(&["apt-get", "install", "--force-yes-please", "docker.io"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(stderr(&o).contains("is not understood"), "{}", stderr(&o));
    // Without -y apt asks, and stdin is no terminal.
    let o = emu.exec(&["apt-get", "install", "docker.io"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("Abort."));
    assert_eq!(
        emu.exec(&["test", "-x", "/usr/bin/docker"]).status.code(),
        Some(1)
    );
    // docker is not there yet.
    assert_eq!(emu.exec(&["docker", "version"]).status.code(), Some(127));
    let mut argv = vec!["apt-get", "install"];
    argv.extend_from_slice(APT_OPTS);
    argv.extend_from_slice(&["docker.io", "curl", "ca-certificates"]);
    let out = emu.exec_ok(&argv);
    assert!(out.contains("Setting up docker.io"), "{out}");
    assert_eq!(
        emu.state()["apt"]["installed"],
        serde_json::json!(["docker.io", "curl", "ca-certificates"])
    );
    emu.exec_ok(&["test", "-x", "/usr/bin/docker"]);
    // The package's maintainer script enabled and started Docker.
    assert_eq!(
        emu.exec_ok(&["systemctl", "is-active", "docker.service"]),
        "active\n"
    );
    assert_eq!(
        emu.exec_ok(&["systemctl", "is-enabled", "docker"]),
        "enabled\n"
    );
    assert_eq!(
        emu.exec_ok(&["docker", "version", "--format", "{{.Server.Version}}"]),
        "26.1.3\n"
    );
    let out = emu.exec_ok(&argv);
    assert!(
        out.contains("docker.io is already the newest version"),
        "{out}"
    );
}

#[test]
fn docker_needs_nesting_to_run_its_daemon() {
    let emu = Emu::new("keyctl=1", false, false);
    emu.exec_ok(&["apt-get", "update"]);
    emu.exec_ok(&["apt-get", "install", "-y", "docker.io"]);
    let o = emu.exec(&["docker", "version", "--format", "{{.Server.Version}}"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Is the docker daemon running?"),
        "{}",
        stderr(&o)
    );
    let o = emu.exec(&["systemctl", "enable", "--now", "docker.service"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Job for docker.service failed"),
        "{}",
        stderr(&o)
    );
    let o = emu.exec(&["systemctl", "is-active", "docker.service"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(3), "failed\n")
    );
    let o = emu.exec(&["docker", "pull", IMAGE]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn docker_pull_inspect_and_an_injected_pull_failure() {
    let emu = Emu::new("nesting=1", true, false);
    emu.docker_ready();
    let o = emu.exec(&["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("No such image: vllm/vllm-openai:v0.11.0"));
    emu.faults(
        serde_json::json!([{"match": ["docker", "pull"], "action": "exit:125", "times": 1}]),
    );
    let o = emu.exec(&["docker", "pull", IMAGE]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(emu.state()["docker"]["images"], serde_json::json!([]));
    let out = emu.exec_ok(&["docker", "pull", IMAGE]);
    assert!(
        out.contains("Status: Downloaded newer image for vllm/vllm-openai:v0.11.0"),
        "{out}"
    );
    let id = emu.exec_ok(&["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE]);
    assert!(id.starts_with("sha256:") && id.len() == 7 + 64 + 1, "{id}");
    let out = emu.exec_ok(&["docker", "pull", IMAGE]);
    assert!(out.contains("Image is up to date"), "{out}");
    let o = emu.exec(&["docker", "pull", "Not/Valid"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid reference format"));
    // The nvidia runtime is listed once configured and Docker restarted.
    let rt = emu.exec_ok(&["docker", "info", "--format", "{{json .Runtimes}}"]);
    assert!(rt.contains("\"nvidia\""), "{rt}");
}

#[test]
fn docker_run_refuses_what_docker_refuses() {
    let emu = Emu::new("nesting=1", true, false);
    emu.exec_ok(&["apt-get", "update"]);
    emu.exec_ok(&["apt-get", "install", "-y", "docker.io"]);
    let run = |extra: &[&str]| {
        let mut argv = vec!["docker", "run", "--rm", "-d", "--name", "t"];
        argv.extend_from_slice(extra);
        argv.push("busybox:1.36");
        emu.exec(&argv)
    };
    let o = run(&["--bogus"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("unknown flag: --bogus"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--env-file", "/nope.env"]);
    assert_eq!(o.status.code(), Some(125));
    // Without the toolkit Docker has no GPU driver.
    let o = run(&["--gpus", "all"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("could not select device driver"),
        "{}",
        stderr(&o)
    );
    emu.nvidia_repo();
    emu.exec_ok(&["apt-get", "install", "-y", "nvidia-container-toolkit"]);
    // Unquoted, Docker's CSV parser splits the list (DESIGN.md §10).
    let o = run(&["--gpus", "device=0,1"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("unexpected key '1' in '1'"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--gpus", "\"device=0,2\""]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("device error: 2: unknown device"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--gpus", "\"device=0,1\"", "--ipc=host", "-p", "8000:8000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A non-vLLM image runs nothing and, with --rm, is gone.
    let o = emu.exec(&["docker", "inspect", "t"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("No such object: t"));
    // rm -f of a missing container warns and succeeds (Docker ≥ 20.10); rm does not.
    let o = emu.exec(&["docker", "rm", "-f", "t"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("No such container: t"));
    assert_eq!(emu.exec(&["docker", "rm", "t"]).status.code(), Some(1));
}

#[test]
fn unprivileged_gpu_containers_need_no_cgroups() {
    let emu = Emu::new("nesting=1,keyctl=1", true, true);
    emu.docker_ready();
    let run = || {
        emu.exec(&[
            "docker",
            "run",
            "--rm",
            "-d",
            "--name",
            "g",
            "--gpus",
            "all",
            "busybox:1.36",
        ])
    };
    let o = run();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("bpf_prog_query(BPF_CGROUP_DEVICE) failed"),
        "{}",
        stderr(&o)
    );
    let cfg = emu.exec_ok(&["cat", "/etc/nvidia-container-runtime/config.toml"]);
    assert!(cfg.contains("#no-cgroups = false"), "{cfg}");
    emu.exec_ok(&[
        "nvidia-ctk",
        "config",
        "--set",
        "nvidia-container-cli.no-cgroups=true",
        "--in-place",
    ]);
    let cfg = emu.exec_ok(&["cat", "/etc/nvidia-container-runtime/config.toml"]);
    assert!(
        cfg.contains("[nvidia-container-cli]") && cfg.contains("\nno-cgroups = true\n"),
        "{cfg}"
    );
    assert_eq!(
        emu.state()["nvidia_ctk"]["settings"]["nvidia-container-cli.no-cgroups"],
        "true"
    );
    assert_eq!(run().status.code(), Some(0), "{}", stderr(&run()));
    let o = emu.exec(&["nvidia-ctk", "runtime", "configure", "--runtime=podman"]);
    assert_eq!(o.status.code(), Some(1));
    let o = emu.exec(&["nvidia-ctk", "config", "--bogus"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("flag provided but not defined: -bogus"));
}

#[test]
fn nvidia_smi_inside_sees_only_passed_through_gpus() {
    let bare = Emu::new("nesting=1", false, false);
    bare.push(
        "/usr/bin/nvidia-smi",
        "phoenix-emu nvidia-smi 580.159.04\n",
        "0755",
    );
    let o = bare.exec(&[
        "nvidia-smi",
        "--query-gpu=driver_version",
        "--format=csv,noheader",
    ]);
    // No /dev/nvidiactl in the container: NVML cannot reach the driver.
    assert_eq!(o.status.code(), Some(9));
    assert!(
        stdout(&o).starts_with(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver"
        ),
        "{}",
        stdout(&o)
    );
    // procfs shows the host's driver in every container.
    assert!(
        bare.exec_ok(&["cat", "/proc/driver/nvidia/version"])
            .starts_with("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04")
    );
    // nvidia-ctk exists only with its package.
    assert_eq!(
        bare.exec(&["nvidia-ctk", "--version"]).status.code(),
        Some(127)
    );

    let emu = Emu::new("nesting=1", true, false);
    emu.push(
        "/usr/bin/nvidia-smi",
        "phoenix-emu nvidia-smi 580.159.04\n",
        "0755",
    );
    assert_eq!(
        emu.exec_ok(&[
            "nvidia-smi",
            "--query-gpu=driver_version",
            "--format=csv,noheader"
        ]),
        "580.159.04\n580.159.04\n"
    );
    let v = emu.exec_ok(&["cat", "/proc/driver/nvidia/version"]);
    assert!(
        v.starts_with("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04"),
        "{v}"
    );
    // A userspace of another version: NVML's mismatch.
    emu.push(
        "/usr/bin/nvidia-smi",
        "phoenix-emu nvidia-smi 570.86.15\n",
        "0755",
    );
    let o = emu.exec(&["nvidia-smi"]);
    assert_eq!(o.status.code(), Some(18));
    assert!(stdout(&o).contains("Driver/library version mismatch"));
}

#[test]
fn vllm_unit_serves_on_the_loopback_address_and_stops() {
    let emu = Emu::new("nesting=1", true, false);
    // A load that outlasts the test: the port refuses while the model loads.
    emu.faults(serde_json::json!({"faults": [], "vllm": {"load_delay": "60m"}}));
    emu.docker_ready();
    emu.exec_ok(&["docker", "pull", IMAGE]);
    emu.unit_ready("sk-emu-key");
    let addr: SocketAddr = format!("{}:8000", emu.address()).parse().unwrap();
    assert!(addr.ip().is_loopback());
    let o = emu.exec(&[
        "systemctl",
        "is-active",
        "--quiet",
        "phoenix-vllm-901.service",
    ]);
    assert_eq!(o.status.code(), Some(3));
    emu.exec_ok(&["systemctl", "enable", "--now", "phoenix-vllm-901.service"]);
    assert_eq!(
        emu.exec_ok(&["systemctl", "is-active", "phoenix-vllm-901.service"]),
        "active\n"
    );
    assert_eq!(
        emu.exec_ok(&[
            "systemctl",
            "show",
            "--property=ActiveState,SubState,UnitFileState",
            "phoenix-vllm-901.service"
        ]),
        "ActiveState=active\nSubState=running\nUnitFileState=enabled\n"
    );
    // Loading: the server runs and logs, the port refuses.
    let loading = emu.server_pid();
    assert!(pid_exists(loading));
    assert_refused(addr);
    // Loaded (a restart with no load delay): it listens.
    emu.faults(serde_json::json!({"faults": [], "vllm": {"load_delay": "0s"}}));
    emu.exec_ok(&["systemctl", "restart", "phoenix-vllm-901.service"]);
    wait_gone(loading, "the restart replaced the loading server");
    wait_up(addr);
    assert_eq!(http(addr, "/health", None).unwrap(), (200, String::new()));
    assert_eq!(http(addr, "/v1/models", None).unwrap().0, 401);
    let (code, body) = http(addr, "/v1/models", Some("sk-emu-key")).unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(v["data"][0]["root"], MODEL);
    assert_eq!(v["data"][0]["max_model_len"], 128_000);
    // Docker's view.
    assert_eq!(
        emu.exec_ok(&[
            "docker",
            "ps",
            "--filter",
            "name=phoenix-vllm-901",
            "--format",
            "{{.Names}} {{.Image}}"
        ]),
        "phoenix-vllm-901 vllm/vllm-openai:v0.11.0\n"
    );
    assert_eq!(
        emu.exec_ok(&[
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}}",
            "phoenix-vllm-901"
        ]),
        "running\n"
    );
    let all = emu.exec_ok(&["docker", "logs", "phoenix-vllm-901"]);
    assert!(all.contains("vLLM API server version 0.11.0"), "{all}");
    // vLLM's "non-default args" line names every argument, and not VLLM_API_KEY.
    assert!(
        all.contains("[utils.py:233] non-default args: {'host': '0.0.0.0', 'model': 'mistralai/Devstral-Small-2507', 'max_model_len': 128000, 'tensor_parallel_size': 2, 'kv_cache_dtype': 'fp8'}\n"),
        "{all}"
    );
    // The weights were downloaded into the cache on /models.
    assert!(
        all.contains("Time spent downloading weights for mistralai/Devstral-Small-2507:"),
        "{all}"
    );
    let weights = du(&emu, "/models/huggingface");
    assert!(
        (47_200_000_000..47_200_100_000).contains(&weights),
        "{weights}"
    );
    assert!(
        !all.contains("sk-emu-key"),
        "the key reached the log: {all}"
    );
    let last2 = emu.exec_ok(&["docker", "logs", "--tail", "2", "phoenix-vllm-901"]);
    let want: Vec<&str> = all.lines().collect();
    assert_eq!(
        last2,
        format!("{}\n{}\n", want[want.len() - 2], want[want.len() - 1])
    );
    let state = emu.state();
    let rec = &state["docker"]["containers"][0];
    assert_eq!(rec["name"], "phoenix-vllm-901");
    assert_eq!(rec["image"], IMAGE);
    assert_eq!(rec["gpus"], "\"device=0,1\"");
    assert!(!state.to_string().contains("sk-emu-key"));
    let pid = emu.server_pid();
    assert!(pid_exists(pid));
    // A second start is a no-op; stop runs ExecStop (docker stop), and --rm removes it.
    emu.exec_ok(&["systemctl", "start", "phoenix-vllm-901.service"]);
    assert_eq!(emu.server_pid(), pid);
    emu.exec_ok(&["systemctl", "disable", "--now", "phoenix-vllm-901.service"]);
    wait_gone(pid, "the unit was stopped");
    assert_refused(addr);
    assert_eq!(
        emu.exec(&["docker", "inspect", "phoenix-vllm-901"])
            .status
            .code(),
        Some(1)
    );
    let o = emu.exec(&["systemctl", "is-enabled", "phoenix-vllm-901"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(1), "disabled\n")
    );
    let o = emu.exec(&["systemctl", "is-active", "phoenix-vllm-901"]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(3), "inactive\n")
    );
}

#[test]
fn a_changed_unit_needs_daemon_reload() {
    let emu = Emu::new("nesting=1", true, false);
    emu.faults(serde_json::json!([{"vllm": {"load_delay": "100ms"}}]));
    emu.docker_ready();
    emu.unit_ready("k");
    emu.exec_ok(&["systemctl", "start", "phoenix-vllm-901"]);
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
    // The new file serves on 8001, but systemd still has the old lines.
    let changed = UNIT_901
        .replace("8000:8000", "8001:8001")
        .replace("--port 8000", "--port 8001");
    assert_ne!(changed, UNIT_901);
    emu.push(
        "/etc/systemd/system/phoenix-vllm-901.service",
        &changed,
        "0644",
    );
    emu.exec_ok(&["systemctl", "start", "phoenix-vllm-901"]);
    let ip = emu.address();
    let old: SocketAddr = format!("{ip}:8000").parse().unwrap();
    let new: SocketAddr = format!("{ip}:8001").parse().unwrap();
    wait_up(old);
    assert_refused(new);
    emu.exec_ok(&["systemctl", "daemon-reload"]);
    emu.exec_ok(&["systemctl", "restart", "phoenix-vllm-901"]);
    wait_up(new);
    assert_refused(old);
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
    // `enable --no-reload` leaves the loaded lines as they are; a plain `enable` reloads
    // (systemd's `verb_enable`), even when the unit was enabled already.
    emu.push(
        "/etc/systemd/system/phoenix-vllm-901.service",
        UNIT_901,
        "0644",
    );
    emu.exec_ok(&["systemctl", "enable", "--no-reload", "phoenix-vllm-901"]);
    emu.exec_ok(&["systemctl", "start", "phoenix-vllm-901"]);
    wait_up(new);
    assert_refused(old);
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
    emu.exec_ok(&["systemctl", "enable", "--now", "phoenix-vllm-901"]);
    wait_up(old);
    assert_refused(new);
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
}

/// Start the unit in `mode`; the server's address.
fn start_in_mode(emu: &Emu, mode: &str) -> SocketAddr {
    emu.faults(serde_json::json!({"faults": [], "vllm": {"load_delay": "150ms", "mode": mode}}));
    emu.docker_ready();
    emu.unit_ready("k");
    emu.exec_ok(&["systemctl", "enable", "--now", "phoenix-vllm-901.service"]);
    format!("{}:8000", emu.address()).parse().unwrap()
}

#[test]
fn vllm_mode_crash_ends_the_container_and_the_unit_restarts() {
    let emu = Emu::new("nesting=1", true, false);
    start_in_mode(&emu, "crash");
    // `--rm`: the crashed container is removed, so docker no longer knows it.
    wait_until("the crashed container to be removed", || {
        let o = emu.exec(&[
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}}",
            "phoenix-vllm-901",
        ]);
        o.status.code() == Some(1)
    });
    assert_eq!(
        emu.exec_ok(&[
            "systemctl",
            "show",
            "-p",
            "ActiveState,SubState",
            "phoenix-vllm-901"
        ]),
        "ActiveState=activating\nSubState=auto-restart\n"
    );
    let log = emu.exec_ok(&[
        "journalctl",
        "-u",
        "phoenix-vllm-901",
        "-n",
        "5",
        "--no-pager",
        "-o",
        "cat",
    ]);
    assert!(log.contains("EngineCore failed to start"), "{log}");
}

#[test]
fn vllm_mode_503_wrong_model_and_never_listen() {
    let emu = Emu::new("nesting=1", true, false);
    let addr = start_in_mode(&emu, "503");
    wait_up(addr);
    assert_eq!(http(addr, "/health", None).unwrap().0, 503);
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);

    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms", "mode": "wrong-model"}}));
    emu.exec_ok(&["systemctl", "start", "phoenix-vllm-901"]);
    wait_up(addr);
    let (_, body) = http(addr, "/v1/models", Some("k")).unwrap();
    assert!(body.contains("\"id\":\"facebook/opt-125m\""), "{body}");
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);

    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms", "mode": "never-listen"}}));
    emu.exec_ok(&["systemctl", "start", "phoenix-vllm-901"]);
    // Never listening can only be seen at an instant: the engine runs (docker says so),
    // its log never reaches startup, and the port refuses.
    assert_refused(addr);
    assert!(
        !emu.exec_ok(&["docker", "logs", "phoenix-vllm-901"])
            .contains("Application startup complete"),
    );
    assert_eq!(
        emu.exec_ok(&[
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}}",
            "phoenix-vllm-901"
        ]),
        "running\n"
    );
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
}

#[test]
fn vllm_arguments_are_checked_like_the_api_server() {
    let emu = Emu::new("nesting=1", true, false);
    emu.docker_ready();
    let run = |extra: &[&str]| {
        let mut argv = vec![
            "docker",
            "run",
            "--rm",
            "--name",
            "v",
            "--gpus",
            "\"device=0\"",
            "-p",
            "8000:8000",
            IMAGE,
            "--model",
            MODEL,
        ];
        argv.extend_from_slice(extra);
        emu.exec(&argv)
    };
    let o = run(&["--quantization-config-type", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unrecognized arguments: --quantization-config-type"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--tensor-parallel-size", "2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("Tensor parallel size (2)"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--config", "/etc/phoenix-vllm/x.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("No such file or directory: '/etc/phoenix-vllm/x.yaml'"));
    // The pinned image's api_server has no positional model (vllm-project/vllm#27389).
    let o = run(&[MODEL]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).ends_with(&format!(
            "api_server.py: error: unrecognized arguments: {MODEL}\n"
        )),
        "{}",
        stderr(&o)
    );
}

/// A detached server on container 901; its pid once it listens.
fn detached_server(emu: &Emu) -> i32 {
    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms"}}));
    emu.docker_ready();
    emu.exec_ok(&[
        "docker",
        "run",
        "-d",
        "--rm",
        "--name",
        "phoenix-vllm-901",
        "--gpus",
        "all",
        "-p",
        "8000:8000",
        IMAGE,
        "--model",
        MODEL,
    ]);
    let addr: SocketAddr = format!("{}:8000", emu.address()).parse().unwrap();
    wait_up(addr);
    emu.server_pid()
}

#[test]
fn destroying_the_container_ends_its_server() {
    let emu = Emu::new("nesting=1", true, false);
    let pid = detached_server(&emu);
    emu.ok("pct", &["destroy", "901", "--force"]);
    wait_gone(pid, "the server must not outlive its container");
}

#[test]
fn removing_the_root_ends_its_server() {
    let emu = Emu::new("nesting=1", true, false);
    let pid = detached_server(&emu);
    std::fs::remove_dir_all(&emu.root).unwrap();
    wait_gone(pid, "the server must not outlive its root");
}

#[test]
fn the_server_ends_with_the_roots_owner_process() {
    let emu = Emu::new("nesting=1", true, false);
    let mut owner = Command::new("sleep").arg("30").spawn().unwrap();
    crate::support::set_owner(&emu.root, owner.id());
    let pid = detached_server(&emu);
    owner.kill().unwrap();
    owner.wait().unwrap();
    wait_gone(pid, "the server must not outlive its owner");
}

#[test]
fn docker_rm_force_kills_the_server() {
    let emu = Emu::new("nesting=1", true, false);
    let pid = detached_server(&emu);
    let o = emu.exec(&["docker", "rm", "phoenix-vllm-901"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("container is running"));
    let o = emu.exec(&[
        "docker",
        "run",
        "-d",
        "--name",
        "two",
        "-p",
        "8000:8000",
        "busybox:1.36",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("Bind for 0.0.0.0:8000 failed: port is already allocated"),
        "{}",
        stderr(&o)
    );
    emu.exec_ok(&["docker", "rm", "-f", "phoenix-vllm-901"]);
    wait_gone(pid, "it was removed");
    assert_eq!(emu.exec_ok(&["docker", "ps", "-a", "-q"]), "");
}

#[test]
fn the_config_file_ends_with_a_newline() {
    let emu = Emu::new("nesting=1", false, false);
    let path = emu.root.join("etc/pve/lxc/901.conf");
    // A snapshot section whose last line lacks its newline (as a hand edit leaves it).
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n[before-vllm]\narch: amd64\ncores: 1");
    std::fs::write(&path, text).unwrap();
    emu.ok("pct", &["set", "901", "--cores", "2"]);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.ends_with("[before-vllm]\narch: amd64\ncores: 1\n"),
        "{text:?}"
    );
    assert!(text.contains("\ncores: 2\n"), "{text:?}");
}

#[test]
fn a_restarted_container_starts_its_enabled_units_again() {
    let emu = Emu::new("nesting=1", true, false);
    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms"}}));
    emu.docker_ready();
    emu.unit_ready("k");
    emu.exec_ok(&["systemctl", "enable", "--now", "phoenix-vllm-901.service"]);
    let addr: SocketAddr = format!("{}:8000", emu.address()).parse().unwrap();
    wait_up(addr);
    let pid = emu.server_pid();
    emu.ok("pct", &["stop", "901"]);
    wait_gone(pid, "its container stopped");
    assert_refused(addr);
    emu.ok("pct", &["start", "901"]);
    assert_eq!(
        emu.exec_ok(&[
            "systemctl",
            "is-active",
            "docker.service",
            "phoenix-vllm-901.service"
        ]),
        "active\nactive\n"
    );
    wait_up(addr);
    assert_ne!(emu.server_pid(), pid);
    assert_eq!(http(addr, "/v1/models", Some("k")).unwrap().0, 200);
    emu.ok("pct", &["destroy", "901", "--force"]);
}

/// `phoenix` with every path under `dir`, on the emulated host; stdin piped in.
fn phoenix(dir: &std::path::Path, args: &[&str], stdin: &[u8]) -> Output {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_phoenix"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PHOENIX_SETTINGS", dir.join("phoenix.toml"))
        .env("PHOENIX_CONFIG", dir.join("lxc.json"))
        .env("PHOENIX_HOST", "emulated")
        .env("PHOENIX_STATE_DIR", dir.join("state"))
        .env("PHOENIX_MARKER_DIR", dir.join("markers"))
        .env("PHOENIX_LOG_DIR", dir.join("log"))
        .env("PHOENIX_SECRETS_DIR", dir.join("secrets"))
        .env("PHOENIX_SECRET_KEY", dir.join("key/secret.key"))
        .env("PHOENIX_EMU_ROOT", dir.join("emu"))
        .env("PHOENIX_STDLIB", manifest.join("stdlib"))
        .current_dir(manifest)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

/// The drdevstral recipe provisions container 901 end to end on the emulated host: Docker,
/// the NVIDIA toolkit, the unit, and an emulated vLLM server answering on the container's
/// loopback address; a second run changes nothing; `destroy` leaves no server behind.
#[test]
fn drdevstral_provisions_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("phoenix.toml"), "").unwrap();
    std::fs::write(d.join("lxc.json"), crate::support::CONFIG_901).unwrap();
    let ok = |args: &[&str], stdin: &[u8]| {
        let o = phoenix(d, args, stdin);
        assert!(
            o.status.success(),
            "phoenix {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stderr(&o)
    };
    ok(&["secret", "init"], b"");
    ok(&["secret", "set", "vllm_api_key"], b"sk-e2e-key\n");
    // The emulated root, with the parent dataset the recipe's dataset goes under.
    let settings = Settings::resolve_with(&FlagOverrides::default(), &|k| match k {
        "PHOENIX_EMU_ROOT" => Some(d.join("emu").display().to_string()),
        "PHOENIX_STATE_DIR" => Some(d.join("state").display().to_string()),
        _ => None,
    })
    .unwrap();
    emulated::prepare(&settings).unwrap();
    crate::support::set_owner(&d.join("emu"), std::process::id());
    let zfs = Command::new(d.join("emu/bin/zfs"))
        .args(["create", "-p", "rpool/phoenix/models"])
        .env_clear()
        .output()
        .unwrap();
    assert!(zfs.status.success(), "{}", stderr(&zfs));
    std::fs::write(
        d.join("emu/faults.json"),
        r#"{"vllm":{"load_delay":"200ms"}}"#,
    )
    .unwrap();

    let log = ok(&["recipe", "run", "recipes/drdevstral.rhai"], b"");
    assert!(log.contains("vLLM server ready"), "{log}");
    assert!(!log.contains("sk-e2e-key"), "{log}");
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.join("emu/var/lib/lxc/901/emu-state.json")).unwrap(),
    )
    .unwrap();
    let ip = state["address"].as_str().unwrap();
    let addr: SocketAddr = format!("{ip}:8000").parse().unwrap();
    assert!(addr.ip().is_loopback());
    let (code, body) = http(addr, "/v1/models", Some("sk-e2e-key")).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(MODEL), "{body}");
    let pid = state["docker"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == "running")
        .and_then(|c| c["pid"].as_i64())
        .unwrap() as i32;

    // Every mutating step logs `start <step>`: the first run did, the second changes nothing.
    assert!(log.contains("start lxc.create:901"), "{log}");
    let again = ok(&["recipe", "run", "recipes/drdevstral.rhai"], b"");
    assert!(
        !again.contains("start "),
        "a second run changed something: {again}"
    );
    assert!(pid_exists(pid));

    ok(&["destroy", "--lxc", "901"], b"");
    wait_gone(pid, "it was removed");
    assert!(!d.join("emu/etc/pve/lxc/901.conf").exists());
}

#[test]
fn starting_the_unit_starts_docker_it_requires() {
    let emu = Emu::new("nesting=1", true, false);
    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms"}}));
    emu.docker_ready();
    emu.unit_ready("k");
    emu.exec_ok(&["systemctl", "stop", "docker"]);
    let o = emu.exec(&["docker", "ps"]);
    assert_eq!(o.status.code(), Some(1));
    emu.exec_ok(&["systemctl", "start", "phoenix-vllm-901"]);
    assert_eq!(
        emu.exec_ok(&["systemctl", "is-active", "docker", "phoenix-vllm-901"]),
        "active\nactive\n"
    );
    // Restarting Docker stops its containers: the unit's main process is gone.
    emu.exec_ok(&["systemctl", "restart", "docker"]);
    assert_eq!(
        emu.exec_ok(&[
            "systemctl",
            "show",
            "-p",
            "ActiveState,SubState",
            "phoenix-vllm-901"
        ]),
        "ActiveState=activating\nSubState=auto-restart\n"
    );
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
}

#[test]
fn an_exited_container_without_rm_stays_with_its_exit_code() {
    let emu = Emu::new("nesting=1", true, false);
    emu.docker_ready();
    let argv = [
        "docker",
        "run",
        "-d",
        "--name",
        "v",
        "--gpus",
        "1",
        "-p",
        "8000:8000",
        "-e",
        "A=b",
        IMAGE,
        "--model",
        MODEL,
        "--tensor-parallel-size",
        "2",
    ];
    let id = emu.exec_ok(&argv);
    assert_eq!(id.trim().len(), 64, "{id}");
    assert_eq!(
        emu.exec_ok(&[
            "docker",
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}} {{json .Config.Env}}",
            "v"
        ]),
        "exited 1 [\"A=b\"]\n"
    );
    assert_eq!(emu.exec_ok(&["docker", "ps", "--format", "{{.Names}}"]), "");
    assert_eq!(
        emu.exec_ok(&["docker", "ps", "-a", "--format", "{{.Names}} {{.State}}"]),
        "v exited\n"
    );
    let o = emu.exec(&argv);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("The container name \"/v\" is already in use"),
        "{}",
        stderr(&o)
    );
    let logs = emu.exec_ok(&["docker", "logs", "--tail", "1", "v"]);
    assert!(logs.contains("Tensor parallel size (2)"), "{logs}");
    emu.exec_ok(&["docker", "rm", "v"]);
    assert_eq!(emu.exec_ok(&["docker", "ps", "-a", "-q"]), "");
}

/// Issue 11 item 10: a fresh container has no NVIDIA userspace and Ubuntu's archive no
/// toolkit; NVIDIA's repository needs its key and the internet.
#[test]
fn a_fresh_container_has_neither_nvidia_smi_nor_the_toolkit() {
    let emu = Emu::new("nesting=1", true, false);
    assert_eq!(emu.exec(&["nvidia-smi", "-L"]).status.code(), Some(127));
    emu.exec_ok(&["apt-get", "-q", "update"]);
    let o = emu.exec(&["apt-get", "install", "-y", "nvidia-container-toolkit"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(stderr(&o).contains("E: Unable to locate package nvidia-container-toolkit"));
    let o = emu.exec(&[
        "curl",
        "-fsSL",
        "https://nvidia.github.io/libnvidia-container/gpgkey",
    ]);
    assert_eq!(o.status.code(), Some(127), "curl is not in the template");

    // The list without its key: apt refuses the repository.
    emu.push(
        "/etc/apt/sources.list.d/nvidia-container-toolkit.list",
        "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n",
        "0644",
    );
    let o = emu.exec(&["apt-get", "-q", "update"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(
        stderr(&o).contains("NO_PUBKEY DDCAE044F796ECB0"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("is not signed"));

    // With the key (as the install guide fetches it) the toolkit and its dependencies come.
    emu.exec_ok(&[
        "rm",
        "/etc/apt/sources.list.d/nvidia-container-toolkit.list",
    ]);
    emu.nvidia_repo();
    let mut argv = vec!["apt-get", "install"];
    argv.extend_from_slice(APT_OPTS);
    argv.push("nvidia-container-toolkit");
    let out = emu.exec_ok(&argv);
    for p in [
        "nvidia-container-toolkit",
        "nvidia-container-toolkit-base",
        "libnvidia-container-tools",
        "libnvidia-container1",
    ] {
        assert!(out.contains(&format!("Setting up {p} (1.17.8-1)")), "{out}");
    }
    emu.exec_ok(&["test", "-x", "/usr/bin/nvidia-ctk"]);

    // Without the internet the key does not come and the repository only warns.
    let mut s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(emu.root.join("emu.json")).unwrap()).unwrap();
    s["ct_network"] = "archive-only".into();
    std::fs::write(emu.root.join("emu.json"), s.to_string()).unwrap();
    let o = emu.exec(&[
        "curl",
        "-fsSL",
        "https://nvidia.github.io/libnvidia-container/gpgkey",
    ]);
    assert_eq!(o.status.code(), Some(6));
    assert!(stderr(&o).contains("Could not resolve host: nvidia.github.io"));
    let o = emu.exec(&["apt-get", "-q", "update"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stderr(&o).contains(
        "W: Failed to fetch https://nvidia.github.io/libnvidia-container/stable/deb/amd64/InRelease"
    ));
}

/// The driver's `.run` installer inside a container: it needs `--no-kernel-module` and
/// `--silent`, and installs the userspace of its own version.
#[test]
fn the_driver_installer_installs_its_own_version_without_the_kernel_module() {
    let emu = Emu::new("nesting=1", true, false);
    let run = "/root/NVIDIA-Linux-x86_64-580.159.04.run";
    emu.push(run, "phoenix-emu nvidia-installer 580.159.04\n", "0644");
    let o = emu.exec(&[run, "--no-kernel-module", "--silent"]);
    assert_eq!(o.status.code(), Some(126), "not executable");
    emu.exec_ok(&["chmod", "0755", run]);
    let o = emu.exec(&[run, "--silent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("appears to be already loaded"),
        "{}",
        stderr(&o)
    );
    let o = emu.exec(&[run, "--no-kernel-module"]);
    assert_eq!(o.status.code(), Some(1));
    let o = emu.exec(&[run, "--no-kernel-modules", "--bogus"]);
    assert!(stderr(&o).contains("unrecognized option: \"--bogus\""));
    let o = emu.exec(&[run, "--no-kernel-module", "--silent"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), ""));
    assert_eq!(
        emu.exec_ok(&[
            "nvidia-smi",
            "--query-gpu=driver_version",
            "--format=csv,noheader"
        ]),
        "580.159.04\n580.159.04\n"
    );
    // An installer of another version installs that one: NVML then refuses it.
    let other = "/root/NVIDIA-Linux-x86_64-570.86.15.run";
    emu.push(other, "phoenix-emu nvidia-installer 570.86.15\n", "0755");
    emu.exec_ok(&[other, "--no-kernel-module", "--silent"]);
    assert_eq!(emu.exec(&["nvidia-smi", "-L"]).status.code(), Some(18));
}

/// Wait until `docker inspect` no longer knows the vLLM container (`--rm` after an exit).
fn until_removed(emu: &Emu) {
    wait_until("the vLLM container to be removed", || {
        !emu.exec(&["docker", "inspect", "phoenix-vllm-901"])
            .status
            .success()
    });
}

/// Push the old unit for `image` and its `--config` YAML holding `key`; start it.
fn start_old_unit(emu: &Emu, image: &str, key: &str) {
    emu.exec_ok(&["mkdir", "-p", "-m", "0700", "/etc/phoenix-vllm"]);
    emu.push(
        "/etc/phoenix-vllm/phoenix-vllm-901.yaml",
        &format!("api-key: \"{key}\"\n"),
        "0600",
    );
    emu.push(
        "/etc/systemd/system/phoenix-vllm-901.service",
        &old_unit(image),
        "0644",
    );
    emu.exec_ok(&["systemctl", "daemon-reload"]);
    emu.exec_ok(&["systemctl", "enable", "--now", "phoenix-vllm-901.service"]);
}

/// Issue 11 / DESIGN.md §11: the pinned v0.11.0 image's api_server refuses the old unit's
/// positional model (exit 2, vllm-project/vllm#27389): the container exits at once and the
/// unit crash-loops, with argparse's message in the unit's journal.
#[test]
fn the_pinned_image_refuses_the_old_positional_model() {
    let emu = Emu::new("nesting=1", true, false);
    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms"}}));
    emu.docker_ready();
    start_old_unit(&emu, IMAGE, "sk-old");
    assert_eq!(
        emu.exec_ok(&[
            "systemctl",
            "show",
            "-p",
            "ActiveState,SubState",
            "phoenix-vllm-901"
        ]),
        "ActiveState=activating\nSubState=auto-restart\n"
    );
    let log = emu.exec_ok(&[
        "journalctl",
        "-u",
        "phoenix-vllm-901",
        "--no-pager",
        "-o",
        "cat",
    ]);
    assert!(
        log.ends_with(
            "api_server.py: error: unrecognized arguments: mistralai/Devstral-Small-2507\n"
        ),
        "{log}"
    );
}

/// Issue 11 "must show": on an early-2026 image the old unit's positional is accepted and
/// ignored (vllm-project/vllm PR #32292): the server loads its default, Qwen/Qwen3-0.6B,
/// under the configured name, and prints the `--config` key in its "non-default args"
/// line. phoenix's readiness ladder catches the wrong model from `/v1/models`' `root`.
#[test]
fn the_old_unit_serves_the_wrong_model_on_a_later_image_and_is_caught() {
    use phoenix::api::http::HttpUrl;
    use phoenix::api::vllm::{Liveness, Server, WaitOptions, wait_ladder};

    struct Running;
    impl Liveness for Running {
        fn exited(&self) -> Option<String> {
            None
        }
        fn logs(&self) -> String {
            String::new()
        }
        fn cancelled(&self) -> bool {
            false
        }
    }

    let emu = Emu::new("nesting=1", true, false);
    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms"}}));
    emu.docker_ready();
    start_old_unit(&emu, "vllm/vllm-openai:v0.14.0", "sk-old-yaml-key");
    let addr: SocketAddr = format!("{}:8000", emu.address()).parse().unwrap();
    wait_up(addr);
    let (code, body) = http(addr, "/v1/models", Some("sk-old-yaml-key")).unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["id"], MODEL);
    assert_eq!(v["data"][0]["root"], "Qwen/Qwen3-0.6B");
    // The key from the YAML is an argument: vLLM's log line prints it.
    let log = emu.exec_ok(&["docker", "logs", "phoenix-vllm-901"]);
    assert!(
        log.contains("non-default args: {'host': '0.0.0.0', 'api_key': ['sk-old-yaml-key'], 'served_model_name': ['mistralai/Devstral-Small-2507']}"),
        "{log}"
    );
    // The default model's weights were what got downloaded.
    assert!(
        log.contains("Time spent downloading weights for Qwen/Qwen3-0.6B:"),
        "{log}"
    );
    let server = Server {
        vmid: phoenix::types::Vmid::new(901).unwrap(),
        url: HttpUrl::parse(&format!("http://{addr}/")).unwrap(),
        model: MODEL.into(),
        container: "phoenix-vllm-901".into(),
        unit: "phoenix-vllm-901.service".into(),
        api_key: Some(phoenix::secret::Secret::new(
            phoenix::types::SecretName::new("vllm_api_key").unwrap(),
            zeroize::Zeroizing::new(b"sk-old-yaml-key".to_vec()),
        )),
        model_root: Some(MODEL.into()),
        weights_dir: None,
    };
    let opts = WaitOptions {
        timeout: Duration::from_secs(5),
        ..WaitOptions::default()
    };
    let e = wait_ladder(&server, &opts, &Running)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("(stage: models): the server loaded \"Qwen/Qwen3-0.6B\" under the name \"mistralai/Devstral-Small-2507\", not the configured model"),
        "{e}"
    );
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
}

/// The API key from an env file: in the server's environment (Docker's 0600 config, shown
/// by `docker inspect`), never in its log line; docker/cli reads the file's value verbatim.
#[test]
fn an_env_file_key_stays_out_of_the_log() {
    use std::os::unix::fs::PermissionsExt;
    let emu = Emu::new("nesting=1", true, false);
    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms"}}));
    emu.docker_ready();
    emu.unit_ready("sk-env = key");
    emu.exec_ok(&["systemctl", "enable", "--now", "phoenix-vllm-901.service"]);
    let addr: SocketAddr = format!("{}:8000", emu.address()).parse().unwrap();
    wait_up(addr);
    assert_eq!(http(addr, "/v1/models", Some("sk-env")).unwrap().0, 401);
    assert_eq!(
        http(addr, "/v1/models", Some("sk-env = key")).unwrap().0,
        200
    );
    let log = emu.exec_ok(&["docker", "logs", "phoenix-vllm-901"]);
    assert!(log.contains("non-default args: {"), "{log}");
    assert!(!log.contains("sk-env"), "{log}");
    let env = emu.exec_ok(&[
        "docker",
        "inspect",
        "--format",
        "{{json .Config.Env}}",
        "phoenix-vllm-901",
    ]);
    assert_eq!(env, "[\"VLLM_API_KEY=sk-env = key\"]\n");
    let id = emu
        .exec_ok(&[
            "docker",
            "inspect",
            "--format",
            "{{.Id}}",
            "phoenix-vllm-901",
        ])
        .trim()
        .to_owned();
    let config = emu.root.join(format!(
        "var/lib/lxc/901/rootfs/var/lib/docker/containers/{id}/config.v2.json"
    ));
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !std::fs::read_to_string(emu.root.join("var/lib/lxc/901/emu-state.json"))
            .unwrap()
            .contains("sk-env")
    );
    // Removed with the container.
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
    until_removed(&emu);
    assert!(!config.exists());
}

/// Disks have sizes: the image takes ≈ 29 GB of the rootfs, and weights downloaded onto the
/// rootfs fill a 64 GiB one ("No space left on device"), while on a dataset they fit.
#[test]
fn weights_on_a_64_gib_rootfs_fill_it() {
    let emu = Emu::with_rootfs("nesting=1", true, false, "64");
    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms"}}));
    emu.docker_ready();
    emu.exec_ok(&["docker", "pull", IMAGE]);
    assert_eq!(du(&emu, "/var/lib/docker"), 29_000_000_000);
    emu.unit_ready("k");
    emu.exec_ok(&["systemctl", "enable", "--now", "phoenix-vllm-901.service"]);
    until_removed(&emu);
    let log = emu.exec_ok(&[
        "journalctl",
        "-u",
        "phoenix-vllm-901",
        "--no-pager",
        "-o",
        "cat",
    ]);
    assert!(
        log.contains("UserWarning: Not enough free disk space to download the file.")
            && log.contains("OSError: [Errno 28] No space left on device:"),
        "{log}"
    );
    assert_eq!(
        emu.exec_ok(&[
            "systemctl",
            "show",
            "-p",
            "ActiveState,SubState",
            "phoenix-vllm-901"
        ]),
        "ActiveState=activating\nSubState=auto-restart\n"
    );
    // The rootfs is full: 64 GiB, of which the template holds 0.5 GB (less the few bytes of
    // the removed container's config).
    let used = du(&emu, "/") + 500_000_000;
    assert!(((64u64 << 30) - 4096..=64 << 30).contains(&used), "{used}");

    // A dataset mounted at /models holds them.
    let emu = Emu::with_rootfs("nesting=1", true, false, "64");
    emu.faults(serde_json::json!({"vllm": {"load_delay": "100ms"}}));
    emu.ok("zfs", &["create", "-p", "rpool/phoenix/models/drdevstral"]);
    emu.ok("pct", &["stop", "901"]);
    emu.ok(
        "pct",
        &[
            "set",
            "901",
            "--mp0",
            "/rpool/phoenix/models/drdevstral,mp=/models",
        ],
    );
    emu.ok("pct", &["start", "901"]);
    emu.docker_ready();
    emu.unit_ready("k");
    emu.exec_ok(&["systemctl", "enable", "--now", "phoenix-vllm-901.service"]);
    let addr: SocketAddr = format!("{}:8000", emu.address()).parse().unwrap();
    wait_up(addr);
    let on_dataset = du(&emu, "/models/huggingface");
    assert!(on_dataset >= 47_200_000_000, "{on_dataset}");
    assert!(
        emu.root
            .join("hostfs/rpool/phoenix/models/drdevstral/huggingface/hub/models--mistralai--Devstral-Small-2507")
            .is_dir()
    );
    assert!(du(&emu, "/") < 30_000_000_000);
    emu.exec_ok(&["systemctl", "stop", "phoenix-vllm-901"]);
}

/// A pull whose layers do not fit fails as Docker's layer extraction does.
#[test]
fn an_image_larger_than_the_rootfs_does_not_pull() {
    let emu = Emu::with_rootfs("nesting=1", true, false, "16");
    emu.docker_ready();
    let o = emu.exec(&["docker", "pull", IMAGE]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("failed to register layer: write /var/lib/docker/overlay2/")
            && stderr(&o).contains(": no space left on device"),
        "{}",
        stderr(&o)
    );
    assert_eq!(emu.state()["docker"]["images"], serde_json::json!([]));
}

/// opencontainers/runc#4972: runc 1.3.3 under LXC's AppArmor profile cannot start any
/// container (docker/cli gives "permission denied" exit 126); an unconfined LXC container
/// can. A trivial entrypoint runs without the vLLM server.
#[test]
fn runc_1_3_3_under_apparmor_starts_no_container() {
    let emu = Emu::new("nesting=1", true, false);
    emu.docker_ready();
    emu.exec_ok(&["docker", "pull", IMAGE]);
    let probe = [
        "docker",
        "run",
        "--rm",
        "--gpus",
        "\"device=0,1\"",
        "--entrypoint",
        "/bin/true",
        IMAGE,
    ];
    let o = emu.exec(&probe);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(emu.exec_ok(&["docker", "ps", "-a", "-q"]), "");
    let o = emu.exec(&[
        "docker",
        "run",
        "--rm",
        "--entrypoint",
        "/opt/nothing",
        IMAGE,
    ]);
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("exec: \"/opt/nothing\": executable file not found in $PATH"));
    emu.faults(serde_json::json!({"docker": {"runc": "1.3.3"}}));
    let o = emu.exec(&probe);
    assert_eq!(o.status.code(), Some(126));
    assert!(
        stderr(&o).contains("error during container init: open sysctl net.ipv4.ip_unprivileged_port_start file: reopen fd 8: permission denied"),
        "{}",
        stderr(&o)
    );
    let path = emu.root.join("etc/pve/lxc/901.conf");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("lxc.apparmor.profile: unconfined\n");
    std::fs::write(&path, text).unwrap();
    let o = emu.exec(&probe);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// Issue 16 item 4: apt knows the packages the cookbook installs under their noble names,
/// and a name no fetched archive has fails as apt-get does before anything is installed.
#[test]
fn issue16_apt_knows_noble_names_and_fails_on_unknown_ones() {
    let emu = Emu::new("nesting=1", false, false);
    emu.exec_ok(&["apt-get", "-q", "update"]);
    let mut argv = vec!["apt-get", "install"];
    argv.extend_from_slice(APT_OPTS);
    argv.extend_from_slice(&["git", "jq", "htop", "tmux", "nginx", "python3"]);
    let out = emu.exec_ok(&argv);
    assert!(
        out.contains("Setting up jq (1.7.1-3ubuntu0.24.04.1) ..."),
        "{out}"
    );
    assert_eq!(
        emu.exec(&["test", "-x", "/usr/sbin/nginx"]).status.code(),
        Some(0)
    );
    // A typo: exit 100 with apt's message, and the good names in the same command stay out.
    let mut argv = vec!["apt-get", "install"];
    argv.extend_from_slice(APT_OPTS);
    argv.extend_from_slice(&["rsync", "ngnix"]);
    let o = emu.exec(&argv);
    assert_eq!(o.status.code(), Some(100));
    assert_eq!(stderr(&o), "E: Unable to locate package ngnix\n");
    assert_eq!(
        emu.exec(&["test", "-e", "/usr/bin/rsync"]).status.code(),
        Some(1)
    );
    let installed = emu.state()["apt"]["installed"].clone();
    assert!(
        !installed.as_array().unwrap().iter().any(|p| p == "rsync"),
        "{installed}"
    );
    // Docker's packages are not in Ubuntu's archive.
    let o = emu.exec(&["apt-get", "install", "-y", "docker-ce"]);
    assert_eq!(o.status.code(), Some(100));
    assert_eq!(stderr(&o), "E: Unable to locate package docker-ce\n");
}

/// Issue 16 item 4: Docker's repository set up as its install guide says (the armored key
/// as `docker.asc`, the list with `signed-by`), its packages, and `purge` taking them away
/// again with the daemon stopped, as an undo step of recipes/docker-ce.rhai does.
#[test]
fn issue16_docker_repository_by_hand_and_purge() {
    let emu = Emu::new("nesting=1", false, false);
    emu.exec_ok(&["apt-get", "-q", "update"]);
    let mut argv = vec!["apt-get", "install"];
    argv.extend_from_slice(APT_OPTS);
    argv.extend_from_slice(&["ca-certificates", "curl"]);
    emu.exec_ok(&argv);
    let list = "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/ubuntu noble stable\n";
    emu.push("/etc/apt/sources.list.d/docker.list", list, "0644");
    // Without the key the repository is not signed.
    let o = emu.exec(&["apt-get", "-q", "update"]);
    assert_eq!(o.status.code(), Some(100));
    assert!(
        stderr(&o).contains("NO_PUBKEY 8D81803C0EBFCD88"),
        "{}",
        stderr(&o)
    );
    emu.exec_ok(&[
        "curl",
        "-fsSL",
        "-o",
        "/etc/apt/keyrings/docker.asc",
        "https://download.docker.com/linux/ubuntu/gpg",
    ]);
    let out = emu.exec_ok(&["apt-get", "-q", "update"]);
    assert!(
        out.contains("Get:2 https://download.docker.com/linux/ubuntu noble InRelease"),
        "{out}"
    );
    // docker-ce pulls in what it needs at any version.
    let mut argv = vec!["apt-get", "install"];
    argv.extend_from_slice(APT_OPTS);
    argv.push("docker-ce");
    let out = emu.exec_ok(&argv);
    assert!(
        out.contains("docker-ce containerd.io docker-ce-cli"),
        "{out}"
    );
    assert_eq!(
        emu.exec_ok(&["docker", "version", "--format", "{{.Server.Version}}"])
            .trim(),
        "26.1.3"
    );
    // dpkg: a name that is not installed is only a warning; what an installed package
    // needs is not removed alone.
    let o = emu.exec(&["dpkg", "--purge", "jq", "no-such-package"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stderr(&o),
        "dpkg: warning: ignoring request to remove jq which isn't installed\ndpkg: warning: ignoring request to remove no-such-package which isn't installed\n"
    );
    let o = emu.exec(&["dpkg", "--purge", "docker-ce-cli"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("dependency problems prevent removal of docker-ce-cli:\n docker-ce depends on docker-ce-cli."),
        "{}",
        stderr(&o)
    );
    // Purge without -y asks and aborts; with -y the packages and the daemon go.
    let o = emu.exec(&["apt-get", "purge", "docker-ce"]);
    assert_eq!(o.status.code(), Some(1));
    let o = emu.exec(&["apt-get", "purge", "-y", "no-such-package"]);
    assert_eq!(o.status.code(), Some(100));
    assert_eq!(stderr(&o), "E: Unable to locate package no-such-package\n");
    let out = emu.exec_ok(&["apt-get", "purge", "-y", "-q", "containerd.io", "jq"]);
    // What depends on containerd.io goes with it; jq was never installed.
    assert!(
        out.contains("Package 'jq' is not installed, so not removed"),
        "{out}"
    );
    assert!(
        out.contains("The following packages will be REMOVED:\n  containerd.io* docker-ce*"),
        "{out}"
    );
    assert!(
        out.contains(
            "Purging configuration files for docker-ce (5:28.5.1-1~ubuntu.24.04~noble) ..."
        ),
        "{out}"
    );
    assert_eq!(
        emu.exec(&["test", "-e", "/usr/bin/dockerd"]).status.code(),
        Some(1)
    );
    assert_eq!(
        emu.exec(&["systemctl", "is-active", "--quiet", "docker.service"])
            .status
            .code(),
        Some(3)
    );
    // The CLI stays (nothing it needs went).
    assert_eq!(
        emu.exec(&["test", "-x", "/usr/bin/docker"]).status.code(),
        Some(0)
    );
}

/// Issue 16 item 4: the registries know the images the recipes run, with their published
/// tags; anything else fails as `docker pull` fails against Docker Hub or ghcr.io.
#[test]
fn issue16_docker_pull_knows_the_cookbook_images_and_refuses_the_rest() {
    let emu = Emu::new("nesting=1", false, false);
    emu.exec_ok(&["apt-get", "update"]);
    emu.exec_ok(&["apt-get", "install", "-y", "docker.io"]);
    for image in [
        "ghcr.io/open-webui/open-webui:v0.6.18",
        "portainer/portainer-ce:2.21.5",
        "portainer/agent:2.21.5",
        "busybox:1.36",
        "docker.io/library/ubuntu:24.04",
    ] {
        let out = emu.exec_ok(&["docker", "pull", image]);
        assert!(
            out.contains("Status: Downloaded newer image for"),
            "{image}: {out}"
        );
    }
    let refused = [
        (
            "portainer/portainer-ce:9.9.9",
            "Error response from daemon: manifest for portainer/portainer-ce:9.9.9 not found: manifest unknown: manifest unknown\n",
        ),
        (
            "portainr/portainer-ce:2.21.5",
            "Error response from daemon: pull access denied for portainr/portainer-ce, repository does not exist or may require 'docker login': denied: requested access to the resource is denied\n",
        ),
        (
            "ghcr.io/open-webui/open-webui:v9.9.9",
            "Error response from daemon: manifest unknown\n",
        ),
        (
            "ghcr.io/open-webui/open-webiu:v0.6.18",
            "Error response from daemon: Head \"https://ghcr.io/v2/open-webui/open-webiu/manifests/v0.6.18\": denied\n",
        ),
        (
            "registry.example:5000/x/y:1",
            "Error response from daemon: Get \"https://registry.example:5000/v2/\": dial tcp: lookup registry.example: no such host\n",
        ),
    ];
    for (image, message) in refused {
        let o = emu.exec(&["docker", "pull", image]);
        assert_eq!(o.status.code(), Some(1), "{image}");
        assert_eq!(stderr(&o), message, "{image}");
    }
    // `docker run` of an unknown image: the pull's error, exit 125, no container.
    let o = emu.exec(&[
        "docker",
        "run",
        "-d",
        "--name",
        "w",
        "ghcr.io/open-webui/open-webui:v9",
    ]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("manifest unknown"), "{}", stderr(&o));
    assert_eq!(emu.exec(&["docker", "inspect", "w"]).status.code(), Some(1));
    let images = emu.state()["docker"]["images"].clone();
    assert_eq!(images.as_array().unwrap().len(), 5, "{images}");
}

/// Issue 16: Open WebUI and Portainer run as servers (they do not exit at once) and answer
/// the paths an operator checks on the published port; Open WebUI's log names no value of
/// its environment.
#[test]
fn issue16_web_application_images_serve_until_removed() {
    let emu = Emu::new("nesting=1", false, false);
    emu.exec_ok(&["apt-get", "update"]);
    emu.exec_ok(&["apt-get", "install", "-y", "docker.io"]);
    emu.push(
        "/etc/open-webui.env",
        "OPENAI_API_BASE_URL=http://127.0.0.9:8000/v1\nOPENAI_API_KEY=sk-emu-webui-key\n",
        "0600",
    );
    emu.exec_ok(&[
        "docker",
        "run",
        "-d",
        "--name",
        "open-webui",
        "--restart=always",
        "-p",
        "3000:8080",
        "--env-file",
        "/etc/open-webui.env",
        "ghcr.io/open-webui/open-webui:v0.6.18",
    ]);
    emu.exec_ok(&[
        "docker",
        "run",
        "-d",
        "--name",
        "portainer",
        "-p",
        "9000:9000",
        "portainer/portainer-ce:2.21.5",
    ]);
    let addr = emu.address();
    let get = |port: u16, path: &str| -> (u16, String) {
        let at: SocketAddr = format!("{addr}:{port}").parse().unwrap();
        wait_up(at);
        http(at, path, None).unwrap()
    };
    assert_eq!(get(3000, "/health"), (200, r#"{"status":true}"#.to_owned()));
    let (code, body) = get(9000, "/api/system/status");
    assert_eq!(code, 200);
    assert!(body.contains(r#""Version":"2.21.5""#), "{body}");
    assert_eq!(
        emu.exec_ok(&[
            "docker",
            "inspect",
            "--format",
            "{{.State.Running}}",
            "open-webui"
        ])
        .trim(),
        "true"
    );
    let logs = emu.exec(&["docker", "logs", "open-webui"]);
    let text = format!("{}{}", stdout(&logs), stderr(&logs));
    assert!(
        text.contains("OpenAI API connections configured: 1"),
        "{text}"
    );
    assert!(!text.contains("sk-emu-webui-key"), "{text}");
    // The container reboots: Docker brings back the `--restart=always` one only, as a new
    // process.
    let pid = |name: &str| {
        emu.exec_ok(&["docker", "inspect", "--format", "{{.State.Pid}}", name])
            .trim()
            .parse::<i32>()
            .unwrap()
    };
    let before = pid("open-webui");
    emu.ok("pct", &["stop", "901"]);
    wait_gone(before, "pct stop");
    emu.ok("pct", &["start", "901"]);
    let after = pid("open-webui");
    assert!(after != 0 && after != before, "{before} -> {after}");
    assert_eq!(get(3000, "/health"), (200, r#"{"status":true}"#.to_owned()));
    assert_eq!(
        emu.exec_ok(&[
            "docker",
            "inspect",
            "--format",
            "{{.State.Running}}",
            "portainer"
        ])
        .trim(),
        "false"
    );
    emu.exec_ok(&["docker", "rm", "-f", "open-webui"]);
    assert_eq!(
        emu.exec(&["docker", "inspect", "open-webui"]).status.code(),
        Some(1)
    );
}

/// An unprivileged container's root (host uid 100000) writes a bind mount only when the
/// host directory is its own: mkdir, `test -w` and `pct push` are refused before the
/// host's `chown` and work after it; a privileged container's root is the host's.
#[test]
fn an_unprivileged_root_writes_a_bind_mount_only_once_it_owns_the_host_directory() {
    let mount = |emu: &Emu| {
        emu.ok("zfs", &["create", "-p", "rpool/phoenix/models/share"]);
        emu.ok("pct", &["stop", "901"]);
        emu.ok(
            "pct",
            &[
                "set",
                "901",
                "--mp0",
                "/rpool/phoenix/models/share,mp=/models",
            ],
        );
        emu.ok("pct", &["start", "901"]);
    };
    let emu = Emu::new("nesting=1", false, true);
    mount(&emu);
    assert_eq!(
        emu.ok("stat", &["-c", "%u:%g %U", "/rpool/phoenix/models/share"]),
        "0:0 root\n"
    );
    let o = emu.exec(&["mkdir", "-p", "/models/huggingface"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "mkdir: cannot create directory '/models/huggingface': Permission denied\n"
    );
    assert_eq!(emu.exec(&["test", "-w", "/models"]).status.code(), Some(1));
    let src = emu.root.join("push.tmp");
    std::fs::write(&src, "t").unwrap();
    let o = emu.run(
        "pct",
        &["push", "901", src.to_str().unwrap(), "/models/token"],
    );
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("failed to create file: /models/token: Permission denied"),
        "{}",
        stderr(&o)
    );

    emu.ok("chown", &["100000:100000", "/rpool/phoenix/models/share"]);
    assert_eq!(
        emu.ok("stat", &["-c", "%u:%g", "/rpool/phoenix/models/share"]),
        "100000:100000\n"
    );
    emu.exec_ok(&["mkdir", "-p", "/models/huggingface"]);
    emu.exec_ok(&["test", "-w", "/models"]);
    emu.push("/models/token", "t", "0600");
    // The dataset's records go with it: a new one of the same name is root's again.
    emu.ok("pct", &["stop", "901"]);
    emu.ok("pct", &["set", "901", "--delete", "mp0"]);
    emu.ok("zfs", &["destroy", "-r", "rpool/phoenix/models/share"]);
    emu.ok("zfs", &["create", "rpool/phoenix/models/share"]);
    assert_eq!(
        emu.ok("stat", &["-c", "%u:%g", "/rpool/phoenix/models/share"]),
        "0:0\n"
    );

    let emu = Emu::new("nesting=1", false, false);
    mount(&emu);
    emu.exec_ok(&["mkdir", "-p", "/models/huggingface"]);
    emu.push("/models/token", "t", "0600");
}

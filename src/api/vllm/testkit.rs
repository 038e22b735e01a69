//! Test fixtures shared by the `vllm` modules' tests: the example entry, and a PVE host
//! whose commands are answered in-process by a fake container 901.

#![allow(unreachable_pub)]

pub(super) use super::*;
pub(super) use crate::config::{KvCacheDtype, VllmConfig};
pub(super) use crate::exec::{CommandOutput, HostCommand, RecordingRunner};
pub(super) use crate::runtime::Runtime;
pub(super) use crate::secret::Secret;
pub(super) use crate::types::{AbsPath, ModelId, SecretName, Size, Vmid};
pub(super) use rhai::{Dynamic, Map};
pub(super) use std::collections::{BTreeMap, BTreeSet};
pub(super) use std::sync::atomic::{AtomicBool, Ordering};
pub(super) use std::sync::{Arc, Mutex};
pub(super) use zeroize::Zeroizing;

/// The example config shipped next to the recipes (CT 901 drdevstral, 902 gateway).
pub(super) const CONFIG_901: &str = include_str!("../../../recipes/phoenix_lxc_configs.json");

pub(super) fn vmid() -> Vmid {
    Vmid::new(901).unwrap()
}

/// The example entry's vLLM settings, typed (independent of the loader's details).
pub(super) fn example_vllm() -> VllmConfig {
    VllmConfig {
        model: ModelId::new("mistralai/Devstral-Small-2507").unwrap(),
        served_model_name: None,
        tensor_parallel_size: 2,
        max_model_len: Some(128_000),
        kv_cache_dtype: Some(KvCacheDtype::Fp8),
        shm_size: Some(Size::new("16g").unwrap()),
        quantization: None,
        quantization_config: None,
        gpu_memory_utilization: None,
        port: 8000,
        image: None,
    }
}

pub(super) fn secret(name: &str, value: &str) -> Secret {
    Secret::new(
        SecretName::new(name).unwrap(),
        Zeroizing::new(value.as_bytes().to_vec()),
    )
}

pub(super) fn example_spec() -> ServerSpec {
    ServerSpec {
        vmid: vmid(),
        image: crate::settings::DEFAULT_VLLM_IMAGE.into(),
        vllm: example_vllm(),
        gpus: DockerGpus::Count(2),
        models_dir: Some(AbsPath::new("/models").unwrap()),
        hf_token: None,
        api_key: Some(secret("vllm_api_key", "sk-test")),
    }
}

// ----- vllm.start against a PVE host whose commands are answered in-process -----

/// The state of the fake container 901.
#[derive(Default)]
pub(super) struct FakeCt {
    pub(super) files: Mutex<BTreeMap<String, (Vec<u8>, String)>>,
    pub(super) dirs: Mutex<BTreeSet<String>>,
    pub(super) image: AtomicBool,
    pub(super) up: AtomicBool,
    pub(super) pull_fails: AtomicBool,
    /// Executables present in the container.
    pub(super) installed: Mutex<BTreeSet<String>>,
    pub(super) docker_running: AtomicBool,
    pub(super) runtimes: Mutex<String>,
    pub(super) driver: Mutex<String>,
    /// What `docker inspect` reports: `None` running, `Some("")` no such container.
    pub(super) docker_state: Mutex<Option<String>>,
    /// What the proof container's `docker run` answers: `None` exit 0, else (code, stderr).
    pub(super) probe_fails: Mutex<Option<(i32, String)>>,
    /// What `du -s -b` of the weights directory reports (`None`: no such directory).
    pub(super) weights: Mutex<Option<u64>>,
    /// The container is stopped: `pct status` says so and `pct exec` refuses, as
    /// pve-container's `pct exec` does ("container '<vmid>' not running!", `src/PVE/CLI/pct.pm`).
    pub(super) stopped: AtomicBool,
}

pub(super) fn out(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
    CommandOutput {
        code,
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

pub(super) fn answer(ct: &FakeCt, cmd: &HostCommand) -> CommandOutput {
    let argv = cmd.argv();
    let tool = argv[0].rsplit('/').next().unwrap().to_owned();
    if tool == "nvidia-smi" {
        return if argv[1] == "-q" {
            out(0, "", "")
        } else {
            out(
                0,
                "0, 00000000:00:06.0, GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4, NVIDIA H100 80GB HBM3, 81559, 580.159.04\n",
                "",
            )
        };
    }
    if tool == "pveversion" {
        return out(
            0,
            "pve-manager/8.4.1/2a5fa54a (running kernel: 6.8.12-4-pve)\n",
            "",
        );
    }
    let stopped = ct.stopped.load(Ordering::SeqCst);
    match argv[1].as_str() {
        "status" if stopped => out(0, "status: stopped\n", ""),
        "status" => out(0, "status: running\n", ""),
        "exec" if stopped => out(255, "", &format!("container '{}' not running!\n", argv[2])),
        "push" => {
            let content = std::fs::read(&argv[3]).unwrap();
            ct.files
                .lock()
                .unwrap()
                .insert(argv[4].clone(), (content, argv[6].clone()));
            out(0, "", "")
        }
        "exec" => {
            let i = argv.iter().position(|a| a == "--").unwrap();
            let inner: Vec<&str> = argv[i + 1..].iter().map(String::as_str).collect();
            let files = ct.files.lock().unwrap();
            match inner.as_slice() {
                ["cat", p] => match files.get(*p) {
                    Some((c, _)) => CommandOutput {
                        code: 0,
                        stdout: c.clone(),
                        stderr: Vec::new(),
                    },
                    None => out(1, "", "cat: No such file or directory"),
                },
                ["test", "-e", p] => out(i32::from(!files.contains_key(*p)), "", ""),
                ["test", "-x", p] => out(
                    i32::from(!ct.installed.lock().unwrap().contains(*p)),
                    "",
                    "",
                ),
                ["stat", "-L", "--format=%a %n", "--", paths @ ..] => {
                    let installed = ct.installed.lock().unwrap();
                    let (there, missing): (Vec<&str>, Vec<&str>) =
                        paths.iter().partition(|p| installed.contains(**p));
                    let stdout: String = there.iter().map(|p| format!("755 {p}\n")).collect();
                    let stderr: String = missing
                        .iter()
                        .map(|p| format!("stat: cannot statx '{p}': No such file or directory\n"))
                        .collect();
                    out(i32::from(!missing.is_empty()), &stdout, &stderr)
                }
                ["docker", "version", ..] => out(
                    i32::from(!ct.docker_running.load(Ordering::SeqCst)),
                    "27.5.1\n",
                    "",
                ),
                ["apt-get", "-q", "update"] => out(0, "", ""),
                ["systemctl", "is-active", "--quiet", _] => {
                    out(if ct.up.load(Ordering::SeqCst) { 0 } else { 3 }, "", "")
                }
                ["apt-get", "install", args @ ..] => {
                    // Options, then the packages; each package's program appears.
                    let mut installed = ct.installed.lock().unwrap();
                    let mut skip = false;
                    for a in args {
                        if std::mem::take(&mut skip) || a.starts_with('-') {
                            skip = *a == "-o";
                            continue;
                        }
                        let bin = match *a {
                            "docker.io" => "/usr/bin/docker",
                            "nvidia-container-toolkit" => "/usr/bin/nvidia-ctk",
                            "curl" => "/usr/bin/curl",
                            "ca-certificates" => continue,
                            other => panic!("unexpected package {other}"),
                        };
                        installed.insert(bin.to_owned());
                    }
                    out(0, "", "")
                }
                ["systemctl", "enable", "--now", "docker.service"] => {
                    ct.docker_running.store(true, Ordering::SeqCst);
                    out(0, "", "")
                }
                ["docker", "info", "--format", "{{json .Runtimes}}"] => {
                    out(0, &ct.runtimes.lock().unwrap(), "")
                }
                ["nvidia-ctk", "runtime", "configure", "--runtime=docker"] => {
                    *ct.runtimes.lock().unwrap() =
                        r#"{"nvidia":{"path":"nvidia-container-runtime"},"runc":{}}"#.into();
                    out(0, "", "")
                }
                [
                    "nvidia-ctk",
                    "config",
                    "--set",
                    "nvidia-container-cli.no-cgroups=true",
                    "--in-place",
                ] => {
                    drop(files);
                    ct.files.lock().unwrap().insert(
                        "/etc/nvidia-container-runtime/config.toml".into(),
                        (
                            b"[nvidia-container-cli]\nno-cgroups = true\n".to_vec(),
                            "0644".into(),
                        ),
                    );
                    out(0, "", "")
                }
                [
                    "nvidia-smi",
                    "--query-gpu=driver_version",
                    "--format=csv,noheader",
                ] => out(
                    0,
                    &{
                        let d = ct.driver.lock().unwrap().clone();
                        format!("{d}\n{d}\n")
                    },
                    "",
                ),
                ["test", "-d", d] => out(i32::from(!ct.dirs.lock().unwrap().contains(*d)), "", ""),
                ["mkdir", "-p", "-m", "0700", d] => {
                    ct.dirs.lock().unwrap().insert((*d).to_owned());
                    out(0, "", "")
                }
                ["docker", "image", "inspect", ..] => out(
                    i32::from(!ct.image.load(Ordering::SeqCst)),
                    "sha256:abc\n",
                    "",
                ),
                ["docker", "pull", img] => {
                    if ct.pull_fails.load(Ordering::SeqCst) {
                        out(
                            125,
                            "",
                            &format!("Error response from daemon: manifest for {img} not found"),
                        )
                    } else {
                        ct.image.store(true, Ordering::SeqCst);
                        out(0, "", "")
                    }
                }
                ["systemctl", "show", ..] => out(
                    0,
                    if ct.up.load(Ordering::SeqCst) {
                        "ActiveState=active\nSubState=running\nUnitFileState=enabled\n"
                    } else {
                        "ActiveState=inactive\nSubState=dead\nUnitFileState=disabled\n"
                    },
                    "",
                ),
                ["systemctl", "enable", "--now", _] => {
                    ct.up.store(true, Ordering::SeqCst);
                    out(0, "", "")
                }
                ["systemctl", "daemon-reload" | "restart", ..] => out(0, "", ""),
                [
                    "docker",
                    "inspect",
                    "--format",
                    "{{.State.Status}}",
                    "phoenix-vllm-901",
                ] => match ct.docker_state.lock().unwrap().as_deref() {
                    None => out(0, "running\n", ""),
                    Some("") => out(1, "\n", "Error: No such object: phoenix-vllm-901"),
                    Some(state) => out(0, &format!("{state}\n"), ""),
                },
                [
                    "docker",
                    "run",
                    "--rm",
                    ..,
                    "--entrypoint",
                    "/bin/true",
                    _image,
                ] => match ct.probe_fails.lock().unwrap().clone() {
                    None => out(0, "", ""),
                    Some((code, stderr)) => out(code, "", &stderr),
                },
                ["du", "-s", "-b", dir] => match *ct.weights.lock().unwrap() {
                    Some(b) => out(0, &format!("{b}\t{dir}\n"), ""),
                    None => out(
                        1,
                        "",
                        &format!("du: cannot access '{dir}': No such file or directory\n"),
                    ),
                },
                ["docker", "logs", "--tail", "50", "phoenix-vllm-901"] => {
                    out(0, "INFO Starting vLLM API server\n", "WARNING slow disk\n")
                }
                ["ip", "-j", "-4", "addr", "show", "dev", "eth0"] => out(
                    0,
                    r#"[{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"127.77.0.5","prefixlen":24}]}]"#,
                    "",
                ),
                other => panic!("unexpected command in the container: {other:?}"),
            }
        }
        other => panic!("unexpected pct subcommand {other}: {argv:?}"),
    }
}

pub(super) struct Fixture {
    pub(super) _dir: tempfile::TempDir,
    pub(super) rt: Arc<Runtime>,
    pub(super) runner: Arc<RecordingRunner>,
    pub(super) ct: Arc<FakeCt>,
}

pub(super) fn fixture(dry_run: bool, running: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    let mut env = std::collections::HashMap::new();
    std::fs::write(root.join("phoenix.toml"), "").unwrap();
    env.insert(
        "PHOENIX_SETTINGS".to_owned(),
        root.join("phoenix.toml").display().to_string(),
    );
    for (k, d) in [
        ("PHOENIX_STATE_DIR", "state"),
        ("PHOENIX_LOG_DIR", "logs"),
        ("PHOENIX_SECRETS_DIR", "secrets"),
        ("PHOENIX_SECRET_KEY", "key/secret.key"),
        ("PHOENIX_PVE_LXC_DIR", "pve/lxc"),
        ("PHOENIX_DEV_DIR", "dev"),
    ] {
        env.insert(k.to_owned(), root.join(d).display().to_string());
    }
    let settings = crate::settings::Settings::resolve_with(
        &crate::settings::FlagOverrides::default(),
        &move |k| env.get(k).cloned(),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("pve/lxc")).unwrap();
    if running {
        std::fs::write(
            root.join("pve/lxc/901.conf"),
            "hostname: drdevstral\ntags: phoenix\n",
        )
        .unwrap();
    }
    let ct = Arc::new(FakeCt::default());
    let c2 = Arc::clone(&ct);
    let runner = Arc::new(RecordingRunner::new(move |cmd| answer(&c2, cmd)));
    let host = Arc::new(crate::host::pve::PveHost::new(
        crate::host::pve::PvePaths::from_settings(&settings),
        Arc::clone(&runner) as Arc<dyn crate::exec::Runner>,
    ));
    let mut config =
        crate::config::load_str(std::path::Path::new("test-config.json"), CONFIG_901).unwrap();
    let e = config.lxc.get_mut(&vmid()).unwrap();
    e.gpus = Some("0,1".parse().unwrap());
    e.vllm = Some(example_vllm());
    let redactor = crate::exec::Redactor::default();
    let journal = if dry_run {
        crate::journal::Journal::in_memory("r1")
    } else {
        crate::journal::Journal::open(&settings.state_dir.value, "r1").unwrap()
    };
    let rt = Arc::new(Runtime {
        secrets: crate::secret::SecretStore::new(&settings, redactor.clone()),
        settings,
        config: Arc::new(config),
        selected: Vec::new(),
        recipe_name: "drdevstral.rhai".into(),
        host,
        journal,
        redactor,
        dry_run,
        plan: None,
        cancel: crate::exec::CancelFlag::default(),
        run_id: "r1".into(),
        notes: crate::plan::Notes::default(),
        progress: crate::progress::Tracker::default(),
    });
    Fixture {
        _dir: dir,
        rt,
        runner,
        ct,
    }
}

/// The inner argv of every mutating command (`pct exec 901 … -- argv`, or `push DEST`).
pub(super) fn mutations(runner: &RecordingRunner) -> Vec<String> {
    runner
        .calls()
        .iter()
        .filter(|c| c.is_mutating())
        .map(|c| {
            let a = c.argv();
            if a[1] == "push" {
                format!("push {} {}", a[4], a[6])
            } else {
                let i = a.iter().position(|x| x == "--").unwrap();
                a[i + 1..].join(" ")
            }
        })
        .collect()
}

pub(super) fn spec_map(with_secrets: bool) -> Map {
    let mut m = Map::new();
    m.insert("models_dir".into(), "/models".into());
    if with_secrets {
        m.insert(
            "hf_token".into(),
            Dynamic::from(secret("hf_token", "hf_SECRETTOKEN")),
        );
        m.insert(
            "api_key".into(),
            Dynamic::from(secret("vllm_api_key", "sk-SECRETKEY")),
        );
    }
    m
}

/// The engine recipes run in, with this runtime's handles (every family, resolved by name
/// in `fn`s and modules too).
pub(super) fn script_engine(rt: &Arc<Runtime>) -> rhai::Engine {
    crate::script::engine::new_engine(crate::script::engine::EngineOptions {
        handles: crate::api::handles(rt),
        ..Default::default()
    })
}

/// Compile `src` the way recipes are compiled (strict variables: the handles and the
/// variables already in `scope`) and run it in `engine` with `scope`.
pub(super) fn eval<T: Clone + Send + Sync + 'static>(
    engine: &rhai::Engine,
    scope: &mut rhai::Scope<'static>,
    src: &str,
) -> Result<T, Box<rhai::EvalAltResult>> {
    let mut known = crate::script::engine::compile_scope();
    for (name, _, _) in scope.iter() {
        known.push_constant(name.to_owned(), ());
    }
    let ast = engine.compile_with_scope(&known, src)?;
    engine.eval_ast_with_scope(scope, &ast)
}

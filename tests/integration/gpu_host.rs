//! GPU containers on the emulated host, driven through the real `phoenix` binary (issue 11
//! items 3 and 7, issue 13's GPU items): the container starts again after a host reboot
//! because phoenix's boot-time unit recreates the lazy NVIDIA nodes; `destroy` removes that
//! unit only when no container needs it; a GPU whose minor differs from its index, a host
//! booted with cgroup v1 and MIG each run the whole drdevstral flow.

use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::acceptance::{Site, config_with, example_config};

const UNIT: &str = "phoenix-nvidia-nodes.service";

/// Run one of the emulated host's tools directly (as an operator on the node would).
fn emu(site: &Site, tool: &str, args: &[&str]) -> Output {
    Command::new(site.root().join("bin").join(tool))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn emu_ok(site: &Site, tool: &str, args: &[&str]) -> String {
    let o = emu(site, tool, args);
    assert!(
        o.status.success(),
        "{tool} {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Change the emulated host's settings and reboot it so they take effect.
fn set_and_reboot(site: &Site, key: &str, value: Value) {
    let path = site.root().join("emu.json");
    let mut s: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    s[key] = value;
    std::fs::write(&path, s.to_string()).unwrap();
    emu_ok(site, "systemctl", &["reboot"]);
}

fn dev_exists(site: &Site, rel: &str) -> bool {
    site.root().join("dev").join(rel).symlink_metadata().is_ok()
}

fn conf(site: &Site, vmid: &str) -> String {
    std::fs::read_to_string(site.root().join(format!("etc/pve/lxc/{vmid}.conf"))).unwrap()
}

fn unit_text(site: &Site) -> Option<String> {
    std::fs::read_to_string(site.root().join("etc/systemd/system").join(UNIT)).ok()
}

/// `nvidia-smi --query-gpu=…` inside container `vmid`.
fn smi_inside(site: &Site, vmid: &str, query: &str) -> String {
    emu_ok(
        site,
        "pct",
        &[
            "exec",
            vmid,
            "--",
            "nvidia-smi",
            &format!("--query-gpu={query}"),
            "--format=csv,noheader",
        ],
    )
}

/// Issue 11, must show: after an emulated reboot, `pct start` of the GPU container succeeds.
#[test]
fn the_gpu_container_starts_after_a_host_reboot() {
    let site = Site::new(&example_config());
    site.prepare();
    site.run_ok();
    let text = unit_text(&site).expect("phoenix installed its boot-time unit");
    assert!(text.contains("Before=pve-guests.service"), "{text}");
    assert_eq!(
        emu_ok(&site, "systemctl", &["is-enabled", UNIT]),
        "enabled\n"
    );
    // PVE ≥ 8.1 on cgroup v2: devN entries, and no capability node without MIG.
    let c = conf(&site, "901");
    assert!(
        c.contains("/dev/nvidia-uvm\n") && !c.contains("nvidia-caps"),
        "{c}"
    );

    emu_ok(&site, "systemctl", &["reboot"]);
    let boot = std::fs::read_to_string(site.root().join("var/log/emu-boot.log")).unwrap();
    assert!(boot.contains(&format!("unit {UNIT}: started")), "{boot}");
    assert!(dev_exists(&site, "nvidia-uvm") && dev_exists(&site, "nvidia-uvm-tools"));
    assert_eq!(
        emu_ok(&site, "pct", &["status", "901"]),
        "status: stopped\n"
    );
    emu_ok(&site, "pct", &["start", "901"]);
    assert_eq!(
        emu_ok(&site, "pct", &["status", "901"]),
        "status: running\n"
    );
    // The container's own systemd brought the vLLM service back.
    emu_ok(
        &site,
        "pct",
        &[
            "exec",
            "901",
            "--",
            "systemctl",
            "is-active",
            "--quiet",
            "phoenix-vllm-901.service",
        ],
    );
    assert_eq!(site.servers().len(), 1, "the vLLM server runs again");

    // Control: without the unit, the lazy node is missing after a reboot and PVE refuses.
    emu_ok(&site, "systemctl", &["disable", UNIT]);
    emu_ok(&site, "systemctl", &["reboot"]);
    let o = emu(&site, "pct", &["start", "901"]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Device /dev/nvidia-uvm does not exist\n"
    );
}

/// Two GPU containers share the unit: destroying one keeps it, destroying the last removes
/// it (and its `.wants` link).
#[test]
fn destroy_removes_the_unit_only_when_no_container_needs_it() {
    let mut config = example_config();
    let mut second = config["lxc_configs"]["901"].clone();
    second["name"] = json!("second");
    second["network_config"]["ip"] = json!("10.0.0.113/24");
    second["gpu_assignment"] = json!([1]);
    second["vllm_tensor_parallel_size"] = json!(1);
    config["lxc_configs"]["903"] = second;
    let site = Site::new(&config);
    site.prepare();
    site.ok(&["recipe", "run", &repo_recipe(), "--lxc", "901"], b"");
    site.ok(&["recipe", "run", &repo_recipe(), "--lxc", "903"], b"");
    assert!(unit_text(&site).is_some());

    let out = site.ok(&["destroy", "--lxc", "901"], b"");
    assert!(
        out.stdout
            .contains("container 903 still passes NVIDIA device nodes")
            || out
                .stderr
                .contains("container 903 still passes NVIDIA device nodes"),
        "{out:?}"
    );
    assert!(unit_text(&site).is_some(), "903 still needs the unit");
    assert_eq!(
        emu_ok(&site, "systemctl", &["is-enabled", UNIT]),
        "enabled\n"
    );

    site.ok(&["destroy", "--lxc", "903"], b"");
    assert!(unit_text(&site).is_none(), "the last GPU container is gone");
    assert!(
        !site
            .root()
            .join("etc/systemd/system/multi-user.target.wants")
            .join(UNIT)
            .exists()
    );
}

fn repo_recipe() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("recipes/drdevstral.rhai")
        .display()
        .to_string()
}

/// Issue 13: a GPU whose minor number differs from its index, end to end. GPU 0 is
/// `/dev/nvidia1` on this host; the container gets that node and sees GPU 0 (bus 06.0).
#[test]
fn a_gpu_whose_minor_differs_from_its_index_runs_end_to_end() {
    let mut config = config_with("gpu_assignment", json!([0]));
    config["lxc_configs"]["901"]["vllm_tensor_parallel_size"] = json!(1);
    let site = Site::new(&config);
    site.prepare();
    set_and_reboot(&site, "gpu_minors", json!([1, 0]));
    site.run_ok();
    let c = conf(&site, "901");
    assert!(c.contains("dev0: /dev/nvidia1\n"), "{c}");
    assert!(
        !c.contains("/dev/nvidia0\n"),
        "index 0 is not /dev/nvidia0 here: {c}"
    );
    assert_eq!(
        smi_inside(&site, "901", "pci.bus_id,uuid"),
        "00000000:00:06.0, GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4\n"
    );
    assert!(
        unit_text(&site).unwrap().contains(" -c=0 -c=1 -c=255\n"),
        "the unit makes every GPU's node"
    );
}

/// Issue 11 item 7: a host booted with cgroup v1 gets `lxc.cgroup.devices.allow` lines
/// (not devN, whose rules PVE writes for cgroup2 only) and its GPUs work inside.
#[test]
fn a_cgroup_v1_host_gets_v1_rules_and_the_gpus_work_inside() {
    let site = Site::new(&example_config());
    site.prepare();
    set_and_reboot(&site, "cgroup", json!("v1"));
    site.run_ok();
    let c = conf(&site, "901");
    for major in [195, 238] {
        assert!(
            c.contains(&format!("\nlxc.cgroup.devices.allow: c {major}:* rwm\n")),
            "{c}"
        );
    }
    assert!(!c.contains("lxc.cgroup2") && !c.contains("\ndev0:"), "{c}");
    assert_eq!(
        smi_inside(&site, "901", "pci.bus_id"),
        "00000000:00:06.0\n00000000:00:07.0\n"
    );
}

/// MIG in use: the capability nodes are attached and the unit recreates them at boot.
#[test]
fn with_mig_the_capability_nodes_are_attached_and_come_back_after_a_reboot() {
    let site = Site::new(&example_config());
    site.prepare();
    set_and_reboot(&site, "mig", json!(true));
    // The first boot's caps are gone after that reboot; the unit makes them.
    site.run_ok();
    let c = conf(&site, "901");
    assert!(c.contains(": /dev/nvidia-caps/nvidia-cap1\n"), "{c}");
    assert!(c.contains(": /dev/nvidia-caps/nvidia-cap2\n"), "{c}");
    assert!(
        unit_text(&site)
            .unwrap()
            .contains("-f /proc/driver/nvidia/capabilities/mig/config")
    );
    emu_ok(&site, "systemctl", &["reboot"]);
    assert!(dev_exists(&site, "nvidia-caps/nvidia-cap1"));
    emu_ok(&site, "pct", &["start", "901"]);
}

/// The emulator's argv log as `(tool, argv)`, the inner argv for `pct exec`.
fn commands(site: &Site) -> Vec<(String, Vec<String>)> {
    site.calls()
        .iter()
        .map(|c| {
            let tool = c["tool"].as_str().unwrap().to_owned();
            let argv: Vec<String> = c["argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect();
            match argv.iter().position(|a| a == "--") {
                Some(i) if tool == "pct" && argv[0] == "exec" => {
                    ("exec".into(), argv[i + 1..].to_vec())
                }
                _ => (tool, argv),
            }
        })
        .collect()
}

fn ct_file(site: &Site, path: &str) -> Option<String> {
    std::fs::read_to_string(site.rootfs(path.trim_start_matches('/'))).ok()
}

/// Issue 11 item 3: a fresh container gets the host driver's userspace (the `.run` installer
/// downloaded from NVIDIA, run without the kernel module) and the toolkit from NVIDIA's
/// repository, added with its signing key as NVIDIA's guide says.
#[test]
fn the_flow_installs_the_hosts_userspace_and_the_toolkit_from_nvidias_repository() {
    let site = Site::new(&example_config());
    site.prepare();
    site.run_ok();
    assert_eq!(
        smi_inside(&site, "901", "driver_version"),
        "580.159.04\n580.159.04\n"
    );
    assert_eq!(
        ct_file(
            &site,
            "/etc/apt/sources.list.d/nvidia-container-toolkit.list"
        )
        .unwrap(),
        "deb [signed-by=/usr/share/keyrings/nvidia-container-toolkit-keyring.asc] https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /\n"
    );
    // The key as NVIDIA serves it, armored: apt reads a `.asc` signed-by file as is, so
    // no `gpg --dearmor` (and no gnupg2) is needed.
    assert!(
        ct_file(
            &site,
            "/usr/share/keyrings/nvidia-container-toolkit-keyring.asc"
        )
        .unwrap()
        .starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    );
    assert!(ct_file(&site, "/usr/bin/nvidia-ctk").is_some());
    assert!(
        ct_file(&site, "/root/NVIDIA-Linux-x86_64-580.159.04.run").is_none(),
        "the installer is removed after the install"
    );
    let cmds = commands(&site);
    let run = "/root/NVIDIA-Linux-x86_64-580.159.04.run";
    assert!(cmds.contains(&(
        "exec".into(),
        vec![
            "curl".into(),
            "-fsSL".into(),
            "--retry".into(),
            "3".into(),
            "-o".into(),
            run.into(),
            "https://us.download.nvidia.com/tesla/580.159.04/NVIDIA-Linux-x86_64-580.159.04.run".into()
        ]
    )));
    assert!(cmds.contains(&(
        "exec".into(),
        vec![run.into(), "--no-kernel-module".into(), "--silent".into()]
    )));
    // One look at what is there, one apt run for Docker and the download tools, one for
    // the toolkit once NVIDIA's repository is added.
    let execs = |prog: &str| -> Vec<String> {
        cmds.iter()
            .filter(|(t, a)| t == "exec" && a[0] == prog)
            .map(|(_, a)| a.join(" "))
            .collect()
    };
    assert_eq!(
        execs("stat"),
        [
            "stat -L --format=%a %n -- /usr/bin/docker /usr/bin/nvidia-smi /usr/bin/nvidia-ctk /usr/bin/curl /etc/ssl/certs/ca-certificates.crt"
        ]
    );
    let installs: Vec<String> = execs("apt-get")
        .into_iter()
        .filter(|a| a.starts_with("apt-get install"))
        .map(|a| a.rsplit("--force-confold ").next().unwrap().to_owned())
        .collect();
    assert_eq!(
        installs,
        ["ca-certificates curl docker.io", "nvidia-container-toolkit"]
    );
    assert_eq!(execs("gpg"), [] as [String; 0]);
    assert_eq!(execs("test"), [] as [String; 0]);
}

/// The emulated host's containers reach only Ubuntu's archive.
fn offline(site: &Site) {
    let path = site.root().join("emu.json");
    let mut s: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    s["ct_network"] = json!("archive-only");
    std::fs::write(&path, s.to_string()).unwrap();
}

/// Write the settings file with `lines` (`key = "value"`).
fn settings(site: &Site, lines: &[(&str, &std::path::Path)]) {
    let text: String = lines
        .iter()
        .map(|(k, v)| format!("{k} = {:?}\n", v.display().to_string()))
        .collect();
    std::fs::write(site.path("phoenix.toml"), text).unwrap();
}

/// Host-side `.deb` files (emulated: `phoenix-emu deb NAME VERSION`).
fn debs(site: &Site, packages: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = site.path("debs");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, version) in packages {
        std::fs::write(
            dir.join(format!("{name}_{version}_amd64.deb")),
            format!("phoenix-emu deb {name} {version}\n"),
        )
        .unwrap();
    }
    dir
}

const TOOLKIT_DEBS: [(&str, &str); 4] = [
    ("nvidia-container-toolkit", "1.17.8-1"),
    ("nvidia-container-toolkit-base", "1.17.8-1"),
    ("libnvidia-container-tools", "1.17.8-1"),
    ("libnvidia-container1", "1.17.8-1"),
];

#[test]
fn offline_without_a_host_source_fails_naming_the_settings() {
    let site = Site::new(&example_config());
    site.prepare();
    offline(&site);
    let out = site.run(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("curl exit 6"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("Could not resolve host: us.download.nvidia.com"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("set PHOENIX_NVIDIA_INSTALLER"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("PHOENIX_NVIDIA_DEBS"), "{}", out.stderr);
}

/// Offline, with the host's installer and the toolkit's `.deb` files named in the settings:
/// both are pushed from their host paths (no copy read into memory) and the flow serves.
#[test]
fn offline_the_hosts_installer_and_debs_are_pushed_and_work() {
    let site = Site::new(&example_config());
    site.prepare();
    offline(&site);
    let installer = site.path("NVIDIA-Linux-x86_64-580.159.04.run");
    std::fs::write(&installer, "phoenix-emu nvidia-installer 580.159.04\n").unwrap();
    let dir = debs(&site, &TOOLKIT_DEBS);
    settings(
        &site,
        &[("nvidia_installer", &installer), ("nvidia_debs", &dir)],
    );
    site.run_ok();
    let cmds = commands(&site);
    assert!(
        cmds.contains(&(
            "pct".into(),
            vec![
                "push".into(),
                "901".into(),
                installer.display().to_string(),
                "/root/NVIDIA-Linux-x86_64-580.159.04.run".into(),
                "--perms".into(),
                "0755".into()
            ]
        )),
        "the installer is pushed from its host path: {cmds:?}"
    );
    let deb = dir.join("nvidia-container-toolkit_1.17.8-1_amd64.deb");
    assert!(cmds.iter().any(|(t, a)| t == "pct"
        && a.first().is_some_and(|p| p == "push")
        && a[2] == deb.display().to_string()
        && a[3] == "/root/nvidia-container-toolkit_1.17.8-1_amd64.deb"));
    assert!(
        !cmds
            .iter()
            .any(|(_, a)| a.first().is_some_and(|p| p == "curl")),
        "nothing downloaded"
    );
    assert_eq!(
        smi_inside(&site, "901", "driver_version"),
        "580.159.04\n580.159.04\n"
    );
    assert!(ct_file(&site, "/usr/bin/nvidia-ctk").is_some());
    assert!(ct_file(&site, "/root/nvidia-container-toolkit_1.17.8-1_amd64.deb").is_none());
    // A second run pushes nothing again.
    let before = site.calls().len();
    site.run_ok();
    assert!(
        !commands(&site)[before..]
            .iter()
            .any(|(t, a)| t == "pct" && a.first().is_some_and(|p| p == "push")),
        "a re-run pushes nothing"
    );
}

/// Offline with the driver userspace as packages too: no `.run` at all.
#[test]
fn offline_driver_packages_of_the_hosts_version_are_installed() {
    let site = Site::new(&example_config());
    site.prepare();
    offline(&site);
    let mut packages = TOOLKIT_DEBS.to_vec();
    packages.push(("nvidia-utils-580", "580.159.04-0ubuntu1"));
    packages.push(("libnvidia-compute-580", "580.159.04-0ubuntu1"));
    let dir = debs(&site, &packages);
    settings(&site, &[("nvidia_debs", &dir)]);
    site.run_ok();
    assert_eq!(
        smi_inside(&site, "901", "driver_version"),
        "580.159.04\n580.159.04\n"
    );
    assert!(
        !commands(&site)
            .iter()
            .any(|(_, a)| a.first().is_some_and(|p| p.ends_with(".run")))
    );
}

#[test]
fn host_sources_of_another_version_or_not_a_file_are_refused_before_any_push() {
    let site = Site::new(&example_config());
    site.prepare();
    offline(&site);
    let installer = site.path("NVIDIA-Linux-x86_64-570.86.15.run");
    std::fs::write(&installer, "phoenix-emu nvidia-installer 570.86.15\n").unwrap();
    settings(&site, &[("nvidia_installer", &installer)]);
    let out = site.run(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("is driver 570.86.15 but the host runs 580.159.04"),
        "{}",
        out.stderr
    );
    assert!(!commands(&site).iter().any(|(t, a)| t == "pct"
        && a.first().is_some_and(|p| p == "push")
        && a[2].ends_with(".run")));

    let fifo = site.path("fifo/NVIDIA-Linux-x86_64-580.159.04.run");
    std::fs::create_dir_all(fifo.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    settings(&site, &[("nvidia_installer", &fifo)]);
    let out = site.run(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("is not a regular file"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_container_userspace_of_another_version_is_a_clear_error() {
    let site = Site::new(&example_config());
    site.prepare();
    site.run_ok();
    std::fs::write(
        site.rootfs("usr/bin/nvidia-smi"),
        "phoenix-emu nvidia-smi 570.86.15\n",
    )
    .unwrap();
    let out = site.run(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("NVIDIA driver mismatch: the container's userspace is 570.86.15, the host's driver is 580.159.04"),
        "{}",
        out.stderr
    );
}

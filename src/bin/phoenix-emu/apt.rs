//! `apt-get` inside an emulated container: `update` and `install`.
//!
//! The emulated archive knows a handful of packages ([`PACKAGES`]); installing one records
//! it in the container's state and writes its files into the rootfs (so `test -x
//! /usr/bin/docker` sees it), and `docker.io`'s maintainer script enables and starts
//! `docker.service`, as Debian's does. Decisions:
//! - a fresh template has empty package lists: `install` before any `update` cannot locate
//!   anything (`E: Unable to locate package X`, exit 100), as on a fresh PVE template;
//! - without `-y`, an install that has something to do reads the answer from stdin and,
//!   stdin not being a terminal, aborts (`Abort.`, exit 1), as apt-get does;
//! - options: `-y`/`--yes`/`--assume-yes`, `-q`/`-qq`/`--quiet`, `--no-install-recommends`,
//!   `-o Key=Value` (`--option`, `-oKey=Value`), bundles such as `-yq`; anything else is
//!   refused with apt's message and exit 100.

use serde::{Deserialize, Serialize};

use crate::container;
use crate::inner::Ct;
use crate::out::Out;

/// Package state of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AptState {
    /// Whether `apt-get update` ran (the package lists exist).
    #[serde(default)]
    pub updated: bool,
    /// Installed packages, in installation order.
    #[serde(default)]
    pub installed: Vec<String>,
}

/// One package of the emulated archive.
struct Package {
    name: &'static str,
    version: &'static str,
    /// `(path, mode, content)` written into the rootfs.
    files: &'static [(&'static str, u32, &'static str)],
    /// Units its maintainer script enables and starts.
    services: &'static [&'static str],
}

/// `docker.service` as Debian's docker.io ships it (shortened).
pub const DOCKER_UNIT: &str = "[Unit]\nDescription=Docker Application Container Engine\nAfter=network-online.target containerd.service\nWants=network-online.target\nRequires=docker.socket\n\n[Service]\nType=notify\nExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock\nExecReload=/bin/kill -s HUP $MAINPID\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n";

/// The toolkit's default `/etc/nvidia-container-runtime/config.toml` (the keys phoenix
/// cares about).
pub const CTK_CONFIG: &str = "#accept-nvidia-visible-devices-as-volume-mounts = false\n#accept-nvidia-visible-devices-envvar-when-unprivileged = true\ndisable-require = false\nsupported-driver-capabilities = \"compat32,compute,display,graphics,ngx,utility,video\"\n\n[nvidia-container-cli]\nenvironment = []\nldconfig = \"@/sbin/ldconfig.real\"\nload-kmods = true\n#no-cgroups = false\n\n[nvidia-container-runtime]\nlog-level = \"info\"\nmode = \"auto\"\nruntimes = [\"runc\", \"crun\"]\n";

const STUB: &str = "phoenix-emu stub\n";

/// The emulated archive.
const PACKAGES: &[Package] = &[
    Package {
        name: "docker.io",
        version: "26.1.3-0ubuntu1~24.04.1",
        files: &[
            ("/usr/bin/docker", 0o755, STUB),
            ("/usr/sbin/dockerd", 0o755, STUB),
            ("/lib/systemd/system/docker.service", 0o644, DOCKER_UNIT),
        ],
        services: &["docker.service"],
    },
    Package {
        name: "nvidia-container-toolkit",
        version: "1.17.8-1",
        files: &[
            ("/usr/bin/nvidia-ctk", 0o755, STUB),
            ("/usr/bin/nvidia-container-runtime", 0o755, STUB),
            ("/usr/bin/nvidia-container-runtime-hook", 0o755, STUB),
            ("/usr/bin/nvidia-container-cli", 0o755, STUB),
            (
                "/etc/nvidia-container-runtime/config.toml",
                0o644,
                CTK_CONFIG,
            ),
        ],
        services: &[],
    },
    Package {
        name: "ca-certificates",
        version: "20240203",
        files: &[("/etc/ssl/certs/ca-certificates.crt", 0o644, STUB)],
        services: &[],
    },
    Package {
        name: "curl",
        version: "8.5.0-2ubuntu10.6",
        files: &[("/usr/bin/curl", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "gnupg",
        version: "2.4.4-2ubuntu17.3",
        files: &[("/usr/bin/gpg", 0o755, STUB)],
        services: &[],
    },
];

/// Whether `name` is installed in the container.
pub fn installed(st: &container::CtState, name: &str) -> bool {
    st.apt.installed.iter().any(|p| p == name)
}

/// `apt-get [options] update|install PKG…`.
pub fn run(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    let mut yes = false;
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let bad = |out: &mut Out| {
            out.err(format!(
                "E: Command line option '{}' [from {a}] is not understood in combination with the other options.\n",
                a.trim_start_matches('-')
            ));
            100
        };
        match a.as_str() {
            "-y" | "--yes" | "--assume-yes" => yes = true,
            "-q" | "-qq" | "--quiet" | "--no-install-recommends" => {}
            "-o" | "--option" => {
                let Some(v) = it.next() else {
                    out.err(format!(
                        "E: Command line option {a} is not understood in combination with the other options\n"
                    ));
                    return 100;
                };
                if !v.contains('=') {
                    out.err(format!(
                        "E: Option {v}: Configuration item specification must have an =<val>.\n"
                    ));
                    return 100;
                }
            }
            s if s.starts_with("-o") && s.contains('=') => {}
            s if s.starts_with("--") => return bad(out),
            s if s.starts_with('-') && s.len() > 1 => {
                for c in s[1..].chars() {
                    match c {
                        'y' => yes = true,
                        'q' => {}
                        _ => return bad(out),
                    }
                }
            }
            _ => words.push(a.as_str()),
        }
    }
    let Some((cmd, pkgs)) = words.split_first() else {
        out.err("E: No command given\n");
        return 100;
    };
    match *cmd {
        "update" => {
            if !pkgs.is_empty() {
                out.err("E: The update command takes no arguments\n");
                return 100;
            }
            match container::update_state(ct.root, ct.vmid, |st| st.apt.updated = true) {
                Ok(()) => {
                    out.out("Hit:1 http://archive.ubuntu.com/ubuntu noble InRelease\nReading package lists...\n");
                    0
                }
                Err(e) => {
                    out.err(format!("E: {e}\n"));
                    100
                }
            }
        }
        "install" => install(ct, pkgs, yes, out),
        other => {
            out.err(format!("E: Invalid operation {other}\n"));
            100
        }
    }
}

fn install(ct: &Ct<'_>, names: &[&str], yes: bool, out: &mut Out) -> i32 {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    out.out(
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\n",
    );
    let mut todo: Vec<&Package> = Vec::new();
    for n in names {
        let pkg = PACKAGES.iter().find(|p| p.name == *n);
        let Some(pkg) = pkg.filter(|_| st.apt.updated) else {
            out.err(format!("E: Unable to locate package {n}\n"));
            return 100;
        };
        if installed(&st, n) {
            out.out(format!(
                "{n} is already the newest version ({}).\n",
                pkg.version
            ));
        } else if !todo.iter().any(|p| p.name == pkg.name) {
            todo.push(pkg);
        }
    }
    if todo.is_empty() {
        out.out("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n");
        return 0;
    }
    out.out("The following NEW packages will be installed:\n ");
    for p in &todo {
        out.out(format!(" {}", p.name));
    }
    out.out(format!(
        "\n0 upgraded, {} newly installed, 0 to remove and 0 not upgraded.\n",
        todo.len()
    ));
    if !yes {
        out.out("Do you want to continue? [Y/n] Abort.\n");
        return 1;
    }
    for p in &todo {
        for (path, mode, content) in p.files {
            if let Err(e) = write_file(ct, path, *mode, content) {
                out.err(format!("dpkg: error processing archive {}: {e}\n", p.name));
                return 100;
            }
        }
        out.out(format!("Setting up {} ({}) ...\n", p.name, p.version));
    }
    let res = container::update_state(ct.root, ct.vmid, |st| {
        for p in &todo {
            st.apt.installed.push(p.name.to_owned());
        }
        for p in &todo {
            for unit in p.services {
                crate::systemd::postinst_enable_start(ct, st, unit);
            }
        }
    });
    if let Err(e) = res {
        out.err(format!("E: {e}\n"));
        return 100;
    }
    0
}

/// Write one file of a package into the rootfs.
pub fn write_file(ct: &Ct<'_>, path: &str, mode: u32, content: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let p = container::resolve(ct.root, ct.vmid, ct.conf, path);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&p, content)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
}

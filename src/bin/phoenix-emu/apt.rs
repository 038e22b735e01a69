//! `apt-get` inside an emulated container (`update`, `install`, `remove`, `purge`) and
//! `dpkg --remove|--purge`.
//!
//! The emulated archives know a handful of packages ([`PACKAGES`]); installing one records
//! it in the container's state and writes its files into the rootfs (so `test -x
//! /usr/bin/docker` sees it), and `docker.io`'s maintainer script enables and starts
//! `docker.service`, as Debian's does.
//!
//! Archives: Ubuntu's (always reachable: the distribution's mirror), NVIDIA's
//! libnvidia-container repository, which Ubuntu does not carry, and Docker's (below). `nvidia-container-toolkit` is
//! installable only after `apt-get update` fetched NVIDIA's repository, which needs a source
//! file under `/etc/apt/sources.list.d/` naming
//! `https://nvidia.github.io/libnvidia-container/stable/deb/$(ARCH) /` with a `signed-by`
//! keyring holding NVIDIA's key (the `gpg --dearmor` output of its `gpgkey`), and the
//! container reaching the internet (the root's `ct_network` setting). A missing key fails as
//! apt does (`NO_PUBKEY DDCAE044F796ECB0`, "is not signed", exit 100: NVIDIA/libnvidia-container
//! issue #301); an unreachable repository only warns (exit 0) and its packages stay unknown.
//! The toolkit's packages and their exact-version dependencies follow NVIDIA's packaging
//! (NVIDIA/nvidia-container-toolkit `packaging/debian/control` and `*.install`, d34b304):
//! `nvidia-container-toolkit` needs `nvidia-container-toolkit-base (= V)` and
//! `libnvidia-container-tools (= V)`, which needs `libnvidia-container1 (= V)`.
//!
//! `install` also takes local `.deb` files (an argument with a `/`). An emulated `.deb` is a
//! text file `phoenix-emu deb NAME VERSION`: the toolkit's packages, or the driver userspace
//! `nvidia-utils-NNN` (needs `libnvidia-compute-NNN` of the same version; installs
//! `/usr/bin/nvidia-smi` of the driver version before the `-`). Anything else is not a
//! Debian archive, as dpkg-deb says. Dependencies must be met by the other files of the same
//! command, installed packages or a fetched repository, else apt's "unmet dependencies"
//! (exit 100).
//!
//! Ubuntu's archive holds the packages of [`PACKAGES`] under their Ubuntu 24.04 (noble)
//! names and versions (packages.ubuntu.com/noble): what the recipes in `recipes/` and
//! `stdlib/` install, and a few tools config entries commonly name. A third archive is
//! Docker's own repository (download.docker.com/linux/ubuntu, suite `noble`, component
//! `stable`), set up as Docker's install guide says, with the five packages the guide
//! installs. A name that no fetched archive has fails as apt-get does: `E: Unable to locate
//! package NAME`, exit 100 (apt `apt-private/private-install.cc`, the "Unable to locate
//! package %s" error of `TryToInstall`/cacheset's `PackageContainer` when no package
//! matches), before anything is installed.
//!
//! Decisions:
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
    /// Installed versions by package.
    #[serde(default)]
    pub versions: std::collections::BTreeMap<String, String>,
    /// Extra repositories whose index the last `update` fetched.
    #[serde(default)]
    pub repos: Vec<String>,
}

/// Where a package is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// Ubuntu's archive (its mirror is always reachable).
    Ubuntu,
    /// NVIDIA's libnvidia-container repository.
    Nvidia,
    /// Docker's own repository for Ubuntu (download.docker.com).
    Docker,
}

/// A third-party apt repository the emulated internet serves.
struct Repo {
    /// Which packages it publishes.
    origin: Origin,
    /// Its URL as apt shows it (`$(ARCH)` expanded, no trailing `/`).
    url: &'static str,
    /// The suite of its `deb` line (`/` for a flat repository).
    suite: &'static str,
    /// The host apt resolves.
    host: &'static str,
    /// The long id of the key that signs its `InRelease`.
    key_id: &'static str,
    /// Its key as the vendor serves it (ASCII-armored): apt ≥ 1.4 accepts it as is in
    /// `signed-by` when the file ends in `.asc` (apt `sources.list(5)`, "signed-by").
    armored: &'static str,
    /// The same key after `gpg --dearmor` (a binary keyring in reality).
    keyring: &'static str,
    /// The size apt prints for its `InRelease`.
    release_size: &'static str,
}

/// The third-party repositories the emulated internet serves.
const REPOS: &[Repo] = &[
    Repo {
        origin: Origin::Nvidia,
        url: NVIDIA_REPO,
        suite: "/",
        host: "nvidia.github.io",
        key_id: "DDCAE044F796ECB0",
        armored: NVIDIA_GPGKEY,
        keyring: NVIDIA_KEYRING,
        release_size: "1,477 B",
    },
    // Docker's install guide for Ubuntu ("Install using the apt repository",
    // docs.docker.com/engine/install/ubuntu/): key from
    // https://download.docker.com/linux/ubuntu/gpg saved as /etc/apt/keyrings/docker.asc,
    // `deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc]
    // https://download.docker.com/linux/ubuntu noble stable`. The key's fingerprint is the
    // one the guide publishes, 9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88.
    Repo {
        origin: Origin::Docker,
        url: DOCKER_REPO,
        suite: "noble",
        host: "download.docker.com",
        key_id: "8D81803C0EBFCD88",
        armored: DOCKER_GPGKEY,
        keyring: DOCKER_KEYRING,
        release_size: "48.8 kB",
    },
];

/// One package of the emulated archives.
struct Package {
    name: &'static str,
    version: &'static str,
    origin: Origin,
    /// Packages it needs at exactly its own version.
    depends: &'static [&'static str],
    /// Packages it needs at any version.
    needs: &'static [&'static str],
    /// `(path, mode, content)` written into the rootfs.
    files: &'static [(&'static str, u32, &'static str)],
    /// Units its maintainer script enables and starts.
    services: &'static [&'static str],
}

/// NVIDIA's repository (the line of its `nvidia-container-toolkit.list`, `$(ARCH)` as apt
/// expands it).
pub const NVIDIA_REPO: &str = "https://nvidia.github.io/libnvidia-container/stable/deb/amd64";

/// NVIDIA's signing key as `https://nvidia.github.io/libnvidia-container/gpgkey` serves it
/// (emulated: armored text naming the key id).
pub const NVIDIA_GPGKEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nphoenix-emu NVIDIA libnvidia-container key DDCAE044F796ECB0\n-----END PGP PUBLIC KEY BLOCK-----\n";

/// The same key after `gpg --dearmor` (a binary keyring in reality).
pub const NVIDIA_KEYRING: &str = "phoenix-emu keyring DDCAE044F796ECB0\n";

/// Docker's repository for Ubuntu (the `deb` line's URL).
pub const DOCKER_REPO: &str = "https://download.docker.com/linux/ubuntu";

/// Docker's signing key as `https://download.docker.com/linux/ubuntu/gpg` serves it
/// (emulated: armored text naming the key id).
pub const DOCKER_GPGKEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nphoenix-emu Docker Release (CE deb) key 8D81803C0EBFCD88\n-----END PGP PUBLIC KEY BLOCK-----\n";

/// Docker's key after `gpg --dearmor`.
pub const DOCKER_KEYRING: &str = "phoenix-emu keyring 8D81803C0EBFCD88\n";

/// `docker.service` as Debian's docker.io ships it (shortened).
pub const DOCKER_UNIT: &str = "[Unit]\nDescription=Docker Application Container Engine\nAfter=network-online.target containerd.service\nWants=network-online.target\nRequires=docker.socket\n\n[Service]\nType=notify\nExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock\nExecReload=/bin/kill -s HUP $MAINPID\nRestart=always\n\n[Install]\nWantedBy=multi-user.target\n";

/// The toolkit's default `/etc/nvidia-container-runtime/config.toml` (the keys phoenix
/// cares about).
pub const CTK_CONFIG: &str = "#accept-nvidia-visible-devices-as-volume-mounts = false\n#accept-nvidia-visible-devices-envvar-when-unprivileged = true\ndisable-require = false\nsupported-driver-capabilities = \"compat32,compute,display,graphics,ngx,utility,video\"\n\n[nvidia-container-cli]\nenvironment = []\nldconfig = \"@/sbin/ldconfig.real\"\nload-kmods = true\n#no-cgroups = false\n\n[nvidia-container-runtime]\nlog-level = \"info\"\nmode = \"auto\"\nruntimes = [\"runc\", \"crun\"]\n";

const STUB: &str = "phoenix-emu stub\n";

/// apt's explanation before a list of unmet dependencies.
const UNMET: &str = "Some packages could not be installed. This may mean that you have\nrequested an impossible situation or if you are using the unstable\ndistribution that some required packages have not yet been created\nor been moved out of Incoming.\nThe following information may help to resolve the situation:\n\nThe following packages have unmet dependencies:\n";

/// The emulated archive.
const PACKAGES: &[Package] = &[
    Package {
        name: "docker.io",
        version: "26.1.3-0ubuntu1~24.04.1",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
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
        origin: Origin::Nvidia,
        depends: &["nvidia-container-toolkit-base", "libnvidia-container-tools"],
        needs: &[],
        files: &[("/usr/bin/nvidia-container-runtime-hook", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "nvidia-container-toolkit-base",
        version: "1.17.8-1",
        origin: Origin::Nvidia,
        depends: &[],
        needs: &[],
        files: &[
            ("/usr/bin/nvidia-ctk", 0o755, STUB),
            ("/usr/bin/nvidia-container-runtime", 0o755, STUB),
            ("/usr/bin/nvidia-cdi-hook", 0o755, STUB),
            (
                "/etc/nvidia-container-runtime/config.toml",
                0o644,
                CTK_CONFIG,
            ),
        ],
        services: &[],
    },
    Package {
        name: "libnvidia-container-tools",
        version: "1.17.8-1",
        origin: Origin::Nvidia,
        depends: &["libnvidia-container1"],
        needs: &[],
        files: &[("/usr/bin/nvidia-container-cli", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "libnvidia-container1",
        version: "1.17.8-1",
        origin: Origin::Nvidia,
        depends: &[],
        needs: &[],
        files: &[(
            "/usr/lib/x86_64-linux-gnu/libnvidia-container.so.1",
            0o644,
            STUB,
        )],
        services: &[],
    },
    Package {
        name: "ca-certificates",
        version: "20240203",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/etc/ssl/certs/ca-certificates.crt", 0o644, STUB)],
        services: &[],
    },
    Package {
        name: "curl",
        version: "8.5.0-2ubuntu10.6",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/curl", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "gnupg",
        version: "2.4.4-2ubuntu17.3",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/gpg", 0o755, STUB)],
        services: &[],
    },
    // Ubuntu 24.04's transitional package, which NVIDIA's guide installs.
    Package {
        name: "gnupg2",
        version: "2.4.4-2ubuntu17.3",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &["gnupg"],
        files: &[],
        services: &[],
    },
    // More of Ubuntu 24.04's archive, under their noble names and versions
    // (packages.ubuntu.com/noble/<name>, noble-updates where it has a newer one): what the
    // cookbook's recipes and common `packages` entries install. Each brings its main
    // program; services are not emulated for them.
    Package {
        name: "git",
        version: "1:2.43.0-1ubuntu7.3",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/git", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "jq",
        version: "1.7.1-3ubuntu0.24.04.1",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/jq", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "htop",
        version: "3.3.0-4build1",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/htop", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "tmux",
        version: "3.4-1ubuntu0.1",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/tmux", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "wget",
        version: "1.21.4-1ubuntu4.1",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/wget", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "vim",
        version: "2:9.1.0016-1ubuntu7.9",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/vim.basic", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "unzip",
        version: "6.0-28ubuntu4.1",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/unzip", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "rsync",
        version: "3.2.7-1ubuntu1.2",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/rsync", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "python3",
        version: "3.12.3-0ubuntu2",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/python3", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "python3-pip",
        version: "24.0+dfsg-1ubuntu1.3",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/pip3", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "build-essential",
        version: "12.10ubuntu1",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[(
            "/usr/share/build-essential/essential-packages-list",
            0o644,
            STUB,
        )],
        services: &[],
    },
    Package {
        name: "lsb-release",
        version: "12.0-2",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/lsb_release", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "apt-transport-https",
        version: "2.8.3",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/share/doc/apt-transport-https/copyright", 0o644, STUB)],
        services: &[],
    },
    Package {
        name: "nginx",
        version: "1.24.0-2ubuntu7.5",
        origin: Origin::Ubuntu,
        depends: &[],
        needs: &[],
        files: &[("/usr/sbin/nginx", 0o755, STUB)],
        services: &[],
    },
    // Docker's repository for noble (download.docker.com/linux/ubuntu/dists/noble/
    // stable), the five packages its install guide installs; `docker-ce` needs the CLI and
    // containerd (its control file's Depends) and its maintainer script starts
    // docker.service, as docker.io's does.
    Package {
        name: "docker-ce",
        version: "5:28.5.1-1~ubuntu.24.04~noble",
        origin: Origin::Docker,
        depends: &[],
        needs: &["containerd.io", "docker-ce-cli"],
        files: &[
            ("/usr/bin/dockerd", 0o755, STUB),
            ("/lib/systemd/system/docker.service", 0o644, DOCKER_UNIT),
        ],
        services: &["docker.service"],
    },
    Package {
        name: "docker-ce-cli",
        version: "5:28.5.1-1~ubuntu.24.04~noble",
        origin: Origin::Docker,
        depends: &[],
        needs: &[],
        files: &[("/usr/bin/docker", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "containerd.io",
        version: "1.7.28-1~ubuntu.24.04~noble",
        origin: Origin::Docker,
        depends: &[],
        needs: &[],
        files: &[
            ("/usr/bin/containerd", 0o755, STUB),
            ("/usr/bin/runc", 0o755, STUB),
        ],
        services: &[],
    },
    Package {
        name: "docker-buildx-plugin",
        version: "0.29.1-1~ubuntu.24.04~noble",
        origin: Origin::Docker,
        depends: &[],
        needs: &[],
        files: &[("/usr/libexec/docker/cli-plugins/docker-buildx", 0o755, STUB)],
        services: &[],
    },
    Package {
        name: "docker-compose-plugin",
        version: "2.40.0-1~ubuntu.24.04~noble",
        origin: Origin::Docker,
        depends: &[],
        needs: &[],
        files: &[(
            "/usr/libexec/docker/cli-plugins/docker-compose",
            0o755,
            STUB,
        )],
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
            update(ct, out)
        }
        "install" => install(ct, pkgs, yes, out),
        "remove" => remove(ct, pkgs, yes, false, out),
        "purge" => remove(ct, pkgs, yes, true, out),
        other => {
            out.err(format!("E: Invalid operation {other}\n"));
            100
        }
    }
}

/// The `deb [options] URL SUITE` lines of the container's `sources.list.d/*.list` files,
/// as `(signed-by keyring, URL with $(ARCH) expanded, suite)`.
fn sources(ct: &Ct<'_>) -> Vec<(Option<String>, String, String)> {
    let dir = ct.path("/etc/apt/sources.list.d");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "list"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("deb ") else {
                continue;
            };
            let mut rest = rest.trim_start();
            let mut signed_by = None;
            if let Some(r) = rest.strip_prefix('[') {
                let Some((opts, after)) = r.split_once(']') else {
                    continue;
                };
                for o in opts.split_whitespace() {
                    if let Some(k) = o.strip_prefix("signed-by=") {
                        signed_by = Some(k.to_owned());
                    }
                }
                rest = after.trim_start();
            }
            let mut w = rest.split_whitespace();
            let (Some(url), Some(suite)) = (w.next(), w.next()) else {
                continue;
            };
            out.push((
                signed_by,
                url.replace("$(ARCH)", "amd64")
                    .trim_end_matches('/')
                    .to_owned(),
                suite.to_owned(),
            ));
        }
    }
    out
}

/// `apt-get update`: Ubuntu's mirror, then each extra source ([`REPOS`]; anything else is a
/// 404 without a Release file, as apt reports a repository that does not exist).
fn update(ct: &Ct<'_>, out: &mut Out) -> i32 {
    let online = ct.root.settings.ct_network == crate::root::CtNetwork::Internet;
    out.out("Hit:1 http://archive.ubuntu.com/ubuntu noble InRelease\n");
    let mut fetched = Vec::new();
    let mut code = 0;
    let mut warnings = String::new();
    for (n, (signed_by, url, suite)) in sources(ct).into_iter().enumerate() {
        let n = n + 2;
        let Some(repo) = REPOS.iter().find(|r| r.url == url && r.suite == suite) else {
            out.out(format!(
                "Err:{n} {url} {suite} Release\n  404  Not Found [IP: 185.199.108.153 443]\n"
            ));
            warnings.push_str(&format!(
                "E: The repository '{url} {suite} Release' does not have a Release file.\n"
            ));
            code = 100;
            continue;
        };
        // A flat repository (`URL /`) shows as `URL  InRelease`, a suite as `URL SUITE InRelease`.
        let label = if suite == "/" {
            format!("{url} ")
        } else {
            format!("{url} {suite}")
        };
        let host = repo.host;
        if !online {
            out.out(format!(
                "Ign:{n} {label} InRelease\nErr:{n} {label} InRelease\n  Temporary failure resolving '{host}'\n"
            ));
            warnings.push_str(&format!(
                "W: Failed to fetch {url}/{}InRelease  Temporary failure resolving '{host}'\nW: Some index files failed to download. They have been ignored, or old ones used instead.\n",
                if suite == "/" { String::new() } else { format!("dists/{suite}/") }
            ));
            continue;
        }
        let key_ok = signed_by.as_deref().is_some_and(|k| {
            std::fs::read_to_string(ct.path(k))
                .is_ok_and(|t| t == repo.keyring || (k.ends_with(".asc") && t == repo.armored))
        });
        let key = repo.key_id;
        let size = repo.release_size;
        if !key_ok {
            out.out(format!(
                "Get:{n} {label} InRelease [{size}]\nErr:{n} {label} InRelease\n  The following signatures couldn't be verified because the public key is not available: NO_PUBKEY {key}\n"
            ));
            warnings.push_str(&format!(
                "W: GPG error: {label} InRelease: The following signatures couldn't be verified because the public key is not available: NO_PUBKEY {key}\nE: The repository '{label} InRelease' is not signed.\nN: Updating from such a repository can't be done securely, and is therefore disabled by default.\nN: See apt-secure(8) manpage for repository creation and user configuration details.\n"
            ));
            code = 100;
            continue;
        }
        let index = if suite == "/" {
            format!("{url}  Packages")
        } else {
            format!("{url} {suite}/stable amd64 Packages")
        };
        out.out(format!(
            "Get:{n} {label} InRelease [{size}]\nGet:{} {index} [25.2 kB]\n",
            n + 1
        ));
        fetched.push(url);
    }
    out.out("Reading package lists...\n");
    out.err(warnings);
    let res = container::update_state(ct.root, ct.vmid, |st| {
        st.apt.updated = true;
        st.apt.repos = fetched;
    });
    if let Err(e) = res {
        out.err(format!("E: {e}\n"));
        return 100;
    }
    code
}

/// One package to install: its name, version, files, units and dependencies.
struct Candidate {
    name: String,
    version: String,
    files: Vec<(String, u32, String)>,
    services: Vec<&'static str>,
    depends: Vec<String>,
    needs: Vec<String>,
}

impl Candidate {
    fn of(p: &Package, version: &str) -> Self {
        Self {
            name: p.name.to_owned(),
            version: version.to_owned(),
            files: p
                .files
                .iter()
                .map(|(a, m, c)| ((*a).to_owned(), *m, (*c).to_owned()))
                .collect(),
            services: p.services.to_vec(),
            depends: p.depends.iter().map(|d| (*d).to_owned()).collect(),
            needs: p.needs.iter().map(|d| (*d).to_owned()).collect(),
        }
    }
}

/// Whether archive package `p` can be installed (its archive was fetched).
fn available(st: &container::CtState, p: &Package) -> bool {
    match p.origin {
        Origin::Ubuntu => st.apt.updated,
        origin => REPOS
            .iter()
            .filter(|r| r.origin == origin)
            .any(|r| st.apt.repos.iter().any(|f| f == r.url)),
    }
}

/// The driver userspace packages (`nvidia-utils-NNN`, `libnvidia-compute-NNN`) of a `.deb`.
fn driver_package(name: &str, version: &str) -> Option<Candidate> {
    let driver = version.split('-').next().unwrap_or(version);
    let branch = |prefix: &str| {
        name.strip_prefix(prefix)
            .filter(|b| !b.is_empty() && b.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_owned)
    };
    if let Some(b) = branch("nvidia-utils-") {
        return Some(Candidate {
            name: name.to_owned(),
            version: version.to_owned(),
            files: vec![(
                "/usr/bin/nvidia-smi".into(),
                0o755,
                format!("phoenix-emu nvidia-smi {driver}\n"),
            )],
            services: Vec::new(),
            depends: vec![format!("libnvidia-compute-{b}")],
            needs: Vec::new(),
        });
    }
    branch("libnvidia-compute-").map(|_| Candidate {
        name: name.to_owned(),
        version: version.to_owned(),
        files: vec![
            (
                "/usr/lib/x86_64-linux-gnu/libcuda.so.1".into(),
                0o644,
                format!("phoenix-emu libcuda {driver}\n"),
            ),
            (
                "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1".into(),
                0o644,
                format!("phoenix-emu libnvidia-ml {driver}\n"),
            ),
        ],
        services: Vec::new(),
        depends: Vec::new(),
        needs: Vec::new(),
    })
}

/// A local `.deb` argument.
fn local_deb(ct: &Ct<'_>, arg: &str) -> Result<Candidate, String> {
    let text = std::fs::read(ct.path(arg))
        .map_err(|_| format!("E: Unsupported file {arg} given on commandline\n"))?;
    let text = String::from_utf8_lossy(&text);
    let parsed = text
        .trim()
        .strip_prefix("phoenix-emu deb ")
        .and_then(|r| r.split_once(' '));
    let not_deb = || {
        format!(
            "dpkg-deb: error: '{arg}' is not a Debian format archive\nE: Sub-process dpkg-deb returned an error code (2)\n"
        )
    };
    let Some((name, version)) = parsed else {
        return Err(not_deb());
    };
    if let Some(p) = PACKAGES.iter().find(|p| p.name == name) {
        return Ok(Candidate::of(p, version));
    }
    driver_package(name, version).ok_or_else(not_deb)
}

fn install(ct: &Ct<'_>, names: &[&str], yes: bool, out: &mut Out) -> i32 {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    out.out(
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\n",
    );
    let mut todo: Vec<Candidate> = Vec::new();
    for n in names {
        let c = if n.contains('/') {
            match local_deb(ct, n) {
                Ok(c) => c,
                Err(m) => {
                    out.err(m);
                    return 100;
                }
            }
        } else {
            let pkg = PACKAGES.iter().find(|p| p.name == *n);
            let Some(pkg) = pkg.filter(|p| available(&st, p)) else {
                out.err(format!("E: Unable to locate package {n}\n"));
                return 100;
            };
            Candidate::of(pkg, pkg.version)
        };
        if st.apt.versions.get(&c.name) == Some(&c.version)
            || (installed(&st, &c.name) && !st.apt.versions.contains_key(&c.name))
        {
            out.out(format!(
                "{} is already the newest version ({}).\n",
                c.name, c.version
            ));
        } else if !todo.iter().any(|t| t.name == c.name) {
            todo.push(c);
        }
    }
    // Dependencies, each at exactly the version of the package that needs it: from this
    // command, installed, or pulled from a fetched archive.
    let mut i = 0;
    while i < todo.len() {
        for dep in todo[i].depends.clone() {
            let want = todo[i].version.clone();
            if todo.iter().any(|t| t.name == dep) {
                continue;
            }
            let have = st.apt.versions.get(&dep).cloned().or_else(|| {
                installed(&st, &dep).then(|| {
                    PACKAGES
                        .iter()
                        .find(|p| p.name == dep)
                        .map_or_else(String::new, |p| p.version.to_owned())
                })
            });
            if have.as_deref() == Some(want.as_str()) {
                continue;
            }
            match PACKAGES
                .iter()
                .find(|p| p.name == dep && available(&st, p) && p.version == want)
            {
                Some(p) => todo.push(Candidate::of(p, p.version)),
                None => {
                    out.out(UNMET);
                    out.out(format!(
                        " {} : Depends: {dep} (= {want}) but it is not installable\n",
                        todo[i].name
                    ));
                    out.err("E: Unable to correct problems, you have held broken packages.\n");
                    return 100;
                }
            }
        }
        // Dependencies at any version: installed, from this command, or the archive's.
        for dep in todo[i].needs.clone() {
            if installed(&st, &dep) || todo.iter().any(|t| t.name == dep) {
                continue;
            }
            match PACKAGES.iter().find(|p| p.name == dep && available(&st, p)) {
                Some(p) => todo.push(Candidate::of(p, p.version)),
                None => {
                    out.out(UNMET);
                    out.out(format!(
                        " {} : Depends: {dep} but it is not installable\n",
                        todo[i].name
                    ));
                    out.err("E: Unable to correct problems, you have held broken packages.\n");
                    return 100;
                }
            }
        }
        i += 1;
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
        for (path, mode, content) in &p.files {
            if let Err(e) = write_file(ct, path, *mode, content) {
                out.err(format!("dpkg: error processing archive {}: {e}\n", p.name));
                return 100;
            }
        }
        out.out(format!("Setting up {} ({}) ...\n", p.name, p.version));
    }
    let res = container::update_state(ct.root, ct.vmid, |st| {
        for p in &todo {
            if !st.apt.installed.contains(&p.name) {
                st.apt.installed.push(p.name.clone());
            }
            st.apt.versions.insert(p.name.clone(), p.version.clone());
        }
        for p in &todo {
            for unit in &p.services {
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

/// The installed packages that need `name` (at its version or any).
fn dependents(st: &container::CtState, name: &str) -> Vec<String> {
    st.apt
        .installed
        .iter()
        .filter(|i| {
            PACKAGES.iter().any(|p| {
                p.name == i.as_str() && (p.depends.contains(&name) || p.needs.contains(&name))
            })
        })
        .cloned()
        .collect()
}

/// `apt-get remove|purge PKG…`: each package and the installed packages that depend on it
/// go, with their files; a service a removed package ran is stopped and disabled first (its
/// `prerm`, as Debian's docker.io and Docker's docker-ce do). A package the lists know but
/// that is not installed is "not installed, so not removed" (exit 0); one they do not know
/// cannot be located (exit 100), as apt-get says.
fn remove(ct: &Ct<'_>, names: &[&str], yes: bool, purge: bool, out: &mut Out) -> i32 {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    out.out(
        "Reading package lists...\nBuilding dependency tree...\nReading state information...\n",
    );
    let mut gone: Vec<String> = Vec::new();
    for n in names {
        if installed(&st, n) {
            if !gone.iter().any(|g| g == n) {
                gone.push((*n).to_owned());
            }
            continue;
        }
        if PACKAGES.iter().any(|p| p.name == *n && available(&st, p)) {
            out.out(format!("Package '{n}' is not installed, so not removed\n"));
            continue;
        }
        out.err(format!("E: Unable to locate package {n}\n"));
        return 100;
    }
    // What depends on a removed package goes with it.
    let mut i = 0;
    while i < gone.len() {
        for d in dependents(&st, &gone[i]) {
            if !gone.contains(&d) {
                gone.push(d);
            }
        }
        i += 1;
    }
    if gone.is_empty() {
        out.out("0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n");
        return 0;
    }
    out.out("The following packages will be REMOVED:\n ");
    for g in &gone {
        out.out(format!(" {g}{}", if purge { "*" } else { "" }));
    }
    out.out(format!(
        "\n0 upgraded, 0 newly installed, {} to remove and 0 not upgraded.\n",
        gone.len()
    ));
    if !yes {
        out.out("Do you want to continue? [Y/n] Abort.\n");
        return 1;
    }
    take_away(ct, &st, &gone, purge, out)
}

/// Remove the installed packages `gone` (their files; a service they ran stopped and
/// disabled first, as their `prerm` does), purging their configuration with `purge`.
fn take_away(
    ct: &Ct<'_>,
    st: &container::CtState,
    gone: &[String],
    purge: bool,
    out: &mut Out,
) -> i32 {
    let pkgs: Vec<&Package> = gone
        .iter()
        .filter_map(|g| PACKAGES.iter().find(|p| p.name == g.as_str()))
        .collect();
    if pkgs
        .iter()
        .any(|p| p.services.contains(&crate::systemd::DOCKER_SERVICE))
    {
        crate::docker::daemon_stopping(ct);
    }
    for g in gone {
        let version = st.apt.versions.get(g).cloned().unwrap_or_default();
        out.out(format!("Removing {g} ({version}) ...\n"));
        if let Some(p) = PACKAGES.iter().find(|p| p.name == g.as_str()) {
            for (path, _, _) in p.files {
                let _ = std::fs::remove_file(container::resolve(ct.root, ct.vmid, ct.conf, path));
            }
        }
        if purge {
            out.out(format!(
                "Purging configuration files for {g} ({version}) ...\n"
            ));
        }
    }
    let res = container::update_state(ct.root, ct.vmid, |st| {
        st.apt.installed.retain(|i| !gone.contains(i));
        st.apt.versions.retain(|k, _| !gone.contains(k));
        for p in &pkgs {
            for unit in p.services {
                if let Some(u) = st.systemd.units.get_mut(*unit) {
                    u.active = false;
                    u.enabled = false;
                    u.failed = false;
                }
            }
        }
    });
    if let Err(e) = res {
        out.err(format!("E: {e}\n"));
        return 100;
    }
    0
}

/// `dpkg --remove|-r|--purge|-P PKG…`: removes installed packages without asking and
/// without apt's archive: a name that is not installed (known or not) is only a warning,
/// "ignoring request to remove X which isn't installed", and the exit stays 0 (dpkg
/// `src/main/remove.c`, `deferred_remove`); a package another installed package (not
/// removed with it) depends on is refused, "dependency problems prevent removal", exit 1.
/// This is what makes `dpkg --purge` a safe undo step for an `apt-get install` that may
/// have failed before installing anything.
pub fn dpkg(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    let Some((action, names)) = args.split_first() else {
        out.err("dpkg: error: need an action option\n\nType dpkg --help for help about installing and deinstalling packages [*];\nUse 'apt' or 'aptitude' for user-friendly package management;\nType dpkg -Dhelp for a list of dpkg debug flag values;\nType dpkg --force-help for a list of forcing options;\nType dpkg-deb --help for help about manipulating *.deb files;\n\nOptions marked [*] produce a lot of output - pipe it through 'less' or 'more' !\n");
        return 2;
    };
    let purge = match action.as_str() {
        "--purge" | "-P" => true,
        "--remove" | "-r" => false,
        other => {
            out.err(format!("dpkg: error: unknown option {other}\n\nType dpkg --help for help about installing and deinstalling packages [*];\n"));
            return 2;
        }
    };
    if names.is_empty() {
        out.err(format!(
            "dpkg: error: {action} needs at least one package name argument\n"
        ));
        return 2;
    }
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    let mut gone: Vec<String> = Vec::new();
    for n in names {
        if installed(&st, n) {
            if !gone.contains(n) {
                gone.push(n.clone());
            }
        } else {
            out.err(format!(
                "dpkg: warning: ignoring request to remove {n} which isn't installed\n"
            ));
        }
    }
    for g in &gone {
        let blockers: Vec<String> = dependents(&st, g)
            .into_iter()
            .filter(|d| !gone.contains(d))
            .collect();
        if !blockers.is_empty() {
            let mut m = format!("dpkg: dependency problems prevent removal of {g}:\n");
            for b in &blockers {
                m.push_str(&format!(" {b} depends on {g}.\n"));
            }
            m.push_str(&format!("\ndpkg: error processing package {g} (--{}):\n dependency problems - not removing\nErrors were encountered while processing:\n {g}\n", if purge { "purge" } else { "remove" }));
            out.err(m);
            return 1;
        }
    }
    if gone.is_empty() {
        return 0;
    }
    out.out("(Reading database ... 16234 files and directories currently installed.)\n");
    match take_away(ct, &st, &gone, purge, out) {
        0 => 0,
        _ => 2,
    }
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

/// `dpkg-query -W|--show [-f FORMAT | --showformat=FORMAT] PACKAGE…`, as dpkg 1.22's
/// `src/query/main.c` (`showpackages`) answers for exact names: each installed package is
/// printed with the format (default `${binary:Package}\t${Version}\n`; backslash escapes
/// `\n` `\t` `\\` are expanded, an unknown field is empty); a name that matches no package
/// gets "dpkg-query: no packages found matching NAME" on stderr and the exit status is 1.
/// Fields: `Package`, `binary:Package`, `Version`, `Status` (`install ok installed`),
/// `db:Status-Status` (`installed`), `db:Status-Abbrev` (`ii `).
pub fn dpkg_query(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    let mut show = false;
    let mut format = "${binary:Package}\t${Version}\n".to_owned();
    let mut names: Vec<&String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-W" | "--show" => show = true,
            "-f" | "--showformat" => match it.next() {
                Some(f) => format = f.clone(),
                None => {
                    out.err(format!("dpkg-query: error: option {a} requires a value\n"));
                    return 2;
                }
            },
            s if s.starts_with("--showformat=") => format = s["--showformat=".len()..].to_owned(),
            // dpkg's option parser (lib/dpkg/options.c) takes the rest of `-fVALUE` as the
            // value: `-f=X` is the format `=X`.
            s if s.starts_with("-f") && s.len() > 2 => format = s[2..].to_owned(),
            s if s.starts_with('-') => {
                out.err(format!("dpkg-query: error: unknown option {s}\n"));
                return 2;
            }
            _ => names.push(a),
        }
    }
    if !show {
        out.err("dpkg-query: error: need an action option\n");
        return 2;
    }
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    let mut code = 0;
    for n in names {
        if !installed(&st, n) {
            out.err(format!("dpkg-query: no packages found matching {n}\n"));
            code = 1;
            continue;
        }
        let version = st.apt.versions.get(n.as_str()).cloned().unwrap_or_default();
        out.out(render_showformat(&format, |field| match field {
            "Package" | "binary:Package" => n.clone(),
            "Version" => version.clone(),
            "Status" => "install ok installed".to_owned(),
            "db:Status-Status" => "installed".to_owned(),
            "db:Status-Abbrev" => "ii ".to_owned(),
            _ => String::new(),
        }));
    }
    code
}

/// Expand `${field}` (by `value`) and backslash escapes in a dpkg-query format.
fn render_showformat(format: &str, value: impl Fn(&str) -> String) -> String {
    let mut s = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') => s.push('\n'),
                Some('t') => s.push('\t'),
                Some(o) => s.push(o),
                None => s.push('\\'),
            },
            '$' if chars.peek() == Some(&'{') => {
                chars.next();
                let field: String = chars.by_ref().take_while(|c| *c != '}').collect();
                // `${field;width}`: the width is ignored here.
                let name = field.split(';').next().unwrap_or_default();
                s.push_str(&value(name));
            }
            c => s.push(c),
        }
    }
    s
}

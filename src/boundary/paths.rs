//! Host paths a bind mount may come from (DESIGN.md §12).
//!
//! A recipe names a host path for `lxc.mount`; the container then sees that directory,
//! writable, as root. So a path is accepted only when, after canonicalisation (`..`,
//! `.`, repeated and trailing slashes and every symlink resolved, on the host itself):
//! - it lies inside one of the mount roots the operator listed in settings
//!   (`PHOENIX_MOUNT_ROOTS`, default: none), and
//! - it is not, does not lie inside and does not contain a protected directory: the
//!   host's own (`/`, `/etc`, `/dev`, `/proc`, `/sys`, `/root`, `/boot`, `/run`, `/usr`,
//!   …), Proxmox VE's (`/var/lib/vz`, `/var/lib/pve-cluster`, `/etc/pve`, …) and
//!   phoenix's own (state, secrets, key, logs).
//!
//! The canonical path is what goes into the container's config, never the recipe's
//! spelling, so a symlink swapped in after the check cannot redirect an accepted mount
//! elsewhere through the recipe's path. (A symlink planted *inside* an accepted root later
//! is the root owner's business: roots are the operator's choice.)
//!
//! Case and Unicode tricks need no rule of their own: Linux paths are compared byte for
//! byte after canonicalisation, and `/ETC` is simply another (absent) directory.

use std::path::{Component, Path, PathBuf};

use super::{Refusal, Rule};

/// Directories no bind mount may expose, touch or contain: the host's system directories
/// and Proxmox VE's state (pve-container, pve-cluster, pve-storage's default `local` dir
/// storage `/var/lib/vz`).
pub const FORBIDDEN: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/lib/lxc",
    "/var/lib/lxcfs",
    "/var/lib/pve-cluster",
    "/var/lib/pve-firewall",
    "/var/lib/pve-manager",
    "/var/lib/vz",
    "/var/log/pve",
    "/var/run",
];

/// `path` made absolute and normalised without touching the file system: `.` and repeated
/// slashes dropped, `..` applied (never above `/`).
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether `inner` is `outer` or lies below it (component-wise: `/srvx` is not in `/srv`).
pub fn within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

/// The protected directory that `path` (canonical) is, lies in or contains, if any.
/// `/` is protected as itself only (everything lies below it).
pub fn protected_by<'a>(path: &Path, protected: &'a [PathBuf]) -> Option<&'a PathBuf> {
    protected.iter().find(|p| {
        if p.as_os_str() == "/" {
            path == Path::new("/")
        } else {
            within(path, p) || within(p, path)
        }
    })
}

/// The built-in protected directories plus `extra` (phoenix's own directories), each also
/// in its canonical form when it exists (so `/var/run` → `/run` is caught either way).
pub fn protected_set(extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let builtin = FORBIDDEN.iter().map(PathBuf::from);
    for p in builtin.chain(extra.iter().cloned()) {
        let lex = lexical(&p);
        if let Ok(real) = std::fs::canonicalize(&lex) {
            if !out.contains(&real) {
                out.push(real);
            }
        }
        if !out.contains(&lex) {
            out.push(lex);
        }
    }
    out
}

/// Check a host path the recipe gave (`source` as written) and return its canonical form.
pub fn check_host_path(
    call: &'static str,
    source: &str,
    roots: &[PathBuf],
    protected: &[PathBuf],
) -> Result<PathBuf, Refusal> {
    let refuse = |detail: String| Refusal::new(call, Rule::HostPaths, detail);
    let shown = crate::types::show(source);
    if !source.starts_with('/') {
        return Err(refuse(format!("{shown} is not an absolute host path")));
    }
    // The spelling first (no file system access): `/etc/`, `/./etc`, `/srv/../etc`.
    let lex = lexical(Path::new(source));
    if let Some(p) = protected_by(&lex, protected) {
        return Err(refuse(protected_message(&shown, &lex, p)));
    }
    let real = std::fs::canonicalize(source).map_err(|e| {
        refuse(format!(
            "{shown} cannot be resolved on the host ({e}); a bind mount source must exist"
        ))
    })?;
    if let Some(p) = protected_by(&real, protected) {
        return Err(refuse(protected_message(&shown, &real, p)));
    }
    if !roots.iter().any(|r| within(&real, r)) {
        let listed = if roots.is_empty() {
            "none are set".to_owned()
        } else {
            roots
                .iter()
                .map(|r| r.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(refuse(format!(
            "{shown} (resolved: {}) is not inside a mount root; a bind mount comes from a phoenix-owned dataset under the models parent, or from a directory inside the roots listed in PHOENIX_MOUNT_ROOTS ({listed})",
            real.display()
        )));
    }
    Ok(real)
}

fn protected_message(shown: &str, resolved: &Path, p: &Path) -> String {
    let how = if p == Path::new("/") {
        "is the host's root directory".to_owned()
    } else if within(resolved, p) {
        format!("is inside the protected host directory {}", p.display())
    } else {
        format!("contains the protected host directory {}", p.display())
    };
    format!(
        "{shown} (resolved: {}) {how}; a container must never see the host's system, Proxmox VE's or phoenix's own files",
        resolved.display()
    )
}

/// Check the mount roots from settings: each must exist, be canonical-able and not be a
/// protected directory. Returns their canonical forms.
pub fn check_roots(roots: &[PathBuf], protected: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    roots
        .iter()
        .map(|r| {
            let real = std::fs::canonicalize(r)
                .map_err(|e| format!("mount root {} cannot be resolved: {e}", r.display()))?;
            if let Some(p) = protected_by(&real, protected) {
                return Err(format!(
                    "mount root {} (resolved: {}) is or touches the protected directory {}",
                    r.display(),
                    real.display(),
                    p.display()
                ));
            }
            Ok(real)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_normalises_without_the_file_system() {
        for (input, want) in [
            ("/etc/", "/etc"),
            ("//etc//pve/", "/etc/pve"),
            ("/srv/../etc", "/etc"),
            ("/../../etc/./x", "/etc/x"),
            ("/", "/"),
        ] {
            assert_eq!(lexical(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn protected_is_equal_inside_or_containing() {
        let set = protected_set(&[]);
        for bad in [
            "/",
            "/etc",
            "/etc/pve",
            "/var/lib",
            "/var",
            "/var/lib/vz/images",
            "/dev/shm",
        ] {
            assert!(protected_by(Path::new(bad), &set).is_some(), "{bad}");
        }
        for ok in [
            "/srv/models",
            "/tank/models/x",
            "/var/lib/phoenix-models",
            "/mnt/data",
        ] {
            assert!(protected_by(Path::new(ok), &set).is_none(), "{ok}");
        }
    }

    #[test]
    fn host_paths_resolve_symlinks_and_stay_inside_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("models");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("out-link")).unwrap();
        let protected = protected_set(&[]);
        let roots = check_roots(std::slice::from_ref(&root), &protected).unwrap();
        let real_root = std::fs::canonicalize(&root).unwrap();
        let ok = check_host_path(
            "lxc.mount",
            &format!("{}/a/", root.display()),
            &roots,
            &protected,
        )
        .unwrap();
        assert_eq!(ok, real_root.join("a"));
        let err = |p: String| {
            check_host_path("lxc.mount", &p, &roots, &protected)
                .unwrap_err()
                .to_string()
        };
        let e = err(format!("{}/etc-link", root.display()));
        assert!(
            e.contains("(host paths)")
                && e.contains("resolved: /etc) is inside the protected host directory /etc"),
            "{e}"
        );
        let e = err(format!("{}/out-link", root.display()));
        assert!(e.contains("is not inside a mount root"), "{e}");
        let e = err(format!("{}/../outside", root.display()));
        assert!(e.contains("is not inside a mount root"), "{e}");
        let e = err("/".into());
        assert!(e.ends_with("is the host's root directory; a container must never see the host's system, Proxmox VE's or phoenix's own files"), "{e}");
        let e = err("/etc/../etc/pve/".into());
        assert!(
            e.contains("(resolved: /etc/pve) is inside the protected host directory /etc"),
            "{e}"
        );
        let e = err("/var".into());
        assert!(e.contains("contains the protected host directory"), "{e}");
        let e = err(format!("{}/nope", root.display()));
        assert!(e.contains("cannot be resolved on the host"), "{e}");
        assert!(check_roots(&[PathBuf::from("/etc")], &protected).is_err());
    }
}

//! The emulated host's files outside containers (`$ROOT/hostfs`, where datasets mount and
//! bind mounts come from): who owns them, `stat` and `chown` on them, and what that means
//! for a container that writes through a bind mount.
//!
//! The emulator does not run as root, so it cannot really give a directory to uid 100000:
//! owners are recorded in `$ROOT/hostfs-owners.json` (path → `[uid, gid]`); a path with no
//! record is `0:0`, as a dataset's root directory is when `zfs create` (run as root) mounts
//! it. A record counts only while its path exists, and `zfs create` clears the record of
//! the new mountpoint, so a re-created dataset is root's again.
//!
//! An unprivileged container's root is a host uid: the `lxc.idmap` entry for container
//! id 0, else 100000 (proxmox/pve-container `src/PVE/LXC.pm` `parse_id_maps`, 94f5585:
//! without `lxc.idmap` lines an unprivileged container gets `u 0 100000 65536` and
//! `g 0 100000 65536`). Writing below a bind mount whose host directory is not owned by
//! that uid is refused with `Permission denied`, as the kernel refuses it (host uid 0 is
//! not mapped in the container's user namespace: the directory shows as `nobody:nogroup`
//! inside and its mode gives others no write); a privileged container's root is the host's
//! root. Proxmox VE gives only the volumes it allocates to the mapped root (`mkfs` with
//! `root_owner`, `mountpoint_mount`), never a bind-mounted host directory. Simplification:
//! the owner of the mount's host directory decides for everything below it (the
//! container's own files there are its root's anyway).
//!
//! `stat -c FORMAT PATH…` (GNU coreutils: `%u` `%g` `%U` `%G` `%a` `%n`) and
//! `chown [-R] OWNER[:GROUP] PATH…` (numeric ids, or `root`) answer with coreutils' texts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::ctconf::CtConf;
use crate::out::Out;
use crate::root::{Root, RootError, read_json, write_json};

/// The host file of host path `path` (`/rpool/x` → `$ROOT/hostfs/rpool/x`).
pub fn file(root: &Root, path: &str) -> PathBuf {
    root.join("hostfs").join(path.trim_start_matches('/'))
}

fn owners_file(root: &Root) -> PathBuf {
    root.join("hostfs-owners.json")
}

/// The owner `(uid, gid)` of host path `path` (recorded, else root's).
pub fn owner(root: &Root, path: &str) -> Result<(u32, u32), RootError> {
    let owners: BTreeMap<String, (u32, u32)> = read_json(&owners_file(root))?;
    Ok(owners.get(&normal(path)).copied().unwrap_or((0, 0)))
}

/// `/a//b/` → `/a/b`.
fn normal(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Record `path`'s owner (`None`: forget it, root's again). Takes the root lock.
pub fn set_owner(root: &Root, path: &str, ids: Option<(u32, u32)>) -> Result<(), RootError> {
    let _lock = root.lock()?;
    set_owner_locked(root, path, ids)
}

/// [`set_owner`] for a caller that holds the root lock (`zfs create`).
pub fn set_owner_locked(root: &Root, path: &str, ids: Option<(u32, u32)>) -> Result<(), RootError> {
    let file = owners_file(root);
    let mut owners: BTreeMap<String, (u32, u32)> = read_json(&file)?;
    let key = normal(path);
    match ids {
        // Root's is what no record says.
        Some(ids) if ids != (0, 0) => owners.insert(key, ids),
        _ => owners.remove(&key),
    };
    // Records of paths that went away (a destroyed dataset) go too.
    owners.retain(|p, _| self::file(root, p).exists());
    if owners.is_empty() {
        // Nothing recorded: no file (a host where nothing was given away looks untouched).
        return match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RootError::io("remove", &file, e))
            }
            _ => Ok(()),
        };
    }
    write_json(&file, &owners)
}

/// The host uid and gid a container's root is (`None`: a privileged container, root).
pub fn ct_root_ids(conf: &CtConf) -> Option<(u32, u32)> {
    let mut uid = None;
    let mut gid = None;
    for (k, v) in &conf.lxc {
        if k != "lxc.idmap" {
            continue;
        }
        let f: Vec<&str> = v.split_whitespace().collect();
        if let [kind, "0", host, _len] = f.as_slice() {
            let host = host.parse().ok();
            match *kind {
                "u" => uid = host,
                "g" => gid = host,
                _ => {}
            }
        }
    }
    let mapped = conf.lxc.iter().any(|(k, _)| k == "lxc.idmap");
    if !mapped && conf.get("unprivileged") == Some("1") {
        return Some((100_000, 100_000));
    }
    mapped.then(|| (uid.unwrap_or(0), gid.unwrap_or(0)))
}

/// Whether container root may write below the host directory `source` of a bind mount.
pub fn ct_may_write(root: &Root, conf: &CtConf, source: &str) -> Result<bool, RootError> {
    let Some((uid, _)) = ct_root_ids(conf) else {
        return Ok(true);
    };
    Ok(owner(root, source)?.0 == uid)
}

/// `stat -c FORMAT PATH…` on the host: modes from the host's files, owners from the
/// emulated ownership ([`owner`]).
pub fn stat(root: &Root, args: &[String], out: &mut Out) -> i32 {
    use std::os::unix::fs::PermissionsExt;
    stat_with(args, out, |p, _| {
        let meta = std::fs::metadata(file(root, p)).ok()?;
        Some(owner(root, p).map(|(uid, gid)| (meta.permissions().mode(), uid, gid)))
    })
}

/// GNU coreutils `stat` (9.4, `src/stat.c`): `[-L|--dereference] -c|--format=FORMAT
/// [--] PATH…`, each path's line printed with `%u` `%g` `%U` `%G` `%a` `%n` `%%` expanded
/// and a newline added; a path that is not there is "cannot statx 'PATH': No such file or
/// directory" on stderr, the others are still printed, and the exit code is 1.
/// `lookup(path, dereference)` gives `(mode, uid, gid)`, `None` when the path is not there.
pub fn stat_with(
    args: &[String],
    out: &mut Out,
    lookup: impl Fn(&str, bool) -> Option<Result<(u32, u32, u32), RootError>>,
) -> i32 {
    let mut format = None;
    let mut deref = false;
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" | "--format" => match it.next() {
                Some(f) => format = Some(f.clone()),
                None => {
                    out.err("stat: option requires an argument -- 'c'\nTry 'stat --help' for more information.\n");
                    return 1;
                }
            },
            "-L" | "--dereference" => deref = true,
            "--" => paths.extend(it.by_ref().cloned()),
            s if s.starts_with("--format=") => format = Some(s["--format=".len()..].to_owned()),
            s if s.starts_with('-') && s.len() > 1 => {
                out.err(format!(
                    "stat: invalid option -- '{}'\nTry 'stat --help' for more information.\n",
                    &s[1..]
                ));
                return 1;
            }
            _ => paths.push(a.clone()),
        }
    }
    let Some(format) = format else {
        out.err("phoenix-emu: stat: only `stat -c FORMAT` is emulated\n");
        return 1;
    };
    if paths.is_empty() {
        out.err("stat: missing operand\nTry 'stat --help' for more information.\n");
        return 1;
    }
    let mut code = 0;
    for p in &paths {
        let (mode, uid, gid) = match lookup(p, deref) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                out.err(format!("phoenix-emu: {e}\n"));
                return 1;
            }
            None => {
                out.err(format!(
                    "stat: cannot statx '{p}': No such file or directory\n"
                ));
                code = 1;
                continue;
            }
        };
        let name = |id: u32| {
            if id == 0 {
                "root".to_owned()
            } else {
                "UNKNOWN".to_owned()
            }
        };
        let mut s = String::new();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                s.push(c);
                continue;
            }
            match chars.next() {
                Some('u') => s.push_str(&uid.to_string()),
                Some('g') => s.push_str(&gid.to_string()),
                Some('U') => s.push_str(&name(uid)),
                Some('G') => s.push_str(&name(gid)),
                Some('a') => s.push_str(&format!("{:o}", mode & 0o7777)),
                Some('n') => s.push_str(p),
                Some('%') => s.push('%'),
                Some(other) => {
                    s.push('%');
                    s.push(other);
                }
                None => s.push('%'),
            }
        }
        out.out(s + "\n");
    }
    code
}

/// An owner or group: a number, or `root`.
fn id_of(s: &str) -> Option<u32> {
    if s == "root" {
        return Some(0);
    }
    s.parse().ok()
}

/// `chown [-R] OWNER[:GROUP] PATH…`.
pub fn chown(root: &Root, args: &[String], out: &mut Out) -> i32 {
    let mut recursive = false;
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "-R" | "--recursive" => recursive = true,
            s if s.starts_with('-') && s.len() > 1 => {
                out.err(format!(
                    "chown: invalid option -- '{}'\nTry 'chown --help' for more information.\n",
                    &s[1..]
                ));
                return 1;
            }
            _ => rest.push(a.clone()),
        }
    }
    let Some((spec, paths)) = rest.split_first() else {
        out.err("chown: missing operand\nTry 'chown --help' for more information.\n");
        return 1;
    };
    if paths.is_empty() {
        out.err(format!(
            "chown: missing operand after '{spec}'\nTry 'chown --help' for more information.\n"
        ));
        return 1;
    }
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec.as_str(), None),
    };
    let Some(uid) = id_of(user) else {
        out.err(format!("chown: invalid user: '{spec}'\n"));
        return 1;
    };
    let gid = match group {
        None => None,
        Some(g) => match id_of(g) {
            Some(g) => Some(g),
            None => {
                out.err(format!("chown: invalid group: '{spec}'\n"));
                return 1;
            }
        },
    };
    let mut code = 0;
    for p in paths {
        let host = file(root, p);
        if !host.exists() {
            out.err(format!(
                "chown: cannot access '{p}': No such file or directory\n"
            ));
            code = 1;
            continue;
        }
        let mut targets = vec![normal(p)];
        if recursive {
            let mut stack = vec![host.clone()];
            while let Some(d) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&d) else {
                    continue;
                };
                for e in entries.flatten() {
                    let path = e.path();
                    if let Ok(rel) = path.strip_prefix(root.join("hostfs")) {
                        targets.push(format!("/{}", rel.display()));
                    }
                    if path.is_dir() {
                        stack.push(path);
                    }
                }
            }
        }
        for t in targets {
            let result = owner(root, &t)
                .and_then(|(_, old_gid)| set_owner(root, &t, Some((uid, gid.unwrap_or(old_gid)))));
            if let Err(e) = result {
                out.err(format!("phoenix-emu: {e}\n"));
                return 1;
            }
        }
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_root_follows_the_idmap_or_the_unprivileged_default() {
        let conf = |t: &str| CtConf::parse(t);
        assert_eq!(ct_root_ids(&conf("arch: amd64\n")), None);
        assert_eq!(
            ct_root_ids(&conf("unprivileged: 1\n")),
            Some((100_000, 100_000))
        );
        assert_eq!(
            ct_root_ids(&conf(
                "unprivileged: 1\nlxc.idmap: u 0 200000 65536\nlxc.idmap: g 0 300000 65536\n"
            )),
            Some((200_000, 300_000))
        );
        assert_eq!(normal("/a//b/"), "/a/b");
    }
}

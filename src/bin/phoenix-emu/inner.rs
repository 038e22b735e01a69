//! Programs inside an emulated container (`pct exec <vmid> -- prog args…`).
//!
//! Dispatch is a table from program name (argv[0]'s file name, so `/usr/bin/test` works) to
//! a function; the later Docker, apt-get, systemctl, nvidia-ctk and vLLM emulations are more
//! rows. A program not in the table fails as lxc-attach does when `execvp` finds nothing,
//! with exit 127: no shell exists in an emulated container.
//!
//! Emulated: `ip -j -4 addr show dev eth0` (iproute2's JSON and text, with the
//! container's loopback address), `cat`, `test`, `stat -c`, `mkdir`, `rmdir`, `rm`, `chmod`, `chpasswd` (records
//! which users got a password, never the password), `du -s -b` ([`crate::disk`]: sizes as
//! the emulated disks count them), `apt-get` ([`crate::apt`]),
//! `systemctl`/`journalctl` ([`crate::systemd`]), and, once their package put the program
//! into the rootfs, `curl` and `gpg` ([`crate::fetch`]), `docker` ([`crate::docker`]),
//! `nvidia-ctk` and `nvidia-smi` ([`crate::nvctk`]): a program whose file is missing is not
//! found (127). A path to an NVIDIA `.run` installer runs [`crate::nvctk::installer`].

use std::path::Path;

use serde::Serialize;

use crate::container::{self, CtState};
use crate::ctconf::CtConf;
use crate::out::Out;
use crate::root::Root;

/// What a program sees.
pub struct Ct<'a> {
    /// The emulated host.
    pub root: &'a Root,
    /// The container.
    pub vmid: u32,
    /// Its config.
    pub conf: &'a CtConf,
}

impl Ct<'_> {
    /// Where `path` inside the container lives.
    pub fn path(&self, path: &str) -> std::path::PathBuf {
        container::resolve(self.root, self.vmid, self.conf, path)
    }

    /// Whether the container's root may write at `path`: below a bind mount, only when
    /// the host directory is owned by the host uid the container's root is
    /// ([`crate::hostfs::ct_may_write`]).
    pub fn may_write(&self, path: &str) -> bool {
        match container::host_bind_of(self.conf, path) {
            None => true,
            Some(source) => {
                crate::hostfs::ct_may_write(self.root, self.conf, &source).unwrap_or(false)
            }
        }
    }
}

type Program = fn(&Ct<'_>, &[String], &[u8], &mut Out) -> i32;

/// The program table: each program, and the file a package must have installed for it
/// to exist (`None`: part of the base system).
fn lookup(name: &str) -> Option<(Program, Option<&'static str>)> {
    Some(match name {
        "ip" => (ip, None),
        "cat" => (cat, None),
        "test" => (test, None),
        "stat" => (stat, None),
        "mkdir" => (mkdir, None),
        "rmdir" => (rmdir, None),
        "rm" => (rm, None),
        "chmod" => (chmod, None),
        "chpasswd" => (chpasswd, None),
        "apt-get" => (crate::apt::run, None),
        "dpkg" => (crate::apt::dpkg, None),
        "dpkg-query" => (crate::apt::dpkg_query, None),
        "systemctl" => (crate::systemd::systemctl, None),
        "journalctl" => (crate::systemd::journalctl, None),
        "du" => (crate::disk::du_program, None),
        "curl" => (crate::fetch::curl, Some("/usr/bin/curl")),
        "gpg" => (crate::fetch::gpg, Some("/usr/bin/gpg")),
        "docker" => (crate::docker::run, Some("/usr/bin/docker")),
        "nvidia-ctk" => (crate::nvctk::ctk, Some("/usr/bin/nvidia-ctk")),
        "nvidia-smi" => (crate::nvctk::smi, Some("/usr/bin/nvidia-smi")),
        _ => return None,
    })
}

/// Run `argv` inside container `vmid`; returns its exit code.
pub fn run(
    root: &Root,
    vmid: u32,
    conf: &CtConf,
    argv: &[String],
    stdin: &[u8],
    out: &mut Out,
) -> i32 {
    let prog = &argv[0];
    let name = Path::new(prog)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ct = Ct { root, vmid, conf };
    // A path to an NVIDIA `.run` installer runs it (it must be executable, as for execve).
    if prog.starts_with('/') {
        use std::os::unix::fs::PermissionsExt;
        let file = ct.path(prog);
        let version = std::fs::read(&file)
            .ok()
            .and_then(|b| crate::nvctk::installer_version(&b));
        if let Some(version) = version {
            let exec = std::fs::metadata(&file).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
            if !exec {
                out.err(format!(
                    "lxc-attach: {vmid}: ../src/lxc/attach.c: lxc_attach_run_command: 1841 Permission denied - Failed to exec \"{prog}\"\n"
                ));
                return 126;
            }
            return crate::nvctk::installer(&ct, &version, &argv[1..], out);
        }
    }
    let found = lookup(&name).filter(|(_, needs)| needs.is_none_or(|p| ct.path(p).is_file()));
    let Some((f, _)) = found else {
        out.err(format!(
            "lxc-attach: {vmid}: ../src/lxc/attach.c: lxc_attach_run_command: 1841 No such file or directory - Failed to exec \"{prog}\"\n"
        ));
        return 127;
    };
    f(&ct, &argv[1..], stdin, out)
}

fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.find(" (os error")
        .map_or(s.clone(), |i| s[..i].to_owned())
}

/// `ip [-j] [-4] addr|a|address [show|list] [dev] IFACE`.
fn ip(ct: &Ct<'_>, args: &[String], _: &[u8], out: &mut Out) -> i32 {
    let mut json = false;
    let mut rest = Vec::new();
    for a in args {
        match a.as_str() {
            "-j" | "-json" | "--json" => json = true,
            "-4" | "-family=inet" => {}
            _ => rest.push(a.as_str()),
        }
    }
    let Some((obj, tail)) = rest.split_first() else {
        out.err("Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }\n");
        return 255;
    };
    if !matches!(*obj, "a" | "addr" | "address") {
        out.err(format!(
            "phoenix-emu: only `ip [-j] [-4] addr show [dev IFACE]` is emulated, not `ip {obj}`\n"
        ));
        return 255;
    }
    let tail: Vec<&str> = tail
        .iter()
        .copied()
        .skip_while(|w| matches!(*w, "show" | "list" | "s" | "ls"))
        .collect();
    let dev = match tail.as_slice() {
        [] => None,
        ["dev", d] | [d] => Some(*d),
        _ => {
            out.err(format!(
                "Error: either \"dev\" is duplicate, or \"{}\" is a garbage.\n",
                tail.last().unwrap_or(&"")
            ));
            return 255;
        }
    };
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    let all = [loopback(), eth0(ct, &st)];
    let selected: Vec<&Link> = match dev {
        None => all.iter().collect(),
        Some(d) => match all.iter().find(|l| l.ifname == d) {
            Some(l) => vec![l],
            None => {
                out.err(format!("Device \"{d}\" does not exist.\n"));
                return 1;
            }
        },
    };
    if json {
        out.out(serde_json::to_string(&selected).unwrap_or_default());
        out.out("\n");
    } else {
        for l in selected {
            out.out(text_addr(l));
        }
    }
    0
}

/// One interface as `ip -j addr` prints it (field order as iproute2's).
#[derive(Debug, Serialize)]
struct Link {
    ifindex: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_index: Option<u32>,
    ifname: &'static str,
    flags: &'static [&'static str],
    mtu: u32,
    qdisc: &'static str,
    operstate: &'static str,
    group: &'static str,
    txqlen: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    link_netnsid: Option<u32>,
    addr_info: Vec<Addr>,
}

/// One IPv4 address of an interface.
#[derive(Debug, Serialize)]
struct Addr {
    family: &'static str,
    local: String,
    prefixlen: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    broadcast: Option<String>,
    scope: &'static str,
    label: &'static str,
    valid_life_time: u64,
    preferred_life_time: u64,
}

/// "forever" in iproute2's JSON.
const FOREVER: u64 = 4_294_967_295;

fn loopback() -> Link {
    Link {
        ifindex: 1,
        link_index: None,
        ifname: "lo",
        flags: &["LOOPBACK", "UP", "LOWER_UP"],
        mtu: 65536,
        qdisc: "noqueue",
        operstate: "UNKNOWN",
        group: "default",
        txqlen: 1000,
        link_netnsid: None,
        addr_info: vec![Addr {
            family: "inet",
            local: "127.0.0.1".into(),
            prefixlen: 8,
            broadcast: None,
            scope: "host",
            label: "lo",
            valid_life_time: FOREVER,
            preferred_life_time: FOREVER,
        }],
    }
}

/// The container's `eth0`, carrying its loopback address (none before it has one).
fn eth0(ct: &Ct<'_>, st: &CtState) -> Link {
    let addr_info = if st.address.is_empty() {
        Vec::new()
    } else {
        vec![Addr {
            family: "inet",
            local: st.address.clone(),
            prefixlen: 24,
            broadcast: Some(format!("{}.255", ct.root.loopback_prefix())),
            scope: "global",
            label: "eth0",
            valid_life_time: FOREVER,
            preferred_life_time: FOREVER,
        }]
    };
    Link {
        ifindex: 2,
        link_index: Some(100 + ct.vmid % 1000),
        ifname: "eth0",
        flags: &["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        mtu: 1500,
        qdisc: "noqueue",
        operstate: "UP",
        group: "default",
        txqlen: 1000,
        link_netnsid: Some(0),
        addr_info,
    }
}

/// iproute2's text form of one interface.
fn text_addr(l: &Link) -> String {
    let link = l.link_index.map(|i| format!("@if{i}")).unwrap_or_default();
    let mut s = format!(
        "{}: {}{link}: <{}> mtu {} qdisc {} state {} group {} qlen {}\n",
        l.ifindex,
        l.ifname,
        l.flags.join(","),
        l.mtu,
        l.qdisc,
        l.operstate,
        l.group,
        l.txqlen
    );
    for a in &l.addr_info {
        let brd = a
            .broadcast
            .as_ref()
            .map(|b| format!(" brd {b}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "    inet {}/{}{brd} scope {} {}\n       valid_lft forever preferred_lft forever\n",
            a.local, a.prefixlen, a.scope, a.label
        ));
    }
    s
}

/// `cat [FILE…]` (stdin when no file).
fn cat(ct: &Ct<'_>, args: &[String], stdin: &[u8], out: &mut Out) -> i32 {
    let files: Vec<&String> = args.iter().filter(|a| *a != "--").collect();
    if files.is_empty() {
        out.out(stdin);
        return 0;
    }
    let mut code = 0;
    for f in files {
        if f.starts_with('-') && f != "-" {
            out.err(format!(
                "cat: invalid option -- '{}'\n",
                f.trim_start_matches('-')
            ));
            return 1;
        }
        if f == "-" {
            out.out(stdin);
            continue;
        }
        match crate::nvctk::proc_file(ct, f) {
            Some(Ok(text)) => {
                out.out(text);
                continue;
            }
            Some(Err(())) => {
                out.err(format!("cat: {f}: No such file or directory\n"));
                code = 1;
                continue;
            }
            None => {}
        }
        let p = ct.path(f);
        if p.is_dir() {
            out.err(format!("cat: {f}: Is a directory\n"));
            code = 1;
            continue;
        }
        match std::fs::read(&p) {
            Ok(b) => out.out(b),
            Err(e) => {
                out.err(format!("cat: {f}: {}\n", io_text(&e)));
                code = 1;
            }
        }
    }
    code
}

/// `test -e|-f|-d|-s|-r|-w|-x PATH`, `test -n|-z STR`, `test STR`.
fn test(ct: &Ct<'_>, args: &[String], _: &[u8], out: &mut Out) -> i32 {
    use std::os::unix::fs::PermissionsExt;
    let res = match args {
        [] => false,
        [s] => !s.is_empty(),
        [op, s] if op == "-n" => !s.is_empty(),
        [op, s] if op == "-z" => s.is_empty(),
        [op, path] if op.len() == 2 && op.starts_with('-') => {
            let p = ct.path(path);
            let m = std::fs::metadata(&p);
            match op.as_str() {
                "-e" | "-r" => m.is_ok(),
                "-w" => m.is_ok() && ct.may_write(path),
                "-f" => m.is_ok_and(|m| m.is_file()),
                "-d" => m.is_ok_and(|m| m.is_dir()),
                "-s" => m.is_ok_and(|m| m.len() > 0),
                "-x" => m.is_ok_and(|m| m.permissions().mode() & 0o111 != 0),
                "-c" => m.is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_char_device() || m.is_file()
                }),
                _ => {
                    out.err(format!("test: {op}: unary operator expected\n"));
                    return 2;
                }
            }
        }
        [a, op, b] if op == "=" || op == "==" => a == b,
        [a, op, b] if op == "!=" => a != b,
        _ => {
            out.err("test: too many arguments\n");
            return 2;
        }
    };
    i32::from(!res)
}

/// `stat [-L] -c FORMAT PATH…` (coreutils; [`crate::hostfs::stat_with`]) on the
/// container's files: without `-L` a symbolic link is reported itself, as `lstat` does.
fn stat(ct: &Ct<'_>, args: &[String], _: &[u8], out: &mut Out) -> i32 {
    use std::os::unix::fs::MetadataExt;
    crate::hostfs::stat_with(args, out, |p, deref| {
        let file = ct.path(p);
        let meta = if deref {
            std::fs::metadata(file)
        } else {
            std::fs::symlink_metadata(file)
        };
        meta.ok().map(|m| Ok((m.mode(), m.uid(), m.gid())))
    })
}

/// `mkdir [-p] [-m MODE] DIR…`.
fn mkdir(ct: &Ct<'_>, args: &[String], _: &[u8], out: &mut Out) -> i32 {
    use std::os::unix::fs::PermissionsExt;
    let mut parents = false;
    let mut mode = None;
    let mut dirs = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-p" | "--parents" => parents = true,
            "-m" | "--mode" => match it.next().and_then(|m| u32::from_str_radix(m, 8).ok()) {
                Some(m) => mode = Some(m),
                None => {
                    out.err("mkdir: invalid mode\n");
                    return 1;
                }
            },
            s if s.starts_with('-') && s.len() > 1 => {
                out.err(format!("mkdir: invalid option -- '{}'\n", &s[1..]));
                return 1;
            }
            _ => dirs.push(a),
        }
    }
    if dirs.is_empty() {
        out.err("mkdir: missing operand\n");
        return 1;
    }
    let mut code = 0;
    for d in dirs {
        let p = ct.path(d);
        if !ct.may_write(d) {
            out.err(format!(
                "mkdir: cannot create directory '{d}': Permission denied\n"
            ));
            code = 1;
            continue;
        }
        let r = if parents {
            std::fs::create_dir_all(&p)
        } else {
            std::fs::create_dir(&p)
        };
        match r {
            Ok(()) => {
                if let Some(m) = mode {
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m));
                }
            }
            Err(e) => {
                out.err(format!(
                    "mkdir: cannot create directory '{d}': {}\n",
                    io_text(&e)
                ));
                code = 1;
            }
        }
    }
    code
}

/// `rmdir DIR…` (only empty directories).
fn rmdir(ct: &Ct<'_>, args: &[String], _: &[u8], out: &mut Out) -> i32 {
    if args.is_empty() {
        out.err("rmdir: missing operand\n");
        return 1;
    }
    let mut code = 0;
    for a in args {
        if a.starts_with('-') {
            out.err(format!(
                "rmdir: invalid option -- '{}'\n",
                a.trim_start_matches('-')
            ));
            return 1;
        }
        if let Err(e) = std::fs::remove_dir(ct.path(a)) {
            out.err(format!("rmdir: failed to remove '{a}': {}\n", io_text(&e)));
            code = 1;
        }
    }
    code
}

/// `rm [-f] [-r] PATH…`.
fn rm(ct: &Ct<'_>, args: &[String], _: &[u8], out: &mut Out) -> i32 {
    let (mut force, mut recursive) = (false, false);
    let mut paths = Vec::new();
    for a in args {
        if a.starts_with('-') && a.len() > 1 && a != "--" {
            for c in a.trim_start_matches('-').chars() {
                match c {
                    'f' => force = true,
                    'r' | 'R' => recursive = true,
                    _ => {
                        out.err(format!("rm: invalid option -- '{c}'\n"));
                        return 1;
                    }
                }
            }
        } else if a != "--" {
            paths.push(a);
        }
    }
    if paths.is_empty() && !force {
        out.err("rm: missing operand\n");
        return 1;
    }
    let mut code = 0;
    for a in paths {
        if container::normalize(a).is_empty() {
            out.err("rm: it is dangerous to operate recursively on '/'\n");
            code = 1;
            continue;
        }
        let p = ct.path(a);
        let r = match std::fs::symlink_metadata(&p) {
            Err(e) if force && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(m) if m.is_dir() && !recursive => {
                out.err(format!("rm: cannot remove '{a}': Is a directory\n"));
                code = 1;
                continue;
            }
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
            Ok(_) => std::fs::remove_file(&p),
        };
        if let Err(e) = r {
            out.err(format!("rm: cannot remove '{a}': {}\n", io_text(&e)));
            code = 1;
        }
    }
    code
}

/// `chmod MODE FILE…` with an octal mode (symbolic modes are not emulated).
fn chmod(ct: &Ct<'_>, args: &[String], _: &[u8], out: &mut Out) -> i32 {
    use std::os::unix::fs::PermissionsExt;
    let Some((mode, files)) = args.split_first() else {
        out.err("chmod: missing operand\n");
        return 1;
    };
    let Ok(m) = u32::from_str_radix(mode, 8) else {
        out.err(format!(
            "phoenix-emu: only octal modes are emulated, not chmod {mode}\n"
        ));
        return 1;
    };
    if files.is_empty() {
        out.err(format!("chmod: missing operand after '{mode}'\n"));
        return 1;
    }
    let mut code = 0;
    for f in files {
        if let Err(e) = std::fs::set_permissions(ct.path(f), std::fs::Permissions::from_mode(m)) {
            out.err(format!("chmod: cannot access '{f}': {}\n", io_text(&e)));
            code = 1;
        }
    }
    code
}

/// `chpasswd`: `user:password` lines on stdin; only the user names are recorded.
fn chpasswd(ct: &Ct<'_>, args: &[String], stdin: &[u8], out: &mut Out) -> i32 {
    if let Some(a) = args.first() {
        out.err(format!("chpasswd: unrecognized option '{a}'\n"));
        return 2;
    }
    let text = String::from_utf8_lossy(stdin);
    let mut users = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some((user, _password)) = line.split_once(':') else {
            out.err(format!(
                "chpasswd: line {}: missing new password\nchpasswd: error detected, changes ignored\n",
                i + 1
            ));
            return 1;
        };
        if container::lookup_id(ct.root, ct.vmid, "etc/passwd", user).is_none()
            || user.parse::<u32>().is_ok()
        {
            out.err(format!(
                "chpasswd: line {}: user '{user}' does not exist\nchpasswd: error detected, changes ignored\n",
                i + 1
            ));
            return 1;
        }
        users.push(user.to_owned());
    }
    let update = || -> Result<(), crate::root::RootError> {
        let _lock = ct.root.ct_lock(ct.vmid)?;
        let mut st = container::load_state(ct.root, ct.vmid)?;
        for u in users {
            if !st.passwords_set.contains(&u) {
                st.passwords_set.push(u);
            }
        }
        container::save_state(ct.root, ct.vmid, &st)
    };
    match update() {
        Ok(()) => 0,
        Err(e) => {
            out.err(format!("chpasswd: {e}\n"));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_json_matches_iproute2_byte_for_byte() {
        // `ip -j -4 addr show dev lo` on the development machine (iproute2 6.x).
        assert_eq!(
            serde_json::to_string(&[loopback()]).unwrap(),
            r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#
        );
        assert_eq!(
            text_addr(&loopback()),
            "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000\n    inet 127.0.0.1/8 scope host lo\n       valid_lft forever preferred_lft forever\n"
        );
    }
}

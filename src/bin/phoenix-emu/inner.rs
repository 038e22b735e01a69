//! Programs inside an emulated container (`pct exec <vmid> -- prog args…`).
//!
//! Dispatch is a table from program name (argv[0]'s file name, so `/usr/bin/test` works) to
//! a function; the later Docker, apt-get, systemctl, nvidia-ctk and vLLM emulations are more
//! rows. A program not in the table fails as lxc-attach does when `execvp` finds nothing,
//! with exit 127: no shell exists in an emulated container.
//!
//! Emulated now: `ip -j -4 addr show dev eth0` (iproute2's JSON and text, with the
//! container's loopback address), `cat`, `test`, `mkdir`, `rm`, `chpasswd` (records which
//! users got a password, never the password).

use std::path::Path;

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
    fn path(&self, path: &str) -> std::path::PathBuf {
        container::resolve(self.root, self.vmid, self.conf, path)
    }
}

type Program = fn(&Ct<'_>, &[String], &[u8], &mut Out) -> i32;

/// The program table.
fn lookup(name: &str) -> Option<Program> {
    Some(match name {
        "ip" => ip,
        "cat" => cat,
        "test" => test,
        "mkdir" => mkdir,
        "rm" => rm,
        "chpasswd" => chpasswd,
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
    let Some(f) = lookup(&name) else {
        out.err(format!(
            "lxc-attach: {vmid}: ../src/lxc/attach.c: lxc_attach_run_command: 1841 No such file or directory - Failed to exec \"{prog}\"\n"
        ));
        return 127;
    };
    let ct = Ct { root, vmid, conf };
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
    let lo = serde_json::json!({
        "ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "mtu": 65536,
        "qdisc": "noqueue", "operstate": "UNKNOWN", "group": "default", "txqlen": 1000,
        "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8, "scope": "host",
            "label": "lo", "valid_life_time": 4_294_967_295u64, "preferred_life_time": 4_294_967_295u64}]
    });
    let eth0 = eth0_json(ct, &st);
    let all = [("lo", lo), ("eth0", eth0)];
    let selected: Vec<&serde_json::Value> = match dev {
        None => all.iter().map(|(_, v)| v).collect(),
        Some(d) => match all.iter().find(|(n, _)| *n == d) {
            Some((_, v)) => vec![v],
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
        for v in selected {
            out.out(text_addr(v));
        }
    }
    0
}

fn eth0_json(ct: &Ct<'_>, st: &CtState) -> serde_json::Value {
    let mut v = serde_json::json!({
        "ifindex": 2, "link_index": 100 + (ct.vmid % 1000), "ifname": "eth0",
        "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "mtu": 1500, "qdisc": "noqueue",
        "operstate": "UP", "group": "default", "txqlen": 1000, "link_netnsid": 0,
        "addr_info": []
    });
    if !st.address.is_empty() {
        let bcast = format!("{}.255", ct.root.loopback_prefix());
        v["addr_info"] = serde_json::json!([{
            "family": "inet", "local": st.address, "prefixlen": 24, "broadcast": bcast,
            "scope": "global", "label": "eth0", "valid_life_time": 4_294_967_295u64,
            "preferred_life_time": 4_294_967_295u64
        }]);
    }
    v
}

/// iproute2's text form of one interface.
fn text_addr(v: &serde_json::Value) -> String {
    let flags: Vec<&str> = v["flags"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f.as_str()).collect())
        .unwrap_or_default();
    let name = v["ifname"].as_str().unwrap_or("");
    let link = if name == "eth0" { "@if100" } else { "" };
    let mut s = format!(
        "{}: {name}{link}: <{}> mtu {} qdisc noqueue state {} group default qlen 1000\n",
        v["ifindex"],
        flags.join(","),
        v["mtu"],
        v["operstate"].as_str().unwrap_or("")
    );
    for a in v["addr_info"].as_array().into_iter().flatten() {
        let brd = a["broadcast"]
            .as_str()
            .map(|b| format!(" brd {b}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "    inet {}/{}{brd} scope {} {name}\n       valid_lft forever preferred_lft forever\n",
            a["local"].as_str().unwrap_or(""),
            a["prefixlen"],
            a["scope"].as_str().unwrap_or("")
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
                "-e" | "-r" | "-w" => m.is_ok(),
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

//! `zfs`: datasets kept in `$ROOT/zfs.json`, answering `list`, `get` (with `-s` sources),
//! `create`, `destroy`, `set` and `inherit` with OpenZFS's output formats, error texts and
//! exit codes (1 for a failed operation, 2 for a usage error). Properties inherit as in
//! OpenZFS, user properties (`phoenix:owner`) included: a child created below a dataset
//! that sets one reports it with source `inherited from <parent>`, never `local`.
//!
//! A fresh host has the pools its settings name (`pools`, default `rpool`) and the datasets
//! of its `zfspool` storages ([`crate::pvesm`]). A dataset's `mountpoint` is inherited (`/<name>` by default) and its
//! directory is created under `$ROOT/hostfs`, where container bind mounts find it.
//! Decisions: only filesystems (no volumes, snapshots); sizes are nominal (`used` 96K);
//! values of native properties are checked for the properties phoenix may set (sizes,
//! on/off switches, compression, mountpoint, …); any other native property name is refused
//! as `invalid property`; user properties (`module:name`) take any value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::out::Out;
use crate::propstr;
use crate::root::{Root, RootError, read_json, write_json};

/// One dataset.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dataset {
    /// Properties set locally.
    pub props: BTreeMap<String, String>,
    /// Creation time (seconds since the epoch).
    pub creation: u64,
    /// Its guid.
    pub guid: u64,
}

/// All datasets by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pools {
    /// The datasets.
    pub datasets: BTreeMap<String, Dataset>,
}

/// Native properties in `zfs get all` order: (name, raw default, human default,
/// inheritable).
const NATIVE: &[(&str, &str, &str, bool)] = &[
    ("type", "filesystem", "filesystem", false),
    ("creation", "", "", false),
    ("used", "98304", "96K", false),
    ("available", "", "", false),
    ("referenced", "98304", "96K", false),
    ("compressratio", "1.00x", "1.00x", false),
    ("mounted", "yes", "yes", false),
    ("quota", "0", "none", false),
    ("reservation", "0", "none", false),
    ("recordsize", "131072", "128K", true),
    ("mountpoint", "", "", true),
    ("sharenfs", "off", "off", true),
    ("checksum", "on", "on", true),
    ("compression", "on", "on", true),
    ("atime", "on", "on", true),
    ("devices", "on", "on", true),
    ("exec", "on", "on", true),
    ("setuid", "on", "on", true),
    ("readonly", "off", "off", true),
    ("zoned", "off", "off", true),
    ("snapdir", "hidden", "hidden", true),
    ("aclmode", "discard", "discard", true),
    ("aclinherit", "restricted", "restricted", true),
    ("createtxg", "", "", false),
    ("canmount", "on", "on", false),
    ("xattr", "on", "on", true),
    ("copies", "1", "1", true),
    ("version", "5", "5", false),
    ("utf8only", "off", "off", false),
    ("normalization", "none", "none", false),
    ("casesensitivity", "sensitive", "sensitive", false),
    ("vscan", "off", "off", true),
    ("nbmand", "off", "off", true),
    ("sharesmb", "off", "off", true),
    ("refquota", "0", "none", false),
    ("refreservation", "0", "none", false),
    ("guid", "", "", false),
    ("primarycache", "all", "all", true),
    ("secondarycache", "all", "all", true),
    ("usedbysnapshots", "0", "0B", false),
    ("usedbydataset", "98304", "96K", false),
    ("usedbychildren", "0", "0B", false),
    ("usedbyrefreservation", "0", "0B", false),
    ("logbias", "latency", "latency", true),
    ("objsetid", "", "", false),
    ("dedup", "off", "off", true),
    ("mlslabel", "none", "none", true),
    ("sync", "standard", "standard", true),
    ("dnodesize", "legacy", "legacy", true),
    ("refcompressratio", "1.00x", "1.00x", false),
    ("written", "98304", "96K", false),
    ("logicalused", "43008", "42K", false),
    ("logicalreferenced", "43008", "42K", false),
    ("volmode", "default", "default", true),
    ("filesystem_limit", "18446744073709551615", "none", false),
    ("snapshot_limit", "18446744073709551615", "none", false),
    ("filesystem_count", "18446744073709551615", "none", false),
    ("snapshot_count", "18446744073709551615", "none", false),
    ("snapdev", "hidden", "hidden", true),
    ("acltype", "off", "off", true),
    ("context", "none", "none", false),
    ("fscontext", "none", "none", false),
    ("defcontext", "none", "none", false),
    ("rootcontext", "none", "none", false),
    ("relatime", "on", "on", true),
    ("redundant_metadata", "all", "all", true),
    ("overlay", "on", "on", true),
    ("encryption", "off", "off", false),
    ("keylocation", "none", "none", false),
    ("keyformat", "none", "none", false),
    ("pbkdf2iters", "0", "0", false),
    ("special_small_blocks", "0", "0", true),
    ("prefetch", "all", "all", true),
];

/// Properties a user may set, with their accepted values (`None`: checked elsewhere).
fn settable(prop: &str) -> Option<Option<&'static [&'static str]>> {
    const ONOFF: &[&str] = &["on", "off"];
    Some(match prop {
        "atime" | "relatime" | "readonly" | "exec" | "devices" | "setuid" | "overlay" | "vscan"
        | "nbmand" | "zoned" => Some(ONOFF),
        "canmount" => Some(&["on", "off", "noauto"]),
        "xattr" => Some(&["on", "off", "sa", "dir"]),
        "acltype" => Some(&["off", "noacl", "posix", "posixacl", "nfsv4"]),
        "sync" => Some(&["standard", "always", "disabled"]),
        "primarycache" | "secondarycache" => Some(&["all", "none", "metadata"]),
        "logbias" => Some(&["latency", "throughput"]),
        "dedup" => Some(&[
            "on", "off", "verify", "sha256", "sha512", "skein", "edonr", "blake3",
        ]),
        "snapdir" => Some(&["hidden", "visible"]),
        "dnodesize" => Some(&["legacy", "auto", "1k", "2k", "4k", "8k", "16k"]),
        "compression"
        | "quota"
        | "refquota"
        | "reservation"
        | "refreservation"
        | "recordsize"
        | "mountpoint"
        | "copies"
        | "sharenfs"
        | "sharesmb"
        | "checksum"
        | "special_small_blocks" => None,
        _ => return None,
    })
}

fn is_user_prop(p: &str) -> bool {
    p.contains(':')
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The datasets a fresh host has: its pools (the settings' `pools`) and, inside them, the
/// datasets its `zfspool` storages keep their volumes in (with their parents).
fn initial(root: &Root) -> Vec<String> {
    let pools = &root.settings.pools;
    let mut names: Vec<String> = pools.clone();
    for st in &root.settings.storages {
        let Some(ds) = st.pool.as_deref() else {
            continue;
        };
        if !pools
            .iter()
            .any(|p| ds.split('/').next() == Some(p.as_str()))
        {
            continue;
        }
        let parts: Vec<&str> = ds.split('/').collect();
        for depth in 2..=parts.len() {
            names.push(parts[..depth].join("/"));
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The state, with the initial datasets when new.
fn load(root: &Root) -> Result<Pools, RootError> {
    let mut p: Pools = read_json(&root.join("zfs.json"))?;
    if p.datasets.is_empty() {
        for (i, name) in initial(root).iter().enumerate() {
            p.datasets.insert(
                name.clone(),
                Dataset {
                    props: BTreeMap::new(),
                    creation: 1_700_000_000 + i as u64,
                    guid: guid_of(name),
                },
            );
        }
    }
    Ok(p)
}

fn save(root: &Root, p: &Pools) -> Result<(), RootError> {
    write_json(&root.join("zfs.json"), p)
}

fn guid_of(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(now().to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn parent(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(p, _)| p)
}

/// A property's `(value, source)` for dataset `name`. A user property (`module:name`) is
/// inherited like an inheritable native one: the nearest dataset up the tree that sets it
/// gives the value, and the source is `local` there and `inherited from <it>` below; unset
/// anywhere, it is `-` with source `-` (OpenZFS cmd/zfs/zfs_main.c `get_callback`, which
/// compares the user property's recorded source with the dataset's own name, at be7657e).
fn prop_value(p: &Pools, name: &str, prop: &str, parsable: bool) -> Option<(String, String)> {
    let ds = p.datasets.get(name)?;
    if is_user_prop(prop) {
        let mut cur = Some(name);
        while let Some(n) = cur {
            if let Some(v) = p.datasets.get(n).and_then(|d| d.props.get(prop)) {
                let src = if n == name {
                    "local".to_owned()
                } else {
                    format!("inherited from {n}")
                };
                return Some((v.clone(), src));
            }
            cur = parent(n);
        }
        return Some(("-".into(), "-".into()));
    }
    let &(_, raw, human, inherit) = NATIVE.iter().find(|(n, ..)| *n == prop)?;
    if let Some(v) = ds.props.get(prop) {
        return Some((display(prop, v, parsable), "local".into()));
    }
    if inherit {
        let mut cur = parent(name);
        while let Some(n) = cur {
            if let Some(v) = p.datasets.get(n).and_then(|d| d.props.get(prop)) {
                let v = if prop == "mountpoint" && v.starts_with('/') {
                    let rel = &name[n.len()..];
                    format!("{}{rel}", v.trim_end_matches('/'))
                } else {
                    display(prop, v, parsable)
                };
                return Some((v, format!("inherited from {n}")));
            }
            cur = parent(n);
        }
    }
    let v = match prop {
        "creation" => {
            if parsable {
                ds.creation.to_string()
            } else {
                date(ds.creation)
            }
        }
        "available" => {
            if parsable {
                "3848290697216".into()
            } else {
                "3.50T".into()
            }
        }
        "mountpoint" => format!("/{name}"),
        "guid" => ds.guid.to_string(),
        "createtxg" | "objsetid" => (ds.guid % 100_000).to_string(),
        _ => (if parsable { raw } else { human }).to_owned(),
    };
    let src = if inherit
        || matches!(
            prop,
            "quota"
                | "reservation"
                | "refquota"
                | "refreservation"
                | "canmount"
                | "utf8only"
                | "normalization"
                | "casesensitivity"
                | "encryption"
                | "keylocation"
                | "keyformat"
                | "pbkdf2iters"
                | "context"
                | "fscontext"
                | "defcontext"
                | "rootcontext"
                | "filesystem_limit"
                | "snapshot_limit"
        ) {
        "default"
    } else {
        "-"
    };
    Some((v, src.into()))
}

/// The kind of a `source` column value, as `-s` names it: `local`, `default`,
/// `inherited` (`inherited from <dataset>`), `none` (`-`).
fn source_kind(source: &str) -> &'static str {
    match source {
        "local" => "local",
        "default" => "default",
        "received" => "received",
        "temporary" => "temporary",
        s if s.starts_with("inherited from ") => "inherited",
        _ => "none",
    }
}

/// How a locally set value prints (`-p`: bytes).
fn display(prop: &str, v: &str, parsable: bool) -> String {
    let sized = matches!(
        prop,
        "quota"
            | "refquota"
            | "reservation"
            | "refreservation"
            | "recordsize"
            | "special_small_blocks"
    );
    if !sized || v == "none" {
        return if parsable && v == "none" {
            "0".into()
        } else {
            v.to_owned()
        };
    }
    match propstr::parse_size(v) {
        Some(b) if parsable => b.to_string(),
        Some(b) => human(b),
        None => v.to_owned(),
    }
}

/// ZFS's human size (`96K`, `8G`, `1.50G`).
fn human(b: u64) -> String {
    let units = ["B", "K", "M", "G", "T", "P"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if (v - v.round()).abs() < f64::EPSILON {
        format!("{}{}", v.round(), units[i])
    } else {
        format!("{v:.2}{}", units[i])
    }
}

/// `Thu Nov 26  8:05 2026` (UTC).
fn date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][days.rem_euclid(7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd} {mon} {d:>2} {h:>2}:{m:02} {y}")
}

/// Check a `prop=value` a user sets; the error is zfs's text after `cannot create 'x': `.
fn check_prop(prop: &str, value: &str) -> Result<(), String> {
    if is_user_prop(prop) {
        return Ok(());
    }
    let Some(values) = settable(prop) else {
        if NATIVE.iter().any(|(n, ..)| *n == prop) {
            return Err(format!("'{prop}' is readonly"));
        }
        return Err(format!("invalid property '{prop}'"));
    };
    if let Some(vs) = values {
        if !vs.contains(&value) {
            return Err(format!("'{prop}' must be one of '{}'", vs.join(" | ")));
        }
        return Ok(());
    }
    let ok = match prop {
        "quota" | "refquota" | "reservation" | "refreservation" => {
            value == "none" || propstr::parse_size(value).is_some()
        }
        "recordsize" => propstr::parse_size(value)
            .is_some_and(|b| b.is_power_of_two() && (512..=(16 << 20)).contains(&b)),
        "special_small_blocks" => propstr::parse_size(value).is_some(),
        "mountpoint" => value == "none" || value == "legacy" || value.starts_with('/'),
        "copies" => matches!(value, "1" | "2" | "3"),
        "compression" => {
            matches!(
                value,
                "on" | "off" | "lzjb" | "gzip" | "zle" | "lz4" | "zstd" | "zstd-fast"
            ) || value
                .strip_prefix("gzip-")
                .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| (1..=9).contains(&n)))
                || value
                    .strip_prefix("zstd-")
                    .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| (1..=19).contains(&n)))
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else if prop == "mountpoint" {
        Err(format!(
            "bad mount point '{value}': must be an absolute path, 'none', or 'legacy'"
        ))
    } else {
        Err(format!("bad {prop} value '{value}'"))
    }
}

/// Create `name` with `props` (used by `pct create` for zfspool volumes). Takes the root
/// lock itself.
pub fn create_internal(
    root: &Root,
    name: &str,
    props: BTreeMap<String, String>,
) -> Result<(), RootError> {
    let _lock = root.lock()?;
    let mut p = load(root)?;
    p.datasets.insert(
        name.to_owned(),
        Dataset {
            props,
            creation: now(),
            guid: guid_of(name),
        },
    );
    mount_dir(root, &p, name);
    save(root, &p)
}

/// The datasets right below `parent` (names relative to it) with their `refquota` in
/// bytes (0: none), as pve-storage's `zfs list -d1 -Hp -o name,…,refquota` sees them.
pub fn children(root: &Root, parent: &str) -> Result<Vec<(String, u64)>, RootError> {
    let p = load(root)?;
    let prefix = format!("{parent}/");
    Ok(p.datasets
        .iter()
        .filter_map(|(n, ds)| {
            let rest = n.strip_prefix(&prefix)?;
            (!rest.contains('/')).then(|| {
                let quota = ds
                    .props
                    .get("refquota")
                    .and_then(|q| propstr::parse_size(q))
                    .unwrap_or(0);
                (rest.to_owned(), quota)
            })
        })
        .collect())
}

/// Destroy `name` and its children if present (used by `pct destroy`).
pub fn destroy_internal(root: &Root, name: &str) -> Result<(), RootError> {
    let _lock = root.lock()?;
    let mut p = load(root)?;
    let prefix = format!("{name}/");
    p.datasets
        .retain(|n, _| n != name && !n.starts_with(&prefix));
    save(root, &p)
}

fn mount_dir(root: &Root, p: &Pools, name: &str) {
    if let Some((mp, _)) = prop_value(p, name, "mountpoint", true) {
        if mp.starts_with('/') {
            // A new dataset's root directory is root's (zfs runs as root).
            let _ = crate::hostfs::set_owner_locked(root, &mp, None);
            let _ = std::fs::create_dir_all(root.join("hostfs").join(mp.trim_start_matches('/')));
        }
    }
}

/// `zfs <subcommand> …`.
pub fn run(root: &Root, args: &[String], out: &mut Out) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        out.err("usage: zfs command args ...\nwhere 'command' is one of the following:\n\n\tcreate\tdestroy\tlist\tget\tset\tinherit\n");
        return 2;
    };
    let r = match cmd.as_str() {
        "list" => list(root, rest, out),
        "get" => get(root, rest, out),
        "create" => create(root, rest, out),
        "destroy" => destroy(root, rest, out),
        "set" => set(root, rest, out),
        "inherit" => inherit(root, rest, out),
        other => {
            out.err(format!(
                "unrecognized command '{other}'\nusage: zfs command args ...\n"
            ));
            return 2;
        }
    };
    match r {
        Ok(c) => c,
        Err(e) => {
            out.err(format!("phoenix-emu: {e}\n"));
            1
        }
    }
}

/// A parsed zfs command line: flags seen, `(option, value)` pairs, operands.
type Getopt = (String, Vec<(char, String)>, Vec<String>);

/// getopt-style flags: returns (flags, option values, operands) or the bad flag.
fn getopt(args: &[String], flags: &str, with_value: &str) -> Result<Getopt, char> {
    let mut f = String::new();
    let mut vals = Vec::new();
    let mut ops = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            ops.extend(args[i..].iter().cloned());
            break;
        }
        if !a.starts_with('-') || a.len() == 1 {
            ops.push(a.clone());
            continue;
        }
        let chars: Vec<char> = a[1..].chars().collect();
        for (j, c) in chars.iter().enumerate() {
            if with_value.contains(*c) {
                let rest: String = chars[j + 1..].iter().collect();
                let v = if !rest.is_empty() {
                    rest
                } else if let Some(v) = args.get(i) {
                    i += 1;
                    v.clone()
                } else {
                    return Err(*c);
                };
                vals.push((*c, v));
                break;
            } else if flags.contains(*c) {
                f.push(*c);
            } else {
                return Err(*c);
            }
        }
    }
    Ok((f, vals, ops))
}

fn not_exist(out: &mut Out, name: &str) -> i32 {
    out.err(format!("cannot open '{name}': dataset does not exist\n"));
    1
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.ends_with('/')
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "_-.:".contains(ch))
        })
}

fn list(root: &Root, args: &[String], out: &mut Out) -> Result<i32, RootError> {
    let usage = "usage:\n\tlist [-Hp] [-r|-d max] [-o property[,...]] [-s property]...\n\t    [-S property]... [-t type[,...]] [filesystem|volume|snapshot] ...\n";
    let (flags, vals, ops) = match getopt(args, "Hpr", "odtsS") {
        Ok(v) => v,
        Err(c) => {
            out.err(format!("invalid option '{c}'\n{usage}"));
            return Ok(2);
        }
    };
    let p = load(root)?;
    let cols: Vec<String> = vals.iter().rev().find(|(c, _)| *c == 'o').map_or_else(
        || {
            ["name", "used", "available", "referenced", "mountpoint"]
                .map(String::from)
                .to_vec()
        },
        |(_, v)| v.split(',').map(str::to_owned).collect(),
    );
    for c in &cols {
        if c != "name" && !is_user_prop(c) && !NATIVE.iter().any(|(n, ..)| n == c) {
            out.err(format!(
                "bad property list: invalid property '{c}'\n{usage}"
            ));
            return Ok(2);
        }
    }
    // `-d N` recurses N levels below each operand (`-r`: without limit); with no operand
    // the walk starts at the pools' root datasets and always recurses (OpenZFS
    // cmd/zfs/zfs_iter.c `zfs_for_each`, cmd/zfs/zfs_main.c `parse_depth`).
    let depth: Option<usize> = match vals.iter().rev().find(|(c, _)| *c == 'd') {
        None => None,
        Some((_, d)) => match d.parse() {
            Ok(n) => Some(n),
            // `parse_depth`'s words (a negative number fails to parse as usize too).
            Err(_) if d.starts_with('-') && d[1..].parse::<u64>().is_ok() => {
                out.err(format!("Depth can not be negative.\n{usage}"));
                return Ok(2);
            }
            Err(_) => {
                out.err(format!("{d} is not an integer\n{usage}"));
                return Ok(2);
            }
        },
    };
    let recursive = flags.contains('r') || depth.is_some();
    let below = |base: &str, n: &str| -> bool {
        let Some(rest) = n.strip_prefix(base).and_then(|r| r.strip_prefix('/')) else {
            return false;
        };
        depth.is_none_or(|d| rest.split('/').count() <= d)
    };
    let mut names: Vec<String> = Vec::new();
    if ops.is_empty() {
        names = p
            .datasets
            .keys()
            .filter(|n| depth.is_none_or(|d| n.split('/').count() <= d + 1))
            .cloned()
            .collect();
    } else {
        for o in &ops {
            if !p.datasets.contains_key(o) {
                return Ok(not_exist(out, o));
            }
            names.push(o.clone());
            if recursive {
                names.extend(p.datasets.keys().filter(|n| below(o, n)).cloned());
            }
        }
    }
    let parsable = flags.contains('p');
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            cols.iter()
                .map(|c| {
                    if c == "name" {
                        n.clone()
                    } else {
                        prop_value(&p, n, c, parsable).map_or("-".into(), |(v, _)| v)
                    }
                })
                .collect()
        })
        .collect();
    print_table(out, &cols, &rows, flags.contains('H'));
    Ok(0)
}

fn print_table(out: &mut Out, cols: &[String], rows: &[Vec<String>], scripted: bool) {
    if scripted {
        for r in rows {
            out.out(r.join("\t") + "\n");
        }
        return;
    }
    let head: Vec<String> = cols.iter().map(|c| c.to_ascii_uppercase()).collect();
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in std::iter::once(&head).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if i + 1 == r.len() {
                    v.clone()
                } else {
                    format!("{v:<w$}", w = widths[i])
                }
            })
            .collect();
        out.out(line.join("  ") + "\n");
    }
}

fn get(root: &Root, args: &[String], out: &mut Out) -> Result<i32, RootError> {
    let usage = "usage:\n\tget [-rHp] [-d max] [-o \"all\" | field[,...]]\n\t    [-t type[,...]] [-s source[,...]]\n\t    <\"all\" | property[,...]> [filesystem|volume|snapshot|bookmark] ...\n";
    let (flags, vals, ops) = match getopt(args, "rHp", "odts") {
        Ok(v) => v,
        Err(c) => {
            out.err(format!("invalid option '{c}'\n{usage}"));
            return Ok(2);
        }
    };
    let fields: Vec<String> = vals.iter().rev().find(|(c, _)| *c == 'o').map_or_else(
        || {
            ["name", "property", "value", "source"]
                .map(String::from)
                .to_vec()
        },
        |(_, v)| v.split(',').map(str::to_owned).collect(),
    );
    for f in &fields {
        if !matches!(
            f.as_str(),
            "name" | "property" | "value" | "received" | "source"
        ) {
            out.err(format!("invalid column name '{f}'\n{usage}"));
            return Ok(2);
        }
    }
    // `-s local,inherited,…`: only rows whose source is of these kinds (OpenZFS
    // cmd/zfs/zfs_main.c `zfs_do_get`; the last `-s` wins, as each one resets the set).
    let sources: Option<Vec<&str>> = match vals.iter().rev().find(|(c, _)| *c == 's') {
        None => None,
        Some((_, list)) => {
            let kinds: Vec<&str> = list.split(',').collect();
            if let Some(bad) = kinds.iter().find(|k| {
                !matches!(
                    **k,
                    "local" | "default" | "inherited" | "received" | "temporary" | "none"
                )
            }) {
                out.err(format!("invalid source '{bad}'\n{usage}"));
                return Ok(2);
            }
            Some(kinds)
        }
    };
    let Some((props, datasets)) = ops.split_first() else {
        out.err(format!("missing property argument\n{usage}"));
        return Ok(2);
    };
    let p = load(root)?;
    let all = props == "all";
    let mut wanted: Vec<String> = if all {
        NATIVE.iter().map(|(n, ..)| (*n).to_owned()).collect()
    } else {
        props.split(',').map(str::to_owned).collect()
    };
    for w in &wanted {
        if !is_user_prop(w) && !NATIVE.iter().any(|(n, ..)| n == w) {
            out.err(format!(
                "bad property list: invalid property '{w}'\n{usage}"
            ));
            return Ok(2);
        }
    }
    let mut names = Vec::new();
    if datasets.is_empty() {
        names = p.datasets.keys().cloned().collect();
    }
    for d in datasets {
        if !p.datasets.contains_key(d) {
            return Ok(not_exist(out, d));
        }
        names.push(d.clone());
        if flags.contains('r') {
            let prefix = format!("{d}/");
            names.extend(
                p.datasets
                    .keys()
                    .filter(|n| n.starts_with(&prefix))
                    .cloned(),
            );
        }
    }
    let parsable = flags.contains('p');
    let mut rows = Vec::new();
    for n in &names {
        let mut props_here = wanted.clone();
        if all {
            // `all` lists the user properties set on (or inherited by) the dataset.
            let mut users: Vec<String> = Vec::new();
            let mut cur = Some(n.as_str());
            while let Some(c) = cur {
                if let Some(ds) = p.datasets.get(c) {
                    users.extend(ds.props.keys().filter(|k| is_user_prop(k)).cloned());
                }
                cur = parent(c);
            }
            users.sort();
            users.dedup();
            props_here.extend(users);
        }
        for prop in &props_here {
            let (v, src) = prop_value(&p, n, prop, parsable).unwrap_or(("-".into(), "-".into()));
            if let Some(kinds) = &sources {
                if !kinds.contains(&source_kind(&src)) {
                    continue;
                }
            }
            rows.push(
                fields
                    .iter()
                    .map(|f| match f.as_str() {
                        "name" => n.clone(),
                        "property" => prop.clone(),
                        "value" => v.clone(),
                        "received" => "-".into(),
                        _ => src.clone(),
                    })
                    .collect(),
            );
        }
    }
    wanted.clear();
    print_table(out, &fields, &rows, flags.contains('H'));
    Ok(0)
}

fn create(root: &Root, args: &[String], out: &mut Out) -> Result<i32, RootError> {
    let usage = "usage:\n\tcreate [-Pnpuv] [-o property=value] ... <filesystem>\n\tcreate [-Pnpsv] [-b blocksize] [-o property=value] ... -V <size> <volume>\n";
    let (flags, vals, ops) = match getopt(args, "Pnpuv", "o") {
        Ok(v) => v,
        Err(c) => {
            out.err(format!("invalid option '{c}'\n{usage}"));
            return Ok(2);
        }
    };
    let [name] = ops.as_slice() else {
        out.err(if ops.is_empty() {
            format!("missing filesystem argument\n{usage}")
        } else {
            format!("too many arguments\n{usage}")
        });
        return Ok(2);
    };
    let mut props = BTreeMap::new();
    for (_, kv) in &vals {
        let Some((k, v)) = kv.split_once('=') else {
            out.err(format!("missing '=' for property=value argument\n{usage}"));
            return Ok(2);
        };
        if props.insert(k.to_owned(), v.to_owned()).is_some() {
            out.err(format!("property '{k}' specified multiple times\n{usage}"));
            return Ok(2);
        }
    }
    if !valid_name(name) {
        out.err(format!(
            "cannot create '{name}': invalid character in name\n"
        ));
        return Ok(1);
    }
    let _lock = root.lock()?;
    let mut p = load(root)?;
    let Some(par) = parent(name) else {
        out.err(format!("cannot create '{name}': missing dataset name\n"));
        return Ok(1);
    };
    let pool = name.split('/').next().unwrap_or("");
    if !p.datasets.contains_key(pool) {
        out.err(format!("cannot create '{name}': no such pool '{pool}'\n"));
        return Ok(1);
    }
    // OpenZFS's order: `-p` on an existing dataset succeeds quietly; then the parent, then
    // existence, then the properties.
    if flags.contains('p') && p.datasets.contains_key(name.as_str()) {
        return Ok(0);
    }
    let mut to_create = vec![name.clone()];
    if !p.datasets.contains_key(par) {
        if !flags.contains('p') {
            out.err(format!("cannot create '{name}': parent does not exist\n"));
            return Ok(1);
        }
        let mut cur = Some(par);
        while let Some(c) = cur.filter(|c| !p.datasets.contains_key(*c)) {
            to_create.push(c.to_owned());
            cur = parent(c);
        }
    }
    if p.datasets.contains_key(name.as_str()) {
        out.err(format!("cannot create '{name}': dataset already exists\n"));
        return Ok(1);
    }
    for (k, v) in &props {
        if let Err(m) = check_prop(k, v) {
            out.err(format!("cannot create '{name}': {m}\n"));
            return Ok(1);
        }
    }
    if flags.contains('n') {
        return Ok(0);
    }
    for (i, n) in to_create.iter().rev().enumerate() {
        let is_target = i + 1 == to_create.len();
        p.datasets.insert(
            n.clone(),
            Dataset {
                props: if is_target {
                    props.clone()
                } else {
                    BTreeMap::new()
                },
                creation: now(),
                guid: guid_of(n),
            },
        );
        mount_dir(root, &p, n);
    }
    save(root, &p)?;
    Ok(0)
}

fn destroy(root: &Root, args: &[String], out: &mut Out) -> Result<i32, RootError> {
    let usage = "usage:\n\tdestroy [-fnpRrv] <filesystem|volume>\n";
    let (flags, _, ops) = match getopt(args, "fnpRrv", "") {
        Ok(v) => v,
        Err(c) => {
            out.err(format!("invalid option '{c}'\n{usage}"));
            return Ok(2);
        }
    };
    let [name] = ops.as_slice() else {
        out.err(if ops.is_empty() {
            format!("missing dataset argument\n{usage}")
        } else {
            format!("too many arguments\n{usage}")
        });
        return Ok(2);
    };
    let _lock = root.lock()?;
    let mut p = load(root)?;
    if !p.datasets.contains_key(name.as_str()) {
        return Ok(not_exist(out, name));
    }
    if parent(name).is_none() {
        out.err(format!("cannot destroy '{name}': operation does not apply to pools\nuse 'zfs destroy -r {name}' to destroy all datasets in the pool\nuse 'zpool destroy {name}' to destroy the pool itself\n"));
        return Ok(1);
    }
    let prefix = format!("{name}/");
    let children: Vec<String> = p
        .datasets
        .keys()
        .filter(|n| n.starts_with(&prefix))
        .cloned()
        .collect();
    if !children.is_empty() && !flags.contains('r') && !flags.contains('R') {
        out.err(format!(
            "cannot destroy '{name}': filesystem has children\nuse '-r' to destroy the following datasets:\n{}\n",
            children.join("\n")
        ));
        return Ok(1);
    }
    if flags.contains('n') {
        return Ok(0);
    }
    let mounts: Vec<String> = std::iter::once(name.clone())
        .chain(children.iter().cloned())
        .filter_map(|n| prop_value(&p, &n, "mountpoint", true).map(|(v, _)| v))
        .filter(|m| m.starts_with('/'))
        .collect();
    p.datasets
        .retain(|n, _| n != name && !n.starts_with(&prefix));
    save(root, &p)?;
    for m in &mounts {
        let _ = std::fs::remove_dir_all(root.join("hostfs").join(m.trim_start_matches('/')));
    }
    // Their owners go with them (the root lock is held).
    if let Some(m) = mounts.first() {
        crate::hostfs::set_owner_locked(root, m, None)?;
    }
    Ok(0)
}

/// `zfs inherit [-r] property dataset…`: drop the local value, so the property is
/// inherited again (or its default); `-r` on the descendants too (OpenZFS
/// cmd/zfs/zfs_main.c `zfs_do_inherit`).
fn inherit(root: &Root, args: &[String], out: &mut Out) -> Result<i32, RootError> {
    let usage = "usage:\n\tinherit [-rS] <property> <filesystem|volume|snapshot> ...\n";
    let (flags, _, ops) = match getopt(args, "rS", "") {
        Ok(v) => v,
        Err(c) => {
            out.err(format!("invalid option '{c}'\n{usage}"));
            return Ok(2);
        }
    };
    let Some((prop, names)) = ops.split_first() else {
        out.err(format!("missing property argument\n{usage}"));
        return Ok(2);
    };
    if names.is_empty() {
        out.err(format!("missing dataset argument\n{usage}"));
        return Ok(2);
    }
    if !is_user_prop(prop) {
        match NATIVE.iter().find(|(n, ..)| n == prop) {
            None => {
                out.err(format!("invalid property '{prop}'\n{usage}"));
                return Ok(2);
            }
            Some(&(_, _, _, false)) => {
                out.err(format!("'{prop}' property cannot be inherited\n{usage}"));
                return Ok(2);
            }
            Some(_) => {}
        }
    }
    let _lock = root.lock()?;
    let mut p = load(root)?;
    for n in names {
        if !p.datasets.contains_key(n.as_str()) {
            return Ok(not_exist(out, n));
        }
    }
    for n in names {
        let prefix = format!("{n}/");
        for (name, ds) in p.datasets.iter_mut() {
            if name == n || (flags.contains('r') && name.starts_with(&prefix)) {
                ds.props.remove(prop.as_str());
            }
        }
    }
    save(root, &p)?;
    Ok(0)
}

fn set(root: &Root, args: &[String], out: &mut Out) -> Result<i32, RootError> {
    let usage = "usage:\n\tset <property=value> ... <filesystem|volume|snapshot> ...\n";
    if args.len() < 2 {
        out.err(format!("missing arguments\n{usage}"));
        return Ok(2);
    }
    let (kvs, names): (Vec<&String>, Vec<&String>) = args.iter().partition(|a| a.contains('='));
    let _lock = root.lock()?;
    let mut p = load(root)?;
    for n in &names {
        if !p.datasets.contains_key(n.as_str()) {
            return Ok(not_exist(out, n));
        }
    }
    for kv in kvs {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if let Err(m) = check_prop(k, v) {
            out.err(format!(
                "cannot set property for '{}': {m}\n",
                names.first().map_or("", |n| n.as_str())
            ));
            return Ok(1);
        }
        for n in &names {
            if let Some(ds) = p.datasets.get_mut(n.as_str()) {
                ds.props.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    save(root, &p)?;
    Ok(0)
}

/// The dataset mounted at or above `host_path` (a path on the emulated host) and the bytes
/// it may hold: its `refquota`, else its `quota`, else the pool's nominal free space (the
/// `available` this emulator reports). Used by [`crate::disk`] for the sizes of bind-mounted
/// datasets (added by the vllm helper for disk sizes; the pool's size stays this module's).
pub fn space_for(root: &Root, host_path: &str) -> Option<(String, u64)> {
    let p = load(root).ok()?;
    let path = host_path.trim_end_matches('/');
    let mut best: Option<(usize, &str)> = None;
    for name in p.datasets.keys() {
        let Some((mp, _)) = prop_value(&p, name, "mountpoint", true) else {
            continue;
        };
        let mp = mp.trim_end_matches('/');
        let inside = path == mp || path.starts_with(&format!("{mp}/"));
        if mp.starts_with('/') && inside && best.is_none_or(|(n, _)| mp.len() > n) {
            best = Some((mp.len(), name));
        }
    }
    let (_, name) = best?;
    let ds = p.datasets.get(name)?;
    let limit = ["refquota", "quota"]
        .iter()
        .filter_map(|q| ds.props.get(*q))
        .filter_map(|v| propstr::parse_size(v))
        .find(|b| *b > 0);
    Some((name.to_owned(), limit.unwrap_or(POOL_AVAILABLE)))
}

/// The pool's free space as `available` reports it (nominal).
const POOL_AVAILABLE: u64 = 3_848_290_697_216;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_and_dates() {
        assert_eq!(human(98304), "96K");
        assert_eq!(human(8 << 30), "8G");
        assert_eq!(human(1610612736), "1.50G");
        assert_eq!(date(0), "Thu Jan  1  0:00 1970");
        assert_eq!(date(1_795_651_200), "Thu Nov 26  0:00 2026");
    }

    #[test]
    fn property_checks() {
        assert!(check_prop("phoenix:owner", "x y").is_ok());
        assert!(check_prop("compression", "zstd-3").is_ok());
        let e = check_prop("compression", "brotli").unwrap_err();
        assert!(e.contains("bad compression value 'brotli'"), "{e}");
        assert_eq!(
            check_prop("foo", "bar"),
            Err("invalid property 'foo'".into())
        );
        assert!(check_prop("recordsize", "1M").is_ok());
        let e = check_prop("recordsize", "3K").unwrap_err();
        assert!(e.contains("bad recordsize value '3K'"), "{e}");
        let e = check_prop("atime", "maybe").unwrap_err();
        assert!(e.contains("'atime' must be one of 'on | off'"), "{e}");
        assert_eq!(check_prop("used", "1"), Err("'used' is readonly".into()));
    }
}

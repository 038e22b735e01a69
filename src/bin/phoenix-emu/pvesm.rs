//! `pvesm`: the emulated host's storages and their content.
//!
//! The storages are whatever the host's settings say (`storages` in `emu.json`), never the
//! names a config file happens to use. Without that key the host is a Proxmox VE installed
//! on ZFS: `local` (dir `/var/lib/vz`: iso, vztmpl, backup) and `local-zfs` (zfspool on
//! `rpool/data`: images, rootdir), as the installer sets them up. The emulator implements
//! the `dir` and `zfspool` types; a settings entry of another type is refused.
//!
//! Content, as pve-storage lists it (pve-storage `src/PVE/Storage/Plugin.pm`
//! `get_subdir_files`/`list_volumes`, `src/PVE/Storage/ZFSPoolPlugin.pm` `list_images`,
//! `zfs_parse_zvol_list`, at 0c56bad, 9.1.7):
//! - templates are the files `<path>/template/cache/*.tar{,.gz,.xz,.zst,.bz2}` of a `dir`
//!   storage, volume `STORAGE:vztmpl/NAME`, format `tar` or `t` + the compression
//!   (`tzst`); a fresh host has the templates its settings name (`templates`, volume ids
//!   on a `dir` storage; default: Ubuntu 24.04 and Debian 12 "standard" on `local`),
//!   written once as small stand-in files;
//! - container disks are the datasets `(vm|base|subvol|basevol)-VMID-…` right below a
//!   `zfspool` storage's pool (format `subvol`, size = `refquota`) and the files
//!   `<path>/images/VMID/*` of a `dir` storage (format from the extension); their type is
//!   `rootdir` when a container config of that VMID exists, else `images`.
//!
//! Emulated: `status` (pve-storage's format string; the column headings gained `(KiB)`
//! units in libpve-storage-perl 9.0.14, so from PVE 9.1 on), `list STORAGE [--content T]
//! [--vmid N]` (`src/PVE/CLI/pvesm.pm` `print_content`), `free VOLUME` (API2 `Content`
//! `delete`: prints `Removed volume 'VOLID'`; a zfs volume already gone counts as removed,
//! as `zfs_delete_zvol` ignores "dataset does not exist").

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::opts::{self, Kind};
use crate::out::Out;
use crate::root::{Root, RootError};

/// A storage type the emulator implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    /// A directory (`path`).
    Dir,
    /// A ZFS pool or dataset (`pool`).
    Zfspool,
}

impl StorageType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Dir => "dir",
            Self::Zfspool => "zfspool",
        }
    }
}

/// One storage of the host's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    /// Its id (`local-zfs`).
    pub id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: StorageType,
    /// Content types (`images`, `rootdir`, `vztmpl`, `iso`, `backup`, …).
    pub content: Vec<String>,
    /// The directory of a `dir` storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The dataset of a `zfspool` storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Size in KiB for `pvesm status` (a plausible default per type when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_kib: Option<u64>,
    /// Used KiB for `pvesm status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_kib: Option<u64>,
}

impl Storage {
    /// Whether it holds content of type `c`.
    pub fn holds(&self, c: &str) -> bool {
        self.content.iter().any(|x| x == c)
    }

    /// `(total, used)` KiB.
    fn sizes(&self) -> (u64, u64) {
        let (t, u) = match self.ty {
            StorageType::Dir => (98_497_780, 12_582_912),
            StorageType::Zfspool => (942_931_968, 104_857_600),
        };
        (self.total_kib.unwrap_or(t), self.used_kib.unwrap_or(u))
    }

    /// The host directory of a `dir` storage inside the root.
    fn dir(&self, root: &Root) -> Option<PathBuf> {
        let p = self.path.as_deref()?;
        Some(root.join(p.trim_start_matches('/')))
    }
}

/// The storages of a Proxmox VE installed on ZFS.
pub fn default_storages() -> Vec<Storage> {
    let s = |id: &str, ty, content: &[&str], path: Option<&str>, pool: Option<&str>| Storage {
        id: id.to_owned(),
        ty,
        content: content.iter().map(|c| (*c).to_owned()).collect(),
        path: path.map(str::to_owned),
        pool: pool.map(str::to_owned),
        total_kib: None,
        used_kib: None,
    };
    vec![
        s(
            "local",
            StorageType::Dir,
            &["iso", "vztmpl", "backup"],
            Some("/var/lib/vz"),
            None,
        ),
        s(
            "local-zfs",
            StorageType::Zfspool,
            &["images", "rootdir"],
            None,
            Some("rpool/data"),
        ),
    ]
}

/// The templates a fresh host has downloaded (`pveam download local …`).
pub fn default_templates() -> Vec<String> {
    vec![
        "local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst".to_owned(),
        "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst".to_owned(),
    ]
}

/// The storage named `id`.
pub fn find<'a>(root: &'a Root, id: &str) -> Option<&'a Storage> {
    root.settings.storages.iter().find(|s| s.id == id)
}

/// The file name part of a template volume name (`vztmpl/NAME`), when it is one
/// (pve-storage `$VZTMPL_EXT_RE_1`: `.tar`, `.tar.gz|xz|zst|bz2`).
fn template_name(volname: &str) -> Option<&str> {
    let name = volname.strip_prefix("vztmpl/")?;
    let ok = !name.is_empty()
        && !name.contains('/')
        && [".tar", ".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"]
            .iter()
            .any(|e| name.ends_with(e));
    ok.then_some(name)
}

/// The host file of template volume `volid`, when its storage is a `dir` storage.
pub fn template_path(root: &Root, volid: &str) -> Option<PathBuf> {
    let (sid, volname) = volid.split_once(':')?;
    let name = template_name(volname)?;
    Some(
        find(root, sid)?
            .dir(root)?
            .join("template/cache")
            .join(name),
    )
}

/// Make the fresh host's template files (once: a marker remembers it).
pub fn seed(root: &Root) -> Result<(), RootError> {
    let marker = root.join(".emu-seeded");
    if marker.exists() {
        return Ok(());
    }
    let _lock = root.lock()?;
    if marker.exists() {
        return Ok(());
    }
    for volid in &root.settings.templates {
        let Some(path) = template_path(root, volid) else {
            return Err(RootError::io(
                "seed the template (not a vztmpl volume on a dir storage)",
                &root.join("emu.json"),
                std::io::ErrorKind::InvalidInput.into(),
            ));
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RootError::io("create", dir, e))?;
        }
        std::fs::write(
            &path,
            "phoenix-emu stand-in for a Proxmox VE container template\n",
        )
        .map_err(|e| RootError::io("write", &path, e))?;
    }
    std::fs::write(&marker, "").map_err(|e| RootError::io("write", &marker, e))
}

/// One volume as `pvesm list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// `STORAGE:NAME`.
    pub volid: String,
    /// `subvol`, `raw`, `tzst`, …
    pub format: String,
    /// `rootdir`, `images`, `vztmpl`, …
    pub content: String,
    /// Bytes.
    pub size: u64,
    /// Its owner, for disks.
    pub vmid: Option<u32>,
}

/// `(vm|base|subvol|basevol)-VMID-…`: the owner of a disk volume name.
fn disk_owner(name: &str) -> Option<u32> {
    let (kind, rest) = name.split_once('-')?;
    if !matches!(kind, "vm" | "base" | "subvol" | "basevol") {
        return None;
    }
    let (vmid, tail) = rest.split_once('-')?;
    (!tail.is_empty() && !tail.chars().any(char::is_whitespace))
        .then(|| vmid.parse().ok())
        .flatten()
}

/// The volumes of storage `st`, all content types it holds, sorted by volume id.
pub fn volumes(root: &Root, st: &Storage) -> Result<Vec<Volume>, RootError> {
    let has_ct = |vmid: u32| crate::container::conf_path(root, vmid).exists();
    let disk_content = |vmid: u32| if has_ct(vmid) { "rootdir" } else { "images" };
    let mut out = Vec::new();
    match st.ty {
        StorageType::Zfspool => {
            let pool = st.pool.as_deref().unwrap_or_default();
            for (name, refquota) in crate::zfs::children(root, pool)? {
                let Some(vmid) = disk_owner(&name) else {
                    continue;
                };
                out.push(Volume {
                    volid: format!("{}:{name}", st.id),
                    format: "subvol".into(),
                    content: disk_content(vmid).into(),
                    size: refquota,
                    vmid: Some(vmid),
                });
            }
        }
        StorageType::Dir => {
            let Some(dir) = st.dir(root) else {
                return Ok(out);
            };
            if st.holds("vztmpl") {
                for (name, size) in files(&dir.join("template/cache")) {
                    let Some(name) = template_name(&format!("vztmpl/{name}")).map(str::to_owned)
                    else {
                        continue;
                    };
                    let ext = name.rsplit('.').next().unwrap_or("tar");
                    out.push(Volume {
                        volid: format!("{}:vztmpl/{name}", st.id),
                        format: if ext == "tar" {
                            "tar".into()
                        } else {
                            format!("t{ext}")
                        },
                        content: "vztmpl".into(),
                        size,
                        vmid: None,
                    });
                }
            }
            if let Ok(entries) = std::fs::read_dir(dir.join("images")) {
                for e in entries.flatten() {
                    let Some(vmid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    for (name, size) in files(&e.path()) {
                        if disk_owner(&name).is_none() {
                            continue;
                        }
                        let format = name.rsplit('.').next().unwrap_or("raw").to_owned();
                        out.push(Volume {
                            volid: format!("{}:{vmid}/{name}", st.id),
                            format,
                            content: disk_content(vmid).into(),
                            size,
                            vmid: Some(vmid),
                        });
                    }
                }
            }
        }
    }
    out.retain(|v| st.holds(&v.content));
    out.sort_by_key(|v| v.volid.to_lowercase());
    Ok(out)
}

/// `(file name, size)` of the regular files in `dir`.
fn files(dir: &std::path::Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file()
                .then(|| (e.file_name().to_string_lossy().into_owned(), meta.len()))
        })
        .collect()
}

/// Allocate a disk volume `NAME` on storage `st` of `bytes` (zfspool: a dataset with that
/// `refquota`; dir: an empty file under `images/VMID/`). Returns the volume id.
pub fn alloc(
    root: &Root,
    st: &Storage,
    vmid: u32,
    name: &str,
    bytes: u64,
) -> Result<String, RootError> {
    match st.ty {
        StorageType::Zfspool => {
            let pool = st.pool.as_deref().unwrap_or_default();
            let mut props = std::collections::BTreeMap::new();
            // pve-storage ZFSPoolPlugin `zfs_create_subvol`: acltype, xattr, refquota.
            props.insert("acltype".to_owned(), "posixacl".to_owned());
            props.insert("xattr".to_owned(), "sa".to_owned());
            props.insert("refquota".to_owned(), bytes.to_string());
            crate::zfs::create_internal(root, &format!("{pool}/{name}"), props)?;
            Ok(format!("{}:{name}", st.id))
        }
        StorageType::Dir => {
            let dir = st
                .dir(root)
                .unwrap_or_else(|| root.join("var/lib/vz"))
                .join("images")
                .join(vmid.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| RootError::io("create", &dir, e))?;
            let file = dir.join(name);
            std::fs::write(&file, b"").map_err(|e| RootError::io("write", &file, e))?;
            Ok(format!("{}:{vmid}/{name}", st.id))
        }
    }
}

/// Free volume `volid` (already gone counts as freed, as for pve-storage's zfs volumes).
pub fn free(root: &Root, volid: &str) -> Result<(), String> {
    let (sid, volname) = volid
        .split_once(':')
        .ok_or_else(|| format!("unable to parse volume ID '{volid}'"))?;
    let st = find(root, sid).ok_or_else(|| format!("storage '{sid}' does not exist"))?;
    match st.ty {
        StorageType::Zfspool => {
            let pool = st.pool.as_deref().unwrap_or_default();
            crate::zfs::destroy_internal(root, &format!("{pool}/{volname}"))
                .map_err(|e| e.to_string())
        }
        StorageType::Dir => {
            let Some(dir) = st.dir(root) else {
                return Err(format!("storage '{sid}' has no path"));
            };
            let path = match template_name(volname) {
                Some(name) => dir.join("template/cache").join(name),
                None => dir.join("images").join(volname),
            };
            match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("unable to delete '{}' - {e}", path.display())),
            }
        }
    }
}

/// `pvesm <command> …`.
pub fn run(root: &Root, args: &[String], out: &mut Out) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        out.err("ERROR: no command specified\nUSAGE: pvesm <COMMAND> [ARGS] [OPTIONS]\n");
        return 255;
    };
    match cmd.as_str() {
        "status" => status(root, rest, out),
        "list" => list(root, rest, out),
        "free" => free_cmd(root, rest, out),
        _ => {
            out.err(format!("ERROR: unknown command 'pvesm {cmd}'\n"));
            255
        }
    }
}

/// A `pvesm` command line: options as `kinds` says, then exactly `n` positional arguments,
/// checked as pve-common's `PVE::JSONSchema::get_options` does (`src/PVE/JSONSchema.pm`):
/// Getopt first (`400 unable to parse option`), then one argument per `arg_param` (`400
/// not enough arguments`), and what is left over is `400 too many arguments`. A refusal is
/// written with the command's `usage` line and is `Err(255)`, pvesm's exit code.
fn parse_n(
    rest: &[String],
    kinds: impl Fn(&str) -> Option<Kind>,
    n: usize,
    usage: &str,
    out: &mut Out,
) -> Result<opts::Parsed, i32> {
    let p = match opts::parse(rest, kinds) {
        Ok(p) => p,
        Err(e) => {
            out.err(e.message() + usage);
            return Err(255);
        }
    };
    let wrong = if p.args.len() < n {
        "not enough arguments"
    } else if p.args.len() > n {
        "too many arguments"
    } else {
        return Ok(p);
    };
    out.err(format!("400 {wrong}\n{usage}"));
    Err(255)
}

fn status(root: &Root, rest: &[String], out: &mut Out) -> i32 {
    let kinds = |o: &str| match o {
        "content" | "format" | "storage" | "target" => Some(Kind::Value),
        "enabled" => Some(Kind::Bool),
        _ => None,
    };
    let p = match parse_n(rest, kinds, 0, "USAGE: pvesm status  [OPTIONS]\n", out) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let storage = p.get("storage");
    if let Some(id) = storage {
        if find(root, id).is_none() {
            out.err(format!("storage '{id}' does not exist\n"));
            return 255;
        }
    }
    let content = p.get("content");
    let mut list: Vec<&Storage> = root
        .settings
        .storages
        .iter()
        .filter(|s| storage.is_none_or(|id| s.id == id))
        .filter(|s| content.is_none_or(|c| s.holds(c)))
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    out.out(status_table(&list, root.pve_version() >= (9, 1, 0)));
    0
}

/// The table `pvesm status` prints.
pub fn status_table(list: &[&Storage], units: bool) -> String {
    let maxlen = list.iter().map(|s| s.id.len()).max().unwrap_or(0) + 1;
    let (t, u, a) = if units {
        ("Total (KiB)", "Used (KiB)", "Available (KiB)")
    } else {
        ("Total", "Used", "Available")
    };
    let mut s = format!(
        "{:<maxlen$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>8}\n",
        "Name", "Type", "Status", t, u, a, "%"
    );
    for st in list {
        let (total, used) = st.sizes();
        let per = used as f64 * 100.0 / total as f64;
        s.push_str(&format!(
            "{:<maxlen$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>7.2}%\n",
            st.id,
            st.ty.as_str(),
            "active",
            total,
            used,
            total - used,
            per
        ));
    }
    s
}

/// pve-storage's content types (`pve-storage-content`).
const CONTENT_TYPES: &[&str] = &[
    "images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import",
];

fn list(root: &Root, rest: &[String], out: &mut Out) -> i32 {
    let usage = "USAGE: pvesm list <storage> [OPTIONS]\n";
    let kinds = |o: &str| matches!(o, "content" | "vmid").then_some(Kind::Value);
    let p = match parse_n(rest, kinds, 1, usage, out) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let sid = &p.args[0];
    let mut errors = Vec::new();
    let content = p.get("content");
    if let Some(c) = content {
        if !CONTENT_TYPES.contains(&c) {
            errors.push(format!(
                "content: invalid format - invalid content type '{c}'"
            ));
        }
    }
    let vmid = match p.get("vmid").map(str::parse::<u32>) {
        None => None,
        Some(Ok(v)) if (100..=999_999_999).contains(&v) => Some(v),
        Some(_) => {
            errors.push(format!(
                "vmid: type check ('integer') failed - got '{}'",
                p.get("vmid").unwrap_or_default()
            ));
            None
        }
    };
    if !errors.is_empty() {
        out.err("400 Parameter verification failed.\n");
        for e in errors {
            out.err(e + "\n");
        }
        out.err(usage);
        return 255;
    }
    let Some(st) = find(root, sid) else {
        out.err(format!("storage '{sid}' does not exist\n"));
        return 255;
    };
    let vols = match volumes(root, st) {
        Ok(v) => v,
        Err(e) => {
            out.err(format!("{e}\n"));
            return 255;
        }
    };
    // Templates are listed only without `--vmid` (pve-storage `list_volumes`).
    let vols: Vec<Volume> = vols
        .into_iter()
        .filter(|v| content.is_none_or(|c| v.content == c))
        .filter(|v| vmid.is_none_or(|id| v.vmid == Some(id)))
        .collect();
    out.out(content_table(&vols));
    0
}

/// pvesm's `print_content`: a header, disks (with their VMID), then the rest.
fn content_table(vols: &[Volume]) -> String {
    let name = vols.iter().map(|v| v.volid.len()).max().unwrap_or(0);
    let size = vols
        .iter()
        .map(|v| v.size.to_string().len())
        .max()
        .unwrap_or(0);
    let row = |a: &str, b: &str, c: &str, d: &str| format!("{a:<name$} {b:<7} {c:<9} {d:>size$}");
    let mut s = row("Volid", "Format", "Type", "Size") + " VMID\n";
    for v in vols {
        if let Some(id) = v.vmid {
            s.push_str(&format!(
                "{} {id}\n",
                row(&v.volid, &v.format, &v.content, &v.size.to_string())
            ));
        }
    }
    let mut rest: Vec<&Volume> = vols.iter().filter(|v| v.vmid.is_none()).collect();
    rest.sort_by(|a, b| a.format.cmp(&b.format));
    for v in rest {
        s.push_str(&row(&v.volid, &v.format, &v.content, &v.size.to_string()));
        s.push('\n');
    }
    s
}

fn free_cmd(root: &Root, rest: &[String], out: &mut Out) -> i32 {
    let kinds = |o: &str| matches!(o, "delay" | "storage").then_some(Kind::Value);
    let p = match parse_n(
        rest,
        kinds,
        1,
        "USAGE: pvesm free <volume> [OPTIONS]\n",
        out,
    ) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let volume = &p.args[0];
    // `real_volume_id`: a bare name with `--storage`, else a full volume id.
    let volid = match p.get("storage") {
        Some(sid) if !volume.contains(':') => format!("{sid}:{volume}"),
        _ => volume.clone(),
    };
    // The ZFS state takes the root lock itself; a file is removed in one step.
    match free(root, &volid) {
        Ok(()) => {
            out.out(format!("Removed volume '{volid}'\n"));
            0
        }
        Err(m) => {
            out.err(format!("{m}\n"));
            255
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_pvesm_layout() {
        let local = &default_storages()[0];
        let t = status_table(&[local], false);
        assert_eq!(
            t,
            "Name         Type     Status           Total            Used       Available        %\n\
             local         dir     active        98497780        12582912        85914868   12.77%\n"
        );
    }

    #[test]
    fn arguments_are_counted_as_get_options_does() {
        let kinds = |o: &str| (o == "vmid").then_some(Kind::Value);
        let run = |args: &[&str], n: usize| {
            let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
            let mut out = Out::default();
            let r = parse_n(&args, kinds, n, "USAGE: pvesm x\n", &mut out);
            (
                r.map(|p| (p.args, p.opts)),
                String::from_utf8(out.stderr).unwrap(),
            )
        };
        assert_eq!(
            run(&["local", "--vmid", "901"], 1),
            (
                Ok((
                    vec!["local".to_owned()],
                    vec![("vmid".into(), "901".into())]
                )),
                String::new()
            )
        );
        assert_eq!(
            run(&["--vmid", "901"], 1),
            (
                Err(255),
                "400 not enough arguments\nUSAGE: pvesm x\n".to_owned()
            )
        );
        assert_eq!(
            run(&["a", "b"], 1),
            (
                Err(255),
                "400 too many arguments\nUSAGE: pvesm x\n".to_owned()
            )
        );
        assert_eq!(
            run(&["a"], 0),
            (
                Err(255),
                "400 too many arguments\nUSAGE: pvesm x\n".to_owned()
            )
        );
        assert_eq!(
            run(&["a", "--bogus"], 1),
            (
                Err(255),
                "Unknown option: bogus\n400 unable to parse option\nUSAGE: pvesm x\n".to_owned()
            )
        );
    }

    #[test]
    fn disk_owners_and_template_names() {
        assert_eq!(disk_owner("subvol-901-disk-0"), Some(901));
        assert_eq!(disk_owner("vm-100-disk-1.raw"), Some(100));
        assert_eq!(disk_owner("subvol-901"), None);
        assert_eq!(disk_owner("phoenix-901-disk-0"), None);
        assert_eq!(
            template_name("vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst"),
            Some("ubuntu-24.04-standard_24.04-2_amd64.tar.zst")
        );
        assert_eq!(template_name("vztmpl/x.zip"), None);
        assert_eq!(template_name("vztmpl/../x.tar"), None);
        assert_eq!(template_name("iso/x.tar"), None);
    }

    #[test]
    fn content_table_matches_print_content() {
        let vols = [
            Volume {
                volid: "local-zfs:subvol-901-disk-0".into(),
                format: "subvol".into(),
                content: "rootdir".into(),
                size: 68_719_476_736,
                vmid: Some(901),
            },
            Volume {
                volid: "local:vztmpl/x.tar.zst".into(),
                format: "tzst".into(),
                content: "vztmpl".into(),
                size: 57,
                vmid: None,
            },
        ];
        assert_eq!(
            content_table(&vols),
            "Volid                       Format  Type             Size VMID\n\
             local-zfs:subvol-901-disk-0 subvol  rootdir   68719476736 901\n\
             local:vztmpl/x.tar.zst      tzst    vztmpl             57\n"
        );
    }
}

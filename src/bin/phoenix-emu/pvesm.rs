//! `pvesm status` and the emulated storages.
//!
//! Storages (fixed): `local` (dir: iso, vztmpl, backup), `local-lvm` (lvmthin: rootdir,
//! images), `lxc-disks` (zfspool on `rpool/lxc-disks`: rootdir, images). The table is printed with pve-storage's format string; the
//! column headings gained `(KiB)` units in libpve-storage-perl 9.0.14, so the emulator
//! prints them from PVE 9.1 on (the first release that surely ships it).

use crate::opts::{self, Kind};
use crate::out::Out;
use crate::root::Root;

/// One emulated storage.
#[derive(Debug, Clone, Copy)]
pub struct Storage {
    /// Its id.
    pub id: &'static str,
    /// `dir`, `lvmthin`, `zfspool`.
    pub ty: &'static str,
    /// Content types.
    pub content: &'static [&'static str],
    /// The ZFS pool/dataset of a `zfspool` storage.
    pub pool: Option<&'static str>,
    /// Total KiB.
    pub total_kib: u64,
    /// Used KiB.
    pub used_kib: u64,
}

/// The storages of the emulated host, sorted by id.
pub const STORAGES: &[Storage] = &[
    Storage {
        id: "local",
        ty: "dir",
        content: &["iso", "vztmpl", "backup"],
        pool: None,
        total_kib: 98_497_780,
        used_kib: 12_582_912,
    },
    Storage {
        id: "local-lvm",
        ty: "lvmthin",
        content: &["rootdir", "images"],
        pool: None,
        total_kib: 366_276_608,
        used_kib: 21_974_814,
    },
    Storage {
        id: "lxc-disks",
        ty: "zfspool",
        content: &["rootdir", "images"],
        pool: Some("rpool/lxc-disks"),
        total_kib: 942_931_968,
        used_kib: 104_857_600,
    },
];

/// The storage named `id`.
pub fn find(id: &str) -> Option<&'static Storage> {
    STORAGES.iter().find(|s| s.id == id)
}

/// `pvesm <command> …` (only `status` is emulated).
pub fn run(root: &Root, args: &[String], out: &mut Out) -> i32 {
    let Some((cmd, rest)) = args.split_first() else {
        out.err("ERROR: no command specified\nUSAGE: pvesm <COMMAND> [ARGS] [OPTIONS]\n");
        return 255;
    };
    if cmd != "status" {
        out.err(format!("ERROR: unknown command 'pvesm {cmd}'\n"));
        return 255;
    }
    let usage = "USAGE: pvesm status  [OPTIONS]\n";
    let p = match opts::parse(rest, |o| match o {
        "content" | "format" | "storage" | "target" => Some(Kind::Value),
        "enabled" => Some(Kind::Bool),
        _ => None,
    }) {
        Ok(p) => p,
        Err(e) => {
            out.err(e.message() + usage);
            return 255;
        }
    };
    if !p.args.is_empty() {
        out.err(format!("400 too many arguments\n{usage}"));
        return 255;
    }
    let storage = p.get("storage");
    if let Some(id) = storage {
        if find(id).is_none() {
            out.err(format!("storage '{id}' does not exist\n"));
            return 255;
        }
    }
    let content = p.get("content");
    let list: Vec<&Storage> = STORAGES
        .iter()
        .filter(|s| storage.is_none_or(|id| s.id == id))
        .filter(|s| content.is_none_or(|c| s.content.contains(&c)))
        .collect();
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
        let per = st.used_kib as f64 * 100.0 / st.total_kib as f64;
        s.push_str(&format!(
            "{:<maxlen$} {:>10} {:>10} {:>15} {:>15} {:>15} {:>7.2}%\n",
            st.id,
            st.ty,
            "active",
            st.total_kib,
            st.used_kib,
            st.total_kib - st.used_kib,
            per
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_pvesm_layout() {
        let t = status_table(&[&STORAGES[0]], false);
        assert_eq!(
            t,
            "Name         Type     Status           Total            Used       Available        %\n\
             local         dir     active        98497780        12582912        85914868   12.77%\n"
        );
    }
}

//! `pveversion`: `pve-manager/<version>/<hash> (running kernel: 6.8.12-4-pve)`, the version
//! from the root's settings. `-v`/`--verbose` adds the package lines phoenix may look at.

use crate::opts::{self, Kind};
use crate::out::Out;
use crate::root::Root;

/// The kernel every emulated version reports.
const KERNEL: &str = "6.8.12-4-pve";

/// `pveversion [--verbose]`.
pub fn run(root: &Root, args: &[String], out: &mut Out) -> i32 {
    let usage = "USAGE: pveversion  [OPTIONS]\n";
    let p = match opts::parse(args, |o| (o == "verbose" || o == "v").then_some(Kind::Bool)) {
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
    let v = &root.settings.pve_version;
    let line = format!("pve-manager/{v}/{} (running kernel: {KERNEL})\n", hash(v));
    let verbose = p
        .get("verbose")
        .or(p.get("v"))
        .and_then(opts::parse_bool)
        .unwrap_or(false);
    if verbose {
        let (major, minor, _) = root.pve_version();
        out.out(format!(
            "proxmox-ve: {major}.{minor}.0 (running kernel: {KERNEL})\n"
        ));
        out.out(format!(
            "pve-manager: {v} (running version: {v}/{})\n",
            hash(v)
        ));
        out.out(format!(
            "pve-container: {}\n",
            container_version(root.pve_version())
        ));
    } else {
        out.out(line);
    }
    0
}

/// A stable 16-hex-digit build hash for a version string.
fn hash(v: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The pve-container release a PVE version ships (approximate, for `--verbose`).
fn container_version(v: (u32, u32, u32)) -> &'static str {
    match v {
        (m, _, _) if m >= 9 => "6.0.9",
        (8, n, _) if n >= 3 => "5.2.6",
        (8, 2, _) => "5.1.12",
        (8, 1, _) => "5.0.8",
        (8, _, _) => "5.0.4",
        _ => "4.4-6",
    }
}

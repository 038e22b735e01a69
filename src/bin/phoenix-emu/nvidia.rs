//! `nvidia-smi`, answered from the H100 fixture (`tests/fixtures/gpu/h100-driver580/`,
//! captured on a real H100 with driver 580.159.04).
//!
//! The root's settings choose the GPUs: `h100x2` (default) is the fixture's GPU 0 plus a
//! second H100 at bus `00000000:00:07.0` with another UUID and minor number 1; `h100x1` is
//! the fixture as captured; `none` fails like a host whose driver is not loaded.
//! `gpu_minors` gives each GPU its device minor number (`Minor Number` in `-q`; the node is
//! `/dev/nvidia<minor>`, which need not be its index) and `mig` turns MIG mode on.
//! Emulated: `--query-gpu=…` with `--format=csv[,noheader][,nounits]` (and `-i`), `-L`,
//! `-q` (text, with `Minor Number`).

use crate::out::Out;
use crate::root::{GpuSet, Root, Settings};

/// `nvidia-smi -q` as captured on the H100 host.
pub(crate) const FIXTURE_Q: &str =
    include_str!("../../../tests/fixtures/gpu/h100-driver580/nvidia-smi-q.txt");

/// The second emulated GPU's UUID.
const SECOND_UUID: &str = "GPU-8d3c5e1a-47b2-4f0e-9a61-2b7e0c9d1f35";

/// One GPU as the emulator reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// nvidia-smi index.
    pub index: u32,
    /// `00000000:00:06.0`.
    pub bus_id: String,
    /// `GPU-…`.
    pub uuid: String,
    /// Product name.
    pub name: String,
    /// MiB.
    pub memory_total: u64,
    /// Driver version.
    pub driver: String,
    /// Device minor number.
    pub minor: u32,
    /// MIG mode enabled.
    pub mig: bool,
    /// This GPU's `nvidia-smi -q` block.
    pub q_block: String,
}

/// The value after `key … : ` on the first line of `text` whose trimmed start is `key`.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with(key) && l.contains(" : "))
        .and_then(|l| l.split_once(" : "))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default()
}

/// The fixture's header (up to `Attached GPUs`) and its one GPU block.
fn split_fixture() -> (String, String) {
    let start = FIXTURE_Q.find("\nGPU ").map_or(0, |i| i + 1);
    (FIXTURE_Q[..start].to_owned(), FIXTURE_Q[start..].to_owned())
}

/// The fixture's `MIG Mode` lines (MIG disabled, as captured).
const MIG_DISABLED: &str = "    MIG Mode\n        Current                                        : Disabled\n        Pending                                        : Disabled\n";

/// The same lines with MIG enabled (the H100 supports MIG; `nvidia-smi -q` then says
/// `Enabled` for the current and pending mode).
const MIG_ENABLED: &str = "    MIG Mode\n        Current                                        : Enabled\n        Pending                                        : Enabled\n";

/// The `Minor Number` line of a `-q` block.
fn minor_line(minor: u32) -> String {
    format!("    Minor Number                                       : {minor}\n")
}

/// The GPUs of the emulated host's settings: which GPUs (`gpus`), their device minor
/// numbers (`gpu_minors`, default the index) and their MIG mode (`mig`).
pub fn gpus(settings: &Settings) -> Vec<Gpu> {
    let (_, block) = split_fixture();
    let fixture_minor: u32 = field(&block, "Minor Number").parse().unwrap_or(0);
    let first = Gpu {
        index: 0,
        bus_id: field(&block, "Bus Id"),
        uuid: field(&block, "GPU UUID"),
        name: field(&block, "Product Name"),
        memory_total: field(&block, "Total")
            .trim_end_matches(" MiB")
            .parse()
            .unwrap_or(0),
        driver: field(FIXTURE_Q, "Driver Version"),
        minor: fixture_minor,
        mig: false,
        q_block: block.clone(),
    };
    let mut all = match settings.gpus {
        GpuSet::None => Vec::new(),
        GpuSet::H100x1 => vec![first],
        GpuSet::H100x2 => {
            let bus = first.bus_id.replace(":06.0", ":07.0");
            let q = block
                .replace(&first.bus_id, &bus)
                .replace(&first.uuid, SECOND_UUID)
                .replace(
                    "Device                                         : 0x06",
                    "Device                                         : 0x07",
                );
            let second = Gpu {
                index: 1,
                bus_id: bus,
                uuid: SECOND_UUID.to_owned(),
                minor: 1,
                q_block: q,
                ..first.clone()
            };
            vec![first, second]
        }
    };
    for g in &mut all {
        let minor = settings
            .gpu_minors
            .as_ref()
            .and_then(|m| m.get(g.index as usize).copied())
            .unwrap_or(g.index);
        g.q_block = g
            .q_block
            .replace(&minor_line(fixture_minor), &minor_line(minor));
        g.minor = minor;
        if settings.mig {
            g.q_block = g.q_block.replace(MIG_DISABLED, MIG_ENABLED);
            g.mig = true;
        }
    }
    all
}

/// `nvidia-smi …`.
pub fn run(root: &Root, args: &[String], out: &mut Out) -> i32 {
    run_with(&gpus(&root.settings), args, out)
}

/// `nvidia-smi …` seeing exactly the GPUs `all` (inside a container: those passed through).
pub fn run_with(all: &[Gpu], args: &[String], out: &mut Out) -> i32 {
    let all = all.to_vec();
    if all.is_empty() {
        out.out("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n\n");
        return 9;
    }
    let mut query: Option<String> = None;
    let mut format: Option<String> = None;
    let mut list = false;
    let mut q = false;
    let mut ids: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--query-gpu=") {
            query = Some(v.to_owned());
        } else if let Some(v) = a.strip_prefix("--format=") {
            format = Some(v.to_owned());
        } else if let Some(v) = a.strip_prefix("--id=") {
            ids = Some(v.to_owned());
        } else {
            match a.as_str() {
                "-L" | "--list-gpus" => list = true,
                "-q" | "--query" => q = true,
                "-i" | "--id" => ids = it.next().cloned(),
                _ => {
                    out.out(format!(
                        "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n\n(`{a}` is not emulated)\n"
                    ));
                    return 2;
                }
            }
        }
    }
    let selected: Vec<&Gpu> = match &ids {
        None => all.iter().collect(),
        Some(list) => {
            let mut v = Vec::new();
            for id in list.split(',') {
                match all
                    .iter()
                    .find(|g| g.index.to_string() == id || g.uuid == id || g.bus_id == id)
                {
                    Some(g) => v.push(g),
                    None => {
                        out.out(format!("No devices were found matching the id '{id}'\n"));
                        return 6;
                    }
                }
            }
            v
        }
    };
    if let Some(fields) = query {
        return query_gpu(&fields, format.as_deref(), &selected, out);
    }
    if format.is_some() {
        out.out("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n\n");
        return 2;
    }
    if list {
        for g in &selected {
            out.out(format!("GPU {}: {} (UUID: {})\n", g.index, g.name, g.uuid));
        }
        return 0;
    }
    if q {
        let (header, _) = split_fixture();
        let header = header.replace(
            "Attached GPUs                                          : 1",
            &format!(
                "Attached GPUs                                          : {}",
                all.len()
            ),
        );
        out.out(header);
        for g in &selected {
            out.out(&g.q_block);
        }
        return 0;
    }
    for g in &selected {
        out.out(format!("GPU {}: {} (UUID: {})\n", g.index, g.name, g.uuid));
    }
    0
}

fn query_gpu(fields: &str, format: Option<&str>, gpus: &[&Gpu], out: &mut Out) -> i32 {
    let Some(format) = format else {
        out.out("Invalid combination of input arguments. Please run 'nvidia-smi -h' for help.\n\n");
        return 2;
    };
    let opts: Vec<&str> = format.split(',').map(str::trim).collect();
    if !opts.contains(&"csv")
        || opts
            .iter()
            .any(|o| !matches!(*o, "csv" | "noheader" | "nounits"))
    {
        out.out(format!("\"{format}\" is not a valid format.\n"));
        return 2;
    }
    let (header, units) = (!opts.contains(&"noheader"), !opts.contains(&"nounits"));
    let fields: Vec<&str> = fields.split(',').map(str::trim).collect();
    for f in &fields {
        if value(gpus[0], f, false).is_none() {
            out.out(format!("Field \"{f}\" is not a valid field to query.\n\n"));
            return 2;
        }
    }
    if header {
        let names: Vec<String> = fields
            .iter()
            .map(|f| {
                if f.starts_with("memory.") {
                    format!("{f} [MiB]")
                } else {
                    (*f).to_owned()
                }
            })
            .collect();
        out.out(names.join(", ") + "\n");
    }
    for g in gpus {
        let vals: Vec<String> = fields
            .iter()
            .map(|f| value(g, f, units).unwrap_or_default())
            .collect();
        out.out(vals.join(", ") + "\n");
    }
    0
}

fn value(g: &Gpu, field: &str, units: bool) -> Option<String> {
    let mib = |n: u64| {
        if units {
            format!("{n} MiB")
        } else {
            n.to_string()
        }
    };
    Some(match field {
        "index" => g.index.to_string(),
        "pci.bus_id" | "gpu_bus_id" => g.bus_id.clone(),
        "uuid" | "gpu_uuid" => g.uuid.clone(),
        "name" | "gpu_name" => g.name.clone(),
        "memory.total" => mib(g.memory_total),
        "memory.used" => mib(0),
        "memory.free" => mib(g.memory_total.saturating_sub(480)),
        "driver_version" => g.driver.clone(),
        "compute_cap" => "9.0".into(),
        "mig.mode.current" | "mig.mode.pending" => {
            if g.mig { "Enabled" } else { "Disabled" }.into()
        }
        "count" => "1".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(gpus: GpuSet) -> Settings {
        let mut s: Settings = serde_json::from_str("{}").unwrap();
        s.gpus = gpus;
        s
    }

    #[test]
    fn fixture_fields_are_read() {
        let g = gpus(&settings(GpuSet::H100x1));
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].bus_id, "00000000:00:06.0");
        assert_eq!(g[0].uuid, "GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4");
        assert_eq!(g[0].name, "NVIDIA H100 80GB HBM3");
        assert_eq!(g[0].memory_total, 81559);
        assert_eq!(g[0].driver, "580.159.04");
    }

    #[test]
    fn second_gpu_differs_where_it_must() {
        let g = gpus(&settings(GpuSet::H100x2));
        assert_eq!(g[1].bus_id, "00000000:00:07.0");
        assert_eq!(g[1].minor, 1);
        assert!(
            g[1].q_block
                .contains("Minor Number                                       : 1")
        );
        assert!(g[1].q_block.contains(SECOND_UUID));
        assert!(!g[1].q_block.contains(&g[0].uuid));
    }

    #[test]
    fn minors_and_mig_come_from_the_settings() {
        let mut s = settings(GpuSet::H100x2);
        s.gpu_minors = Some(vec![1, 0]);
        s.mig = true;
        let g = gpus(&s);
        assert_eq!((g[0].minor, g[1].minor), (1, 0));
        assert!(g[0].q_block.contains(&minor_line(1)), "{}", g[0].q_block);
        assert!(g[1].q_block.contains(&minor_line(0)));
        assert!(g[0].q_block.contains(MIG_ENABLED));
        assert!(!g[1].q_block.contains(MIG_DISABLED));
        // The fixture as captured: minor 0, MIG disabled.
        let one = gpus(&settings(GpuSet::H100x1));
        assert!(one[0].q_block.contains(&minor_line(0)) && one[0].q_block.contains(MIG_DISABLED));
    }
}

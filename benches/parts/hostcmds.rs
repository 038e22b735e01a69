//! P2: the host commands of a run, read from the emulator's `argv.log` and counted as
//! mutating or read-only.
//!
//! The log records argv only, so the bench classifies each call itself, by what the real
//! tool does with that subcommand: `pct status|config|list|pending|df`, `pvesm
//! status|list|path`, `zfs list|get`, `systemctl is-*|show|status|cat`, `pveversion`,
//! `nvidia-smi` and `stat` read; every other subcommand of the host tools changes something. A
//! `pct exec` is classified by the program it runs inside the container: phoenix's own
//! read-only probes ([`phoenix::boundary::argv::is_probe`]) and the query forms listed in
//! [`inner_reads`] read; anything else counts as mutating (an unknown program is assumed to
//! change something). Every `pct` call counts apart too: each one starts a Perl interpreter
//! on a real host (the 0.3 s of the latency profile).
//!
//! The integration tests include this file too (`tests/integration/host_commands.rs`), to
//! pin the counts the bench reports.

use serde_json::Value;

/// The counts of one run's host commands.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Commands that change the host or a container.
    pub mutating: usize,
    /// Commands that only read.
    pub read_only: usize,
    /// Of all of them, `pct` calls.
    pub pct: usize,
}

impl Counts {
    /// All commands.
    pub fn total(&self) -> usize {
        self.mutating + self.read_only
    }
}

/// Count the calls `calls` (lines of `argv.log`).
pub fn count(calls: &[Value]) -> Counts {
    let mut c = Counts::default();
    for call in calls {
        let tool = call["tool"].as_str().unwrap_or_default();
        let argv: Vec<String> = call["argv"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        if tool == "pct" {
            c.pct += 1;
        }
        if reads(tool, &argv) {
            c.read_only += 1;
        } else {
            c.mutating += 1;
        }
    }
    c
}

/// The calls of `calls` that concern no container in particular: the host-wide questions
/// and changes (PVE version, storages and their volume lists, templates, GPUs, the models'
/// parent datasets, the GPU nodes unit) that one `phoenix up` makes once for all its
/// containers. A call concerns a container when an argument is its vmid or has its name
/// as a path or option part (its dataset `…/models/<name>`, `--hostname <name>`).
pub fn host_wide<'a>(calls: &'a [Value], containers: &[(u32, &str)]) -> Vec<&'a Value> {
    calls
        .iter()
        .filter(|call| {
            let argv = call["argv"].as_array().cloned().unwrap_or_default();
            !argv.iter().filter_map(Value::as_str).any(|a| {
                containers.iter().any(|(vmid, name)| {
                    a == vmid.to_string() || a.split(['/', ',', '=']).any(|part| part == *name)
                })
            })
        })
        .collect()
}

/// One line per distinct call shape (tool, subcommand, inner program) with its count and
/// class, most frequent first: what the figures are made of.
pub fn breakdown(calls: &[Value]) -> Vec<String> {
    let mut by: std::collections::BTreeMap<(String, bool), usize> = Default::default();
    for call in calls {
        let tool = call["tool"].as_str().unwrap_or_default();
        let argv: Vec<String> = call["argv"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let shape = match (tool, argv.first().map(String::as_str)) {
            ("pct", Some("exec")) => {
                let inner = inner_argv(&argv);
                format!(
                    "pct exec -- {}",
                    inner.iter().take(2).cloned().collect::<Vec<_>>().join(" ")
                )
            }
            (t, Some(sub)) if !sub.starts_with('-') => format!("{t} {sub}"),
            (t, _) => t.to_owned(),
        };
        *by.entry((shape, reads(tool, &argv))).or_default() += 1;
    }
    let mut rows: Vec<((String, bool), usize)> = by.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.into_iter()
        .map(|((shape, ro), n)| format!("{n:>4}  {}  {shape}", if ro { "read" } else { "MUT " }))
        .collect()
}

/// Whether a host call of `tool` with `argv` only reads.
pub fn reads(tool: &str, argv: &[String]) -> bool {
    let sub = argv.first().map(String::as_str).unwrap_or_default();
    match tool {
        // `stat -c %u:%g` (a dataset directory's owner) only reads.
        "pveversion" | "nvidia-smi" | "stat" => true,
        "pct" if sub == "exec" => {
            let inner = inner_argv(argv);
            phoenix::boundary::argv::is_probe(&inner) || inner_reads(&inner)
        }
        "pct" => matches!(sub, "status" | "config" | "list" | "pending" | "df"),
        "pvesm" => matches!(sub, "status" | "list" | "path"),
        "zfs" => matches!(sub, "list" | "get"),
        "systemctl" => systemctl_reads(argv),
        _ => false,
    }
}

/// The program and arguments of `pct exec <vmid> [options] -- prog args…`.
fn inner_argv(argv: &[String]) -> Vec<String> {
    argv.iter()
        .position(|a| a == "--")
        .map(|i| argv[i + 1..].to_vec())
        .unwrap_or_default()
}

fn systemctl_reads(argv: &[String]) -> bool {
    argv.iter()
        .find(|a| !a.starts_with('-'))
        .is_some_and(|sub| {
            matches!(
                sub.as_str(),
                "is-active" | "is-enabled" | "is-failed" | "show" | "status" | "cat" | "list-units"
            )
        })
}

/// Query forms of programs run inside a container that read only.
pub fn inner_reads(inner: &[String]) -> bool {
    let Some(prog) = inner.first() else {
        return false;
    };
    let prog = prog.rsplit('/').next().unwrap_or(prog);
    let sub = inner.get(1).map(String::as_str).unwrap_or_default();
    match prog {
        "cat" | "test" | "stat" | "ls" | "id" | "getent" | "uname" | "du" | "df" | "readlink"
        | "sha256sum" | "head" | "nvidia-smi" | "dpkg-query" | "ip" | "hostname" => true,
        "systemctl" => systemctl_reads(&inner[1..]),
        "docker" => {
            matches!(
                sub,
                "version" | "info" | "inspect" | "ps" | "images" | "logs" | "port"
            ) || (matches!(sub, "image" | "container")
                && inner.get(2).is_some_and(|s| s == "inspect"))
        }
        "dpkg" => matches!(
            sub,
            "-s" | "-l" | "-L" | "--status" | "--print-architecture"
        ),
        "apt-cache" => matches!(sub, "policy" | "show" | "search"),
        "nvidia-ctk" => matches!(sub, "--version"),
        _ => false,
    }
}

//! The typed [`LxcConfig`]s and the checks a schema cannot make.
//!
//! Runs after the schema on the same document. Every value goes through a validated
//! newtype of [`crate::types`] (or one of the small checks below for values that have no
//! newtype: `vllm_served_model_name`, `vllm_image`, `recipe`), so nothing reaches a command
//! line that could be read as an option or change a composite value. A pointer the schema
//! already reported (or whose parent it reported) is not reported again: one mistake is one
//! problem, while independent mistakes in the same entry are all found.
//!
//! Duplicates across containers (names, static addresses, MACs) are reported at the entry
//! whose key sorts later, naming the other one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::Ipv4Network;
use serde_json::{Map, Value};

use super::position::escape_token;
use super::schema::describe;
use super::{
    At, Features, Finding, IpConfig, KvCacheDtype, LxcConfig, Network, PortainerRole,
    QUANTIZATIONS, VllmConfig,
};
use crate::types::{
    BridgeName, GpuRef, GpuSelector, Hostname, IfaceName, Mac, ModelId, ModelsParent, PackageName,
    Size, StorageId, Template, TypeError, Vmid, show,
};

/// What the semantic pass produced.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The top-level `models_dataset`, when present and valid.
    pub(crate) models_dataset: Option<ModelsParent>,
    /// The typed entries that had no problem.
    pub(crate) lxc: BTreeMap<Vmid, LxcConfig>,
    /// Problems (not yet placed).
    pub(crate) findings: Vec<Finding>,
    /// Accepted bash-era forms.
    pub(crate) warnings: Vec<Finding>,
}

/// Build the typed entries of `doc` and check them; `flagged` holds the pointers the schema
/// already reported.
pub(crate) fn build(doc: &Value, flagged: &HashSet<String>) -> Outcome {
    let mut c = Checker {
        flagged,
        out: Outcome::default(),
    };
    if let Some(top) = doc.as_object() {
        if let Ok(parent) = c.typed(top, &"", "models_dataset", false, ModelsParent::new) {
            c.out.models_dataset = parent;
        }
    }
    let Some(entries) = doc.get("lxc_configs").and_then(Value::as_object) else {
        return c.out;
    };
    let mut seen = Seen::default();
    for (key, value) in entries {
        if let Some(entry) = c.entry(key, value, &mut seen) {
            c.out.lxc.insert(entry.vmid, entry);
        }
    }
    c.backends(entries);
    c.across(&entries.keys().map(String::as_str).collect());
    c.out
}

/// A cycle in the `after` graph, as the ids along it (the first repeated at the end),
/// starting at the smallest id on it; `None` when there is none. Ids without an entry are
/// not followed (reported on their own).
pub(crate) fn after_cycle(lxc: &BTreeMap<Vmid, LxcConfig>) -> Option<Vec<Vmid>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Closed,
    }
    fn visit(
        v: Vmid,
        lxc: &BTreeMap<Vmid, LxcConfig>,
        marks: &mut BTreeMap<Vmid, Mark>,
        path: &mut Vec<Vmid>,
    ) -> Option<Vec<Vmid>> {
        marks.insert(v, Mark::Open);
        path.push(v);
        for next in lxc.get(&v).map_or(&[][..], |e| e.after.as_slice()) {
            match marks.get(next).copied() {
                Some(Mark::Open) => {
                    let start = path.iter().position(|p| p == next).unwrap_or(0);
                    let mut cycle: Vec<Vmid> = path[start..].to_vec();
                    // Start at the smallest id, so the message does not depend on the walk.
                    let min = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
                    cycle.rotate_left(min);
                    cycle.push(cycle[0]);
                    return Some(cycle);
                }
                Some(Mark::New) => {
                    if let Some(c) = visit(*next, lxc, marks, path) {
                        return Some(c);
                    }
                }
                Some(Mark::Closed) | None => {}
            }
        }
        path.pop();
        marks.insert(v, Mark::Closed);
        None
    }
    let mut marks: BTreeMap<Vmid, Mark> = lxc.keys().map(|v| (*v, Mark::New)).collect();
    for v in lxc.keys() {
        if marks[v] == Mark::New {
            if let Some(c) = visit(*v, lxc, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// A GPU reference normalised for comparison: two references written the same way name
/// the same GPU (UUIDs and PCI ids without regard to case, a PCI id with or without its
/// 8-digit domain); an index and a UUID are never compared (only the host knows).
fn gpu_key(r: &GpuRef) -> String {
    match r {
        GpuRef::Index(i) => format!("index:{i}"),
        GpuRef::Uuid(u) => format!("uuid:{}", u.to_ascii_lowercase()),
        GpuRef::Pci(p) => {
            let p = p.to_ascii_lowercase();
            let norm = match p.split_once(':') {
                Some((dom, rest)) if p.matches(':').count() == 2 => {
                    format!("{:0>4}:{rest}", dom.trim_start_matches('0'))
                }
                _ => format!("0000:{p}"),
            };
            format!("pci:{norm}")
        }
    }
}

/// `GPU 0, 1 also assigned to container 901`, `GPU 1 also assigned to containers 902, 904`:
/// GPUs next to each other with the same earlier entries share a clause; clauses joined by
/// `; `; at most five ids each, then how many more.
fn sharing_text(shared: &[(String, Vec<&LxcConfig>)]) -> String {
    let mut merged: Vec<(String, &Vec<&LxcConfig>)> = Vec::new();
    for (gpu, es) in shared {
        let same = |a: &Vec<&LxcConfig>, b: &Vec<&LxcConfig>| {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.vmid == y.vmid)
        };
        match merged.last_mut() {
            Some((label, last)) if same(last, es) => {
                label.push_str(", ");
                label.push_str(gpu);
            }
            _ => merged.push((gpu.clone(), es)),
        }
    }
    merged
        .iter()
        .map(|(gpu, es)| {
            let mut ids: Vec<String> = es.iter().take(5).map(|e| e.vmid.to_string()).collect();
            if es.len() > 5 {
                ids.push(format!("{} more", es.len() - 5));
            }
            let noun = if es.len() == 1 {
                "container"
            } else {
                "containers"
            };
            format!("GPU {gpu} also assigned to {noun} {}", ids.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A value that was present but wrong, or required and absent; already recorded.
#[derive(Debug)]
struct Bad;

/// `Ok(None)`: absent and optional.
type Field<T> = Result<Option<T>, Bad>;

struct Checker<'a> {
    flagged: &'a HashSet<String>,
    out: Outcome,
}

/// First users of values that must be unique across containers: the entry's key and the
/// member's pointer below the entry ([`FirstUse`]), joined only for a message.
#[derive(Default)]
struct Seen<'d> {
    names: HashMap<String, FirstUse<'d>>,
    ips: HashMap<Ipv4Addr, FirstUse<'d>>,
    macs: HashMap<String, FirstUse<'d>>,
}

/// Where a value is used: the key of its entry in `lxc_configs` and the member's pointer
/// below that entry (`/name`).
type FirstUse<'d> = (&'d str, &'static str);

/// The pointer `{0}/{1}`, written out only when a finding needs its text: checking a valid
/// entry makes no pointer string.
struct Join<'a, T>(&'a dyn Display, T);

impl<T: Display> Display for Join<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// A key as a reference token of a pointer (escaped as RFC 6901 says), written out lazily.
struct Token<'a>(&'a str);

impl Display for Token<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&escape_token(self.0))
    }
}

/// The pointer of the member `below` (`/name`, `/network_config/ip`) of the entry `key`.
fn member_pointer(key: &str, below: &str) -> String {
    format!("/lxc_configs/{}{below}", escape_token(key))
}

impl Checker<'_> {
    /// Whether the schema already reported `pointer` or one of its ancestors.
    fn suppressed(&self, pointer: &str) -> bool {
        let mut p = pointer;
        loop {
            if self.flagged.contains(p) {
                return true;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return false,
            }
        }
    }

    fn bad(
        &mut self,
        pointer: &dyn Display,
        at: At,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) {
        let pointer = pointer.to_string();
        if !self.suppressed(&pointer) {
            self.out.findings.push(Finding {
                pointer,
                at,
                expected: expected.into(),
                found: found.into(),
            });
        }
    }

    fn warn(&mut self, pointer: &dyn Display, expected: String, found: String) {
        self.out.warnings.push(Finding {
            pointer: pointer.to_string(),
            at: At::Value,
            expected,
            found,
        });
    }

    fn refused(&mut self, pointer: &dyn Display, err: &TypeError) -> Bad {
        self.bad(
            pointer,
            At::Value,
            format!("a valid {}", err.kind),
            format!("{}; {}", err.shown, err.reason),
        );
        Bad
    }

    fn get<'v>(
        &mut self,
        e: &'v Map<String, Value>,
        base: &dyn Display,
        f: &str,
        required: bool,
    ) -> Field<&'v Value> {
        match e.get(f) {
            Some(v) => Ok(Some(v)),
            None if required => {
                self.bad(
                    &format!("{base}/{f}"),
                    At::Parent,
                    format!("field `{f}` (required)"),
                    "nothing",
                );
                Err(Bad)
            }
            None => Ok(None),
        }
    }

    fn text<'v>(
        &mut self,
        e: &'v Map<String, Value>,
        base: &dyn Display,
        f: &str,
        required: bool,
    ) -> Field<&'v str> {
        match self.get(e, base, f, required)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => {
                self.bad(&format!("{base}/{f}"), At::Value, "string", describe(other));
                Err(Bad)
            }
        }
    }

    fn typed<T>(
        &mut self,
        e: &Map<String, Value>,
        base: &dyn Display,
        f: &str,
        required: bool,
        parse: impl FnOnce(String) -> Result<T, TypeError>,
    ) -> Field<T> {
        match self.text(e, base, f, required)? {
            None => Ok(None),
            Some(s) => parse(s.to_owned())
                .map(Some)
                .map_err(|err| self.refused(&format!("{base}/{f}"), &err)),
        }
    }

    /// An integer in `min..=max` (the schema's range, checked again for the typed value).
    fn int(
        &mut self,
        e: &Map<String, Value>,
        base: &dyn Display,
        f: &str,
        required: bool,
        min: u64,
        max: u64,
    ) -> Field<u64> {
        match self.get(e, base, f, required)? {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => {
                    self.bad(
                        &format!("{base}/{f}"),
                        At::Value,
                        format!("an integer {min}…{max}"),
                        describe(v),
                    );
                    Err(Bad)
                }
            },
        }
    }

    fn boolean(&mut self, e: &Map<String, Value>, base: &dyn Display, f: &str) -> Field<bool> {
        match self.get(e, base, f, false)? {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => {
                self.bad(
                    &format!("{base}/{f}"),
                    At::Value,
                    "boolean",
                    describe(other),
                );
                Err(Bad)
            }
        }
    }

    /// One container entry; `None` when it has a problem (already recorded).
    fn entry<'d>(&mut self, key: &'d str, value: &Value, seen: &mut Seen<'d>) -> Option<LxcConfig> {
        let base = Join(&"/lxc_configs", Token(key));
        let vmid = match key.parse::<Vmid>() {
            Ok(v) => Some(v),
            Err(err) => {
                self.bad(
                    &base,
                    At::Key,
                    format!(
                        "a vmid: a decimal number {}…{} without leading zeros",
                        Vmid::MIN,
                        Vmid::MAX
                    ),
                    format!("{}; {}", err.shown, err.reason),
                );
                None
            }
        };
        let Value::Object(e) = value else {
            self.bad(&base, At::Value, "object", describe(value));
            return None;
        };
        let name = self.typed(e, &base, "name", true, Hostname::new);
        let memory_mb = self.int(e, &base, "memory_mb", true, 256, 1_048_576);
        let swap_mb = self.int(e, &base, "swap_mb", false, 0, 4_194_304);
        let cores = self.int(e, &base, "cores", true, 1, 512);
        let template = self.typed(e, &base, "template", true, Template::new);
        let storage_pool = self.typed(e, &base, "storage_pool", true, StorageId::new);
        let storage_size_gb = self.int(e, &base, "storage_size_gb", true, 1, 1_048_576);
        let network = self.network(e, &base);
        let features = self.features(e, &base);
        let unprivileged = self.boolean(e, &base, "unprivileged");
        let onboot = self.boolean(e, &base, "onboot");
        let gpus = self.gpus(e, &base);
        let vllm = self.vllm(e, &base, &gpus);
        let recipe = self.typed(e, &base, "recipe", false, |s| check_recipe(&s).map(|()| s));
        let portainer_role = self.portainer_role(e, &base);
        let openai_backend = self.openai_backend(e, &base);
        let gpu_exclusive = self.boolean(e, &base, "gpu_exclusive");
        let after = self.after(e, &base, vmid);
        let packages = self.packages(e, &base);

        if let Ok(Some(n)) = &name {
            self.unique(
                &mut seen.names,
                n.as_str().to_ascii_lowercase(),
                (key, "/name"),
                "name",
            );
        }
        if let Ok(Some(net)) = &network {
            if let IpConfig::Static(n) = net.ip {
                self.unique(
                    &mut seen.ips,
                    n.ip(),
                    (key, net_member(e, "/network_config/ip")),
                    "address",
                );
            }
            if let Some(mac) = &net.mac {
                self.unique(
                    &mut seen.macs,
                    mac.as_str().to_ascii_lowercase(),
                    (key, net_member(e, "/network_config/mac")),
                    "MAC address",
                );
            }
        }

        Some(LxcConfig {
            vmid: vmid?,
            name: name.ok()??,
            memory_mb: u32::try_from(memory_mb.ok()??).ok()?,
            swap_mb: u32::try_from(swap_mb.ok()?.unwrap_or(512)).ok()?,
            cores: u32::try_from(cores.ok()??).ok()?,
            template: template.ok()??,
            storage_pool: storage_pool.ok()??,
            storage_size_gb: u32::try_from(storage_size_gb.ok()??).ok()?,
            network: network.ok()??,
            features: features.ok()?.unwrap_or_default(),
            unprivileged: unprivileged.ok()?.unwrap_or(true),
            onboot: onboot.ok()?.unwrap_or(false),
            gpus: gpus.ok()?,
            vllm: vllm.ok()?,
            recipe: recipe.ok()?,
            portainer_role: portainer_role.ok()?,
            openai_backend: openai_backend.ok()?,
            gpu_exclusive: gpu_exclusive.ok()?.unwrap_or(false),
            after: after.ok()?,
            packages: packages.ok()?,
        })
    }

    /// `portainer_role`: `"server"` or `"agent"`.
    fn portainer_role(
        &mut self,
        e: &Map<String, Value>,
        base: &dyn Display,
    ) -> Field<PortainerRole> {
        match self.text(e, base, "portainer_role", false)? {
            None => Ok(None),
            Some("server") => Ok(Some(PortainerRole::Server)),
            Some("agent") => Ok(Some(PortainerRole::Agent)),
            Some(other) => {
                self.bad(
                    &format!("{base}/portainer_role"),
                    At::Value,
                    "\"server\" or \"agent\"",
                    format!("\"{other}\""),
                );
                Err(Bad)
            }
        }
    }

    /// `openai_backend`: a vmid (that it names an entry with a vLLM server is checked once
    /// every entry is known, in [`build`]).
    fn openai_backend(&mut self, e: &Map<String, Value>, base: &dyn Display) -> Field<Vmid> {
        let Some(n) = self.int(e, base, "openai_backend", false, Vmid::MIN, Vmid::MAX)? else {
            return Ok(None);
        };
        match n.to_string().parse::<Vmid>() {
            Ok(v) => Ok(Some(v)),
            Err(err) => {
                self.bad(
                    &format!("{base}/openai_backend"),
                    At::Value,
                    "a vmid",
                    format!("{}; {}", err.shown, err.reason),
                );
                Err(Bad)
            }
        }
    }

    /// Every `openai_backend` names another entry of the file that has a `vllm_model`.
    fn backends(&mut self, entries: &Map<String, Value>) {
        for (key, value) in entries {
            let Some(n) = value.get("openai_backend").and_then(Value::as_u64) else {
                continue;
            };
            let pointer = format!("/lxc_configs/{}/openai_backend", escape_token(key));
            let target = entries.get(&n.to_string());
            let found = match target {
                None => format!("{n}, which is not an entry of this file"),
                Some(_) if n.to_string() == *key => format!("{n}, this entry itself"),
                Some(t) if t.get("vllm_model").is_none() => {
                    format!("{n}, an entry without `vllm_model`")
                }
                Some(_) => continue,
            };
            self.bad(
                &pointer,
                At::Value,
                "the vmid of another entry of this file that has `vllm_model`",
                found,
            );
        }
    }

    /// `after`: vmids, never the entry's own (whether they exist is checked once every
    /// entry is known, in [`Checker::across`]).
    fn after(
        &mut self,
        e: &Map<String, Value>,
        base: &dyn Display,
        own: Option<Vmid>,
    ) -> Result<Vec<Vmid>, Bad> {
        let p = Join(base, "after");
        let items = match self.get(e, base, "after", false)? {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.bad(&p, At::Value, "an array of vmids", describe(other));
                return Err(Bad);
            }
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, v) in items.iter().enumerate() {
            let ip = Join(&p, i);
            let id = match v.as_u64().map(Vmid::new) {
                Some(Ok(id)) => id,
                Some(Err(err)) => {
                    self.refused(&ip, &err);
                    ok = false;
                    continue;
                }
                None => {
                    self.bad(&ip, At::Value, "a vmid (an integer)", describe(v));
                    ok = false;
                    continue;
                }
            };
            if Some(id) == own {
                self.bad(
                    &ip,
                    At::Value,
                    "the vmid of another entry",
                    format!("{id}, this entry itself"),
                );
                ok = false;
            } else if out.contains(&id) {
                self.bad(&ip, At::Value, "each vmid once", format!("{id} again"));
                ok = false;
            } else {
                out.push(id);
            }
        }
        if ok { Ok(out) } else { Err(Bad) }
    }

    /// `packages`: Debian package names (`name` or `name=version`).
    fn packages(
        &mut self,
        e: &Map<String, Value>,
        base: &dyn Display,
    ) -> Result<Vec<PackageName>, Bad> {
        let p = Join(base, "packages");
        let items = match self.get(e, base, "packages", false)? {
            None => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.bad(&p, At::Value, "an array of package names", describe(other));
                return Err(Bad);
            }
        };
        let mut out: Vec<PackageName> = Vec::new();
        let mut ok = true;
        for (i, v) in items.iter().enumerate() {
            let ip = Join(&p, i);
            let Value::String(text) = v else {
                self.bad(&ip, At::Value, "string", describe(v));
                ok = false;
                continue;
            };
            match PackageName::new(text.as_str()) {
                Ok(name) if out.contains(&name) => {
                    self.bad(&ip, At::Value, "each package once", show(text));
                    ok = false;
                }
                Ok(name) => out.push(name),
                Err(err) => {
                    self.refused(&ip, &err);
                    ok = false;
                }
            }
        }
        if ok { Ok(out) } else { Err(Bad) }
    }

    /// The checks across entries, once each entry is typed: `after` names entries of the
    /// file (`keys`: every entry key, also of entries with problems) and has no cycle;
    /// GPUs named by two entries.
    fn across(&mut self, keys: &HashSet<&str>) {
        // Taken out while the findings are recorded, put back below (no copy of the entries).
        let lxc = std::mem::take(&mut self.out.lxc);
        let entries: Vec<&LxcConfig> = lxc.values().collect();
        let mut known: Vec<&str> = keys.iter().copied().collect();
        known.sort_unstable();
        for e in &entries {
            for (i, id) in e.after.iter().enumerate() {
                if !keys.contains(id.to_string().as_str()) {
                    self.bad(
                        &format!("/lxc_configs/{}/after/{i}", e.vmid),
                        At::Value,
                        format!("the vmid of an entry of this file ({})", known.join(", ")),
                        format!("{id}, which has no entry"),
                    );
                }
            }
        }
        if let Some(cycle) = after_cycle(&lxc) {
            let first = cycle[0];
            let shown: Vec<String> = cycle.iter().map(ToString::to_string).collect();
            self.bad(
                &format!("/lxc_configs/{first}/after"),
                At::Value,
                "an order `phoenix up` can follow (no cycle through `after`)",
                format!("the cycle {}", shown.join(" → ")),
            );
        }
        self.shared_gpus(&entries);
        self.out.lxc = lxc;
    }

    /// GPUs named by more than one entry: one finding per entry that names a GPU an earlier
    /// entry (in vmid order) names too, listing them, a warning or, when either side sets
    /// `gpu_exclusive`, an error. Earlier entries are found through an index of the GPUs
    /// named so far, so a config of a thousand entries on eight GPUs costs no pairwise pass
    /// and prints one line per sharing entry, not one per pair.
    fn shared_gpus(&mut self, entries: &[&LxcConfig]) {
        // Who named each GPU so far (by its normalised reference), and who named `all`.
        let mut by_gpu: HashMap<String, Vec<&LxcConfig>> = HashMap::new();
        // The GPUs named so far in the order first seen, as first written.
        let mut order: Vec<(String, String)> = Vec::new();
        let mut all: Vec<&LxcConfig> = Vec::new();
        for &b in entries {
            let Some(gb) = &b.gpus else {
                continue;
            };
            // (the GPU as written, the earlier entries naming it), in b's order.
            let mut shared: Vec<(String, Vec<&LxcConfig>)> = Vec::new();
            match gb {
                GpuSelector::All => {
                    // Every GPU an earlier entry names, then the earlier `all` entries.
                    for (key, label) in &order {
                        let mut earlier: Vec<&LxcConfig> = by_gpu[key].clone();
                        earlier.extend(all.iter().copied());
                        earlier.sort_by_key(|e| e.vmid);
                        earlier.dedup_by_key(|e| e.vmid);
                        shared.push((label.clone(), earlier));
                    }
                    if !all.is_empty() {
                        shared.push(("all".to_owned(), all.clone()));
                    }
                    all.push(b);
                }
                GpuSelector::List(refs) => {
                    for r in refs {
                        let key = gpu_key(r);
                        let mut earlier: Vec<&LxcConfig> = all.clone();
                        earlier.extend(by_gpu.get(&key).into_iter().flatten().copied());
                        earlier.sort_by_key(|e| e.vmid);
                        earlier.dedup_by_key(|e| e.vmid);
                        if !earlier.is_empty() {
                            shared.push((r.to_string(), earlier));
                        }
                    }
                    for r in refs {
                        let key = gpu_key(r);
                        if !by_gpu.contains_key(&key) {
                            order.push((key.clone(), r.to_string()));
                        }
                        let list = by_gpu.entry(key).or_default();
                        if !list.iter().any(|e| e.vmid == b.vmid) {
                            list.push(b);
                        }
                    }
                }
            }
            if shared.is_empty() {
                continue;
            }
            let p = format!("/lxc_configs/{}/gpu_assignment", b.vmid);
            let what = sharing_text(&shared);
            let holder = if b.gpu_exclusive {
                Some(b.vmid)
            } else {
                shared
                    .iter()
                    .flat_map(|(_, es)| es.iter())
                    .find(|e| e.gpu_exclusive)
                    .map(|e| e.vmid)
            };
            if let Some(holder) = holder {
                self.bad(
                    &p,
                    At::Value,
                    format!("GPUs no other entry names (container {holder} sets gpu_exclusive)"),
                    what,
                );
            } else {
                self.warn(
                    &p,
                    "GPUs no other container uses (set gpu_exclusive to forbid sharing)".to_owned(),
                    format!("{what}: allowed, the containers share its memory and compute"),
                );
            }
        }
    }

    /// Record `value` as used at `at`; a second user is a problem.
    fn unique<'d, K: std::hash::Hash + Eq + std::fmt::Display>(
        &mut self,
        seen: &mut HashMap<K, FirstUse<'d>>,
        value: K,
        at: FirstUse<'d>,
        what: &str,
    ) {
        if let Some(&(key, below)) = seen.get(&value) {
            let found = format!(
                "\"{value}\", already used at {}",
                member_pointer(key, below)
            );
            self.bad(
                &member_pointer(at.0, at.1),
                At::Value,
                format!("a {what} no other container uses"),
                found,
            );
        } else {
            seen.insert(value, at);
        }
    }

    fn network(&mut self, e: &Map<String, Value>, base: &dyn Display) -> Field<Network> {
        let p = Join(base, "network_config");
        match self.get(e, base, "network_config", true)? {
            None => Ok(None),
            Some(Value::String(s)) => self.legacy_network(&p, s).map(Some),
            Some(Value::Object(o)) => self.network_object(&p, o).map(Some),
            Some(other) => {
                self.bad(&p, At::Value, "object or string", describe(other));
                Err(Bad)
            }
        }
    }

    /// The bash-era `"10.0.0.110/24,10.0.0.1,8.8.8.8"` (address, gateway, DNS servers).
    fn legacy_network(&mut self, p: &dyn Display, s: &str) -> Result<Network, Bad> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        let ip = self.ip_config(p, parts[0]);
        let gw = match (parts.get(1).filter(|g| !g.is_empty()), &ip) {
            (Some(g), Ok(ip)) => self.gateway(p, g, ip).map(Some),
            (Some(_), Err(Bad)) | (None, _) => Ok(None),
        };
        // All of a legacy string's problems share one pointer, so the first bad server is enough.
        let dns: Result<Vec<IpAddr>, Bad> =
            parts.iter().skip(2).map(|d| self.dns_one(p, d)).collect();
        let network = Network {
            name: IfaceName::new("eth0").map_err(|err| self.refused(p, &err))?,
            bridge: BridgeName::new("vmbr0").map_err(|err| self.refused(p, &err))?,
            ip: ip?,
            gw: gw?,
            dns: dns?,
            mac: None,
            vlan: None,
        };
        let normal = serde_json::json!({
            "name": "eth0",
            "bridge": "vmbr0",
            "ip": network.ip.to_string(),
            "gw": network.gw.map(|g| g.to_string()),
            "dns": network.dns.iter().map(ToString::to_string).collect::<Vec<_>>(),
        });
        self.warn(
            p,
            format!("an object such as {normal}"),
            format!("the bash-era string {} (accepted as that object)", show(s)),
        );
        Ok(network)
    }

    fn network_object(&mut self, p: &dyn Display, o: &Map<String, Value>) -> Result<Network, Bad> {
        let name = self.typed(o, p, "name", false, IfaceName::new);
        let bridge = self.typed(o, p, "bridge", false, BridgeName::new);
        let ip = match self.text(o, p, "ip", true) {
            Ok(Some(s)) => self.ip_config(&Join(p, "ip"), s),
            Ok(None) | Err(Bad) => Err(Bad),
        };
        let gw = match (self.text(o, p, "gw", false), &ip) {
            (Ok(Some(g)), Ok(ip)) => self.gateway(&Join(p, "gw"), g, ip).map(Some),
            (Ok(Some(g)), Err(Bad)) => self.parse_v4(&Join(p, "gw"), g).map(Some),
            (Ok(None), _) => Ok(None),
            (Err(Bad), _) => Err(Bad),
        };
        let dns = match o.get("dns") {
            None => Ok(Vec::new()),
            Some(Value::String(s)) => self.dns_one(&Join(p, "dns"), s).map(|a| vec![a]),
            Some(Value::Array(list)) => {
                // Check every element (no short-circuit): each bad one is a problem.
                let mut addrs = Vec::new();
                let mut ok = true;
                for (i, v) in list.iter().enumerate() {
                    let ip = Join(&Join(p, "dns"), i);
                    let one = match v {
                        Value::String(s) => self.dns_one(&ip, s),
                        other => {
                            self.bad(&ip, At::Value, "string", describe(other));
                            Err(Bad)
                        }
                    };
                    match one {
                        Ok(a) => addrs.push(a),
                        Err(Bad) => ok = false,
                    }
                }
                if ok { Ok(addrs) } else { Err(Bad) }
            }
            Some(other) => {
                self.bad(
                    &format!("{p}/dns"),
                    At::Value,
                    "string or array",
                    describe(other),
                );
                Err(Bad)
            }
        };
        let mac = self.typed(o, p, "mac", false, Mac::new);
        let vlan = self.int(o, p, "vlan", false, 1, 4094);
        Ok(Network {
            name: name?
                .map_or_else(|| IfaceName::new("eth0"), Ok)
                .map_err(|err| self.refused(p, &err))?,
            bridge: bridge?
                .map_or_else(|| BridgeName::new("vmbr0"), Ok)
                .map_err(|err| self.refused(p, &err))?,
            ip: ip?,
            gw: gw?,
            dns: dns?,
            mac: mac?,
            vlan: vlan?.map(|v| v as u16),
        })
    }

    fn ip_config(&mut self, p: &dyn Display, s: &str) -> Result<IpConfig, Bad> {
        if s == "dhcp" {
            return Ok(IpConfig::Dhcp);
        }
        const EXPECTED: &str = "an IPv4 address with its prefix (`10.0.0.111/24`) or `dhcp`";
        let parsed = s
            .split_once('/')
            .filter(|(_, prefix)| !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|_| s.parse::<Ipv4Network>().ok());
        let Some(net) = parsed else {
            self.bad(p, At::Value, EXPECTED, show(s));
            return Err(Bad);
        };
        if net.prefix() == 0 {
            self.bad(p, At::Value, "a prefix of 1…32", show(s));
            return Err(Bad);
        }
        if net.prefix() <= 30 && (net.ip() == net.network() || net.ip() == net.broadcast()) {
            self.bad(
                p,
                At::Value,
                format!("a host address inside {}/{}", net.network(), net.prefix()),
                format!(
                    "{} (the network's {} address)",
                    show(s),
                    if net.ip() == net.network() {
                        "own"
                    } else {
                        "broadcast"
                    }
                ),
            );
            return Err(Bad);
        }
        Ok(IpConfig::Static(net))
    }

    fn parse_v4(&mut self, p: &dyn Display, s: &str) -> Result<Ipv4Addr, Bad> {
        s.parse().map_err(|_| {
            self.bad(p, At::Value, "an IPv4 address", show(s));
            Bad
        })
    }

    fn gateway(&mut self, p: &dyn Display, s: &str, ip: &IpConfig) -> Result<Ipv4Addr, Bad> {
        let gw = self.parse_v4(p, s)?;
        match ip {
            IpConfig::Dhcp => {
                self.bad(
                    p,
                    At::Value,
                    "no gateway (the address comes from DHCP)",
                    show(s),
                );
                Err(Bad)
            }
            IpConfig::Static(net) if !net.contains(gw) => {
                self.bad(
                    p,
                    At::Value,
                    format!("an address inside {}/{}", net.network(), net.prefix()),
                    show(s),
                );
                Err(Bad)
            }
            IpConfig::Static(net)
                if gw == net.ip()
                    || gw == net.network()
                    || (net.prefix() <= 30 && gw == net.broadcast()) =>
            {
                self.bad(
                    p,
                    At::Value,
                    "a gateway other than the container's own, network or broadcast address",
                    show(s),
                );
                Err(Bad)
            }
            IpConfig::Static(_) => Ok(gw),
        }
    }

    fn dns_one(&mut self, p: &dyn Display, s: &str) -> Result<IpAddr, Bad> {
        s.parse().map_err(|_| {
            self.bad(p, At::Value, "an IP address", show(s));
            Bad
        })
    }

    fn features(&mut self, e: &Map<String, Value>, base: &dyn Display) -> Field<Features> {
        let p = Join(base, "features");
        match self.get(e, base, "features", false)? {
            None => Ok(None),
            Some(Value::Object(o)) => {
                let mut f = Features::default();
                let mut ok = true;
                for (name, slot) in [
                    ("nesting", &mut f.nesting),
                    ("keyctl", &mut f.keyctl),
                    ("fuse", &mut f.fuse),
                    ("mknod", &mut f.mknod),
                ] {
                    match self.boolean(o, &p, name) {
                        Ok(v) => *slot = v.unwrap_or(false),
                        Err(Bad) => ok = false,
                    }
                }
                if ok { Ok(Some(f)) } else { Err(Bad) }
            }
            Some(Value::String(s)) => match parse_pve_features(s) {
                Some(f) => Ok(Some(f)),
                None => {
                    self.bad(&p, At::Value, "PVE features such as `nesting=1,keyctl=1` (nesting, keyctl, fuse, mknod = 0 or 1)", show(s));
                    Err(Bad)
                }
            },
            Some(other) => {
                self.bad(&p, At::Value, "object or string", describe(other));
                Err(Bad)
            }
        }
    }

    fn gpus(&mut self, e: &Map<String, Value>, base: &dyn Display) -> Field<GpuSelector> {
        let p = Join(base, "gpu_assignment");
        match self.get(e, base, "gpu_assignment", false)? {
            None => Ok(None),
            Some(Value::Array(items)) => {
                let mut refs = Vec::new();
                let mut ok = true;
                for (i, v) in items.iter().enumerate() {
                    let ip = Join(&p, i);
                    let r = match v {
                        Value::Number(n) => n
                            .as_u64()
                            .and_then(|n| u32::try_from(n).ok())
                            .map(GpuRef::Index),
                        Value::String(s) => s
                            .parse::<GpuRef>()
                            .map_err(|err| self.refused(&ip, &err))
                            .ok(),
                        _ => None,
                    };
                    match r {
                        Some(r) if refs.contains(&r) => {
                            self.bad(
                                &ip,
                                At::Value,
                                "each GPU named once",
                                format!("GPU {r} again"),
                            );
                            ok = false;
                        }
                        Some(r) => refs.push(r),
                        None => {
                            if matches!(
                                v,
                                Value::Number(_)
                                    | Value::Bool(_)
                                    | Value::Null
                                    | Value::Array(_)
                                    | Value::Object(_)
                            ) {
                                self.bad(
                                    &ip,
                                    At::Value,
                                    "a GPU index, UUID or PCI bus id",
                                    describe(v),
                                );
                            }
                            ok = false;
                        }
                    }
                }
                if !ok {
                    return Err(Bad);
                }
                if refs.is_empty() {
                    self.bad(&p, At::Value, "at least one GPU", "an empty list");
                    return Err(Bad);
                }
                Ok(Some(GpuSelector::List(refs)))
            }
            Some(Value::String(s)) => {
                let sel = s
                    .parse::<GpuSelector>()
                    .map_err(|err| self.refused(&p, &err))?;
                if let GpuSelector::List(refs) = &sel {
                    let normal: Vec<Value> = refs
                        .iter()
                        .map(|r| match r {
                            GpuRef::Index(i) => Value::from(*i),
                            other => Value::from(other.to_string()),
                        })
                        .collect();
                    self.warn(
                        &p,
                        format!("an array such as {}", Value::Array(normal)),
                        format!("the bash-era string {} (accepted as that list)", show(s)),
                    );
                }
                Ok(Some(sel))
            }
            Some(other) => {
                self.bad(&p, At::Value, "array or string", describe(other));
                Err(Bad)
            }
        }
    }

    fn vllm(
        &mut self,
        e: &Map<String, Value>,
        base: &dyn Display,
        gpus: &Field<GpuSelector>,
    ) -> Field<VllmConfig> {
        let model = self.typed(e, base, "vllm_model", false, ModelId::new);
        let served = self.typed(e, base, "vllm_served_model_name", false, |s| {
            check_served_name(&s).map(|()| s)
        });
        let tp = self.int(e, base, "vllm_tensor_parallel_size", false, 1, 64);
        let max_len = self.int(e, base, "vllm_max_model_len", false, 1, 16_777_216);
        let kv = match self.text(e, base, "vllm_kv_cache_dtype", false) {
            Ok(Some(s)) => match KvCacheDtype::parse(s) {
                Some(k) => Ok(Some(k)),
                None => {
                    self.bad(
                        &format!("{base}/vllm_kv_cache_dtype"),
                        At::Value,
                        format!("one of: {}", KvCacheDtype::ALL.join(", ")),
                        show(s),
                    );
                    Err(Bad)
                }
            },
            Ok(None) => Ok(None),
            Err(Bad) => Err(Bad),
        };
        let shm = self.typed(e, base, "vllm_shm_size", false, Size::new);
        let quant = match self.text(e, base, "vllm_quantization", false) {
            Ok(Some(s)) if QUANTIZATIONS.contains(&s) => Ok(Some(s.to_owned())),
            Ok(Some(s)) => {
                self.bad(
                    &format!("{base}/vllm_quantization"),
                    At::Value,
                    format!("one of: {}", QUANTIZATIONS.join(", ")),
                    show(s),
                );
                Err(Bad)
            }
            Ok(None) => Ok(None),
            Err(Bad) => Err(Bad),
        };
        let quant_config = match self.get(e, base, "vllm_quantization_config", false) {
            Ok(Some(v @ Value::Object(_))) => Ok(Some(v.clone())),
            Ok(Some(other)) => {
                self.bad(
                    &format!("{base}/vllm_quantization_config"),
                    At::Value,
                    "object",
                    describe(other),
                );
                Err(Bad)
            }
            Ok(None) => Ok(None),
            Err(Bad) => Err(Bad),
        };
        let gmu = match self.get(e, base, "vllm_gpu_memory_utilization", false) {
            Ok(Some(v)) => match v.as_f64() {
                Some(x) if x > 0.0 && x <= 1.0 => Ok(Some(x)),
                _ => {
                    self.bad(
                        &format!("{base}/vllm_gpu_memory_utilization"),
                        At::Value,
                        "a number > 0 and ≤ 1",
                        describe(v),
                    );
                    Err(Bad)
                }
            },
            Ok(None) => Ok(None),
            Err(Bad) => Err(Bad),
        };
        let port = self.int(e, base, "vllm_port", false, 1, 65535);
        let image = self.typed(e, base, "vllm_image", false, |s| {
            check_image(&s).map(|()| s)
        });

        if let Ok(Some(tp)) = tp {
            let p = Join(base, "vllm_tensor_parallel_size");
            match gpus {
                Ok(Some(GpuSelector::List(l))) if tp > l.len() as u64 => self.bad(
                    &p,
                    At::Value,
                    format!("at most {} (the GPUs in gpu_assignment)", l.len()),
                    tp.to_string(),
                ),
                Ok(None) if tp > 1 => self.bad(
                    &p,
                    At::Value,
                    "1 when no GPU is assigned (gpu_assignment is absent)",
                    tp.to_string(),
                ),
                _ => {}
            }
        }
        let Some(model) = model? else {
            if VLLM_OPTIONS.iter().any(|k| e.contains_key(*k)) {
                self.bad(
                    &format!("{base}/vllm_model"),
                    At::Parent,
                    "field `vllm_model` (the vllm_* fields need a model)",
                    "nothing",
                );
                return Err(Bad);
            }
            return Ok(None);
        };
        Ok(Some(VllmConfig {
            model,
            served_model_name: served?,
            tensor_parallel_size: u32::try_from(tp?.unwrap_or(1)).map_err(|_| Bad)?,
            max_model_len: max_len?.map(|v| v as u32),
            kv_cache_dtype: kv?,
            shm_size: shm?,
            quantization: quant?,
            quantization_config: quant_config?,
            gpu_memory_utilization: gmu?,
            port: port?.map_or(8000, |p| p as u16),
            image: image?,
        }))
    }
}

/// The fields that configure a vLLM server and so need `vllm_model` (the schema's
/// `dependentRequired`).
const VLLM_OPTIONS: &[&str] = &[
    "vllm_served_model_name",
    "vllm_tensor_parallel_size",
    "vllm_max_model_len",
    "vllm_kv_cache_dtype",
    "vllm_shm_size",
    "vllm_quantization",
    "vllm_quantization_config",
    "vllm_gpu_memory_utilization",
    "vllm_port",
    "vllm_image",
];

/// `member` (the pointer of a `network_config` member below the entry `e`), or
/// `network_config` itself when it is the bash-era string.
fn net_member(e: &Map<String, Value>, member: &'static str) -> &'static str {
    match e.get("network_config") {
        Some(Value::Object(_)) => member,
        _ => "/network_config",
    }
}

/// PVE's `features` string: `nesting=1,keyctl=1` (flags phoenix manages, 0 or 1).
fn parse_pve_features(s: &str) -> Option<Features> {
    let mut f = Features::default();
    for part in s.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let on = match v {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        match k {
            "nesting" => f.nesting = on,
            "keyctl" => f.keyctl = on,
            "fuse" => f.fuse = on,
            "mknod" => f.mknod = on,
            _ => return None,
        }
    }
    Some(f)
}

fn refuse(kind: &'static str, v: &str, reason: impl Into<String>) -> TypeError {
    TypeError {
        kind,
        shown: show(v),
        reason: reason.into(),
    }
}

/// Checks shared by the value kinds below: length, a first character that cannot start an
/// option or a path, and an allow-list of ASCII characters (which excludes whitespace,
/// control and bidi characters and every shell metacharacter).
fn conservative(kind: &'static str, v: &str, max: usize, extra: &str) -> Result<(), TypeError> {
    if v.is_empty() || v.len() > max {
        return Err(refuse(kind, v, format!("must be 1…{max} characters long")));
    }
    if let Some(c) = v
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || extra.contains(c)))
    {
        let shown: Vec<String> = extra.chars().map(String::from).collect();
        return Err(refuse(
            kind,
            v,
            format!(
                "contains {c:?}; allowed: ASCII letters, digits and {}",
                shown.join(" ")
            ),
        ));
    }
    if let Some(first) = v.chars().next().filter(|c| !c.is_ascii_alphanumeric()) {
        // Say why for the character actually there: a `-` would be an option, a `/` or
        // `.` would leave the directory the value is resolved in.
        let why = match first {
            '-' => " (a leading `-` would be read as an option)",
            '/' => " (not an absolute path)",
            _ => "",
        };
        return Err(refuse(
            kind,
            v,
            format!("must start with a letter or digit, not {first:?}{why}"),
        ));
    }
    Ok(())
}

/// `vllm_served_model_name`: becomes `--served-model-name <v>` and the id clients ask for.
fn check_served_name(v: &str) -> Result<(), TypeError> {
    conservative("served model name", v, 256, "-_./:@+")
}

/// `vllm_image`: a Docker image reference (`vllm/vllm-openai:v0.10.1`, `reg:5000/x@sha256:…`).
fn check_image(v: &str) -> Result<(), TypeError> {
    conservative("image", v, 255, "-_./:@")?;
    if v.contains("..") || v.contains("//") {
        return Err(refuse("image", v, "must not contain `..` or `//`"));
    }
    Ok(())
}

/// `recipe`: a recipe file name or relative path ending in `.rhai`, without `..`.
fn check_recipe(v: &str) -> Result<(), TypeError> {
    conservative("recipe", v, 255, "-_./")?;
    if v.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(refuse(
            "recipe",
            v,
            "must be a relative path without `.`, `..` or empty components",
        ));
    }
    if !v.ends_with(".rhai") {
        return Err(refuse("recipe", v, "must end in `.rhai`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Entry 901 of the shipped example config (the suite's one config fixture).
    fn entry() -> Value {
        let doc: Value =
            serde_json::from_str(include_str!("../../recipes/phoenix_lxc_configs.json")).unwrap();
        doc["lxc_configs"]["901"].clone()
    }

    fn run(entries: Value) -> Outcome {
        build(&json!({ "lxc_configs": entries }), &HashSet::new())
    }

    fn one(mut e: Value, patch: Value) -> Outcome {
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                e.as_object_mut().unwrap().remove(k);
            } else {
                e[k] = v.clone();
            }
        }
        run(json!({ "901": e }))
    }

    fn pointers(o: &Outcome) -> Vec<&str> {
        o.findings.iter().map(|f| f.pointer.as_str()).collect()
    }

    #[test]
    fn good_entry_is_typed() {
        let o = run(json!({ "901": entry() }));
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        let c = &o.lxc[&Vmid::new(901).unwrap()];
        assert_eq!(c.swap_mb, 512);
        assert!(!c.unprivileged);
        assert_eq!(c.network.gw, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.vllm.as_ref().unwrap().tensor_parallel_size, 2);
        assert_eq!(c.vllm.as_ref().unwrap().port, 8000);
        // Without the key a container is unprivileged (phoenix's default).
        let o = one(entry(), json!({"unprivileged": null}));
        assert!(o.lxc[&Vmid::new(901).unwrap()].unprivileged);
    }

    #[test]
    fn vmid_key_out_of_range() {
        let mut other = entry();
        other["name"] = json!("other");
        other["network_config"]["ip"] = json!("10.0.0.112/24");
        let o = run(json!({ "99": entry(), "0901": other }));
        assert_eq!(pointers(&o), ["/lxc_configs/0901", "/lxc_configs/99"]);
        assert!(o.findings.iter().all(|f| f.at == At::Key));
        assert!(o.lxc.is_empty());
    }

    #[test]
    fn gateway_must_lie_in_the_network() {
        let o = one(
            entry(),
            json!({"network_config": {"ip": "10.0.0.111/24", "gw": "10.0.1.1"}}),
        );
        assert_eq!(pointers(&o), ["/lxc_configs/901/network_config/gw"]);
        assert_eq!(o.findings[0].expected, "an address inside 10.0.0.0/24");
        let o = one(
            entry(),
            json!({"network_config": {"ip": "10.0.0.111/24", "gw": "10.0.0.111"}}),
        );
        assert_eq!(pointers(&o), ["/lxc_configs/901/network_config/gw"]);
        let o = one(
            entry(),
            json!({"network_config": {"ip": "dhcp", "gw": "10.0.0.1"}}),
        );
        assert_eq!(pointers(&o), ["/lxc_configs/901/network_config/gw"]);
    }

    #[test]
    fn address_needs_prefix_and_a_host_part() {
        for ip in [
            "10.0.0.111",
            "10.0.0.0/24",
            "10.0.0.255/24",
            "10.0.0.1/33",
            "10.0.0.1/0",
            "x/24",
            "10.0.0.1/ 24",
        ] {
            let o = one(entry(), json!({"network_config": {"ip": ip}}));
            assert_eq!(pointers(&o), ["/lxc_configs/901/network_config/ip"], "{ip}");
        }
    }

    #[test]
    fn mac_bridge_iface_hostname_are_checked() {
        let o = one(
            entry(),
            json!({"name": "gpu_a", "network_config": {"ip": "10.0.0.5/24", "mac": "01:00:5e:00:00:01", "bridge": "vmbr0;x", "name": "-eth0"}}),
        );
        assert_eq!(
            pointers(&o),
            [
                "/lxc_configs/901/name",
                "/lxc_configs/901/network_config/name",
                "/lxc_configs/901/network_config/bridge",
                "/lxc_configs/901/network_config/mac",
            ]
        );
    }

    #[test]
    fn tensor_parallel_needs_enough_gpus() {
        let o = one(entry(), json!({"vllm_tensor_parallel_size": 4}));
        assert_eq!(pointers(&o), ["/lxc_configs/901/vllm_tensor_parallel_size"]);
        assert_eq!(
            o.findings[0].expected,
            "at most 2 (the GPUs in gpu_assignment)"
        );
        let o = one(entry(), json!({"gpu_assignment": null}));
        assert_eq!(pointers(&o), ["/lxc_configs/901/vllm_tensor_parallel_size"]);
        let o = one(
            entry(),
            json!({"gpu_assignment": "all", "vllm_tensor_parallel_size": 8}),
        );
        assert!(o.findings.is_empty());
        let o = one(
            entry(),
            json!({"gpu_assignment": null, "vllm_tensor_parallel_size": 1}),
        );
        assert!(o.findings.is_empty());
    }

    /// Issue 16: `portainer_role` and `openai_backend` are typed, and a backend must be
    /// another entry of the file with a vLLM server.
    #[test]
    fn cookbook_fields() {
        let o = one(entry(), json!({"portainer_role": "agent"}));
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        let c = &o.lxc[&Vmid::new(901).unwrap()];
        assert_eq!(c.portainer_role, Some(PortainerRole::Agent));
        assert_eq!(c.openai_backend, None);
        let o = one(entry(), json!({"portainer_role": "master"}));
        assert_eq!(pointers(&o), ["/lxc_configs/901/portainer_role"]);
        assert_eq!(o.findings[0].found, "\"master\"");

        let vllm = entry();
        let mut ui = entry();
        for k in [
            "vllm_model",
            "vllm_tensor_parallel_size",
            "vllm_max_model_len",
            "vllm_kv_cache_dtype",
            "vllm_shm_size",
            "vllm_port",
            "gpu_assignment",
        ] {
            ui.as_object_mut().unwrap().remove(k);
        }
        ui["name"] = json!("webui");
        ui["network_config"]["ip"] = json!("10.0.0.120/24");
        ui["openai_backend"] = json!(901);
        let o = run(json!({ "901": vllm.clone(), "910": ui.clone() }));
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        assert_eq!(
            o.lxc[&Vmid::new(910).unwrap()].openai_backend,
            Some(Vmid::new(901).unwrap())
        );
        for (backend, found) in [
            (902, "902, which is not an entry of this file"),
            (910, "910, this entry itself"),
        ] {
            ui["openai_backend"] = json!(backend);
            let o = run(json!({ "901": vllm.clone(), "910": ui.clone() }));
            assert_eq!(pointers(&o), ["/lxc_configs/910/openai_backend"]);
            assert_eq!(o.findings[0].found, found);
        }
        // An entry without vLLM is no backend.
        let mut plain = ui.clone();
        plain.as_object_mut().unwrap().remove("openai_backend");
        plain["name"] = json!("plain");
        plain["network_config"]["ip"] = json!("10.0.0.121/24");
        ui["openai_backend"] = json!(911);
        let o = run(json!({ "901": vllm, "910": ui, "911": plain }));
        assert_eq!(pointers(&o), ["/lxc_configs/910/openai_backend"]);
        assert_eq!(o.findings[0].found, "911, an entry without `vllm_model`");
    }

    #[test]
    fn lazy_pointers_read_as_the_pointers_they_stand_for() {
        let base = Join(&"/lxc_configs", Token("9/0~1"));
        assert_eq!(base.to_string(), "/lxc_configs/9~10~01");
        let net = Join(&base, "network_config");
        assert_eq!(
            Join(&Join(&net, "dns"), 1).to_string(),
            "/lxc_configs/9~10~01/network_config/dns/1"
        );
        assert_eq!(Join(&"", "models_dataset").to_string(), "/models_dataset");
        assert_eq!(
            member_pointer("9/0~1", "/network_config/ip"),
            "/lxc_configs/9~10~01/network_config/ip"
        );
        assert_eq!(member_pointer("901", "/name"), "/lxc_configs/901/name");
    }

    #[test]
    fn uniqueness_across_entries() {
        let mut b = entry();
        b["network_config"]["mac"] = json!("52:54:00:00:00:01");
        let mut a = b.clone();
        a["network_config"]["mac"] = json!("52:54:00:00:00:01");
        let o = run(json!({ "901": a, "902": b }));
        assert_eq!(
            pointers(&o),
            [
                "/lxc_configs/902/name",
                "/lxc_configs/902/network_config/ip",
                "/lxc_configs/902/network_config/mac"
            ]
        );
        assert!(
            o.findings[1]
                .found
                .contains("/lxc_configs/901/network_config/ip")
        );
    }

    #[test]
    fn legacy_forms_are_normalised_with_warnings() {
        let o = one(
            entry(),
            json!({"network_config": "10.0.0.110/24,10.0.0.1,8.8.8.8", "gpu_assignment": "0 1"}),
        );
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        let c = &o.lxc[&Vmid::new(901).unwrap()];
        assert_eq!(c.network.ip.to_string(), "10.0.0.110/24");
        assert_eq!(c.network.gw, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.network.dns, vec!["8.8.8.8".parse::<IpAddr>().unwrap()]);
        assert_eq!(c.network.bridge.as_str(), "vmbr0");
        assert_eq!(
            c.gpus,
            Some(GpuSelector::List(vec![GpuRef::Index(0), GpuRef::Index(1)]))
        );
        let w: Vec<&str> = o.warnings.iter().map(|w| w.pointer.as_str()).collect();
        assert_eq!(
            w,
            [
                "/lxc_configs/901/network_config",
                "/lxc_configs/901/gpu_assignment"
            ]
        );
        assert_eq!(o.warnings[1].expected, "an array such as [0,1]");
    }

    #[test]
    fn legacy_network_with_a_bad_gateway_is_an_error() {
        let o = one(
            entry(),
            json!({"network_config": "10.0.0.110/24,192.168.0.1"}),
        );
        assert_eq!(pointers(&o), ["/lxc_configs/901/network_config"]);
        assert!(o.warnings.is_empty());
    }

    #[test]
    fn features_object_and_pve_string() {
        let o = one(entry(), json!({"features": "nesting=1,keyctl=1"}));
        let c = &o.lxc[&Vmid::new(901).unwrap()];
        assert!(c.features.nesting && c.features.keyctl && !c.features.fuse);
        for bad in [
            "nesting=1,mount=nfs",
            "nesting",
            "nesting=yes",
            "nesting=1\nlxc.hook.pre-start=/x",
        ] {
            let o = one(entry(), json!({ "features": bad }));
            assert_eq!(pointers(&o), ["/lxc_configs/901/features"], "{bad:?}");
        }
    }

    #[test]
    fn gpu_lists() {
        let o = one(
            entry(),
            json!({"gpu_assignment": [0, "GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4", "0000:00:06.0"]}),
        );
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        let o = one(entry(), json!({"gpu_assignment": [0, 0]}));
        assert_eq!(pointers(&o), ["/lxc_configs/901/gpu_assignment/1"]);
        let o = one(entry(), json!({"gpu_assignment": ["0; reboot"]}));
        assert_eq!(pointers(&o), ["/lxc_configs/901/gpu_assignment/0"]);
    }

    #[test]
    fn model_ids() {
        let o = one(entry(), json!({"vllm_model": "mistralai/Devstral|Small"}));
        let c = &o.lxc[&Vmid::new(901).unwrap()];
        assert_eq!(
            c.vllm.as_ref().unwrap().model.as_str(),
            "mistralai/Devstral|Small"
        );
        for bad in [
            "; rm -rf /",
            "org/na me",
            "-org/name",
            "org/name\n",
            "$(id)/x",
        ] {
            let o = one(entry(), json!({ "vllm_model": bad }));
            assert_eq!(pointers(&o), ["/lxc_configs/901/vllm_model"], "{bad:?}");
        }
    }

    #[test]
    fn schema_flagged_pointers_are_not_reported_twice() {
        let doc = json!({"lxc_configs": {"901": {"memory_mb": "x"}}});
        let flagged: HashSet<String> = ["/lxc_configs/901/memory_mb", "/lxc_configs/901/name"]
            .into_iter()
            .map(String::from)
            .collect();
        let o = build(&doc, &flagged);
        let p = pointers(&o);
        assert!(!p.contains(&"/lxc_configs/901/memory_mb"));
        assert!(!p.contains(&"/lxc_configs/901/name"));
        assert!(p.contains(&"/lxc_configs/901/cores"));
    }

    #[test]
    fn vllm_options_are_typed_and_checked() {
        let o = one(
            entry(),
            json!({
                "vllm_served_model_name": "devstral",
                "vllm_quantization": "awq_marlin",
                "vllm_quantization_config": {"bits": 4},
                "vllm_gpu_memory_utilization": 0.9,
                "vllm_image": "vllm/vllm-openai:v0.10.1",
                "vllm_shm_size": "16G"
            }),
        );
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        let v = o.lxc[&Vmid::new(901).unwrap()].vllm.clone().unwrap();
        assert_eq!(v.served_model_name.as_deref(), Some("devstral"));
        assert_eq!(v.quantization.as_deref(), Some("awq_marlin"));
        assert_eq!(v.quantization_config, Some(json!({"bits": 4})));
        assert_eq!(v.gpu_memory_utilization, Some(0.9));
        assert_eq!(v.shm_size.unwrap().as_str(), "16g");
        let o = one(
            entry(),
            json!({
                "vllm_served_model_name": "--help",
                "vllm_quantization": "awq; id",
                "vllm_gpu_memory_utilization": 0,
                "vllm_image": "-v/:/host",
                "vllm_shm_size": "16 g"
            }),
        );
        assert_eq!(
            pointers(&o),
            [
                "/lxc_configs/901/vllm_served_model_name",
                "/lxc_configs/901/vllm_shm_size",
                "/lxc_configs/901/vllm_quantization",
                "/lxc_configs/901/vllm_gpu_memory_utilization",
                "/lxc_configs/901/vllm_image",
            ]
        );
    }

    #[test]
    fn vllm_options_without_a_model_are_refused() {
        let o = one(entry(), json!({"vllm_model": null}));
        assert_eq!(pointers(&o), ["/lxc_configs/901/vllm_model"]);
        // Without any vllm_* key the entry serves no model.
        let no_vllm: serde_json::Map<String, Value> = entry()
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with("vllm_"))
            .map(|k| (k.clone(), Value::Null))
            .collect();
        let o = one(entry(), Value::Object(no_vllm));
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        assert!(o.lxc[&Vmid::new(901).unwrap()].vllm.is_none());
    }

    /// Hostile values for the checks this file adds.
    #[test]
    fn added_checks_refuse_hostile_values() {
        let hostile = [
            "; rm -rf /",
            "$(reboot)",
            "`id`",
            "a && b",
            "a\nb",
            "a\0b",
            "--help",
            "-o x",
            "a\u{202E}b",
            "a b",
            "",
        ];
        let long = "x".repeat(10_000);
        for v in hostile.iter().copied().chain([long.as_str()]) {
            // The rule that applies: the length, then the character set (naming the first
            // character outside it), then the first character.
            let bad = v
                .chars()
                .find(|&c| !(c.is_ascii_alphanumeric() || "-_./".contains(c)));
            let rule = match bad {
                _ if v.is_empty() || v.len() > 255 => "characters long".to_owned(),
                Some(c) => format!("contains {c:?}; allowed: ASCII letters, digits and"),
                None => "must start with a letter or digit, not '-' (a leading `-`".to_owned(),
            };
            crate::test_support::refused(check_served_name(v), &rule);
            crate::test_support::refused(check_image(v), &rule);
            crate::test_support::refused(check_recipe(v), &rule);
        }
        assert!(check_served_name("devstral").is_ok());
        assert!(check_served_name("mistralai/Devstral-Small-2507").is_ok());
        assert!(check_image("vllm/vllm-openai:v0.10.1").is_ok());
        assert!(check_image("reg.lab:5000/vllm/vllm-openai@sha256:0123abcd").is_ok());
        crate::test_support::refused(
            check_image("/abs"),
            "must start with a letter or digit, not '/' (not an absolute path)",
        );
        assert!(check_recipe("drdevstral.rhai").is_ok());
        assert!(check_recipe("sub/dir.rhai").is_ok());
        crate::test_support::refused(
            check_recipe("../x.rhai"),
            "must start with a letter or digit, not '.'",
        );
        crate::test_support::refused(
            check_recipe("/etc/x.rhai"),
            "must start with a letter or digit, not '/' (not an absolute path)",
        );
        crate::test_support::refused(check_recipe("x.sh"), "must end in `.rhai`");
    }
}

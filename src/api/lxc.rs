//! The `lxc` family: container lifecycle, commands and files inside a container, mounts,
//! addresses.
//!
//! Every mutating primitive is idempotent: it looks at the real state first and acts only
//! when something is missing, so a re-run after success issues no mutating command. A
//! container phoenix did not create (no `phoenix` tag) is never changed. A container that
//! exists but differs from its config entry is reported as drift, field by field.
//!
//! Containers are passed around as maps `#{vmid, name, iface}` (what `lxc.create` returns)
//! or plain ids.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rhai::{Array, Dynamic, Engine, FuncRegistration, Map};
use zeroize::Zeroizing;

use super::support::{self, known_keys, opt_duration, step, string_array, vmid_of};
use super::{ApiError, script_error};
use crate::boundary::values::{SecretUse, secret_bytes};
use crate::boundary::{Access, Refusal, Rule};
use crate::config::LxcConfig;
use crate::host::{CreateSpec, CtConfig, CtStatus, ExecRequest};
use crate::journal::UndoStep;
use crate::runtime::Runtime;
use crate::secret::Secret;
use crate::types::{AbsPath, DatasetName, Vmid};

crate::api::handle!(
    /// The `lxc` object recipes call methods on.
    LxcApi
);

type RhaiResult<T> = Result<T, Box<rhai::EvalAltResult>>;

/// How long `lxc.start` waits for `status: running`.
const START_WAIT: Duration = Duration::from_secs(60);

/// The container map recipes pass around.
pub fn container_map(vmid: Vmid, entry: Option<&LxcConfig>) -> Map {
    let mut m = Map::new();
    m.insert("vmid".into(), Dynamic::from_int(i64::from(vmid.get())));
    if let Some(e) = entry {
        m.insert("name".into(), e.name.to_string().into());
        m.insert("iface".into(), e.network.name.to_string().into());
    }
    m
}

/// Turn a spec map (the shape of a config entry, plus `vmid`) into a validated entry, with
/// every check the config file gets. A map that is `config.target()` (or `config.lxc(id)`)
/// unchanged is the typed entry itself; a changed or new one goes through the config
/// loader, so a recipe can never create what the config file could not describe.
pub fn entry_from_map(rt: &Runtime, spec: &Map) -> Result<LxcConfig, ApiError> {
    const CALL: &str = "lxc.create";
    let vmid = vmid_of(CALL, &Dynamic::from_map(spec.clone()))?;
    let json = |m: &Map| -> Result<serde_json::Value, ApiError> {
        rhai::serde::from_dynamic(&Dynamic::from_map(m.clone()))
            .map_err(|e| ApiError::spec(CALL, format!("spec is not plain data: {e}")))
    };
    let mut value = json(spec)?;
    if let Some(entry) = rt.config.get(vmid) {
        if json(&super::config::entry_map(entry))? == value {
            return Ok(entry.clone());
        }
    }
    if let Some(o) = value.as_object_mut() {
        // `config.target()` adds `vmid`, names the selector `gpus` and shows unset fields as
        // `()`: turn it back into the config file's shape.
        o.remove("vmid");
        if let Some(g) = o.remove("gpus") {
            o.entry("gpu_assignment").or_insert(g);
        }
    }
    strip_nulls(&mut value);
    let doc = serde_json::json!({ "lxc_configs": { vmid.to_string(): value } });
    let path = std::path::PathBuf::from(format!(
        "<lxc.create spec for {vmid} in {}>",
        rt.recipe_name
    ));
    let config = crate::config::load_str(&path, &doc.to_string())
        .map_err(|e| ApiError::spec(CALL, e.to_string()))?;
    config
        .lxc
        .get(&vmid)
        .cloned()
        .ok_or_else(|| ApiError::spec(CALL, format!("spec for {vmid} produced no entry")))
}

/// Remove `null` members from objects, recursively (`()` in a recipe map means "unset").
fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// One config option that `pct set` changes in place: its value on the host now and the
/// one the config entry wants (`None`: not set, removed with `pct set --delete`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetOption {
    /// The option (`memory`, `net0`, …).
    pub key: String,
    /// The host's value now.
    pub have: Option<String>,
    /// The value the entry wants.
    pub want: Option<String>,
}

/// How an existing container differs from the entry it should match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    /// Options PVE changes in place with `pct set`: pve-container's `update_pct_config`
    /// (src/PVE/LXC/Config.pm) takes every option of the config but `unprivileged` ("unable
    /// to modify read-only option"); on a running container `hostname`, `cores` and
    /// `onboot` apply at once (`$LXC_FASTPLUG_OPTIONS`), `memory`, `swap` and `netN` are
    /// hot-plugged (`vmconfig_hotplug_pending`), and `nameserver` stays pending until the
    /// container's next start.
    pub settable: Vec<SetOption>,
    /// Differences `pct set` cannot fix, each saying what to do.
    pub fixed: Vec<String>,
}

impl Drift {
    /// Whether the container matches its entry.
    pub fn is_empty(&self) -> bool {
        self.settable.is_empty() && self.fixed.is_empty()
    }
}

/// The `key=value` parts of a property string such as `net0`, in order.
fn prop_parts(value: &str) -> Vec<(String, String)> {
    value
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (String::new(), p.to_owned()),
        })
        .collect()
}

/// Differences between an existing container's config and the entry it should match.
pub fn drift(conf: &CtConfig, e: &LxcConfig) -> Drift {
    let vmid = e.vmid;
    let mut d = Drift::default();
    let mut set = |key: &str, default: Option<&str>, want: Option<String>| {
        let have = conf.get(key).or(default).map(str::to_owned);
        if have != want {
            d.settable.push(SetOption {
                key: key.to_owned(),
                have: conf.get(key).map(str::to_owned),
                want,
            });
        }
    };
    set("hostname", None, Some(e.name.to_string()));
    set("memory", None, Some(e.memory_mb.to_string()));
    set("swap", None, Some(e.swap_mb.to_string()));
    set("cores", None, Some(e.cores.to_string()));
    // PVE's default for an absent `onboot` is off.
    set(
        "onboot",
        Some("0"),
        Some(if e.onboot { "1" } else { "0" }.to_owned()),
    );
    let dns: Vec<String> = e.network.dns.iter().map(ToString::to_string).collect();
    set("nameserver", None, (!dns.is_empty()).then(|| dns.join(" ")));
    // net0: the entry's fields replace the host's in its own property string, so what PVE
    // added (`hwaddr`, `type=veth`) stays as it is.
    let net0 = conf.get("net0").unwrap_or("");
    let mut parts = prop_parts(net0);
    let gw = match (&e.network.ip, e.network.gw) {
        (crate::config::IpConfig::Static(_), Some(gw)) => Some(gw.to_string()),
        _ => None,
    };
    for (k, want) in [
        ("name", Some(e.network.name.to_string())),
        ("bridge", Some(e.network.bridge.to_string())),
        ("ip", Some(e.network.ip.to_string())),
        ("gw", gw),
    ] {
        let at = parts.iter().position(|(pk, _)| pk == k);
        match (at, want) {
            (Some(i), Some(w)) => parts[i].1 = w,
            (None, Some(w)) => parts.push((k.to_owned(), w)),
            (Some(i), None) => {
                parts.remove(i);
            }
            (None, None) => {}
        }
    }
    let want_net0 = parts
        .iter()
        .map(|(k, v)| {
            if k.is_empty() {
                v.clone()
            } else {
                format!("{k}={v}")
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    if want_net0 != net0 {
        d.settable.push(SetOption {
            key: "net0".into(),
            have: conf.get("net0").map(str::to_owned),
            want: Some(want_net0),
        });
    }
    // PVE omits `unprivileged: 0` (privileged was the default before PVE 9).
    let have_unpriv = conf.get("unprivileged").unwrap_or("0");
    let want_unpriv = if e.unprivileged { "1" } else { "0" };
    if have_unpriv != want_unpriv {
        d.fixed.push(format!(
            "unprivileged: host has {have_unpriv:?}, config wants {want_unpriv:?}; PVE cannot change it in place: destroy the container (`phoenix destroy --lxc {vmid}`) and run again"
        ));
    }
    let rootfs = conf.get("rootfs").unwrap_or("");
    let storage = rootfs.split(':').next().unwrap_or("");
    if storage != e.storage_pool.as_str() {
        d.fixed.push(format!(
            "rootfs storage: host has {storage:?}, config wants {:?}; move the disk with `pct move-volume {vmid} rootfs {}` (stopped container), or destroy the container and run again",
            e.storage_pool.as_str(),
            e.storage_pool.as_str()
        ));
    }
    let size = rootfs
        .split(',')
        .find_map(|p| p.strip_prefix("size="))
        .unwrap_or("");
    let want_size = format!("{}G", e.storage_size_gb);
    if size != want_size {
        let have_gb = size.strip_suffix('G').and_then(|s| s.parse::<u64>().ok());
        let what = match have_gb {
            Some(h) if h < u64::from(e.storage_size_gb) => format!(
                "grow it with `pct resize {vmid} rootfs {want_size}`"
            ),
            Some(_) => "PVE cannot shrink a disk: destroy the container and run again, or change the config".to_owned(),
            None => format!("check it with `pct config {vmid}`"),
        };
        d.fixed.push(format!(
            "rootfs size: host has {size:?}, config wants {want_size:?}; {what}"
        ));
    }
    d
}

/// Set the options of `vmid` that drifted from its entry with `pct set` (a `~` change in a
/// dry run's plan); the journal keeps the old values, so rollback and `destroy` restore
/// them.
fn apply_drift(rt: &Runtime, vmid: Vmid, settable: &[SetOption]) -> Result<(), ApiError> {
    let shown: Vec<String> = settable
        .iter()
        .map(|o| {
            format!(
                "{} {} -> {}",
                o.key,
                o.have.as_deref().unwrap_or("(unset)"),
                o.want.as_deref().unwrap_or("(unset)")
            )
        })
        .collect();
    tracing::warn!(%vmid, "container differs from its config entry; setting in place: {}", shown.join("; "));
    if settable.iter().any(|o| o.key == "nameserver")
        && rt.host.ct_status_known(vmid)? == CtStatus::Running
    {
        tracing::info!(%vmid, "PVE applies a nameserver change to a running container at its next start");
    }
    let set: Vec<(String, String)> = settable
        .iter()
        .filter_map(|o| o.want.clone().map(|w| (o.key.clone(), w)))
        .collect();
    let delete: Vec<String> = settable
        .iter()
        .filter(|o| o.want.is_none())
        .map(|o| o.key.clone())
        .collect();
    step(
        rt,
        &format!("lxc.set:{vmid}"),
        UndoStep::RestoreOptions {
            vmid,
            options: settable
                .iter()
                .map(|o| (o.key.clone(), o.have.clone()))
                .collect(),
        },
        || {
            if !set.is_empty() {
                rt.host.ct_set(vmid, &set)?;
            }
            if !delete.is_empty() {
                rt.host.ct_delete_keys(vmid, &delete)?;
            }
            Ok(())
        },
    )
}

/// Remove what an interrupted create of phoenix's left at `vmid` (the journal's intent
/// `item` is the proof, [`crate::ownership`]), so the create can run again. In a dry run
/// the removal is a plan line.
fn recover_interrupted_create(
    rt: &Runtime,
    vmid: Vmid,
    item: &crate::journal::Outstanding,
) -> Result<(), ApiError> {
    if rt.dry_run {
        rt.note(crate::plan::Action::Remove, format!(
            "remove the unfinished create of container {vmid} (run {}): pct unlock {vmid}; pct destroy {vmid}; free its new volumes",
            item.run
        ));
        return Ok(());
    }
    tracing::warn!(%vmid, run = %item.run, "removing what an interrupted create left (lock: create)");
    support::check_cancel(rt)?;
    crate::api::undo::execute(rt.host.as_ref(), &item.undo, &item.run, false)?;
    rt.journal.undone(item.seq)?;
    Ok(())
}

/// `lxc.create(spec)`: create the container, or accept an identical phoenix-owned one.
/// What an interrupted create of phoenix's left (`lock: create` only) is removed first.
pub fn create(rt: &Runtime, entry: &LxcConfig) -> Result<Map, ApiError> {
    const CALL: &str = "lxc.create";
    let vmid = entry.vmid;
    let boundary = rt.boundary();
    let mut existing = boundary.container(CALL, vmid, Access::Create)?;
    if existing
        .as_ref()
        .is_some_and(crate::ownership::is_create_stub)
    {
        let records = crate::journal::read(&crate::journal::Journal::path_in(
            &rt.settings.state_dir.value,
        ))?;
        if let crate::ownership::Container::InterruptedCreate(item) =
            crate::ownership::container(existing.as_ref(), &records, vmid)
        {
            recover_interrupted_create(rt, vmid, &item)?;
            existing = None;
        }
    }
    if let Some(configured) = rt.config.get(vmid) {
        // A recipe may shape its container, but not loosen its confinement against the
        // config file's word.
        if entry.unprivileged != configured.unprivileged || entry.features != configured.features {
            return Err(Refusal::new(
                CALL,
                Rule::Selection,
                format!(
                    "the spec for {vmid} changes `unprivileged` or `features` (config: unprivileged {}, features {:?}; spec: unprivileged {}, features {:?}): change the config file instead",
                    configured.unprivileged,
                    configured.features.to_pve().unwrap_or_default(),
                    entry.unprivileged,
                    entry.features.to_pve().unwrap_or_default()
                ),
            )
            .into());
        }
    }
    if let Some(conf) = existing {
        let d = drift(&conf, entry);
        if !d.fixed.is_empty() {
            let mut lines = d.fixed.clone();
            lines.extend(d.settable.iter().map(|o| {
                format!(
                    "{}: host has {:?}, config wants {:?} (pct set can change it in place)",
                    o.key,
                    o.have.as_deref().unwrap_or("(unset)"),
                    o.want.as_deref().unwrap_or("(unset)")
                )
            }));
            return Err(ApiError::spec(
                CALL,
                format!(
                    "container {vmid} exists and differs from its config entry in what PVE cannot change in place:\n  {}\nchange the config back, or destroy the container with `phoenix destroy --lxc {vmid}`",
                    lines.join("\n  ")
                ),
            ));
        }
        if d.settable.is_empty() {
            tracing::info!(%vmid, "container exists and matches its config");
        } else {
            apply_drift(rt, vmid, &d.settable)?;
        }
        return Ok(container_map(vmid, Some(entry)));
    }
    let spec = CreateSpec {
        vmid,
        entry: entry.clone(),
        run_id: rt.run_id.clone(),
    };
    // The volumes of this vmid already on the storage (an orphan of an earlier container)
    // are not the create's: its undo leaves them.
    let volumes_before = rt.host.storage_volumes(&entry.storage_pool, vmid)?;
    step(
        rt,
        &format!("lxc.create:{vmid}"),
        UndoStep::DestroyContainer {
            vmid,
            storage: Some(entry.storage_pool.clone()),
            volumes_before,
        },
        || rt.host.ct_create(&spec).map_err(ApiError::from),
    )?;
    Ok(container_map(vmid, Some(entry)))
}

/// Ask the boundary whether `call` may change container `vmid` (selected for this run and
/// phoenix's); its config (empty for a container a dry run has not created yet).
fn owned(rt: &Runtime, call: &'static str, vmid: Vmid) -> Result<CtConfig, ApiError> {
    Ok(rt
        .boundary()
        .container(call, vmid, Access::Change)?
        .unwrap_or_default())
}

/// `lxc.start(ct)`: start and wait until the host reports `status: running`.
pub fn start(rt: &Runtime, vmid: Vmid) -> Result<(), ApiError> {
    owned(rt, "lxc.start", vmid)?;
    let status = rt.host.ct_status_known(vmid)?;
    if status == CtStatus::Running {
        return Ok(());
    }
    step(
        rt,
        &format!("lxc.start:{vmid}"),
        UndoStep::StopContainer { vmid },
        || {
            rt.host.ct_start(vmid)?;
            if rt.dry_run {
                return Ok(());
            }
            // A start the host confirmed (PVE's `pct start` waits for the RUNNING state)
            // is not asked again; otherwise poll.
            if rt.host.ct_status_known(vmid)? == CtStatus::Running {
                return Ok(());
            }
            wait_status(rt, vmid, CtStatus::Running, START_WAIT)
        },
    )
}

/// Poll the status fast at first (so a quick start is noticed at once), backing off.
fn wait_status(rt: &Runtime, vmid: Vmid, want: CtStatus, limit: Duration) -> Result<(), ApiError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        support::check_cancel(rt)?;
        if rt.host.ct_status(vmid)? == want {
            return Ok(());
        }
        if started.elapsed() >= limit {
            return Err(crate::host::HostError::WaitTimeout {
                vmid,
                state: "running",
                waited: started.elapsed(),
            }
            .into());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// `lxc.stop(ct)`: stop when running.
pub fn stop(rt: &Runtime, vmid: Vmid) -> Result<(), ApiError> {
    owned(rt, "lxc.stop", vmid)?;
    if rt.host.ct_status_known(vmid)? == CtStatus::Running {
        support::check_cancel(rt)?;
        rt.host.ct_stop(vmid)?;
    }
    Ok(())
}

/// `lxc.status(ct)`: `running`, `stopped` or `absent`.
pub fn status(rt: &Runtime, vmid: Vmid) -> Result<CtStatus, ApiError> {
    if rt
        .boundary()
        .container("lxc.status", vmid, Access::Read)?
        .is_none()
    {
        return Ok(CtStatus::Absent);
    }
    Ok(rt.host.ct_status(vmid)?)
}

/// What `lxc.exec` accepts besides argv.
#[derive(Debug, Default)]
pub struct ExecOptions {
    /// Bytes on stdin.
    pub stdin: Option<Zeroizing<Vec<u8>>>,
    /// Kill after this long.
    pub timeout: Option<Duration>,
    /// Exit codes that count as success.
    pub ok_codes: Vec<i32>,
    /// The recipe says the command only reads. A dry run still runs it only when it is one
    /// of the boundary's built-in probes ([`crate::boundary::argv::is_probe`]).
    pub read_only: bool,
}

impl ExecOptions {
    fn from_map(map: &Map) -> Result<Self, ApiError> {
        const CALL: &str = "lxc.exec";
        known_keys(CALL, map, super::options::EXEC.keys)?;
        let read_only = match map.get("read_only") {
            None => false,
            Some(v) => v.as_bool().map_err(|t| {
                ApiError::spec(CALL, format!("`read_only` must be a bool, found {t}"))
            })?,
        };
        let stdin = match map.get("stdin") {
            None => None,
            Some(v) if v.is_unit() => None,
            Some(v) => Some(stdin_bytes(CALL, v, SecretUse::Line)?),
        };
        let ok_codes = match map.get("ok_codes") {
            None => Vec::new(),
            Some(v) => {
                let arr = v.read_lock::<Array>().ok_or_else(|| {
                    ApiError::spec(CALL, "`ok_codes` must be an array of integers")
                })?;
                arr.iter()
                    .map(|c| {
                        c.as_int()
                            .ok()
                            .and_then(|c| i32::try_from(c).ok())
                            .ok_or_else(|| {
                                ApiError::spec(CALL, "`ok_codes` must be an array of integers")
                            })
                    })
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Self {
            stdin,
            timeout: opt_duration(CALL, map, "timeout")?,
            ok_codes,
            read_only,
        })
    }
}

/// Stdin from a string or a Secret (a Secret's bytes never become a Rhai string).
/// A secret is checked for `usage` (control characters: DESIGN.md §12).
fn stdin_bytes(
    call: &'static str,
    v: &Dynamic,
    usage: SecretUse,
) -> Result<Zeroizing<Vec<u8>>, ApiError> {
    if let Some(secret) = v.read_lock::<Secret>() {
        // A rendered template's line breaks are the recipe's own text (each secret in it
        // was checked as one line by `secret.template`): it may span lines on stdin.
        let usage = if secret.is_rendered() {
            SecretUse::File
        } else {
            usage
        };
        secret_bytes(call, &secret.to_string(), secret.expose(), usage)?;
        return Ok(Zeroizing::new(secret.expose().to_vec()));
    }
    v.clone()
        .into_immutable_string()
        .map(|s| Zeroizing::new(s.as_bytes().to_vec()))
        .map_err(|t| {
            ApiError::spec(
                call,
                format!("`stdin` must be a string or a secret, found {t}"),
            )
        })
}

/// `lxc.exec(ct, argv, opts)`: run argv inside the container; never a shell.
pub fn exec(
    rt: &Runtime,
    vmid: Vmid,
    argv: Vec<String>,
    opts: ExecOptions,
) -> Result<Map, ApiError> {
    const CALL: &str = "lxc.exec";
    crate::boundary::argv::check_exec(CALL, &argv)?;
    owned(rt, CALL, vmid)?;
    support::check_cancel(rt)?;
    // A recipe's `read_only` never makes a command run in a dry run by itself: only the
    // built-in read-only probes do. And in a dry run a container created by an earlier
    // (recorded) step is not there: even a probe cannot run, so it is recorded.
    let read_only = opts.read_only
        && crate::boundary::argv::is_probe(&argv)
        && !(rt.dry_run && rt.host.ct_status_known(vmid)? != CtStatus::Running);
    // A command that changes the container is a step on screen (`apt-get install …` can
    // take minutes); a recipe's read-only checks stay quiet.
    let shown = if opts.read_only {
        None
    } else {
        support::exec_step(rt, vmid, &argv)
    };
    let out = rt.host.ct_exec(
        vmid,
        &ExecRequest {
            argv,
            stdin: opts.stdin,
            timeout: opts.timeout,
            ok_codes: opts.ok_codes,
            read_only,
        },
    )?;
    if let Some(shown) = shown {
        shown.done();
    }
    let mut m = Map::new();
    m.insert("code".into(), Dynamic::from_int(i64::from(out.code)));
    m.insert(
        "stdout".into(),
        rt.redactor.redact(&out.stdout_text()).into(),
    );
    m.insert(
        "stderr".into(),
        rt.redactor.redact(&out.stderr_text()).into(),
    );
    // In a dry run a recorded command did not run: its result is a placeholder, and a
    // recipe's checks must not trust it.
    m.insert(
        "planned".into(),
        Dynamic::from_bool(rt.dry_run && !read_only),
    );
    Ok(m)
}

/// `lxc.set_password(ct, user, secret)`: `chpasswd` with `user:secret` on stdin.
pub fn set_password(rt: &Runtime, vmid: Vmid, user: &str, secret: &Secret) -> Result<(), ApiError> {
    const CALL: &str = "lxc.set_password";
    let valid = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid {
        return Err(ApiError::spec(
            CALL,
            format!("invalid user name {}", crate::types::show(user)),
        ));
    }
    secret_bytes(CALL, &secret.to_string(), secret.expose(), SecretUse::Line)?;
    owned(rt, CALL, vmid)?;
    let mut line = Zeroizing::new(Vec::with_capacity(user.len() + secret.expose().len() + 2));
    line.extend_from_slice(user.as_bytes());
    line.push(b':');
    line.extend_from_slice(secret.expose());
    line.push(b'\n');
    support::check_cancel(rt)?;
    rt.host.ct_exec(
        vmid,
        &ExecRequest {
            argv: vec!["chpasswd".into()],
            stdin: Some(line),
            timeout: Some(Duration::from_secs(60)),
            ok_codes: Vec::new(),
            read_only: false,
        },
    )?;
    Ok(())
}

/// The file's current content inside the running container `vmid`, `None` when it does
/// not exist (read-only query). One `cat`: its exit 1 with coreutils' "No such file or
/// directory" is an absent file, so there is no `test -e` first (each `pct exec` starts a
/// Perl interpreter on a real host). Any other failure to read is an error naming the file.
pub(crate) fn file_content(
    rt: &Runtime,
    vmid: Vmid,
    path: &AbsPath,
) -> Result<Option<Zeroizing<Vec<u8>>>, ApiError> {
    let out = rt.host.ct_exec(
        vmid,
        &ExecRequest {
            argv: vec!["cat".into(), path.to_string()],
            timeout: Some(Duration::from_secs(30)),
            ok_codes: vec![0, 1],
            read_only: true,
            ..ExecRequest::default()
        },
    )?;
    if out.code == 0 {
        return Ok(Some(Zeroizing::new(out.stdout)));
    }
    let why = out.stderr_text();
    if why.contains("No such file or directory") {
        return Ok(None);
    }
    Err(ApiError::spec(
        "lxc.push",
        format!(
            "cannot read {path} in container {vmid} to compare it with what would be written: {}",
            why.trim()
        ),
    ))
}

/// `lxc.push(ct, path, content, mode)`: write a file inside the container (from a 0600
/// temp file on the host). Content that is already there is not pushed again. A file
/// phoenix creates is removed on undo; one that existed before is left alone. Whether it
/// wrote.
pub fn push(
    rt: &Runtime,
    vmid: Vmid,
    path: &AbsPath,
    content: &[u8],
    mode: u32,
) -> Result<bool, ApiError> {
    owned(rt, "lxc.push", vmid)?;
    let running = rt.host.ct_status_known(vmid)? == CtStatus::Running;
    let current = if running && !unread_ok(rt, vmid, path)? {
        file_content(rt, vmid, path)?
    } else {
        None
    };
    push_over(
        rt,
        vmid,
        path,
        content,
        mode,
        current.as_deref().map(Vec::as_slice),
    )
}

/// Whether `path` in container `vmid` can be written without reading it first: this
/// process created the container ([`crate::host::Host::ct_created_here`]), so its rootfs
/// holds only the template's files, and `path` is on that rootfs, not below a mount point
/// (`mpN`, or an `lxc.mount.entry` target): a dataset or host directory outlives the
/// container and may hold a file of an earlier run that an undo must not remove. Writing
/// the wanted content unread ends the same; on a real host it saves a `pct exec` (a Perl
/// interpreter each).
pub(crate) fn unread_ok(rt: &Runtime, vmid: Vmid, path: &AbsPath) -> Result<bool, ApiError> {
    if !rt.host.ct_created_here(vmid) {
        return Ok(false);
    }
    let Some(conf) = rt.host.ct_config(vmid)? else {
        return Ok(false);
    };
    Ok(on_rootfs(&conf, path))
}

/// Whether `path` is on the container's rootfs: not at or below the mount point of an
/// `mpN` (`mp=`) or an `lxc.mount.entry` (its target, relative to the rootfs).
fn on_rootfs(conf: &CtConfig, path: &AbsPath) -> bool {
    let below = |mp: &str| {
        let mp = mp.trim_end_matches('/');
        mp.is_empty() || path.as_str() == mp || path.as_str().starts_with(&format!("{mp}/"))
    };
    !conf.entries.iter().any(|(k, v)| {
        if k.starts_with("mp") && k[2..].chars().all(|c| c.is_ascii_digit()) {
            v.split(',')
                .filter_map(|p| p.strip_prefix("mp="))
                .any(below)
        } else if k == "lxc.mount.entry" {
            // `source target type options…`, the target relative to the rootfs.
            v.split_whitespace()
                .nth(1)
                .is_none_or(|t| below(&format!("/{}", t.trim_start_matches('/'))))
        } else {
            false
        }
    })
}

/// [`push`] when the caller has just read the file's `current` content (`None`: absent)
/// with [`file_content`] and the container is phoenix's: not read again.
pub(crate) fn push_over(
    rt: &Runtime,
    vmid: Vmid,
    path: &AbsPath,
    content: &[u8],
    mode: u32,
    current: Option<&[u8]>,
) -> Result<bool, ApiError> {
    if current.is_some_and(|c| c == content) {
        return Ok(false);
    }
    if rt.dry_run {
        rt.note_file(vmid, path.as_str(), current, content, mode);
    }
    let name = format!("lxc.push:{vmid}:{path}");
    if current.is_some() {
        // Replacing a file that existed before this run: no undo (it was not ours to remove).
        support::check_cancel(rt)?;
        tracing::info!(step = %name, "replace");
        rt.host.ct_push(vmid, content, path, mode)?;
        return Ok(true);
    }
    step(
        rt,
        &name,
        UndoStep::RemoveFile {
            vmid,
            path: path.clone(),
        },
        || Ok(rt.host.ct_push(vmid, content, path, mode)?),
    )?;
    Ok(true)
}

/// `lxc.mount(ct, source, ct_path)`: bind a host path or a ZFS dataset (`mpN`).
pub fn mount(
    rt: &Runtime,
    vmid: Vmid,
    source: &str,
    ct_path: &AbsPath,
    read_only: bool,
) -> Result<String, ApiError> {
    const CALL: &str = "lxc.mount";
    let boundary = rt.boundary();
    // The container first (a static check when it is not this run's), then the source.
    let found = boundary.container(CALL, vmid, Access::Change)?;
    let source = boundary.mount_source(CALL, source)?;
    // Whose root the container's root is: its config's word, or (a dry run's container
    // that an earlier recorded step creates) the config entry's.
    let root_ids = ct_root_ids(
        found.as_ref(),
        rt.config.get(vmid).is_some_and(|e| e.unprivileged),
    )
    .map_err(|m| ApiError::spec(CALL, format!("container {vmid}: {m}")))?;
    let conf = found.unwrap_or_default();
    let host_path = source.path.clone();
    // A phoenix dataset (not a plain host path, which stays the operator's) becomes the
    // container root's own, so an unprivileged container can write it.
    let share = |rt: &Runtime| -> Result<(), ApiError> {
        match (&source.dataset, root_ids) {
            (Some(ds), Some(ids)) => give_to_ct_root(rt, vmid, ds, &host_path, ct_path, ids),
            _ => Ok(()),
        }
    };
    let want_mp = format!("mp={ct_path}");
    for (k, v) in &conf.entries {
        if k.starts_with("mp") && v.split(',').any(|p| p == want_mp) {
            if v.split(',').next() == Some(host_path.as_str()) {
                share(rt)?;
                return Ok(k.clone());
            }
            return Err(ApiError::spec(
                CALL,
                format!("{ct_path} is already mounted from another source ({k}: {v})"),
            ));
        }
    }
    let slot = format!("mp{}", conf.free_slot("mp"));
    let mut value = crate::host::pve::Composite::new()
        .bare(host_path.as_str())
        .and_then(|c| c.kv("mp", ct_path.as_str()))
        .map_err(|m| ApiError::spec(CALL, m))?;
    if read_only {
        value = value.kv("ro", "1").map_err(|m| ApiError::spec(CALL, m))?;
    }
    let value = value.build();
    step(
        rt,
        &format!("lxc.mount:{vmid}:{ct_path}"),
        UndoStep::DeleteConfigKeys {
            vmid,
            keys: vec![slot.clone()],
        },
        || Ok(rt.host.ct_set(vmid, &[(slot.clone(), value.clone())])?),
    )?;
    share(rt)?;
    Ok(slot)
}

/// The host uid and gid a container's root is, `None` for the host's root (a privileged
/// container without `lxc.idmap` lines). As pve-container `src/PVE/LXC.pm`
/// `parse_id_maps` (proxmox/pve-container 94f5585): the `lxc.idmap` lines (`u|g CT HOST
/// LEN`) map container id 0 to their host id, any other line is an error ("failed to
/// parse idmap"); without such lines an unprivileged container gets `u 0 100000 65536`
/// and `g 0 100000 65536`. `conf` is `None` for a container a dry run has not created
/// yet: then `unprivileged` (the config entry's) decides.
pub fn ct_root_ids(
    conf: Option<&CtConfig>,
    unprivileged: bool,
) -> Result<Option<(u32, u32)>, String> {
    let Some(conf) = conf else {
        return Ok(unprivileged.then_some((100_000, 100_000)));
    };
    let maps = conf.all("lxc.idmap");
    if maps.is_empty() {
        // PVE writes `unprivileged: 1` (and nothing for a privileged container).
        return Ok((conf.get("unprivileged") == Some("1")).then_some((100_000, 100_000)));
    }
    let (mut uid, mut gid) = (0, 0);
    for m in maps {
        let fields: Vec<&str> = m.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            [kind @ ("u" | "g"), ct, host, len] => ct
                .parse::<u32>()
                .ok()
                .zip(host.parse::<u32>().ok())
                .filter(|_| len.parse::<u32>().is_ok())
                .map(|(ct, host)| (*kind, ct, host)),
            _ => None,
        };
        match parsed {
            Some(("u", 0, host)) => uid = host,
            Some(("g", 0, host)) => gid = host,
            Some(_) => {}
            None => return Err(format!("failed to parse idmap: {m}")),
        }
    }
    Ok(Some((uid, gid)))
}

/// An unprivileged container's root is a host uid (100000 by default) that cannot write
/// a directory owned by the host's root, which is what a fresh dataset's root directory
/// is; Proxmox VE gives the volumes it allocates to the mapped root (`mkfs` with
/// `root_owner`, pve-container `src/PVE/LXC.pm`), never a bind-mounted host directory
/// (DESIGN.md §11). So phoenix gives the dataset's root directory to `ids`, as its own
/// step whose undo gives it back; nothing when it is `ids`' already (a re-run) or `ids`
/// is the host's root.
fn give_to_ct_root(
    rt: &Runtime,
    vmid: Vmid,
    dataset: &DatasetName,
    host_path: &AbsPath,
    ct_path: &AbsPath,
    (uid, gid): (u32, u32),
) -> Result<(), ApiError> {
    if (uid, gid) == (0, 0) {
        return Ok(());
    }
    // In a dry run a dataset of an earlier (recorded) step does not exist: it would be
    // root's when made.
    let before = match rt.host.host_path_owner(host_path)? {
        Some(owner) => owner,
        None if rt.dry_run => (0, 0),
        None => {
            return Err(ApiError::spec(
                "lxc.mount",
                format!(
                    "{host_path}, the mountpoint of dataset {dataset}, does not exist on the host"
                ),
            ));
        }
    };
    if before == (uid, gid) {
        return Ok(());
    }
    step(
        rt,
        &format!("lxc.mount:{vmid}:{ct_path}:owner"),
        UndoStep::RestoreDatasetOwner {
            vmid,
            name: dataset.clone(),
            uid: before.0,
            gid: before.1,
        },
        || Ok(rt.host.host_chown(host_path, uid, gid)?),
    )
}

/// `lxc.address(ct)`: the IPv4 the host reports for the container's interface.
pub fn address(rt: &Runtime, vmid: Vmid) -> Result<Ipv4Addr, ApiError> {
    if rt
        .boundary()
        .container("lxc.address", vmid, Access::Read)?
        .is_none()
        && !rt.dry_run
    {
        return Err(crate::host::HostError::NoSuchContainer(vmid).into());
    }
    let iface = rt
        .config
        .get(vmid)
        .map_or_else(|| "eth0".to_owned(), |e| e.network.name.to_string());
    if rt.dry_run && rt.host.ct_status_known(vmid)? != CtStatus::Running {
        // Typed placeholder: the container is not there yet in a dry run.
        return Ok(Ipv4Addr::UNSPECIFIED);
    }
    Ok(rt.host.ct_address(vmid, &iface)?)
}

fn mode_of(call: &'static str, v: i64) -> Result<u32, ApiError> {
    Ok(crate::boundary::values::file_mode(call, v)?)
}

/// Register the `lxc` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<LxcApi>("Lxc");

    FuncRegistration::new("create")
        .with_params_info(["lxc: Lxc", "spec: Map", "Map"])
        .with_comments([
            "/// Create the container described by `spec` (a config entry from `config.target()`",
            "/// or a map of the same shape with `vmid`). An identical phoenix-owned container is",
            "/// accepted as is; one that differs is reported as drift; a foreign one is refused.",
            "/// Returns the container `#{vmid, name, iface}`. Undo: destroy the container.",
        ])
        .register_into_engine(engine, |api: LxcApi, spec: Map| -> RhaiResult<Map> {
            let entry = entry_from_map(&api.rt, &spec).map_err(script_error)?;
            create(&api.rt, &entry).map_err(script_error)
        });

    FuncRegistration::new("start")
        .with_params_info(["lxc: Lxc", "ct: Map|int", "()"])
        .with_comments(["/// Start the container and wait until the host reports `status: running`. Undo: stop."])
        .register_into_engine(engine, |api: LxcApi, ct: Dynamic| -> RhaiResult<()> {
            let vmid = vmid_of("lxc.start", &ct).map_err(script_error)?;
            start(&api.rt, vmid).map_err(script_error)
        });

    FuncRegistration::new("stop")
        .with_params_info(["lxc: Lxc", "ct: Map|int", "()"])
        .with_comments(["/// Stop the container if it is running."])
        .register_into_engine(engine, |api: LxcApi, ct: Dynamic| -> RhaiResult<()> {
            let vmid = vmid_of("lxc.stop", &ct).map_err(script_error)?;
            stop(&api.rt, vmid).map_err(script_error)
        });

    FuncRegistration::new("status")
        .with_params_info(["lxc: Lxc", "ct: Map|int", "String"])
        .with_comments(["/// The container's state: `\"running\"`, `\"stopped\"` or `\"absent\"`."])
        .register_into_engine(engine, |api: LxcApi, ct: Dynamic| -> RhaiResult<String> {
            let vmid = vmid_of("lxc.status", &ct).map_err(script_error)?;
            status(&api.rt, vmid)
                .map(|s| s.to_string())
                .map_err(script_error)
        });

    let exec_fn = |api: LxcApi, ct: Dynamic, argv: Array, opts: Map| -> RhaiResult<Map> {
        let vmid = vmid_of("lxc.exec", &ct).map_err(script_error)?;
        let argv = string_array("lxc.exec", "argv", &argv).map_err(script_error)?;
        let opts = ExecOptions::from_map(&opts).map_err(script_error)?;
        exec(&api.rt, vmid, argv, opts).map_err(script_error)
    };
    FuncRegistration::new("exec")
        .with_params_info(["lxc: Lxc", "ct: Map|int", "argv: Array", "Map"])
        .with_comments([
            "/// Run `argv` inside the container (no shell: a shell as argv[0] is refused).",
            "/// Fails on a non-zero exit. Returns `#{code, stdout, stderr, planned}` (`planned`:",
            "/// a dry run recorded the command instead of running it). Pair it with",
            "/// `undo.push` when the command changes something that must be undone.",
        ])
        .register_into_engine(engine, move |api: LxcApi, ct: Dynamic, argv: Array| {
            exec_fn(api, ct, argv, Map::new())
        });
    FuncRegistration::new("exec")
        .with_params_info(["lxc: Lxc", "ct: Map|int", "argv: Array", "opts: Map", "Map"])
        .with_comments([
            "/// Run `argv` inside the container with options: `stdin` (string or secret),",
            "/// `timeout` (`\"30s\"`), `ok_codes` (exit codes that count as success),",
            "/// `read_only` (says the command only reads; `--dry-run` still runs nothing a recipe",
            "/// marks: only phoenix's built-in probes such as `test -x PATH`, `cat FILE` or",
            "/// `systemctl is-active UNIT` run in a dry run, and only in a container that exists).",
        ])
        .register_into_engine(engine, exec_fn);

    FuncRegistration::new("set_password")
        .with_params_info([
            "lxc: Lxc",
            "ct: Map|int",
            "user: String",
            "secret: Secret",
            "()",
        ])
        .with_comments([
            "/// Set `user`'s password with `chpasswd`; the secret goes through stdin only.",
        ])
        .register_into_engine(
            engine,
            |api: LxcApi, ct: Dynamic, user: &str, secret: Secret| -> RhaiResult<()> {
                let vmid = vmid_of("lxc.set_password", &ct).map_err(script_error)?;
                set_password(&api.rt, vmid, user, &secret).map_err(script_error)
            },
        );

    let push_fn = |api: LxcApi,
                   ct: Dynamic,
                   path: &str,
                   content: Dynamic,
                   mode: Option<i64>|
     -> RhaiResult<()> {
        const CALL: &str = "lxc.push";
        let vmid = vmid_of(CALL, &ct).map_err(script_error)?;
        let path = AbsPath::new(path)
            .map_err(|source| script_error(ApiError::Type { call: CALL, source }))?;
        let is_secret = content.is::<Secret>();
        let bytes = stdin_bytes(CALL, &content, SecretUse::File).map_err(script_error)?;
        let mode = match mode {
            Some(m) => mode_of(CALL, m).map_err(script_error)?,
            None if is_secret => 0o600,
            None => 0o644,
        };
        if is_secret && mode & 0o077 != 0 {
            return Err(script_error(ApiError::spec(
                CALL,
                format!("a secret must be pushed with mode 0600 or stricter, not {mode:04o}"),
            )));
        }
        push(&api.rt, vmid, &path, &bytes, mode)
            .map(drop)
            .map_err(script_error)
    };
    FuncRegistration::new("push")
        .with_params_info([
            "lxc: Lxc",
            "ct: Map|int",
            "path: String",
            "content: String|Secret",
            "()",
        ])
        .with_comments([
            "/// Write `content` to `path` inside the container (mode 0644; 0600 for a secret).",
            "/// Unchanged content is not pushed again (on the rootfs of a container this run",
            "/// created nothing of phoenix's can be there yet: the file is written unread).",
            "/// Undo: remove the file if phoenix created it.",
        ])
        .register_into_engine(
            engine,
            move |api: LxcApi, ct: Dynamic, path: &str, content: Dynamic| {
                push_fn(api, ct, path, content, None)
            },
        );
    FuncRegistration::new("push")
        .with_params_info([
            "lxc: Lxc",
            "ct: Map|int",
            "path: String",
            "content: String|Secret",
            "mode: int",
            "()",
        ])
        .with_comments([
            "/// Write `content` to `path` inside the container with `mode` (e.g. `0o600`).",
        ])
        .register_into_engine(
            engine,
            move |api: LxcApi, ct: Dynamic, path: &str, content: Dynamic, mode: i64| {
                push_fn(api, ct, path, content, Some(mode))
            },
        );

    let mount_fn =
        |api: LxcApi, ct: Dynamic, source: &str, ct_path: &str, ro: bool| -> RhaiResult<String> {
            const CALL: &str = "lxc.mount";
            let vmid = vmid_of(CALL, &ct).map_err(script_error)?;
            let ct_path = AbsPath::new(ct_path)
                .map_err(|source| script_error(ApiError::Type { call: CALL, source }))?;
            mount(&api.rt, vmid, source, &ct_path, ro).map_err(script_error)
        };
    FuncRegistration::new("mount")
        .with_params_info([
            "lxc: Lxc",
            "ct: Map|int",
            "source: String",
            "ct_path: String",
            "String",
        ])
        .with_comments([
            "/// Bind-mount a host path (`/srv/x`) or a ZFS dataset (`rpool/phoenix/models/x`) at `ct_path`",
            "/// (`mpN`). Returns the `mpN` key. Undo: remove the mount point entry.",
        ])
        .register_into_engine(
            engine,
            move |api: LxcApi, ct: Dynamic, source: &str, ct_path: &str| {
                mount_fn(api, ct, source, ct_path, false)
            },
        );
    FuncRegistration::new("mount")
        .with_params_info([
            "lxc: Lxc",
            "ct: Map|int",
            "source: String",
            "ct_path: String",
            "opts: Map",
            "String",
        ])
        .with_comments(["/// Bind-mount with options: `ro` (bool)."])
        .register_into_engine(
            engine,
            move |api: LxcApi, ct: Dynamic, source: &str, ct_path: &str, opts: Map| {
                known_keys("lxc.mount", &opts, super::options::MOUNT.keys).map_err(script_error)?;
                let ro = opts
                    .get("ro")
                    .and_then(|v| v.as_bool().ok())
                    .unwrap_or(false);
                mount_fn(api, ct, source, ct_path, ro)
            },
        );

    FuncRegistration::new("address")
        .with_params_info(["lxc: Lxc", "ct: Map|int", "String"])
        .with_comments([
            "/// The container's IPv4 address as the host reports it (works with DHCP; a",
            "/// loopback address on the emulated host). `0.0.0.0` in a dry run before creation.",
        ])
        .register_into_engine(engine, |api: LxcApi, ct: Dynamic| -> RhaiResult<String> {
            let vmid = vmid_of("lxc.address", &ct).map_err(script_error)?;
            address(&api.rt, vmid)
                .map(|a| a.to_string())
                .map_err(script_error)
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::SecretName;

    #[test]
    fn stdin_takes_a_rendered_template_whole_but_a_stored_secret_as_one_line() {
        let name = || SecretName::new("k").unwrap();
        let text = b"KEY=abc\nURL=http://127.0.0.1\n".to_vec();
        let rendered = Dynamic::from(Secret::rendered(name(), Zeroizing::new(text.clone())));
        let bytes = stdin_bytes("lxc.exec", &rendered, SecretUse::Line).unwrap();
        assert_eq!(bytes.as_slice(), text.as_slice());
        let stored = Dynamic::from(Secret::new(name(), Zeroizing::new(text)));
        let err = stdin_bytes("lxc.exec", &stored, SecretUse::Line)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("«secret:k» holds the control character 0x0a at byte 7"),
            "{err}"
        );
        // A rendered template is still refused other control characters.
        let escape = Dynamic::from(Secret::rendered(
            name(),
            Zeroizing::new(b"a\x1b[2Jb".to_vec()),
        ));
        assert!(stdin_bytes("lxc.exec", &escape, SecretUse::Line).is_err());
    }

    #[test]
    fn a_path_below_a_mount_point_is_not_on_the_rootfs() {
        let conf = CtConfig::parse(
            "mp0: /rpool/phoenix/models/a,mp=/models\nmp1: /srv/x,mp=/opt/data/,ro=1\n\
             lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n\
             [snap]\nmp2: /y,mp=/etc\n",
        );
        let on = |p: &str| on_rootfs(&conf, &AbsPath::new(p).unwrap());
        assert!(on("/etc/systemd/system/x.service"));
        assert!(on("/modelsx/a"));
        assert!(!on("/models"));
        assert!(!on("/models/huggingface/token"));
        assert!(!on("/opt/data/a"));
        assert!(!on("/dev/nvidia0"));
        assert!(on("/dev/nvidia1"));
    }

    #[test]
    fn the_ct_root_follows_the_idmap_else_the_unprivileged_default() {
        let ids = |text: &str| ct_root_ids(Some(&CtConfig::parse(text)), false);
        assert_eq!(ids("arch: amd64\n"), Ok(None));
        assert_eq!(ids("unprivileged: 1\n"), Ok(Some((100_000, 100_000))));
        // The container's word wins over the config entry's; without one, the entry's.
        assert_eq!(
            ct_root_ids(Some(&CtConfig::parse("unprivileged: 0\n")), true),
            Ok(None)
        );
        assert_eq!(ct_root_ids(None, true), Ok(Some((100_000, 100_000))));
        assert_eq!(ct_root_ids(None, false), Ok(None));
        // Only the lines for container id 0 name root's host ids.
        assert_eq!(
            ids(
                "unprivileged: 1\nlxc.idmap: u 0 200000 1000\nlxc.idmap: u 1000 1000 1\nlxc.idmap: g 0 300000 65536\n"
            ),
            Ok(Some((200_000, 300_000)))
        );
        // Lines without one for id 0 leave root unmapped (host id 0).
        assert_eq!(
            ids("lxc.idmap: u 1000 1000 1\nlxc.idmap: g 1000 1000 1\n"),
            Ok(Some((0, 0)))
        );
        assert_eq!(
            ids("unprivileged: 1\nlxc.idmap: u 0 lots 65536\n"),
            Err("failed to parse idmap: u 0 lots 65536".to_owned())
        );
        assert_eq!(
            ids("lxc.idmap: x 0 1 1\n"),
            Err("failed to parse idmap: x 0 1 1".to_owned())
        );
    }
}

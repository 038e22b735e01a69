//! `systemctl` and `journalctl` inside an emulated container.
//!
//! Units are files under `/etc/systemd/system/`, `/lib/systemd/system/` or
//! `/usr/lib/systemd/system/` in the rootfs; their state (enabled, active, failed, the
//! unit text systemd has loaded, the Docker container its `ExecStart=` runs) lives in the
//! container's state. Starting a unit parses its `[Service]` section's `ExecStartPre=`,
//! `ExecStart=` and `ExecStop=` lines with systemd's quoting rules ([`split_exec`]) and runs
//! those argvs through the in-container program table (so `/usr/bin/docker run …` reaches
//! the Docker emulation): no shell anywhere.
//!
//! Decisions where DESIGN.md is silent:
//! - systemd keeps the unit text it loaded: a unit file changed on disk keeps running its old
//!   lines until `systemctl daemon-reload` or an `enable`/`disable`, which reload too (a
//!   unit never loaded is read on first use), as systemd does, so a forgotten reload shows;
//! - `Type=simple`: `start` succeeds once `ExecStart=` was launched; a main process that
//!   fails (a `docker run` exiting non-zero, a vLLM container that crashes) turns the unit
//!   into `activating/auto-restart` with `Restart=on-failure|always`, else `failed/failed`;
//!   the emulator does not restart it by itself;
//! - `stop` runs `ExecStop=`, then stops the main Docker container if it still runs;
//! - `docker.service` needs the container feature `nesting=1` to start (Docker cannot run
//!   in a container without it); restarting it stops the running Docker containers
//!   (no live-restore) and loads the `nvidia` runtime when `nvidia-ctk` configured it;
//! - `Requires=`/`Wants=` units that have a unit file start first (a failed `Requires=`
//!   fails the start: `A dependency job … failed`); targets are not emulated;
//! - `pct start` boots the container: enabled units start ([`boot`]);
//! - `journalctl -u UNIT` shows the main container's log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::container::{self, CtState};
use crate::inner::Ct;
use crate::out::Out;

/// systemd's state in a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SystemdState {
    /// Units by full name (`x.service`).
    #[serde(default)]
    pub units: BTreeMap<String, Unit>,
}

/// One unit's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Unit {
    /// `systemctl enable` ran.
    #[serde(default)]
    pub enabled: bool,
    /// Started and not stopped.
    #[serde(default)]
    pub active: bool,
    /// The last start failed.
    #[serde(default)]
    pub failed: bool,
    /// The unit text systemd loaded (`None`: not loaded yet).
    #[serde(default)]
    pub loaded: Option<String>,
    /// The Docker container `ExecStart=` runs, if any.
    #[serde(default)]
    pub main: Option<String>,
    /// The exit code of a main process that ended at once.
    #[serde(default)]
    pub main_exit: Option<i32>,
}

/// Where unit files are looked up, in systemd's order.
const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// The Docker daemon's unit.
pub const DOCKER_SERVICE: &str = "docker.service";

/// `x` → `x.service`.
fn full_name(name: &str) -> String {
    if name.contains('.') {
        name.to_owned()
    } else {
        format!("{name}.service")
    }
}

/// The unit file's text, `None` when no file exists.
fn unit_file(ct: &Ct<'_>, name: &str) -> Option<(String, String)> {
    UNIT_DIRS.iter().find_map(|d| {
        let path = format!("{d}/{name}");
        std::fs::read_to_string(container::resolve(ct.root, ct.vmid, ct.conf, &path))
            .ok()
            .map(|t| (path, t))
    })
}

/// Whether the container may run Docker (`features: nesting=1`).
fn nesting(ct: &Ct<'_>) -> bool {
    ct.conf.get("features").is_some_and(|f| {
        f.split(',')
            .any(|kv| kv.trim() == "nesting=1" || kv.trim() == "nesting=true")
    })
}

/// What a package's maintainer script does: enable and start `unit` (in `st`, under the
/// caller's lock).
pub fn postinst_enable_start(ct: &Ct<'_>, st: &mut CtState, unit: &str) {
    let ok = unit != DOCKER_SERVICE || nesting(ct);
    let u = st.systemd.units.entry(unit.to_owned()).or_default();
    u.enabled = true;
    u.active = ok;
    u.failed = !ok;
    if ok && unit == DOCKER_SERVICE {
        st.docker.nvidia_runtime = st.nvidia_ctk.runtime_configured;
    }
}

/// Whether the Docker daemon runs.
pub fn docker_running(st: &CtState) -> bool {
    st.systemd
        .units
        .get(DOCKER_SERVICE)
        .is_some_and(|u| u.active)
}

/// `(ActiveState, SubState)` of a unit.
pub fn unit_state(
    st: &CtState,
    name: &str,
    restart_on_failure: bool,
) -> (&'static str, &'static str) {
    let Some(u) = st.systemd.units.get(name) else {
        return ("inactive", "dead");
    };
    if !u.active {
        return if u.failed {
            ("failed", "failed")
        } else {
            ("inactive", "dead")
        };
    }
    let exit = match (&u.main, u.main_exit) {
        (_, Some(code)) => Some(code),
        (Some(c), None) => match crate::docker::container_status(st, c) {
            Some((status, _)) if status == "running" || status == "created" => None,
            Some((_, code)) => Some(code),
            None => Some(st.docker.last_exit.get(c).copied().unwrap_or(0)),
        },
        (None, None) => None,
    };
    match exit {
        None => ("active", "running"),
        Some(0) => ("inactive", "dead"),
        Some(_) if restart_on_failure => ("activating", "auto-restart"),
        Some(_) => ("failed", "failed"),
    }
}

/// The parsed `[Service]` lines systemd runs.
#[derive(Debug, Default, PartialEq)]
pub struct Service {
    /// `ExecStartPre=`: `(ignore failure, argv)`.
    pub pre: Vec<(bool, Vec<String>)>,
    /// `ExecStart=`.
    pub start: Vec<(bool, Vec<String>)>,
    /// `ExecStop=`.
    pub stop: Vec<(bool, Vec<String>)>,
    /// `Restart=on-failure|always|on-abnormal`.
    pub restart_on_failure: bool,
    /// `[Unit]` `Requires=`: started first; their failure fails the start.
    pub requires: Vec<String>,
    /// `[Unit]` `Wants=`: started first; their failure is ignored.
    pub wants: Vec<String>,
}

/// Parse a unit's `[Service]` section.
pub fn parse_unit(text: &str) -> Result<Service, String> {
    let mut s = Service::default();
    let mut section = String::new();
    let mut logical = String::new();
    for raw in text.lines() {
        if let Some(body) = raw.strip_suffix('\\') {
            logical.push_str(body);
            logical.push(' ');
            continue;
        }
        logical.push_str(raw);
        let line = std::mem::take(&mut logical);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            return Err(format!("line {line:?} is not Key=Value"));
        };
        let (k, v) = (k.trim(), v.trim());
        if section == "[Unit]" {
            let names = v.split_whitespace().map(str::to_owned);
            match k {
                "Requires" => s.requires.extend(names),
                "Wants" => s.wants.extend(names),
                _ => {}
            }
            continue;
        }
        if section != "[Service]" {
            continue;
        }
        let list = match k {
            "ExecStartPre" => &mut s.pre,
            "ExecStart" => &mut s.start,
            "ExecStop" => &mut s.stop,
            "Restart" => {
                s.restart_on_failure = matches!(v, "on-failure" | "always" | "on-abnormal");
                continue;
            }
            _ => continue,
        };
        if v.is_empty() {
            list.clear();
            continue;
        }
        list.push(split_exec(v)?);
    }
    Ok(s)
}

/// One `Exec…=` value: its `-` prefix and its words, unquoted with systemd's rules
/// (double or single quotes, C escapes, `%%` → `%`, `$$` → `$`). Other specifiers and
/// variables are refused: phoenix's units use none.
pub fn split_exec(v: &str) -> Result<(bool, Vec<String>), String> {
    let mut rest = v;
    let mut ignore = false;
    loop {
        match rest.chars().next() {
            Some('-') => ignore = true,
            Some(c @ ('@' | ':' | '+' | '!')) => {
                return Err(format!("the {c:?} prefix of {v:?} is not emulated"));
            }
            _ => break,
        }
        rest = &rest[1..];
    }
    let mut words = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            break;
        };
        let mut w = String::new();
        let quote = if first == '"' || first == '\'' {
            chars.next();
            Some(first)
        } else {
            None
        };
        loop {
            let Some(c) = chars.next() else {
                if quote.is_some() {
                    return Err(format!("unbalanced quotes in {v:?}"));
                }
                break;
            };
            match c {
                c if Some(c) == quote => {
                    if chars.peek().is_some_and(|n| !n.is_whitespace()) {
                        return Err(format!("a quoted word must end at a space in {v:?}"));
                    }
                    break;
                }
                c if quote.is_none() && c.is_whitespace() => break,
                '\\' => match chars.next() {
                    Some('\\') => w.push('\\'),
                    Some('"') => w.push('"'),
                    Some('\'') => w.push('\''),
                    Some('n') => w.push('\n'),
                    Some('t') => w.push('\t'),
                    Some('s') => w.push(' '),
                    other => return Err(format!("escape \\{other:?} in {v:?} is not emulated")),
                },
                '%' => match chars.next() {
                    Some('%') => w.push('%'),
                    other => {
                        return Err(format!("specifier %{other:?} in {v:?} is not emulated"));
                    }
                },
                '$' => match chars.next() {
                    Some('$') => w.push('$'),
                    other => {
                        return Err(format!("variable ${other:?} in {v:?} is not emulated"));
                    }
                },
                c => w.push(c),
            }
        }
        words.push(w);
    }
    if words.is_empty() {
        return Err(format!("empty command line {v:?}"));
    }
    if !words[0].starts_with('/') {
        return Err(format!("executable path {:?} is not absolute", words[0]));
    }
    Ok((ignore, words))
}

/// `systemctl …`.
pub fn systemctl(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    let mut now = false;
    let mut quiet = false;
    let mut reload = true;
    let mut props: Vec<String> = Vec::new();
    let mut words: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--now" => now = true,
            "--no-reload" => reload = false,
            "-q" | "--quiet" => quiet = true,
            "--no-pager" | "--no-block" | "--no-ask-password" => {}
            "-p" | "--property" => match it.next() {
                Some(p) => props.extend(p.split(',').map(str::to_owned)),
                None => {
                    out.err("systemctl: option '--property' requires an argument\n");
                    return 1;
                }
            },
            s if s.starts_with("--property=") => {
                props.extend(s["--property=".len()..].split(',').map(str::to_owned));
            }
            s if s.starts_with('-') => {
                out.err(format!("systemctl: unrecognized option '{s}'\n"));
                return 1;
            }
            _ => words.push(a.as_str()),
        }
    }
    let Some((verb, units)) = words.split_first() else {
        out.err("phoenix-emu: `systemctl` without a verb (list-units) is not emulated\n");
        return 1;
    };
    let units: Vec<String> = units.iter().map(|u| full_name(u)).collect();
    let needs_unit = !matches!(*verb, "daemon-reload");
    if needs_unit && units.is_empty() {
        out.err(format!(
            "Too few arguments.\n(systemctl {verb} needs a unit)\n"
        ));
        return 1;
    }
    match *verb {
        "daemon-reload" => daemon_reload(ct, out),
        "enable" | "disable" => {
            for u in &units {
                let c = enable(ct, u, *verb == "enable", out);
                if c != 0 {
                    return c;
                }
            }
            // Through the bus, `enable`/`disable` reload the manager after the symlinks,
            // whether or not they changed, unless `--no-reload` ("Try to reload if
            // enabled", systemd `src/systemctl/systemctl-enable.c` `verb_enable`, v252 and
            // later): a unit file written just before is loaded before `--now` starts it.
            if reload {
                let c = daemon_reload(ct, out);
                if c != 0 {
                    return c;
                }
            }
            let mut code = 0;
            for u in &units {
                if now {
                    code = if *verb == "enable" {
                        start(ct, u, out)
                    } else {
                        stop(ct, u, out)
                    };
                    if code != 0 {
                        return code;
                    }
                }
            }
            code
        }
        "start" | "stop" | "restart" => {
            for u in &units {
                let c = match *verb {
                    "start" => start(ct, u, out),
                    "stop" => stop(ct, u, out),
                    _ => match stop(ct, u, out) {
                        0 => start(ct, u, out),
                        c => c,
                    },
                };
                if c != 0 {
                    return c;
                }
            }
            0
        }
        "is-active" => {
            let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
            let mut all = true;
            for u in &units {
                let restart = restart_policy(ct, &st, u);
                let (active, _) = unit_state(&st, u, restart);
                all &= active == "active";
                if !quiet {
                    out.out(format!("{active}\n"));
                }
            }
            if all { 0 } else { 3 }
        }
        "is-enabled" => {
            let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
            let mut all = true;
            for u in &units {
                if unit_file(ct, u).is_none() {
                    out.err(format!(
                        "Failed to get unit file state for {u}: No such file or directory\n"
                    ));
                    return 1;
                }
                let on = st.systemd.units.get(u).is_some_and(|x| x.enabled);
                all &= on;
                if !quiet {
                    out.out(if on { "enabled\n" } else { "disabled\n" });
                }
            }
            if all { 0 } else { 1 }
        }
        "show" => show(ct, &units, &props, out),
        other => {
            out.err(format!("Unknown command verb '{other}'.\n"));
            1
        }
    }
}

/// `Restart=` of the unit systemd loaded (or would load).
fn restart_policy(ct: &Ct<'_>, st: &CtState, name: &str) -> bool {
    let text = st
        .systemd
        .units
        .get(name)
        .and_then(|u| u.loaded.clone())
        .or_else(|| unit_file(ct, name).map(|(_, t)| t));
    text.and_then(|t| parse_unit(&t).ok())
        .is_some_and(|s| s.restart_on_failure)
}

fn show(ct: &Ct<'_>, units: &[String], props: &[String], out: &mut Out) -> i32 {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    for (i, u) in units.iter().enumerate() {
        if i > 0 {
            out.out("\n");
        }
        let file = unit_file(ct, u);
        let restart = restart_policy(ct, &st, u);
        let (active, sub) = unit_state(&st, u, restart);
        let unit = st.systemd.units.get(u);
        let file_state = match (&file, unit) {
            (None, _) => "",
            (Some(_), Some(x)) if x.enabled => "enabled",
            (Some(_), _) => "disabled",
        };
        let all = [
            ("Id", u.clone()),
            (
                "LoadState",
                if file.is_some() {
                    "loaded"
                } else {
                    "not-found"
                }
                .to_owned(),
            ),
            ("ActiveState", active.to_owned()),
            ("SubState", sub.to_owned()),
            ("FragmentPath", file.map(|f| f.0).unwrap_or_default()),
            ("UnitFileState", file_state.to_owned()),
        ];
        for (k, v) in all {
            if props.is_empty() || props.iter().any(|p| p == k) {
                out.out(format!("{k}={v}\n"));
            }
        }
    }
    0
}

fn daemon_reload(ct: &Ct<'_>, out: &mut Out) -> i32 {
    let res = container::update_state(ct.root, ct.vmid, |st| {
        for (name, u) in st.systemd.units.iter_mut() {
            u.loaded = unit_file(ct, name).map(|(_, t)| t);
        }
    });
    match res {
        Ok(()) => 0,
        Err(e) => {
            out.err(format!("Failed to reload daemon: {e}\n"));
            1
        }
    }
}

fn enable(ct: &Ct<'_>, name: &str, on: bool, out: &mut Out) -> i32 {
    let Some((path, _)) = unit_file(ct, name) else {
        out.err(format!(
            "Failed to {} unit: Unit file {name} does not exist.\n",
            if on { "enable" } else { "disable" }
        ));
        return 1;
    };
    let wants = format!("/etc/systemd/system/multi-user.target.wants/{name}");
    let res = container::update_state(ct.root, ct.vmid, |st| {
        let u = st.systemd.units.entry(name.to_owned()).or_default();
        let changed = u.enabled != on;
        u.enabled = on;
        changed
    });
    match res {
        Ok(true) if on => out.err(format!("Created symlink {wants} → {path}.\n")),
        Ok(true) => out.err(format!("Removed \"{wants}\".\n")),
        Ok(false) => {}
        Err(e) => {
            out.err(format!("Failed to {name}: {e}\n"));
            return 1;
        }
    }
    0
}

/// Run one `Exec…=` argv; the exit code and the Docker container it started, if any.
fn exec_line(ct: &Ct<'_>, argv: &[String], out: &mut Out) -> (i32, Option<String>) {
    let prog = std::path::Path::new(&argv[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let exists = container::resolve(ct.root, ct.vmid, ct.conf, &argv[0]).is_file();
    if !exists {
        out.err(format!(
            "{}: Failed to locate executable {}: No such file or directory\n",
            argv[0], argv[0]
        ));
        return (203, None);
    }
    if prog == "docker" {
        return crate::docker::run_for_service(ct, &argv[1..], out);
    }
    let mut sub = Out::default();
    let code = crate::inner::run(ct.root, ct.vmid, ct.conf, argv, &[], &mut sub);
    (code, None)
}

fn job_failed(name: &str, out: &mut Out) -> i32 {
    out.err(format!(
        "Job for {name} failed because the control process exited with error code.\nSee \"systemctl status {name}\" and \"journalctl -xeu {name}\" for details.\n"
    ));
    1
}

fn start(ct: &Ct<'_>, name: &str, out: &mut Out) -> i32 {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    let Some((_, file_text)) = unit_file(ct, name) else {
        out.err(format!("Failed to start {name}: Unit {name} not found.\n"));
        return 5;
    };
    let restart = restart_policy(ct, &st, name);
    if unit_state(&st, name, restart).0 == "active" {
        return 0;
    }
    if name == DOCKER_SERVICE {
        let ok = nesting(ct);
        let res = container::update_state(ct.root, ct.vmid, |st| {
            let u = st.systemd.units.entry(name.to_owned()).or_default();
            u.active = ok;
            u.failed = !ok;
            if ok {
                st.docker.nvidia_runtime = st.nvidia_ctk.runtime_configured;
            }
        });
        if let Err(e) = res {
            out.err(format!("Failed to start {name}: {e}\n"));
            return 1;
        }
        return if ok { 0 } else { job_failed(name, out) };
    }
    let text = st
        .systemd
        .units
        .get(name)
        .and_then(|u| u.loaded.clone())
        .unwrap_or(file_text);
    let service = match parse_unit(&text) {
        Ok(s) => s,
        Err(m) => {
            out.err(format!(
                "Failed to start {name}: Unit {name} has a bad unit file setting.\n({m})\n"
            ));
            return 1;
        }
    };
    let Some((_, start_argv)) = service.start.first() else {
        out.err(format!(
            "Failed to start {name}: Unit {name} has a bad unit file setting.\n(no ExecStart=)\n"
        ));
        return 1;
    };
    // Dependencies with a unit file (targets such as network-online.target have none here).
    for (dep, required) in service
        .requires
        .iter()
        .map(|d| (d, true))
        .chain(service.wants.iter().map(|d| (d, false)))
    {
        if dep == name || unit_file(ct, dep).is_none() {
            continue;
        }
        if start(ct, dep, &mut Out::default()) != 0 && required {
            out.err(format!(
                "A dependency job for {name} failed. See 'journalctl -xe' for details.\n"
            ));
            return 1;
        }
    }
    let mut failed = false;
    for (ignore, argv) in &service.pre {
        let (code, _) = exec_line(ct, argv, &mut Out::default());
        if code != 0 && !ignore {
            failed = true;
            break;
        }
    }
    let (main, main_exit) = if failed {
        (None, None)
    } else {
        let mut sub = Out::default();
        let (code, main) = exec_line(ct, start_argv, &mut sub);
        let exit = if main.is_some() && code == 0 {
            None
        } else {
            Some(code)
        };
        (main, exit)
    };
    let res = container::update_state(ct.root, ct.vmid, |st| {
        let u = st.systemd.units.entry(name.to_owned()).or_default();
        u.loaded = Some(text.clone());
        u.active = !failed;
        u.failed = failed;
        u.main = main;
        u.main_exit = main_exit;
    });
    if let Err(e) = res {
        out.err(format!("Failed to start {name}: {e}\n"));
        return 1;
    }
    if failed { job_failed(name, out) } else { 0 }
}

fn stop(ct: &Ct<'_>, name: &str, out: &mut Out) -> i32 {
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    if unit_file(ct, name).is_none() && !st.systemd.units.contains_key(name) {
        out.err(format!("Failed to stop {name}: Unit {name} not loaded.\n"));
        return 5;
    }
    let Some(unit) = st.systemd.units.get(name).cloned() else {
        return 0;
    };
    if name == DOCKER_SERVICE {
        crate::docker::daemon_stopping(ct);
    } else if unit.active {
        if let Some(text) = &unit.loaded {
            if let Ok(service) = parse_unit(text) {
                for (_, argv) in &service.stop {
                    exec_line(ct, argv, &mut Out::default());
                }
            }
        }
        if let Some(c) = &unit.main {
            crate::docker::stop_if_running(ct, c);
        }
    }
    let res = container::update_state(ct.root, ct.vmid, |st| {
        if let Some(u) = st.systemd.units.get_mut(name) {
            u.active = false;
            u.failed = false;
            u.main_exit = None;
        }
    });
    if let Err(e) = res {
        out.err(format!("Failed to stop {name}: {e}\n"));
        return 1;
    }
    0
}

/// The container booted (`pct start`): containers that ran before are exited (removed with
/// `--rm`), every unit is inactive and reads its file anew, then `docker.service` and the
/// other enabled units start, as systemd does at boot.
pub fn boot(root: &crate::root::Root, vmid: u32) {
    let Ok(Some(conf)) = container::load_conf(root, vmid) else {
        return;
    };
    let ct = Ct {
        root,
        vmid,
        conf: &conf,
    };
    let enabled = container::update_state(root, vmid, |st| {
        let mut gone = Vec::new();
        for c in &mut st.docker.containers {
            let was_running = c.status == "running";
            if !c.removed && crate::docker::restarts_at_daemon_start(c, was_running) {
                c.restart_at_boot = true;
            }
            if c.status == "running" || c.status == "created" {
                c.status = "exited".into();
                c.exit_code = 137;
                if c.auto_remove && !c.removed {
                    c.removed = true;
                    gone.push(c.name.clone());
                }
            }
        }
        for n in gone {
            st.docker.last_exit.insert(n, 137);
        }
        let mut names = Vec::new();
        for (n, u) in &mut st.systemd.units {
            *u = Unit {
                enabled: u.enabled,
                ..Unit::default()
            };
            if u.enabled {
                names.push(n.clone());
            }
        }
        names.sort_by_key(|n| n != DOCKER_SERVICE);
        names
    });
    for name in enabled.unwrap_or_default() {
        start(&ct, &name, &mut Out::default());
    }
    // Docker restarts its `--restart` containers when the daemon starts.
    crate::docker::restart_policy_at_boot(&ct);
}

/// `journalctl -u UNIT [-n N] [--no-pager] [-o cat]`: the main container's log.
pub fn journalctl(ct: &Ct<'_>, args: &[String], _stdin: &[u8], out: &mut Out) -> i32 {
    let mut unit = None;
    let mut lines: Option<usize> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-u" | "--unit" => unit = it.next().map(|u| full_name(u)),
            "-n" | "--lines" => lines = it.next().and_then(|n| n.parse().ok()),
            "--no-pager" | "-q" | "--quiet" | "-x" | "-e" => {}
            "-o" | "--output" => {
                if it.next().map(String::as_str) != Some("cat") {
                    out.err("phoenix-emu: only `-o cat` is emulated\n");
                    return 1;
                }
            }
            s => {
                out.err(format!("journalctl: unrecognized option '{s}'\n"));
                return 1;
            }
        }
    }
    let Some(unit) = unit else {
        out.err("phoenix-emu: only `journalctl -u UNIT` is emulated\n");
        return 1;
    };
    let st = container::load_state(ct.root, ct.vmid).unwrap_or_default();
    let text = st
        .systemd
        .units
        .get(&unit)
        .and_then(|u| u.main.as_deref())
        .and_then(|c| crate::docker::log_text(ct, &st, c))
        .unwrap_or_default();
    if text.is_empty() {
        out.out("-- No entries --\n");
        return 0;
    }
    out.out(crate::docker::tail(&text, lines));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_lines_unquote_as_systemd_does() {
        let (ignore, argv) = split_exec(
            r#"-/usr/bin/docker "rm" "-f" "a b" "\"device=0,1\"" "100%%" "$$HOME" "x\\y""#,
        )
        .unwrap();
        assert!(ignore);
        assert_eq!(
            argv,
            [
                "/usr/bin/docker",
                "rm",
                "-f",
                "a b",
                "\"device=0,1\"",
                "100%",
                "$HOME",
                "x\\y"
            ]
        );
        let (ignore, argv) = split_exec("/usr/bin/docker stop phoenix-vllm-901").unwrap();
        assert!(!ignore);
        assert_eq!(argv, ["/usr/bin/docker", "stop", "phoenix-vllm-901"]);
        assert!(
            split_exec("/usr/bin/x %h")
                .unwrap_err()
                .contains("specifier")
        );
        assert!(
            split_exec("/usr/bin/x $PATH")
                .unwrap_err()
                .contains("variable")
        );
        assert!(
            split_exec("/usr/bin/x \"open")
                .unwrap_err()
                .contains("unbalanced")
        );
        assert!(
            split_exec("docker run")
                .unwrap_err()
                .contains("not absolute")
        );
    }

    #[test]
    fn only_the_service_section_counts() {
        let s = parse_unit(
            "[Unit]\nExecStart=/bin/nope\n[Service]\nExecStartPre=-/usr/bin/docker rm -f x\nExecStart=/usr/bin/docker run \\\n  --rm img\nExecStop=/usr/bin/docker stop x\nRestart=on-failure\n",
        )
        .unwrap();
        assert_eq!(
            s.pre,
            [(
                true,
                vec![
                    "/usr/bin/docker".to_owned(),
                    "rm".into(),
                    "-f".into(),
                    "x".into()
                ]
            )]
        );
        assert_eq!(s.start[0].1, ["/usr/bin/docker", "run", "--rm", "img"]);
        assert_eq!(s.stop[0].1, ["/usr/bin/docker", "stop", "x"]);
        assert!(s.restart_on_failure);
        let s = parse_unit("[Unit]\nRequires=docker.service\nWants=network-online.target a.service\n[Service]\nExecStart=/bin/x\n").unwrap();
        assert_eq!(s.requires, ["docker.service"]);
        assert_eq!(s.wants, ["network-online.target", "a.service"]);
    }
}

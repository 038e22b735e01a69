//! `phoenix-emu`: the emulated Proxmox VE host (DESIGN.md §7).
//!
//! A multi-call executable. It is installed as symlinks `$ROOT/bin/{pct,pvesm,pveversion,zfs,
//! nvidia-smi,systemctl,nvidia-modprobe}` and picks both the tool it plays and the emulated host's root from `argv[0]`
//! (phoenix runs it by absolute path with a minimal environment, so nothing is read from
//! inherited variables). `phoenix-emu <tool> <args…>` with an absolute `argv[0]` inside
//! `$ROOT/bin/` works the same way.
//!
//! Every call:
//! 1. reads the root's settings (`emu.json`, written by phoenix's `host::emulated::prepare`)
//!    and boots the emulated host if it is not up ([`hostsys`]: its `/dev`, `/sys`, units);
//!    Under a latency profile ([`latency`]) the call first sleeps as long as the real
//!    tool would take;
//! 2. looks up `faults.json` for an injected fault matching `tool + argv` (for `pct exec` the
//!    inner program's argv), counting `times` down under the root lock;
//! 3. runs the tool against the state under the root, answering in the real tool's format;
//! 4. appends one JSON line to `argv.log` (under an exclusive `flock`), with the times its
//!    work began and ended, so a test can tell whether two calls overlapped.
//!
//! Inside an emulated container (`pct exec <vmid> -- prog …`) the programs of
//! [`inner`]'s table answer: the base system's, `apt-get`, `systemctl`, and, once installed,
//! `docker`, `nvidia-ctk`, `nvidia-smi`. `docker run vllm/vllm-openai…` starts this same
//! executable as `phoenix-emu __vllm-serve ROOT VMID NAME` ([`vllm_proc`]), a detached
//! process serving the emulated vLLM API ([`vllm`]) on the container's loopback address,
//! its arguments read as the pinned image's entrypoint reads them ([`vllm_args`]). Disks
//! have sizes ([`disk`]): rootfs, datasets, the image and the weights, as sparse accounting.
//!
//! This binary is deliberately not part of the phoenix library: it shares no code with it,
//! so the production `pve` backend is tested against an independent implementation.
//!
//! Decisions where DESIGN.md is silent are written in each module's docs.

mod apt;
mod argvlog;
mod container;
mod ctconf;
mod disk;
mod docker;
mod faults;
mod fetch;
mod hostfs;
mod hostsys;
mod inner;
mod kernel;
mod latency;
mod nvctk;
mod nvidia;
mod opts;
mod out;
mod pct;
mod propstr;
mod pvesm;
mod pveversion;
mod root;
mod systemd;
mod vllm;
mod vllm_args;
mod vllm_proc;
mod webapp;
mod zfs;

/// The test suite's one wait helper (tests/integration/wait.rs), shared by these unit tests
/// (test code only: the emulator shares no product code with phoenix).
#[cfg(test)]
#[path = "../../../tests/integration/wait.rs"]
mod test_wait;

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use out::Out;
use root::Root;

/// The tools this binary answers as (the names of the symlinks in `$ROOT/bin`).
pub(crate) const TOOLS: &[&str] = &[
    "pct",
    "pvesm",
    "pveversion",
    "zfs",
    "nvidia-smi",
    "systemctl",
    "nvidia-modprobe",
    "stat",
    "chown",
];

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let code = run(argv);
    ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1))
}

/// Work out tool and root from `argv`, run the tool, log the call; returns the exit code.
fn run(argv: Vec<OsString>) -> i32 {
    let argv: Vec<String> = argv
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(argv0) = argv.first().cloned() else {
        eprintln!("phoenix-emu: empty argv");
        return 2;
    };
    // The detached emulated vLLM server that `docker run` starts (not a received command:
    // not logged).
    if argv.get(1).map(String::as_str) == Some(vllm_proc::SERVE_ARG) {
        return vllm_proc::main(&argv[2..]);
    }
    let (tool, args) = match split_tool(&argv0, &argv[1..]) {
        Some(v) => v,
        None => {
            eprintln!(
                "phoenix-emu: run me as one of {TOOLS:?} (a symlink in $ROOT/bin), by absolute path"
            );
            return 2;
        }
    };
    let Some(root_dir) = root_from_argv0(&argv0) else {
        eprintln!(
            "phoenix-emu: cannot find the emulated root from argv[0] {argv0:?}: call me by absolute path $ROOT/bin/{tool}"
        );
        return 2;
    };
    let root = match Root::open(&root_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phoenix-emu: {e}");
            return 70;
        }
    };
    // A fresh root's host boots on its first call (its /dev and /sys are the emulator's).
    if let Err(e) = hostsys::ensure_booted(&root) {
        eprintln!("phoenix-emu: boot: {e}");
        return 70;
    }
    if let Err(e) = pvesm::seed(&root) {
        eprintln!("phoenix-emu: {e}");
        return 70;
    }

    // The latency profile: the real tool's start-up cost, before it does anything.
    match latency::for_call(&root.settings.latency, &tool, &args) {
        Ok(Some(d)) => std::thread::sleep(d),
        Ok(None) => {}
        Err(e) => {
            eprintln!("phoenix-emu: {e}");
            return 70;
        }
    }

    // Only `pct exec` forwards stdin (lxc-attach does); other tools never read it, so a
    // caller that leaves stdin open cannot block them.
    let stdin = if tool == "pct" && args.first().map(String::as_str) == Some("exec") {
        read_stdin()
    } else {
        Vec::new()
    };

    let mut out = Out::default();
    let code = dispatch(&root, &tool, &args, &stdin, &mut out);
    out.flush();
    let env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let logged = argvlog::Entry {
        tool: &tool,
        argv: &args,
        env: &env,
        stdin_bytes: stdin.len(),
        exit: code.exit,
        fault: code.fault.as_deref(),
        work_us: code.work,
    };
    if let Err(e) = argvlog::append(&root, &logged) {
        let _ = writeln!(std::io::stderr(), "phoenix-emu: {e}");
    }
    if code.hang_after {
        faults::hang(&root);
    }
    code.exit.unwrap_or(0)
}

/// How a call ended.
struct Ending {
    /// Exit code (`None`: the call hangs and is killed by the caller).
    exit: Option<i32>,
    /// The fault action applied, if any.
    fault: Option<String>,
    /// Hang after logging (`hang`, `succeed-then-hang`).
    hang_after: bool,
    /// When the tool's work began and ended ([`argvlog::now_us`]); `None` when a fault
    /// stood in for it.
    work: Option<(u64, u64)>,
}

/// Apply faults, then run the tool.
fn dispatch(root: &Root, tool: &str, args: &[String], stdin: &[u8], out: &mut Out) -> Ending {
    let key = faults::match_key(tool, args);
    let full: Vec<String> = std::iter::once(tool.to_owned())
        .chain(args.iter().cloned())
        .collect();
    let fault = match faults::take(root, &key, &full) {
        Ok(f) => f,
        Err(e) => {
            out.err(format!("phoenix-emu: {e}\n"));
            return Ending {
                exit: Some(70),
                fault: None,
                hang_after: false,
                work: None,
            };
        }
    };
    let label = fault.as_ref().map(|f| f.label());
    match fault {
        Some(faults::Action::Fail) => {
            out.err(format!(
                "phoenix-emu: injected failure for {}\n",
                key.join(" ")
            ));
            let code = if matches!(tool, "pct" | "pvesm" | "pveversion") {
                255
            } else {
                1
            };
            return Ending {
                exit: Some(code),
                fault: label,
                hang_after: false,
                work: None,
            };
        }
        Some(faults::Action::Exit(n)) => {
            return Ending {
                exit: Some(n),
                fault: label,
                hang_after: false,
                work: None,
            };
        }
        Some(faults::Action::Hang) => {
            return Ending {
                exit: None,
                fault: label,
                hang_after: true,
                work: None,
            };
        }
        Some(faults::Action::Delay(d)) => std::thread::sleep(d),
        // Only `pct create` has a midway point; for any other call it is `hang`.
        Some(faults::Action::HangMidway)
            if tool == "pct" && args.first().map(String::as_str) == Some("create") =>
        {
            out.midway = true;
        }
        Some(faults::Action::HangMidway) => {
            return Ending {
                exit: None,
                fault: label,
                hang_after: true,
                work: None,
            };
        }
        Some(faults::Action::SucceedThenHang) | None => {}
    }
    let began = argvlog::now_us();
    let exit = run_tool(root, tool, args, stdin, out);
    let work = Some((began, argvlog::now_us()));
    if out.hang_now {
        // Stopped halfway (the tool wrote what it had done so far): the call hangs there
        // and the caller kills it, as a real tool killed mid-work.
        out.flush();
        return Ending {
            exit: None,
            fault: label,
            hang_after: true,
            work: None,
        };
    }
    let hang_after = matches!(fault, Some(faults::Action::SucceedThenHang));
    if hang_after {
        // The caller must see the work's output before the hang, as with a real process
        // that printed and then stalled.
        out.flush();
    }
    Ending {
        exit: if hang_after { None } else { Some(exit) },
        fault: label,
        hang_after,
        work,
    }
}

/// Run one tool for real (also the host's systemd running a unit's commands).
pub(crate) fn run_tool(
    root: &Root,
    tool: &str,
    args: &[String],
    stdin: &[u8],
    out: &mut Out,
) -> i32 {
    match tool {
        "pct" => pct::run(root, args, stdin, out),
        "pvesm" => pvesm::run(root, args, out),
        "pveversion" => pveversion::run(root, args, out),
        "zfs" => zfs::run(root, args, out),
        "nvidia-smi" => nvidia::run(root, args, out),
        "systemctl" => hostsys::systemctl(root, args, out),
        "nvidia-modprobe" => hostsys::nvidia_modprobe(root, args, out),
        "stat" => hostfs::stat(root, args, out),
        "chown" => hostfs::chown(root, args, out),
        _ => {
            out.err(format!("phoenix-emu: unknown tool {tool}\n"));
            2
        }
    }
}

/// The tool named by `argv[0]`'s file name, or by the first argument when called as
/// `phoenix-emu`.
fn split_tool(argv0: &str, rest: &[String]) -> Option<(String, Vec<String>)> {
    let name = Path::new(argv0).file_name()?.to_string_lossy().into_owned();
    if TOOLS.contains(&name.as_str()) {
        return Some((name, rest.to_vec()));
    }
    let (first, tail) = rest.split_first()?;
    TOOLS
        .contains(&first.as_str())
        .then(|| (first.clone(), tail.to_vec()))
}

/// `$ROOT` from an absolute `argv[0]` of the form `$ROOT/bin/<name>`. The symlink itself is
/// not resolved: its target is the shared binary, its location is the root.
fn root_from_argv0(argv0: &str) -> Option<PathBuf> {
    let p = Path::new(argv0);
    if !p.is_absolute() {
        return None;
    }
    let bin = p.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let root = bin.parent()?;
    root.join("emu.json").is_file().then(|| root.to_path_buf())
}

/// All of stdin, unless it is a terminal.
fn read_stdin() -> Vec<u8> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Vec::new();
    }
    let mut buf = Vec::new();
    let _ = stdin.read_to_end(&mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_comes_from_argv0_or_first_argument() {
        let (t, a) = split_tool("/r/bin/pct", &["status".into(), "901".into()]).unwrap();
        assert_eq!(t, "pct");
        assert_eq!(a, ["status", "901"]);
        let (t, a) = split_tool("/x/phoenix-emu", &["zfs".into(), "list".into()]).unwrap();
        assert_eq!(t, "zfs");
        assert_eq!(a, ["list"]);
        assert!(split_tool("/x/phoenix-emu", &["bash".into()]).is_none());
    }

    #[test]
    fn root_needs_an_absolute_bin_path_with_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let argv0 = dir.path().join("bin/pct");
        assert_eq!(root_from_argv0(argv0.to_str().unwrap()), None);
        std::fs::write(dir.path().join("emu.json"), "{}").unwrap();
        assert_eq!(
            root_from_argv0(argv0.to_str().unwrap()),
            Some(dir.path().to_path_buf())
        );
        assert_eq!(root_from_argv0("bin/pct"), None);
        assert_eq!(root_from_argv0("/usr/sbin/pct"), None);
    }
}

//! What an argv run inside a container may be: the shell rule, the interpreter warning and
//! the built-in read-only probes that `--dry-run` runs for real.
//!
//! - **Shell rule** (DESIGN.md §1): a shell as argv\[0\], or behind a wrapper such as `env`,
//!   `sudo` or `busybox`, is refused at run time ([`check_exec`]) and by lint (the same
//!   [`shell_in_argv`]). The rule exists against injection — no string is ever parsed by a
//!   shell — not as a sandbox: inside its containers a recipe is root anyway.
//! - **Interpreters given code in a string** (`python3 -c`, `perl -e`, `awk '… system …'`)
//!   are legal, but lint warns ([`code_in_string`]): such a string is a program that nobody
//!   reviews as one.
//! - **Probes** ([`is_probe`]): the fixed set of read-only commands that the primitives and
//!   the stdlib use as checks (`test -x PATH`, `stat -L --format="%a %n" -- PATH…`,
//!   `cat FILE`, `systemctl is-active UNIT`,
//!   `docker version|info --format …`, `nvidia-smi --query-gpu=… --format=csv…`). In a dry
//!   run only these run for real; anything else a recipe marks `read_only` is recorded like
//!   any other command (a recipe's own flag never makes a command run in `--dry-run`).

use super::{Refusal, Rule};

/// Programs that are shells (or run one) when they are argv\[0\].
pub const SHELLS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "pdksh", "ash", "fish", "csh", "tcsh", "rbash",
    "yash",
];

/// Programs that run another program named in their arguments (`env bash`, `sudo sh`,
/// `busybox sh`): a shell anywhere after one of them counts, since their option
/// arguments cannot be told apart from the program without knowing each one's options.
pub const WRAPPERS: &[&str] = &[
    "busybox", "toybox", "env", "nice", "nohup", "timeout", "sudo", "doas", "setsid", "stdbuf",
    "chroot", "ionice", "chrt", "taskset", "xargs", "su", "runuser", "script", "unshare",
    "nsenter", "flock",
];

/// Interpreters and the option that makes them run the next argument as a program.
const CODE_OPTIONS: &[(&str, &[&str])] = &[
    ("python", &["-c"]),
    ("python2", &["-c"]),
    ("python3", &["-c"]),
    ("perl", &["-e", "-E"]),
    ("ruby", &["-e"]),
    ("node", &["-e", "--eval", "-p", "--print"]),
    ("nodejs", &["-e", "--eval", "-p", "--print"]),
    ("php", &["-r"]),
    ("lua", &["-e"]),
];

fn base(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// The shell an argv would run, if it starts with one: `sh`, `/bin/bash`, `busybox sh`,
/// `env bash`, `/usr/bin/env -i sh` ….
pub fn shell_in_argv(argv: &[&str]) -> Option<String> {
    let first = base(argv.first()?);
    if SHELLS.contains(&first) {
        return Some(argv[0].to_owned());
    }
    if WRAPPERS.contains(&first) {
        let next = argv[1..].iter().find(|a| SHELLS.contains(&base(a)))?;
        return Some(format!("{} {next}", argv[0]));
    }
    None
}

/// The interpreter and option when `argv` hands an interpreter code in a string
/// (`python3 -c CODE`, `perl -e CODE`, `awk 'BEGIN{system(…)}'`), directly or behind a
/// wrapper. For lint's warning; not a refusal.
pub fn code_in_string(argv: &[&str]) -> Option<String> {
    let mut rest = argv;
    while let Some(first) = rest.first() {
        let name = base(first);
        if WRAPPERS.contains(&name) {
            rest = &rest[1..];
            continue;
        }
        // `python3.12` counts as `python3`.
        let short = name.split('.').next().unwrap_or(name);
        if let Some((interp, opts)) = CODE_OPTIONS.iter().find(|(n, _)| *n == short) {
            return rest[1..]
                .iter()
                .find(|a| opts.contains(a))
                .map(|opt| format!("{interp} {opt}"));
        }
        if matches!(name, "awk" | "gawk" | "mawk" | "nawk") {
            return rest[1..]
                .iter()
                .any(|a| a.contains("system") || a.contains('|') || a.contains("getline"))
                .then(|| format!("{name} with system()/pipes in its program"));
        }
        return None;
    }
    None
}

/// Refuse an argv that cannot be run inside a container: empty, a shell (directly or
/// behind a wrapper), or an element with NUL.
pub fn check_exec(call: &'static str, argv: &[String]) -> Result<(), Refusal> {
    if argv.is_empty() {
        return Err(Refusal::new(call, Rule::Shell, "argv is empty"));
    }
    let words: Vec<&str> = argv.iter().map(String::as_str).collect();
    if let Some(shell) = shell_in_argv(&words) {
        return Err(Refusal::new(
            call,
            Rule::Shell,
            format!(
                "refusing to run the shell {shell:?}: phoenix passes argv only (no string is ever parsed by a shell); call the program directly"
            ),
        ));
    }
    if let Some(bad) = argv.iter().find(|a| a.contains('\0')) {
        return Err(Refusal::new(
            call,
            Rule::Shell,
            format!("argument {} contains NUL", crate::types::show(bad)),
        ));
    }
    Ok(())
}

/// Whether `argv` is one of the built-in read-only probes that a dry run runs for real.
pub fn is_probe(argv: &[String]) -> bool {
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    let readable = |p: &str| {
        p.starts_with('/')
            && !p.split('/').any(|c| c == "..")
            // Device and kernel files can block or never end (`/dev/zero`): not a check.
            && !["/dev", "/proc", "/sys"]
                .iter()
                .any(|d| p == *d || p.starts_with(&format!("{d}/")))
    };
    let unit = |u: &str| {
        !u.is_empty()
            && !u.starts_with('-')
            && u.chars()
                .all(|c| c.is_ascii_alphanumeric() || "@._-:\\".contains(c))
    };
    let format = |f: &str| f.starts_with("{{") && f.ends_with("}}");
    match a.as_slice() {
        ["test", op, path] => {
            matches!(*op, "-e" | "-f" | "-d" | "-x" | "-s" | "-r") && readable(path)
        }
        ["cat", path] => readable(path),
        // Which of several files are there, and their modes, in one call.
        ["stat", "-L", "--format=%a %n", "--", paths @ ..] => {
            !paths.is_empty() && paths.iter().all(|p| readable(p))
        }
        ["systemctl", "is-active" | "is-enabled", "--quiet", u]
        | ["systemctl", "is-active" | "is-enabled", u] => unit(u),
        ["docker", "version" | "info", "--format", f] => format(f),
        ["nvidia-smi", query, fmt] => {
            query.strip_prefix("--query-gpu=").is_some_and(|q| {
                !q.is_empty()
                    && q.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._,".contains(c))
            }) && fmt
                .strip_prefix("--format=csv")
                .is_some_and(|r| matches!(r, "" | ",noheader" | ",noheader,nounits" | ",nounits"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn shells_are_found_directly_and_behind_wrappers() {
        for argv in [
            &["sh", "-e", "x"][..],
            &["/bin/bash"],
            &["busybox", "sh"],
            &["/usr/bin/env", "-i", "A=1", "zsh"],
            &["sudo", "-u", "root", "zsh"],
            &["timeout", "10s", "dash"],
            &["env", "docker", "sh"],
        ] {
            assert!(shell_in_argv(argv).is_some(), "{argv:?}");
        }
        for argv in [
            &["apt-get", "install", "-y", "bash"][..],
            &["busybox", "ls"],
            &["shx"],
            &["nice", "-n", "5", "apt-get"],
            &[],
        ] {
            assert_eq!(shell_in_argv(argv), None, "{argv:?}");
        }
    }

    #[test]
    fn check_exec_names_the_call_and_the_rule() {
        let err = check_exec("lxc.exec", &v(&["/bin/sh", "-c", "id"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "lxc.exec: refused by the boundary (shell): refusing to run the shell \"/bin/sh\": phoenix passes argv only (no string is ever parsed by a shell); call the program directly"
        );
        assert_eq!(
            check_exec("undo.push", &[]).unwrap_err().to_string(),
            "undo.push: refused by the boundary (shell): argv is empty"
        );
        assert!(check_exec("lxc.exec", &v(&["echo", "a\0b"])).is_err());
        check_exec("lxc.exec", &v(&["apt-get", "install", "bash"])).unwrap();
    }

    #[test]
    fn interpreters_given_code_are_noticed() {
        for (argv, want) in [
            (&["python3", "-c", "import os"][..], "python3 -c"),
            (&["/usr/bin/python3.12", "-c", "x"], "python3 -c"),
            (&["perl", "-e", "system 'id'"], "perl -e"),
            (&["env", "node", "-e", "1"], "node -e"),
            (
                &["awk", "BEGIN{system(\"id\")}"],
                "awk with system()/pipes in its program",
            ),
        ] {
            assert_eq!(code_in_string(argv).as_deref(), Some(want), "{argv:?}");
        }
        for argv in [
            &["python3", "/opt/x.py"][..],
            &["awk", "{print $1}", "/etc/passwd"],
            &["perl", "/usr/bin/x"],
        ] {
            assert_eq!(code_in_string(argv), None, "{argv:?}");
        }
    }

    #[test]
    fn probes_are_a_fixed_read_only_set() {
        for argv in [
            &["test", "-x", "/usr/bin/docker"][..],
            &["test", "-d", "/"],
            &[
                "stat",
                "-L",
                "--format=%a %n",
                "--",
                "/usr/bin/docker",
                "/usr/bin/nvidia-smi",
            ],
            &["cat", "/etc/nvidia-container-runtime/config.toml"],
            &[
                "systemctl",
                "is-active",
                "--quiet",
                "phoenix-vllm-901.service",
            ],
            &["docker", "version", "--format", "{{.Server.Version}}"],
            &["docker", "info", "--format", "{{json .Runtimes}}"],
            &[
                "nvidia-smi",
                "--query-gpu=driver_version",
                "--format=csv,noheader",
            ],
        ] {
            assert!(is_probe(&v(argv)), "{argv:?}");
        }
        for argv in [
            &["rm", "-f", "/etc/x"][..],
            &["test", "-x", "/usr/bin/docker", "-o", "x"],
            &["cat", "/dev/zero"],
            &["stat", "-L", "--format=%a %n", "--"],
            &[
                "stat",
                "-L",
                "--format=%a %n",
                "--",
                "/usr/bin/docker",
                "/proc/1/environ",
            ],
            &["stat", "-L", "--format=%a %n", "--", "relative"],
            &["stat", "-L", "--format=%F %n", "--", "/usr/bin/docker"],
            &["cat", "/proc/self/environ"],
            &["cat", "/etc/../dev/zero"],
            &["cat", "relative"],
            &["systemctl", "restart", "docker"],
            &["docker", "run", "--format", "{{x}}"],
            &["docker", "info", "--format", "x"],
            &["nvidia-smi", "-r", "--format=csv"],
        ] {
            assert!(!is_probe(&v(argv)), "{argv:?}");
        }
    }
}

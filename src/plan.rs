//! The `--dry-run` plan, read as a plan (issue 15 item 4).
//!
//! A dry run records every mutating host command ([`crate::exec::RecordingRunner`]) and the
//! changes that are not commands ([`Notes`]: a host unit written, a secret generated, config
//! lines appended, the content of a file `lxc.push` would write). This module turns them into
//! what an operator reads before saying yes:
//! - one line per change, marked `+` (creates something), `~` (changes something that
//!   exists) or `-` (removes something), in the order the run would make them, with the
//!   tool's name (`pct set 901 …`), never the path of the executable phoenix would run (the
//!   emulated host's `…/emulated/bin/pct` included) nor the host-side temp file of a push;
//! - under each file push, a unified diff of the file's content (`similar`) against what the
//!   container holds now (nothing, when it or the file does not exist yet); a file pushed
//!   with a mode that hides it from group and others (`0600`: secrets, env files) is never
//!   shown, only its size, and every diff goes through the run's [`crate::exec::Redactor`];
//! - apart from the changes, the read-only checks: those that ran for real, and the built-in
//!   probes ([`crate::boundary::argv::is_probe`]) that wait for a container the run has not
//!   created yet;
//! - a summary with the counts: `Plan: 3 to create, 30 to change, 0 to remove.`
//!
//! Classification is by the command itself (`pct create` creates, `pct destroy` removes, a
//! command run inside a container changes it), so every path that records a command — a
//! recipe's primitives, `destroy --dry-run` — gets it without telling this module anything.

use std::sync::Mutex;

use serde::Serialize;

use crate::exec::{HostCommand, Redactor};

/// What a planned change does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Creates something new (`+`).
    Create,
    /// Changes something that exists (`~`).
    Change,
    /// Removes something (`-`).
    Remove,
}

impl Action {
    /// The plan's marker: `+`, `~` or `-`.
    pub fn mark(self) -> char {
        match self {
            Self::Create => '+',
            Self::Change => '~',
            Self::Remove => '-',
        }
    }
}

/// What a dry run noted besides the commands it recorded.
#[derive(Debug, Clone)]
enum Noted {
    /// A change that is not a host command.
    Change(Action, String),
    /// The content a push would write to `path` in `vmid`.
    File(FileNote),
}

/// The content of one planned file push.
#[derive(Debug, Clone)]
struct FileNote {
    vmid: String,
    path: String,
    /// The unified diff, or why none is shown.
    body: String,
    /// The file exists now (the push changes it rather than creating it).
    exists: bool,
}

/// The notes of one dry run, each with the number of commands recorded before it (so the
/// plan shows them in the order the run would make them).
#[derive(Debug, Default)]
pub struct Notes {
    entries: Mutex<Vec<(usize, Noted)>>,
}

impl Notes {
    fn push(&self, at: usize, noted: Noted) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((at, noted));
    }

    /// Note a change that is not a host command, made after `at` recorded commands.
    pub fn change(&self, at: usize, action: Action, text: String) {
        self.push(at, Noted::Change(action, text));
    }

    /// Note the content a push to `path` in container `vmid` would write over `old` (`None`:
    /// no such file yet), made after `at` recorded commands. A `mode` that hides the file
    /// from group and others means it may hold a secret: its content is not shown.
    pub fn file(
        &self,
        at: usize,
        vmid: &str,
        path: &str,
        old: Option<&[u8]>,
        new: &[u8],
        mode: u32,
    ) {
        let body = file_diff(path, old, new, mode);
        self.push(
            at,
            Noted::File(FileNote {
                vmid: vmid.to_owned(),
                path: path.to_owned(),
                body,
                exists: old.is_some(),
            }),
        );
    }

    /// The plain change notes, in order (for tests and the JSON plan).
    pub fn lines(&self) -> Vec<String> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(_, n)| match n {
                Noted::Change(a, t) => Some(format!("{} {t}", a.mark())),
                Noted::File(_) => None,
            })
            .collect()
    }
}

/// The diff text of a planned push (indented under the push line by the renderer).
fn file_diff(path: &str, old: Option<&[u8]>, new: &[u8], mode: u32) -> String {
    if mode & 0o077 == 0 {
        return format!(
            "(content not shown: a mode {mode:04o} file may hold a secret; {} bytes)\n",
            new.len()
        );
    }
    let (Ok(old_text), Ok(new_text)) = (
        std::str::from_utf8(old.unwrap_or_default()),
        std::str::from_utf8(new),
    ) else {
        return format!("(binary content: {} bytes)\n", new.len());
    };
    if old.is_some_and(|o| o == new) {
        return String::new();
    }
    let from = if old.is_some() {
        path.to_owned()
    } else {
        "/dev/null".to_owned()
    };
    let mut out = similar::TextDiff::from_lines(old_text, new_text)
        .unified_diff()
        .context_radius(3)
        .header(&from, path)
        .to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// One change of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// `create`, `change` or `remove`.
    pub action: Action,
    /// What: a tool's command line (`pct set 901 --memory 8192`) or a change in words.
    pub what: String,
    /// For a file push: the diff of its content (or why it is not shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// A dry run's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// Read-only checks that ran for real.
    pub checks_ran: Vec<String>,
    /// Read-only checks that wait for a change above (a container not created yet).
    pub checks_later: Vec<String>,
}

impl Plan {
    /// Build the plan from the commands `recorded`, the read-only commands that `ran` and
    /// the run's `notes`, every text through `redactor`.
    pub fn build(
        recorded: &[HostCommand],
        ran: &[HostCommand],
        notes: &Notes,
        redactor: &Redactor,
    ) -> Self {
        let entries = notes
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut plan = Self::default();
        let mut files: Vec<FileNote> = Vec::new();
        let mut next_note = 0;
        let mut take_notes = |upto: usize, plan: &mut Self, files: &mut Vec<FileNote>| {
            while next_note < entries.len() && entries[next_note].0 <= upto {
                match &entries[next_note].1 {
                    Noted::Change(action, text) => plan.changes.push(Change {
                        action: *action,
                        what: redactor.redact(text),
                        diff: None,
                    }),
                    Noted::File(f) => files.push(f.clone()),
                }
                next_note += 1;
            }
        };
        for (i, cmd) in recorded.iter().enumerate() {
            take_notes(i, &mut plan, &mut files);
            let words = tool_words(cmd);
            let line = redactor.redact(&shown(&words));
            if let Some(inner) = inner_argv(&words) {
                if crate::boundary::argv::is_probe(&inner) {
                    plan.checks_later.push(line);
                    continue;
                }
            }
            // What a command reads on stdin is shown by its size only (it may be a secret).
            let what = match cmd.stdin_len() {
                0 => line,
                n => format!("{line} <stdin: {n} bytes>"),
            };
            let mut change = Change {
                action: classify(&words),
                what,
                diff: None,
            };
            if let ["pct", "push", vmid, _, dest, ..] = words
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .as_slice()
            {
                if let Some(i) = files
                    .iter()
                    .position(|f| f.vmid == *vmid && f.path == *dest)
                {
                    let f = files.remove(i);
                    change.action = if f.exists {
                        Action::Change
                    } else {
                        Action::Create
                    };
                    change.diff = Some(redactor.redact(&f.body));
                }
            }
            plan.changes.push(change);
        }
        take_notes(usize::MAX, &mut plan, &mut files);
        plan.checks_ran = ran
            .iter()
            .map(|c| redactor.redact(&shown(&tool_words(c))))
            .collect();
        plan
    }

    /// How many changes of `action` the plan holds.
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// The summary line: `Plan: 1 to create, 2 to change, 0 to remove.`
    pub fn summary(&self) -> String {
        format!(
            "Plan: {} to create, {} to change, {} to remove.",
            self.count(Action::Create),
            self.count(Action::Change),
            self.count(Action::Remove)
        )
    }

    /// One line per change (`+ pct create 901 …`), without the diffs.
    pub fn change_lines(&self) -> Vec<String> {
        self.changes
            .iter()
            .map(|c| format!("{} {}", c.action.mark(), c.what))
            .collect()
    }

    /// The plan as text: changes with their diffs, the read-only checks apart, the summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.changes.is_empty() {
            out.push_str("No changes: the host already matches.\n");
        } else {
            out.push_str("Changes, in order:\n");
            for c in &self.changes {
                out.push_str(&format!("  {} {}\n", c.action.mark(), c.what));
                if let Some(diff) = &c.diff {
                    for l in diff.lines() {
                        out.push_str(&format!("      {l}\n"));
                    }
                }
            }
        }
        if !self.checks_ran.is_empty() || !self.checks_later.is_empty() {
            out.push_str("\nRead-only checks (change nothing):\n");
            for c in &self.checks_ran {
                out.push_str(&format!("  ran    {c}\n"));
            }
            for c in &self.checks_later {
                out.push_str(&format!("  later  {c}\n"));
            }
            if !self.checks_later.is_empty() {
                out.push_str("  (`later`: runs once the changes above have made its container)\n");
            }
        }
        out.push('\n');
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

/// What a plan shows for the host-side file a push reads (its content is shown as a diff).
const CONTENT: &str = "<content>";

/// A command's argv with the program shown by its tool name (`pct`), not its path, and a
/// push's host-side temp file shown as `<content>`.
fn tool_words(cmd: &HostCommand) -> Vec<String> {
    let mut words = cmd.argv();
    if let Some(first) = words.first_mut() {
        if let Some(name) = std::path::Path::new(first.as_str())
            .file_name()
            .and_then(|n| n.to_str())
        {
            *first = name.to_owned();
        }
    }
    if words.len() > 3 && words[0] == "pct" && words[1] == "push" {
        words[3] = CONTENT.to_owned();
    }
    words
}

/// Words joined for humans, each through [`crate::exec::shell_word`] (never parsed back);
/// the `<content>` placeholder of a push stays as it is.
fn shown(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w == CONTENT {
                w.into()
            } else {
                crate::exec::shell_word(w)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The argv run inside a container (`pct exec N … -- ARGV`, `lxc-attach … -- ARGV`).
fn inner_argv(words: &[String]) -> Option<Vec<String>> {
    let entering = matches!(
        words
            .iter()
            .map(String::as_str)
            .take(2)
            .collect::<Vec<_>>()
            .as_slice(),
        ["pct", "exec"] | ["lxc-attach", _]
    );
    if !entering {
        return None;
    }
    let dashes = words.iter().position(|w| w == "--")?;
    Some(words[dashes + 1..].to_vec())
}

/// What a recorded command does, by its tool and subcommand.
fn classify(words: &[String]) -> Action {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["pct", "create", ..] | ["zfs", "create", ..] | ["lxc-create", ..] => Action::Create,
        ["pct", "destroy", ..]
        | ["zfs", "destroy", ..]
        | ["pvesm", "free", ..]
        | ["lxc-destroy", ..] => Action::Remove,
        ["pct", "set", _, "--delete", ..] => Action::Remove,
        ["pct", "push", ..] => Action::Create,
        _ => Action::Change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(argv: &[&str]) -> HostCommand {
        HostCommand::new(argv[0]).args(&argv[1..]).mutating()
    }

    #[test]
    fn plan_shows_tools_marks_diffs_checks_and_counts() {
        let notes = Notes::default();
        notes.change(1, Action::Create, "write host unit x.service".into());
        notes.file(
            3,
            "901",
            "/etc/app.conf",
            Some(b"a = 1\nb = 2\n"),
            b"a = 1\nb = 3\n",
            0o644,
        );
        notes.file(4, "901", "/etc/app.env", None, b"TOKEN=hunter2\n", 0o600);
        let recorded = [
            cmd(&[
                "/root/emu/bin/pct",
                "create",
                "901",
                "local:vztmpl/t.tar.zst",
            ]),
            cmd(&["/root/emu/bin/pct", "set", "901", "--memory", "8192"]),
            cmd(&[
                "/root/emu/bin/pct",
                "exec",
                "901",
                "--keep-env",
                "0",
                "--",
                "test",
                "-x",
                "/usr/bin/docker",
            ]),
            cmd(&[
                "/root/emu/bin/pct",
                "push",
                "901",
                "/tmp/phoenix-push-1",
                "/etc/app.conf",
                "--perms",
                "0644",
            ]),
            cmd(&[
                "/root/emu/bin/pct",
                "push",
                "901",
                "/tmp/phoenix-push-2",
                "/etc/app.env",
                "--perms",
                "0600",
            ]),
            cmd(&["/usr/sbin/zfs", "destroy", "rpool/x"]),
        ];
        let ran =
            [HostCommand::new("/usr/sbin/pvesm").args(["list", "local-zfs", "--vmid", "901"])];
        let plan = Plan::build(&recorded, &ran, &notes, &Redactor::default());
        assert_eq!(
            plan.render(),
            "Changes, in order:
  + pct create 901 local:vztmpl/t.tar.zst
  + write host unit x.service
  ~ pct set 901 --memory 8192
  ~ pct push 901 <content> /etc/app.conf --perms 0644
      --- /etc/app.conf
      +++ /etc/app.conf
      @@ -1,2 +1,2 @@
       a = 1
      -b = 2
      +b = 3
  + pct push 901 <content> /etc/app.env --perms 0600
      (content not shown: a mode 0600 file may hold a secret; 14 bytes)
  - zfs destroy rpool/x

Read-only checks (change nothing):
  ran    pvesm list local-zfs --vmid 901
  later  pct exec 901 --keep-env 0 -- test -x /usr/bin/docker
  (`later`: runs once the changes above have made its container)

Plan: 3 to create, 2 to change, 1 to remove.
"
        );
    }

    #[test]
    fn a_new_file_diffs_against_nothing_and_secrets_are_redacted() {
        let redactor = Redactor::default();
        redactor.register("tok", "s3cr3t-value");
        let notes = Notes::default();
        notes.file(0, "7", "/etc/a", None, b"key = s3cr3t-value\n", 0o644);
        let recorded = [cmd(&[
            "pct", "push", "7", "/tmp/x", "/etc/a", "--perms", "0644",
        ])];
        let plan = Plan::build(&recorded, &[], &notes, &redactor);
        let diff = plan.changes[0].diff.as_deref().unwrap();
        assert!(!diff.contains("s3cr3t-value"), "{diff}");
        assert_eq!(
            diff,
            "--- /dev/null\n+++ /etc/a\n@@ -0,0 +1 @@\n+key = «secret:tok»\n"
        );
        assert_eq!(
            plan.summary(),
            "Plan: 1 to create, 0 to change, 0 to remove."
        );
    }

    #[test]
    fn an_empty_plan_says_so() {
        let plan = Plan::build(&[], &[], &Notes::default(), &Redactor::default());
        assert_eq!(
            plan.render(),
            "No changes: the host already matches.\n\nPlan: 0 to create, 0 to change, 0 to remove.\n"
        );
    }
}

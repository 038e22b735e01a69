//! The systemd unit that runs one vLLM container, written by a typed builder that quotes
//! every argument as a systemd word (no shell, no specifier or variable expansion).

use super::{DOCKER, ServerSpec};
use crate::types::Vmid;

/// A value that cannot go into a unit file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unit file {what} {shown} contains a control, bidi or invisible character (newline, NUL, U+202E, …): refused"
)]
pub struct UnitError {
    /// What the value is (`ExecStart argument`).
    pub what: &'static str,
    /// The value, shown safely.
    pub shown: String,
}

/// `arg` as one double-quoted systemd word: `\` and `"` escaped, `%` (specifiers) and `$`
/// (variables) doubled; control characters (newline, NUL, …) refused, and bidi or
/// invisible characters too (a reader would see another command than the one that runs:
/// [`crate::boundary::values::is_invisible`]).
pub fn systemd_word(arg: &str) -> Result<String, UnitError> {
    if arg
        .chars()
        .any(|c| c.is_control() || crate::boundary::values::is_invisible(c))
    {
        return Err(UnitError {
            what: "ExecStart argument",
            shown: crate::types::show(arg),
        });
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    Ok(out)
}

/// One `Exec…=` line: an absolute program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecLine {
    /// `-` prefix: a failure is ignored.
    pub ignore_failure: bool,
    /// The program (absolute, plain characters: written unquoted).
    pub program: &'static str,
    /// Its arguments, each written as a quoted word.
    pub args: Vec<String>,
}

impl ExecLine {
    fn render(&self) -> Result<String, UnitError> {
        let mut line = String::new();
        if self.ignore_failure {
            line.push('-');
        }
        line.push_str(self.program);
        for a in &self.args {
            line.push(' ');
            line.push_str(&systemd_word(a)?);
        }
        Ok(line)
    }
}

/// The systemd service unit that runs one vLLM container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// The container id (for the description).
    pub vmid: Vmid,
    /// `ExecStartPre=`.
    pub pre: ExecLine,
    /// `ExecStart=`.
    pub start: ExecLine,
    /// `ExecStop=`.
    pub stop: ExecLine,
}

impl UnitFile {
    /// The unit for `spec`.
    pub fn for_server(spec: &ServerSpec) -> Self {
        Self {
            vmid: spec.vmid,
            pre: ExecLine {
                ignore_failure: true,
                program: DOCKER,
                args: vec!["rm".into(), "-f".into(), spec.container()],
            },
            start: ExecLine {
                ignore_failure: false,
                program: DOCKER,
                args: spec.run_args(),
            },
            stop: ExecLine {
                ignore_failure: false,
                program: DOCKER,
                args: vec!["stop".into(), spec.container()],
            },
        }
    }

    /// The unit text.
    pub fn render(&self) -> Result<String, UnitError> {
        Ok(format!(
            "# Written by phoenix: the vLLM server of container {vmid}.\n\
             # phoenix rewrites this file on every run; change the config entry instead.\n\
             [Unit]\n\
             Description=phoenix vLLM server of container {vmid}\n\
             After=docker.service network-online.target\n\
             Wants=network-online.target\n\
             Requires=docker.service\n\
             \n\
             [Service]\n\
             Type=simple\n\
             ExecStartPre={pre}\n\
             ExecStart={start}\n\
             ExecStop={stop}\n\
             Restart=on-failure\n\
             RestartSec=10\n\
             TimeoutStopSec=120\n\
             \n\
             [Install]\n\
             WantedBy=multi-user.target\n",
            vmid = self.vmid,
            pre = self.pre.render()?,
            start = self.start.render()?,
            stop = self.stop.render()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::*;
    use super::*;

    #[test]
    fn systemd_words_escape_hostile_values() {
        assert_eq!(systemd_word("plain").unwrap(), "\"plain\"");
        assert_eq!(systemd_word("100%").unwrap(), "\"100%%\"");
        assert_eq!(systemd_word("%n").unwrap(), "\"%%n\"");
        assert_eq!(systemd_word("$HOME ${X}").unwrap(), "\"$$HOME $${X}\"");
        assert_eq!(systemd_word("a\"b").unwrap(), "\"a\\\"b\"");
        assert_eq!(systemd_word("a\\b").unwrap(), "\"a\\\\b\"");
        assert_eq!(systemd_word(";").unwrap(), "\";\"");
        assert_eq!(systemd_word("'x'").unwrap(), "\"'x'\"");
        let e = systemd_word("model\nExecStartPost=/bin/rm -rf /").unwrap_err();
        assert_eq!(e.what, "ExecStart argument");
        assert!(
            e.to_string()
                .contains("control, bidi or invisible character"),
            "{e}"
        );
        for bad in ["a\0b", "a\rb", "model\u{202E}lmth.exe", "a\u{200B}b"] {
            crate::test_support::refused(
                systemd_word(bad),
                "contains a control, bidi or invisible character (newline, NUL, U+202E, …): refused",
            );
        }
        // A hostile served name reaches the unit only as one quoted, escaped word.
        let mut s = example_spec();
        s.vllm.served_model_name = Some("x\" \"--trust-remote-code %h $PATH".into());
        let unit = UnitFile::for_server(&s).render().unwrap();
        assert!(
            unit.contains(r#""--served-model-name" "x\" \"--trust-remote-code %%h $$PATH""#),
            "{unit}"
        );
        s.vllm.served_model_name = Some("x\nExecStartPost=/bin/sh".into());
        crate::test_support::refused(
            UnitFile::for_server(&s).render(),
            "unit file ExecStart argument \"x\\nExecStartPost=/bin/sh\" contains a control, bidi or invisible character",
        );
    }
}

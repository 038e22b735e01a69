//! Values a recipe hands to primitives that end up in files, on stdin or in unit files,
//! checked before anything is created (DESIGN.md §12 "limits").
//!
//! - **File modes**: `0o644` is what a recipe means; `644` is decimal 644 = `0o1204`
//!   (sticky bit, odd permissions). Modes outside `0o777` are refused with a hint to write
//!   the octal literal.
//! - **Secrets in line formats**: a secret delivered on stdin (`chpasswd`'s `user:secret`)
//!   or written into an env, YAML or token file must not carry control characters: a
//!   newline in an API key written to an env file adds a variable of the secret's author's
//!   choosing. A secret pushed as a whole file may span lines, but no other control
//!   character.
//! - **Unit-file values** (and other human-read config): bidi overrides and invisible
//!   characters make a reviewer read another command than the one that runs.

use super::{Refusal, Rule};

/// The most permissive mode a pushed file may have.
pub const MAX_MODE: u32 = 0o777;

/// A file mode from a recipe integer: `0..=0o777`, else refused with the octal hint.
pub fn file_mode(call: &'static str, mode: i64) -> Result<u32, Refusal> {
    match u32::try_from(mode).ok().filter(|m| *m <= MAX_MODE) {
        Some(m) => Ok(m),
        None => {
            let octal = if mode >= 0 {
                format!(" (= 0o{mode:o})")
            } else {
                String::new()
            };
            let hint = if mode > 0
                && mode <= 777
                && mode.to_string().chars().all(|c| ('0'..='7').contains(&c))
            {
                format!("; write the mode as an octal literal: 0o{mode}")
            } else {
                "; write the mode as an octal literal such as 0o644".to_owned()
            };
            Err(Refusal::new(
                call,
                Rule::Values,
                format!("file mode {mode}{octal} is outside 0o777{hint}"),
            ))
        }
    }
}

/// Where a secret's bytes go, which decides the characters it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretUse {
    /// One line of a line format (stdin of `chpasswd`, an env/YAML/token file line).
    Line,
    /// A whole file of its own (may span lines).
    File,
}

/// Refuse a secret value with control characters (`Line`: any; `File`: any but `\n`,
/// `\r` and tab). `what` names the secret (its `«secret:NAME»` form), never its value.
pub fn secret_bytes(
    call: &'static str,
    what: &str,
    value: &[u8],
    usage: SecretUse,
) -> Result<(), Refusal> {
    let allowed = |b: u8| usage == SecretUse::File && matches!(b, b'\n' | b'\r' | b'\t');
    let bad = value
        .iter()
        .position(|&b| (b < 0x20 || b == 0x7f) && !allowed(b));
    let text_bad = std::str::from_utf8(value).ok().and_then(|s| {
        s.chars()
            .find(|&c| is_invisible(c) || ('\u{80}'..='\u{9f}').contains(&c))
    });
    if let Some(i) = bad {
        return Err(Refusal::new(
            call,
            Rule::Values,
            format!(
                "{what} holds the control character 0x{:02x} at byte {i}: it would {}; store the value without it (`phoenix secret set`)",
                value[i],
                if usage == SecretUse::Line {
                    "add lines to the file or stdin it is written into"
                } else {
                    "corrupt the file it is written into"
                }
            ),
        ));
    }
    if let Some(c) = text_bad {
        return Err(Refusal::new(
            call,
            Rule::Values,
            format!(
                "{what} holds the invisible or control character U+{:04X}",
                c as u32
            ),
        ));
    }
    Ok(())
}

/// Bidi controls and invisible characters (zero-width, word joiner, BOM, soft hyphen,
/// Mongolian vowel separator, tag characters).
pub fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{E0000}'..='\u{E007F}')
}

/// Refuse a value written into a unit file (or another human-read config line) with
/// control, bidi or invisible characters. `what` names the field.
pub fn unit_value(call: &'static str, what: &str, value: &str) -> Result<(), Refusal> {
    if let Some(c) = value.chars().find(|&c| c.is_control() || is_invisible(c)) {
        return Err(Refusal::new(
            call,
            Rule::Values,
            format!(
                "{what} {} holds the control, bidi or invisible character U+{:04X}: a reader of the unit file would see another command than the one that runs",
                crate::types::show(value),
                c as u32
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_outside_0o777_are_refused_with_the_octal_hint() {
        assert_eq!(file_mode("lxc.push", 0o644).unwrap(), 0o644);
        assert_eq!(file_mode("lxc.push", 0o600).unwrap(), 0o600);
        assert_eq!(
            file_mode("lxc.push", 644).unwrap_err().to_string(),
            "lxc.push: refused by the boundary (values): file mode 644 (= 0o1204) is outside 0o777; write the mode as an octal literal: 0o644"
        );
        let e = file_mode("lxc.push", 0o4755).unwrap_err().to_string();
        assert!(e.contains("file mode 2541 (= 0o4755) is outside 0o777; write the mode as an octal literal such as 0o644"), "{e}");
        assert!(file_mode("lxc.push", -1).is_err());
    }

    #[test]
    fn secrets_in_lines_hold_no_control_characters() {
        secret_bytes("vllm.start", "«secret:k»", b"sk-abc123", SecretUse::Line).unwrap();
        let e = secret_bytes(
            "vllm.start",
            "«secret:k»",
            b"sk\nLD_PRELOAD=/x",
            SecretUse::Line,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "vllm.start: refused by the boundary (values): «secret:k» holds the control character 0x0a at byte 2: it would add lines to the file or stdin it is written into; store the value without it (`phoenix secret set`)"
        );
        assert!(!e.contains("LD_PRELOAD"));
        secret_bytes(
            "lxc.push",
            "«secret:pem»",
            b"-----BEGIN\nabc\n-----END\n",
            SecretUse::File,
        )
        .unwrap();
        assert!(secret_bytes("lxc.push", "«secret:pem»", b"a\x1b[2Jb", SecretUse::File).is_err());
        assert!(
            secret_bytes(
                "lxc.push",
                "«secret:x»",
                "a\u{202E}b".as_bytes(),
                SecretUse::File
            )
            .is_err()
        );
    }

    #[test]
    fn unit_values_hold_no_bidi_or_invisible_characters() {
        unit_value("vllm.start", "model", "mistralai/Devstral-Small-2505").unwrap();
        for bad in [
            "a\u{202E}b",
            "a\u{200B}b",
            "a\u{2066}b",
            "a\nb",
            "a\u{FEFF}",
        ] {
            let e = unit_value("vllm.start", "model", bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("vllm.start: refused by the boundary (values): model "),
                "{e}"
            );
        }
    }
}

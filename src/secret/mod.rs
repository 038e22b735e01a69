//! Secrets (DESIGN.md §1 "Secrets are opaque", seed REQ-001).
//!
//! This module owns the opaque [`Secret`] value recipes and primitives pass around, and the
//! encrypted store (`store`): one age file per secret, encrypted to this host's X25519
//! identity. A `Secret` has no conversion to a string: its `Debug` and `Display` show
//! `«secret:NAME»`, and only primitives that deliver it through stdin or a 0600 file can
//! read its bytes (crate-private [`Secret::expose`]).
//!
//! Files: `store` (the store and [`SecretError`]), `key` (loading and checking the key
//! file), `legacy` (`import-legacy`); crash-safe writes go through
//! `crate::atomic_file`.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::types::SecretName;

mod key;
mod legacy;
mod store;

pub use legacy::{
    DEFAULT_HF_TOKEN_FILE, DEFAULT_ROOT_PASSWORD_FILE, ImportReport, LegacySource, legacy_sources,
};
pub use store::{
    InitOutcome, MAX_VALUE_LEN, RECIPIENT_FILE, RotateReport, SecretError, SecretInfo, SecretStore,
    rfc3339,
};

/// An opaque secret value. Cloning shares the same zeroised-on-drop buffer.
#[derive(Clone)]
pub struct Secret {
    name: SecretName,
    value: Arc<Zeroizing<Vec<u8>>>,
    /// Rendered by `secret.template` from text the recipe wrote (its lines are the
    /// recipe's, each secret in it already checked as one line).
    rendered: bool,
}

impl Secret {
    /// Wrap decrypted bytes.
    pub fn new(name: SecretName, value: Zeroizing<Vec<u8>>) -> Self {
        Self {
            name,
            value: Arc::new(value),
            rendered: false,
        }
    }

    /// Wrap text rendered by `secret.template` (see [`Secret::is_rendered`]).
    pub fn rendered(name: SecretName, value: Zeroizing<Vec<u8>>) -> Self {
        Self {
            rendered: true,
            ..Self::new(name, value)
        }
    }

    /// Whether this is a rendered template: its line breaks come from the recipe's text,
    /// so stdin may carry it as a whole file rather than as one line.
    pub fn is_rendered(&self) -> bool {
        self.rendered
    }

    /// The secret's name.
    pub fn name(&self) -> &SecretName {
        &self.name
    }

    /// The bytes, for the few primitives that deliver a secret via stdin or a 0600 file.
    pub(crate) fn expose(&self) -> &[u8] {
        &self.value
    }
}

/// Drop one trailing newline (`\n` or `\r\n`) from a value read from a pipe or a file.
pub fn strip_one_newline(value: &mut Vec<u8>) {
    if value.last() == Some(&b'\n') {
        value.pop();
        if value.last() == Some(&b'\r') {
            value.pop();
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "«secret:{}»", self.name)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "«secret:{}»", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new(
            SecretName::new("hf_token").unwrap(),
            Zeroizing::new(b"hf_verysecretvalue".to_vec()),
        );
        assert_eq!(format!("{s}"), "«secret:hf_token»");
        assert_eq!(format!("{s:?}"), "«secret:hf_token»");
        assert_eq!(s.expose(), b"hf_verysecretvalue");
    }

    #[test]
    fn strips_exactly_one_newline() {
        for (input, want) in [
            (&b"abc\n"[..], &b"abc"[..]),
            (b"abc\r\n", b"abc"),
            (b"abc\n\n", b"abc\n"),
            (b"abc", b"abc"),
            (b"\n", b""),
        ] {
            let mut v = input.to_vec();
            strip_one_newline(&mut v);
            assert_eq!(v, want, "{input:?}");
        }
    }
}

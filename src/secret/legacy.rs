//! Import of the bash suite's secrets: base64 files (`/usr/local/etc/phoenix_hf_token.conf`,
//! `/root/.phoenix_lxc_root_passwd`) decoded and stored encrypted, then scrubbed.
//!
//! Order, so that a failure never loses a value: the key is checked; every file is read and
//! decoded; every name is checked against the store (a different value already stored is a
//! conflict and nothing is written); then all values are stored; only then are the
//! originals overwritten with zeros, fsynced and removed (unless `--keep`). Running it again
//! after a partial failure is safe: a value already stored unchanged counts as imported.
//! Whitespace inside the base64 text (GNU `base64` wraps at 76 columns) is ignored, and one
//! trailing newline of the decoded value (`echo … | base64`) is dropped, as `secret set`
//! does.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::types::SecretName;

use super::store::{SecretError, SecretStore, check_value};
use super::strip_one_newline;
use crate::atomic_file as atomic;

/// The bash suite's Hugging Face token file.
pub const DEFAULT_HF_TOKEN_FILE: &str = "/usr/local/etc/phoenix_hf_token.conf";
/// The bash suite's container root password file.
pub const DEFAULT_ROOT_PASSWORD_FILE: &str = "/root/.phoenix_lxc_root_passwd";

/// One legacy file to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacySource {
    /// The secret it becomes.
    pub name: SecretName,
    /// The base64 file.
    pub path: PathBuf,
    /// Named on the command line (then a missing file is an error, not a note).
    pub explicit: bool,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Secrets stored, with the file each came from.
    pub imported: Vec<(SecretName, PathBuf)>,
    /// Of those, the ones the store already held with the same value.
    pub unchanged: Vec<SecretName>,
    /// Originals scrubbed and removed.
    pub removed: Vec<PathBuf>,
    /// Originals left in place (`--keep`).
    pub kept: Vec<PathBuf>,
    /// Default files that did not exist.
    pub absent: Vec<PathBuf>,
}

/// The two legacy files: `hf_token` and `lxc_root_password`, each from the path given or
/// its default.
pub fn legacy_sources(
    hf_token_file: Option<PathBuf>,
    root_password_file: Option<PathBuf>,
) -> Vec<LegacySource> {
    [
        ("hf_token", hf_token_file, DEFAULT_HF_TOKEN_FILE),
        (
            "lxc_root_password",
            root_password_file,
            DEFAULT_ROOT_PASSWORD_FILE,
        ),
    ]
    .into_iter()
    .map(|(name, given, default)| LegacySource {
        name: SecretName::new(name).expect("a constant, valid secret name"),
        explicit: given.is_some(),
        path: given.unwrap_or_else(|| PathBuf::from(default)),
    })
    .collect()
}

impl SecretStore {
    /// Import `sources` (see the module docs); `keep` leaves the originals in place.
    pub fn import_legacy(
        &self,
        sources: &[LegacySource],
        keep: bool,
    ) -> Result<ImportReport, SecretError> {
        let _lock = self.lock(true)?;
        let loaded = self.load()?;
        let mut report = ImportReport::default();
        let mut values = Vec::new();
        for src in sources {
            if !src.path.exists() {
                if src.explicit {
                    return Err(SecretError::LegacyMissing {
                        path: src.path.clone(),
                    });
                }
                report.absent.push(src.path.clone());
                continue;
            }
            let value = decode_file(&src.path)?;
            check_value(&src.name, &value)?;
            values.push((src, value));
        }
        let mut to_write = Vec::new();
        for (src, value) in &values {
            match self.decrypt(&src.name, &[&loaded.identity]) {
                Ok(stored) if stored.as_slice() == value.as_slice() => {
                    report.unchanged.push(src.name.clone());
                }
                Ok(_) => {
                    return Err(SecretError::ImportConflict {
                        name: src.name.clone(),
                        path: src.path.clone(),
                    });
                }
                Err(SecretError::NotFound { .. }) => to_write.push((*src, value)),
                Err(e) => return Err(e),
            }
        }
        for (src, value) in to_write {
            self.write_secret(&loaded.recipient, &src.name, value)?;
            tracing::info!(secret = %src.name, from = %src.path.display(), "legacy secret imported");
        }
        for (src, _) in &values {
            report.imported.push((src.name.clone(), src.path.clone()));
            if keep {
                report.kept.push(src.path.clone());
            } else {
                atomic::scrub_and_remove(&src.path).map_err(|source| SecretError::LegacyIo {
                    action: "scrub and remove",
                    path: src.path.clone(),
                    source,
                })?;
                report.removed.push(src.path.clone());
            }
        }
        Ok(report)
    }
}

fn decode_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|source| SecretError::LegacyIo {
        action: "read",
        path: path.to_owned(),
        source,
    })?);
    let mut compact = Zeroizing::new(Vec::with_capacity(raw.len()));
    compact.extend(raw.iter().copied().filter(|b| !b.is_ascii_whitespace()));
    let mut value = Zeroizing::new(Vec::with_capacity(compact.len()));
    base64::engine::general_purpose::STANDARD
        .decode_vec(compact.as_slice(), &mut value)
        .map_err(|source| SecretError::LegacyDecode {
            path: path.to_owned(),
            source,
        })?;
    strip_one_newline(&mut value);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Redactor;

    fn b64(v: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(v)
    }

    #[test]
    fn decodes_wrapped_base64_and_drops_one_newline() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        let long = vec![b'k'; 100];
        let mut enc = b64(&[long.as_slice(), b"\n"].concat());
        enc.insert(76, '\n');
        std::fs::write(&p, format!("{enc}\n")).unwrap();
        assert_eq!(decode_file(&p).unwrap().as_slice(), long.as_slice());
        std::fs::write(&p, "not base64!").unwrap();
        assert!(matches!(
            decode_file(&p).unwrap_err(),
            SecretError::LegacyDecode { .. }
        ));
    }

    #[test]
    fn conflict_changes_nothing_and_same_value_is_unchanged() {
        let tmp = tempfile::tempdir().unwrap();
        let s = SecretStore::at(
            tmp.path().join("secrets"),
            tmp.path().join("secret.key"),
            Redactor::default(),
        );
        s.init(false).unwrap();
        let name = SecretName::new("hf_token").unwrap();
        s.set(&name, b"hf_old_value").unwrap();
        let p = tmp.path().join("legacy");
        std::fs::write(&p, b64(b"hf_new_value\n")).unwrap();
        let src = [LegacySource {
            name: name.clone(),
            path: p.clone(),
            explicit: true,
        }];
        let err = s.import_legacy(&src, false).unwrap_err();
        assert!(matches!(err, SecretError::ImportConflict { .. }), "{err:?}");
        assert!(p.exists());
        assert_eq!(s.get(&name).unwrap().expose(), b"hf_old_value");

        std::fs::write(&p, b64(b"hf_old_value\n")).unwrap();
        let report = s.import_legacy(&src, false).unwrap();
        assert_eq!(report.unchanged, vec![name.clone()]);
        assert_eq!(report.removed, vec![p.clone()]);
        assert!(!p.exists());
    }

    #[test]
    fn missing_files_absent_when_default_error_when_explicit() {
        let tmp = tempfile::tempdir().unwrap();
        let s = SecretStore::at(
            tmp.path().join("secrets"),
            tmp.path().join("secret.key"),
            Redactor::default(),
        );
        s.init(false).unwrap();
        let mut src = LegacySource {
            name: SecretName::new("hf_token").unwrap(),
            path: tmp.path().join("nope"),
            explicit: false,
        };
        let report = s.import_legacy(std::slice::from_ref(&src), false).unwrap();
        assert_eq!(report.absent, vec![src.path.clone()]);
        assert!(report.imported.is_empty());
        src.explicit = true;
        assert!(matches!(
            s.import_legacy(&[src], false).unwrap_err(),
            SecretError::LegacyMissing { .. }
        ));
    }
}

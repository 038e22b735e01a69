//! This host's secret key: an age X25519 identity in a file the stock `age` CLI reads
//! (`age -d -i <key>`), i.e. `#` comment lines and one `AGE-SECRET-KEY-1…` line.
//!
//! Every load checks the file before reading a byte of it: a regular file (a symlink is
//! refused, so the check applies to the file actually read), owned by the user running
//! phoenix, not readable, writable or executable by group or others. Each refusal names the
//! command that fixes it.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use age::secrecy::ExposeSecret;
use age::x25519::Identity;
use zeroize::Zeroizing;

use super::SecretError;
use crate::atomic_file as atomic;

/// Read and check the identity at `path`, which must belong to the user running phoenix.
pub(super) fn load(path: &Path) -> Result<Identity, SecretError> {
    load_as(path, nix::unistd::geteuid().as_raw())
}

/// Read and check the identity at `path` for the user `uid` (a parameter so the owner rule
/// is testable without root).
fn load_as(path: &Path, uid: u32) -> Result<Identity, SecretError> {
    let file = match OpenOptions::new()
        .read(true)
        // Non-blocking: a FIFO put where the key should be must not hang the open.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SecretError::NoKey {
                path: path.to_owned(),
            });
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(SecretError::KeyNotRegular {
                path: path.to_owned(),
            });
        }
        Err(source) => {
            return Err(SecretError::KeyIo {
                path: path.to_owned(),
                source,
            });
        }
    };
    let meta = file.metadata().map_err(|source| SecretError::KeyIo {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(SecretError::KeyNotRegular {
            path: path.to_owned(),
        });
    }
    if meta.uid() != uid {
        return Err(SecretError::KeyOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            uid,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(SecretError::KeyMode {
            path: path.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    let cap = crate::boundary::limits::Input::Key.cap();
    if meta.len() > cap {
        return Err(SecretError::KeyIo {
            path: path.to_owned(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the secret key file is {} bytes; at most {cap} bytes are accepted",
                    meta.len()
                ),
            ),
        });
    }
    let mut text = Zeroizing::new(String::with_capacity(meta.len() as usize + 1));
    file.take(cap)
        .read_to_string(&mut text)
        .map_err(|source| SecretError::KeyIo {
            path: path.to_owned(),
            source,
        })?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<Identity, SecretError> {
    let mut found = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let identity: Identity = line.parse().map_err(|_| SecretError::KeyInvalid {
            path: path.to_owned(),
            line: i + 1,
        })?;
        if found.replace(identity).is_some() {
            return Err(SecretError::KeyManyIdentities {
                path: path.to_owned(),
            });
        }
    }
    found.ok_or_else(|| SecretError::KeyEmpty {
        path: path.to_owned(),
    })
}

/// Write `identity` to `path` atomically (0600), creating its directory 0700 if missing.
pub(super) fn write(path: &Path, identity: &Identity) -> Result<(), SecretError> {
    let io_err = |source| SecretError::KeyIo {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            atomic::create_private_dir(dir).map_err(io_err)?;
        } else if let Ok(meta) = std::fs::metadata(dir) {
            if meta.mode() & 0o077 != 0 {
                tracing::warn!(
                    dir = %dir.display(),
                    mode = format!("{:04o}", meta.mode() & 0o7777),
                    "the secret key's directory is open to group or others; `chmod 700` it"
                );
            }
        }
    }
    let secret = identity.to_string();
    let created = super::store::rfc3339(std::time::SystemTime::now());
    atomic::write_with(path, 0o600, |f| {
        writeln!(
            f,
            "# phoenix secret key (age X25519 identity): keep it 0600"
        )?;
        writeln!(f, "# created: {created}")?;
        writeln!(f, "# public key: {}", identity.to_public())?;
        f.write_all(secret.expose_secret().as_bytes())?;
        f.write_all(b"\n")
    })
    .map_err(io_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_key_loads_back_and_is_0600_in_a_0700_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/phoenix/secret.key");
        let id = Identity::generate();
        write(&path, &id).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let dmeta = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dmeta.mode() & 0o777, 0o700);
        let back = load(&path).unwrap();
        assert_eq!(back.to_public().to_string(), id.to_public().to_string());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("# public key: {}", id.to_public())));
    }

    #[test]
    fn group_readable_key_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write(&path, &Identity::generate()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load(&path).err().unwrap();
        assert!(
            matches!(err, SecretError::KeyMode { mode: 0o640, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
    }

    /// A key owned by another user is refused, naming both uids and the fix; the running
    /// user is a parameter, so this needs no root (it used to skip itself without root).
    #[test]
    fn key_of_another_user_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        write(&path, &Identity::generate()).unwrap();
        let owner = std::fs::metadata(&path).unwrap().uid();
        let uid = owner + 4242;
        let err = load_as(&path, uid).err().unwrap();
        assert!(
            matches!(&err, SecretError::KeyOwner { owner: o, uid: u, .. } if *o == owner && *u == uid),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&format!(
                "owned by uid {owner}, not by uid {uid} running phoenix: if it is this host's key, run `chown {uid} {}`",
                path.display()
            )),
            "{err}"
        );
        // The owner itself may read it.
        load_as(&path, owner).unwrap();
    }

    #[test]
    fn symlinked_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        write(&real, &Identity::generate()).unwrap();
        let link = dir.path().join("secret.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            load(&link).err().unwrap(),
            SecretError::KeyNotRegular { .. }
        ));
    }

    #[test]
    fn missing_garbage_and_double_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        assert!(matches!(
            load(&path).err().unwrap(),
            SecretError::NoKey { .. }
        ));
        let p = Path::new("/k");
        assert!(matches!(
            parse(p, "# c\n\nnot-a-key\n").err().unwrap(),
            SecretError::KeyInvalid { line: 3, .. }
        ));
        assert!(matches!(
            parse(p, "# only comments\n").err().unwrap(),
            SecretError::KeyEmpty { .. }
        ));
        let a = Identity::generate().to_string();
        let b = Identity::generate().to_string();
        let two = format!("{}\n{}\n", a.expose_secret(), b.expose_secret());
        assert!(matches!(
            parse(p, &two).err().unwrap(),
            SecretError::KeyManyIdentities { .. }
        ));
    }
}

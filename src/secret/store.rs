//! The encrypted secret store: one age file per secret in `PHOENIX_SECRETS_DIR`
//! (`NAME.age`, mode 0600, directory 0700), encrypted to the X25519 identity at
//! `PHOENIX_SECRET_KEY`. Files are plain age files: `age -d -i <key> <dir>/NAME.age` reads
//! them, and a file made with `age -r <recipient>` is read by phoenix.
//!
//! # The recipient file
//! `secret init` writes the key's public recipient to `<dir>/recipient.txt`. Every use
//! (get, set, list, rm, import) loads the key, checks its file (0600, owned by the user
//! running phoenix) and refuses a key whose recipient differs from that file, before
//! anything is read or written: a wrong `PHOENIX_SECRET_KEY` can never start a second,
//! unrelated store next to the first.
//!
//! # Key rotation and crashes
//! `rotate-key` goes through these steps, each of them atomic (temp file, fsync, rename,
//! fsync of the directory):
//! 1. the new identity is written beside the old key, as `<key>.new`;
//! 2. every secret is decrypted (with the old or the new key) and re-encrypted to the new
//!    recipient, one file at a time;
//! 3. `recipient.txt` is replaced by the new recipient;
//! 4. `<key>.new` is renamed over `<key>`.
//!
//! A crash after step 1 leaves `<key>.new` behind. While it exists every command except
//! `rotate-key` is refused with a message that says to run `rotate-key` again; that run
//! reuses `<key>.new` (it never generates a second new key), accepts a store whose recipient
//! is either key's, decrypts each secret with whichever key it was encrypted to, and
//! finishes steps 2–4. No state in between loses a secret: both keys exist until step 4
//! completes, and step 4 is a single rename.
//!
//! Before the new key is written, every secret is decrypted once with the old key: a file
//! the key cannot open stops the rotation before anything changes.
//!
//! # Concurrency
//! Every operation holds an `flock` on the store directory: shared for `get`/`list`,
//! exclusive for everything that writes, so a `set` never lands between a rotation's
//! re-encryption and its key swap.
//!
//! # Decisions where DESIGN.md is silent
//! - `init` with a key present and no recipient file adopts that key (it writes the
//!   recipient file and changes nothing else); with both present it refuses without
//!   `--force`. `init` with no key but a recipient file refuses too: the store belongs to a
//!   lost key, and `--force` is needed to start a new one (the old files stay, unreadable).
//! - A key directory that already exists is not re-moded; a warning asks to `chmod 700` it
//!   when group or others can enter it. Directories phoenix creates are 0700.
//! - Values are at most 64 KiB and never empty. A value that is valid UTF-8 is registered
//!   with the run's redactor when decrypted (the redactor matches text).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use age::x25519::{Identity, Recipient};
use nix::fcntl::{Flock, FlockArg};
use zeroize::Zeroizing;

use crate::exec::Redactor;
use crate::settings::Settings;
use crate::types::SecretName;

use super::Secret;
use super::key;
use crate::atomic_file as atomic;

/// The largest value the store accepts.
pub const MAX_VALUE_LEN: usize = 64 * 1024;

/// The file in the store that names the recipient the store is encrypted to.
pub const RECIPIENT_FILE: &str = "recipient.txt";

/// Errors of the secret store.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The key file does not exist.
    #[error("no secret key at {path}: run `phoenix secret init` first")]
    NoKey {
        /// Where the key was expected.
        path: PathBuf,
    },
    /// `init` found a key and was not told to replace it.
    #[error(
        "a secret key already exists at {path}: pass --force to replace it (secrets encrypted to it can then no longer be read; `phoenix secret rotate-key` changes the key and keeps them)"
    )]
    KeyExists {
        /// The existing key.
        path: PathBuf,
    },
    /// `init` found a store made for a key that is not there.
    #[error(
        "the store {recipient_file} belongs to recipient {recipient}, whose key is not at {key}: put that key back, or pass --force to start a new key ({secrets} stored secret(s) then stay unreadable)"
    )]
    KeyLost {
        /// Where the key was expected.
        key: PathBuf,
        /// The store's recipient file.
        recipient_file: PathBuf,
        /// The store's recipient.
        recipient: String,
        /// How many secrets the store holds.
        secrets: usize,
    },
    /// The key file could not be read or written.
    #[error("cannot access the secret key {path}")]
    KeyIo {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The key is a symlink or not a regular file.
    #[error(
        "the secret key {path} is not a regular file (symlinks are refused): point PHOENIX_SECRET_KEY at the file itself"
    )]
    KeyNotRegular {
        /// The key path.
        path: PathBuf,
    },
    /// The key is readable by group or others.
    #[error(
        "the secret key {path} has mode {mode:04o}, open to group or others: run `chmod 600 {path}`"
    )]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key belongs to another user.
    #[error(
        "the secret key {path} is owned by uid {owner}, not by uid {uid} running phoenix: if it is this host's key, run `chown {uid} {path}` and `chmod 600 {path}`"
    )]
    KeyOwner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of phoenix.
        uid: u32,
    },
    /// A line of the key file is not an age X25519 identity.
    #[error("the secret key {path}: line {line} is not an age identity (`AGE-SECRET-KEY-1…`)")]
    KeyInvalid {
        /// The key file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// The key file holds no identity.
    #[error("the secret key {path} holds no age identity (`AGE-SECRET-KEY-1…`)")]
    KeyEmpty {
        /// The key file.
        path: PathBuf,
    },
    /// The key file holds several identities.
    #[error("the secret key {path} holds more than one identity: keep exactly one")]
    KeyManyIdentities {
        /// The key file.
        path: PathBuf,
    },
    /// The key is not the one the store was created with.
    #[error(
        "the secret key {key} (recipient {key_recipient}) is not the key of the store {recipient_file} (recipient {store_recipient}): point PHOENIX_SECRET_KEY at the store's key; nothing was changed"
    )]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The key's recipient.
        key_recipient: String,
        /// The store's recipient file.
        recipient_file: PathBuf,
        /// The recipient in it.
        store_recipient: String,
    },
    /// The store has no recipient file.
    #[error(
        "the secret store has no recipient file {path}: run `phoenix secret init` (it adopts an existing key)"
    )]
    NoRecipient {
        /// The expected recipient file.
        path: PathBuf,
    },
    /// The recipient file does not hold one age recipient.
    #[error("{path} does not hold an age recipient (`age1…`)")]
    RecipientInvalid {
        /// The recipient file.
        path: PathBuf,
    },
    /// A key rotation was interrupted.
    #[error(
        "a key rotation was interrupted ({pending} exists): run `phoenix secret rotate-key` to finish it"
    )]
    RotationPending {
        /// The new key written beside the old one.
        pending: PathBuf,
    },
    /// The secret does not exist in the store.
    #[error("secret `{name}` is not in the store {dir}: add it with `phoenix secret set {name}`")]
    NotFound {
        /// The secret's name.
        name: SecretName,
        /// The store.
        dir: PathBuf,
    },
    /// A file of the store could not be read or written.
    #[error("cannot {action} {path}")]
    StoreIo {
        /// What was being done (`write`, `read`, `list`, `remove`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Encryption failed.
    #[error("cannot encrypt secret `{name}`")]
    Encrypt {
        /// The secret.
        name: SecretName,
        /// Why.
        #[source]
        source: Box<age::EncryptError>,
    },
    /// The secret was encrypted to another key.
    #[error(
        "secret `{name}` ({path}) was not encrypted to this host's key: set it again with `phoenix secret set {name}`"
    )]
    WrongKeyForSecret {
        /// The secret.
        name: SecretName,
        /// Its file.
        path: PathBuf,
    },
    /// During a resumed rotation, a secret opens with neither key.
    #[error(
        "secret `{name}` ({path}) opens with neither the old nor the new key: move that file out of the store, then run `phoenix secret rotate-key` again"
    )]
    RotateUnreadable {
        /// The secret.
        name: SecretName,
        /// Its file.
        path: PathBuf,
    },
    /// The file is not a valid age file or failed authentication.
    #[error("cannot decrypt secret `{name}` ({path})")]
    Decrypt {
        /// The secret.
        name: SecretName,
        /// Its file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<age::DecryptError>,
    },
    /// An empty value was offered.
    #[error("refusing an empty value for secret `{name}`")]
    EmptyValue {
        /// The secret.
        name: SecretName,
    },
    /// The value is too long.
    #[error("the value for secret `{name}` is {len} bytes; at most {max} are accepted")]
    TooLarge {
        /// The secret.
        name: SecretName,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The two values typed on the terminal differ.
    #[error("the two values typed for secret `{name}` differ; nothing was stored")]
    ValuesDiffer {
        /// The secret.
        name: SecretName,
    },
    /// The value could not be read (stdin, terminal or `--from-file`).
    #[error("cannot read the value for secret `{name}` from {from}")]
    ReadValue {
        /// The secret.
        name: SecretName,
        /// Where from (`stdin`, `the terminal` or the file).
        from: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `get` without `--reveal`.
    #[error(
        "`phoenix secret get {name}` prints the value only with --reveal (it then appears on your terminal)"
    )]
    RevealRequired {
        /// The secret.
        name: SecretName,
    },
    /// A legacy file named on the command line does not exist.
    #[error("legacy secret file {path} does not exist")]
    LegacyMissing {
        /// The file.
        path: PathBuf,
    },
    /// A legacy file could not be read or removed.
    #[error("cannot {action} legacy secret file {path}")]
    LegacyIo {
        /// `read` or `scrub and remove`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A legacy file is not base64.
    #[error("legacy secret file {path} is not base64")]
    LegacyDecode {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: base64::DecodeError,
    },
    /// Import would overwrite a different stored value.
    #[error(
        "secret `{name}` is already stored with a different value than {path}: remove it with `phoenix secret rm {name}` first; nothing was changed"
    )]
    ImportConflict {
        /// The secret.
        name: SecretName,
        /// The legacy file.
        path: PathBuf,
    },
    /// A recipe tried to turn a secret into text or compare it.
    #[error(
        "`{operation}` on «secret:{name}»: a secret can only be passed to a primitive that accepts one"
    )]
    Opaque {
        /// The operation (`to_string`, `+`, `==`, `print`, string interpolation …).
        operation: &'static str,
        /// The secret.
        name: SecretName,
    },
}

impl SecretError {
    /// Exit code: every secret-key or store problem is found before the host is touched
    /// (2); a recipe misusing a secret value fails the run (1).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Opaque { .. } => crate::exit::code::RUN_FAILED,
            _ => crate::exit::code::USAGE,
        }
    }
}

/// One stored secret, as `list` shows it (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The name.
    pub name: SecretName,
    /// When its file was last written.
    pub modified: SystemTime,
}

/// What `init` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new identity was written.
    Created {
        /// Its recipient.
        recipient: String,
        /// Secrets already in the store (with `--force`: encrypted to the replaced key, so
        /// no longer readable).
        stranded: usize,
    },
    /// An existing key was adopted: only the recipient file was written.
    Adopted {
        /// Its recipient.
        recipient: String,
    },
}

/// What `rotate-key` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateReport {
    /// The old recipient.
    pub old_recipient: String,
    /// The new recipient.
    pub new_recipient: String,
    /// The secrets re-encrypted.
    pub secrets: Vec<SecretName>,
    /// Whether this run finished an interrupted rotation.
    pub resumed: bool,
}

/// The key, checked against the store's recipient file.
pub(super) struct Loaded {
    pub(super) identity: Identity,
    pub(super) recipient: Recipient,
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
        Self::at(
            settings.secrets_dir.value.clone(),
            settings.secret_key.value.clone(),
            redactor,
        )
    }

    /// The store in `dir` with the key at `key`.
    pub fn at(dir: PathBuf, key: PathBuf, redactor: Redactor) -> Self {
        Self { dir, key, redactor }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key file.
    pub fn key_path(&self) -> &Path {
        &self.key
    }

    /// The recipient file beside the secrets.
    pub fn recipient_path(&self) -> PathBuf {
        self.dir.join(RECIPIENT_FILE)
    }

    /// Where `rotate-key` writes the new key before it replaces the old one.
    pub fn pending_key_path(&self) -> PathBuf {
        let mut p = self.key.clone().into_os_string();
        p.push(".new");
        PathBuf::from(p)
    }

    /// The file of secret `name`.
    pub fn secret_path(&self, name: &SecretName) -> PathBuf {
        self.dir.join(format!("{name}.age"))
    }

    /// Whether this host has no store yet: no key, no recipient, no pending rotation.
    pub fn is_fresh(&self) -> bool {
        !(self.key.exists()
            || self.key.is_symlink()
            || self.recipient_path().exists()
            || self.pending_key_path().exists())
    }

    /// Check the key is present, safe and the store's (before the first host change).
    pub fn check_key(&self) -> Result<(), SecretError> {
        self.load().map(|_| ())
    }

    /// Create this host's identity (or adopt the existing key when the store has no
    /// recipient file yet) and write the store's recipient file. See the module docs.
    pub fn init(&self, force: bool) -> Result<InitOutcome, SecretError> {
        // The directory first, so that there is something to lock: two processes that
        // init a fresh store at once must not both generate a key.
        self.create_dir()?;
        let _lock = self.lock(true)?;
        let stored = self.read_recipient()?;
        let pending = self.pending_key_path();
        if !force {
            if pending.exists() {
                return Err(SecretError::RotationPending { pending });
            }
            match (self.key.exists() || self.key.is_symlink(), stored) {
                (true, None) => {
                    let identity = key::load(&self.key)?;
                    let recipient = identity.to_public();
                    self.create_dir()?;
                    self.write_recipient(&recipient)?;
                    return Ok(InitOutcome::Adopted {
                        recipient: recipient.to_string(),
                    });
                }
                (true, Some(_)) => {
                    // Report a wrong key as such rather than as "exists".
                    self.load()?;
                    return Err(SecretError::KeyExists {
                        path: self.key.clone(),
                    });
                }
                (false, Some(r)) => {
                    return Err(SecretError::KeyLost {
                        key: self.key.clone(),
                        recipient_file: self.recipient_path(),
                        recipient: r.to_string(),
                        secrets: self.names()?.len(),
                    });
                }
                (false, None) => {}
            }
        }
        let stranded = self.names()?.len();
        let identity = Identity::generate();
        let recipient = identity.to_public();
        self.create_dir()?;
        key::write(&self.key, &identity)?;
        self.write_recipient(&recipient)?;
        if pending.exists() {
            atomic::remove(&pending).map_err(|source| SecretError::KeyIo {
                path: pending.clone(),
                source,
            })?;
        }
        tracing::info!(key = %self.key.display(), %recipient, "secret key created");
        Ok(InitOutcome::Created {
            recipient: recipient.to_string(),
            stranded,
        })
    }

    /// Store `value` as secret `name` (replacing any previous value).
    pub fn set(&self, name: &SecretName, value: &[u8]) -> Result<PathBuf, SecretError> {
        check_value(name, value)?;
        let _lock = self.lock(true)?;
        let loaded = self.load()?;
        let path = self.write_secret(&loaded.recipient, name, value)?;
        tracing::info!(secret = %name, "secret stored");
        Ok(path)
    }

    /// Secret `name`, stored first as `generate()` when the store lacks it; whether it was
    /// generated. The check and the store happen under one exclusive lock, so runs that
    /// ensure the same secret at once (`phoenix up` of several vLLM servers, or two phoenix
    /// processes) all get the one value that was stored.
    pub fn ensure(
        &self,
        name: &SecretName,
        generate: impl FnOnce() -> io::Result<Zeroizing<Vec<u8>>>,
    ) -> Result<(Secret, bool), SecretError> {
        let _lock = self.lock(true)?;
        let loaded = self.load()?;
        let created = !self.secret_path(name).exists();
        if created {
            let value = generate().map_err(|source| SecretError::StoreIo {
                action: "generate a value for",
                path: self.secret_path(name),
                source,
            })?;
            check_value(name, &value)?;
            self.write_secret(&loaded.recipient, name, &value)?;
            tracing::info!(secret = %name, "secret generated and stored");
        }
        let value = self.decrypt(name, &[&loaded.identity])?;
        if let Ok(text) = std::str::from_utf8(&value) {
            self.redactor.register(name.as_str(), text);
        }
        Ok((Secret::new(name.clone(), value), created))
    }

    /// Decrypt secret `name`; its value is registered with the redactor.
    pub fn get(&self, name: &SecretName) -> Result<Secret, SecretError> {
        let _lock = self.lock(false)?;
        let loaded = self.load()?;
        let value = self.decrypt(name, &[&loaded.identity])?;
        if let Ok(text) = std::str::from_utf8(&value) {
            self.redactor.register(name.as_str(), text);
        }
        Ok(Secret::new(name.clone(), value))
    }

    /// Decrypt every stored secret once, so the redactor knows all of them: whatever a
    /// recipe reads back from a container, logs or passes on is then redacted in phoenix's
    /// own output even when the recipe never asked for that secret (DESIGN.md §12).
    /// Returns how many were registered; a host without a store has none.
    pub fn register_all(&self) -> Result<usize, SecretError> {
        if self.is_fresh() {
            return Ok(0);
        }
        let _lock = self.lock(false)?;
        let loaded = self.load()?;
        let mut n = 0;
        for name in self.names()? {
            let value = self.decrypt(&name, &[&loaded.identity])?;
            if let Ok(text) = std::str::from_utf8(&value) {
                self.redactor.register(name.as_str(), text);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every stored secret with its file's modification time, sorted by name.
    pub fn list(&self) -> Result<Vec<SecretInfo>, SecretError> {
        let _lock = self.lock(false)?;
        self.load()?;
        let mut out = Vec::new();
        for name in self.names()? {
            let path = self.secret_path(&name);
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(|source| SecretError::StoreIo {
                    action: "read",
                    path,
                    source,
                })?;
            out.push(SecretInfo { name, modified });
        }
        Ok(out)
    }

    /// Remove secret `name`.
    pub fn remove(&self, name: &SecretName) -> Result<PathBuf, SecretError> {
        let _lock = self.lock(true)?;
        self.load()?;
        let path = self.secret_path(name);
        match atomic::remove(&path) {
            Ok(()) => {
                tracing::info!(secret = %name, "secret removed");
                Ok(path)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(name)),
            Err(source) => Err(SecretError::StoreIo {
                action: "remove",
                path,
                source,
            }),
        }
    }

    /// Replace the key with a new identity, re-encrypting every secret (module docs).
    pub fn rotate_key(&self) -> Result<RotateReport, SecretError> {
        let _lock = self.lock(true)?;
        let old = key::load(&self.key)?;
        let stored = self
            .read_recipient()?
            .ok_or_else(|| SecretError::NoRecipient {
                path: self.recipient_path(),
            })?;
        let pending = self.pending_key_path();
        let resumed = pending.exists() || pending.is_symlink();
        let new = if resumed {
            key::load(&pending)?
        } else {
            if !same(&stored, &old.to_public()) {
                return Err(self.mismatch(&old.to_public(), &stored));
            }
            // Every secret must open before anything changes: a file the old key cannot
            // read would otherwise stop the rotation halfway.
            for name in self.names()? {
                self.decrypt(&name, &[&old])?;
            }
            let id = Identity::generate();
            key::write(&pending, &id)?;
            id
        };
        if !same(&stored, &old.to_public()) && !same(&stored, &new.to_public()) {
            return Err(self.mismatch(&old.to_public(), &stored));
        }
        let new_recipient = new.to_public();
        let names = self.names()?;
        for name in &names {
            let value = self.decrypt(name, &[&old, &new]).map_err(|e| match e {
                SecretError::WrongKeyForSecret { name, path } => {
                    SecretError::RotateUnreadable { name, path }
                }
                e => e,
            })?;
            self.write_secret(&new_recipient, name, &value)?;
        }
        self.write_recipient(&new_recipient)?;
        atomic::rename(&pending, &self.key).map_err(|source| SecretError::KeyIo {
            path: self.key.clone(),
            source,
        })?;
        tracing::info!(recipient = %new_recipient, secrets = names.len(), "secret key rotated");
        Ok(RotateReport {
            old_recipient: old.to_public().to_string(),
            new_recipient: new_recipient.to_string(),
            secrets: names,
            resumed,
        })
    }

    /// Load the key and check it against the recipient file.
    pub(super) fn load(&self) -> Result<Loaded, SecretError> {
        let pending = self.pending_key_path();
        if pending.exists() || pending.is_symlink() {
            return Err(SecretError::RotationPending { pending });
        }
        let identity = key::load(&self.key)?;
        let recipient = identity.to_public();
        match self.read_recipient()? {
            None => Err(SecretError::NoRecipient {
                path: self.recipient_path(),
            }),
            Some(stored) if same(&stored, &recipient) => Ok(Loaded {
                identity,
                recipient,
            }),
            Some(stored) => Err(self.mismatch(&recipient, &stored)),
        }
    }

    /// Decrypt the file of `name` with any of `identities`.
    pub(super) fn decrypt(
        &self,
        name: &SecretName,
        identities: &[&Identity],
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let path = self.secret_path(name);
        let read_err = |source| SecretError::StoreIo {
            action: "read",
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.not_found(name)),
            Err(e) => return Err(read_err(e)),
        };
        let len = file.metadata().map_err(read_err)?.len() as usize;
        let decrypt_err = |source| match source {
            age::DecryptError::NoMatchingKeys => SecretError::WrongKeyForSecret {
                name: name.clone(),
                path: path.clone(),
            },
            source => SecretError::Decrypt {
                name: name.clone(),
                path: path.clone(),
                source: Box::new(source),
            },
        };
        let decryptor = age::Decryptor::new_buffered(BufReader::new(file)).map_err(decrypt_err)?;
        let mut reader = decryptor
            .decrypt(identities.iter().map(|i| *i as &dyn age::Identity))
            .map_err(decrypt_err)?;
        // The ciphertext is longer than the plaintext: reserving its length means the
        // buffer is never reallocated, so no unzeroised copy of the value is left behind.
        let mut value = Zeroizing::new(Vec::with_capacity(len));
        reader
            .read_to_end(&mut value)
            .map_err(|source| SecretError::StoreIo {
                action: "decrypt",
                path: path.clone(),
                source,
            })?;
        Ok(value)
    }

    /// Encrypt `value` to `recipient` into the file of `name`, atomically.
    pub(super) fn write_secret(
        &self,
        recipient: &Recipient,
        name: &SecretName,
        value: &[u8],
    ) -> Result<PathBuf, SecretError> {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                .map_err(|source| SecretError::Encrypt {
                    name: name.clone(),
                    source: Box::new(source),
                })?;
        let path = self.secret_path(name);
        atomic::write_with(&path, 0o600, |file| {
            let mut w = encryptor.wrap_output(file)?;
            w.write_all(value)?;
            w.finish()?;
            Ok(())
        })
        .map_err(|source| SecretError::StoreIo {
            action: "write",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// The names of the stored secrets, sorted (files `NAME.age` with a valid name).
    pub(super) fn names(&self) -> Result<Vec<SecretName>, SecretError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(SecretError::StoreIo {
                    action: "list",
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| SecretError::StoreIo {
                action: "list",
                path: self.dir.clone(),
                source,
            })?;
            let file_name = entry.file_name();
            let Some(stem) = file_name.to_str().and_then(|n| n.strip_suffix(".age")) else {
                continue;
            };
            if let Ok(name) = SecretName::new(stem) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Lock the store directory (shared for reads, exclusive for changes) for as long as
    /// the returned guard lives, so a `set` never races a `rotate-key`. A store that does
    /// not exist yet has nothing to lock.
    pub(super) fn lock(&self, exclusive: bool) -> Result<Option<Flock<File>>, SecretError> {
        let lock_err = |source| SecretError::StoreIo {
            action: "lock",
            path: self.dir.clone(),
            source,
        };
        let dir = match File::open(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(lock_err(e)),
        };
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(dir, arg)
            .map(Some)
            .map_err(|(_, errno)| lock_err(io::Error::from(errno)))
    }

    fn create_dir(&self) -> Result<(), SecretError> {
        atomic::create_private_dir(&self.dir).map_err(|source| SecretError::StoreIo {
            action: "create",
            path: self.dir.clone(),
            source,
        })
    }

    fn read_recipient(&self) -> Result<Option<Recipient>, SecretError> {
        let path = self.recipient_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(SecretError::StoreIo {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        let mut lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'));
        match (lines.next().map(str::parse::<Recipient>), lines.next()) {
            (Some(Ok(r)), None) => Ok(Some(r)),
            _ => Err(SecretError::RecipientInvalid { path }),
        }
    }

    fn write_recipient(&self, recipient: &Recipient) -> Result<(), SecretError> {
        let path = self.recipient_path();
        atomic::write_with(&path, 0o600, |f| {
            writeln!(
                f,
                "# the age recipient of this store's key ({}); do not edit",
                self.key.display()
            )?;
            writeln!(f, "{recipient}")
        })
        .map_err(|source| SecretError::StoreIo {
            action: "write",
            path,
            source,
        })
    }

    fn mismatch(&self, key_recipient: &Recipient, stored: &Recipient) -> SecretError {
        SecretError::KeyMismatch {
            key: self.key.clone(),
            key_recipient: key_recipient.to_string(),
            recipient_file: self.recipient_path(),
            store_recipient: stored.to_string(),
        }
    }

    fn not_found(&self, name: &SecretName) -> SecretError {
        SecretError::NotFound {
            name: name.clone(),
            dir: self.dir.clone(),
        }
    }
}

/// Refuse an empty or oversized value.
pub(super) fn check_value(name: &SecretName, value: &[u8]) -> Result<(), SecretError> {
    if value.is_empty() {
        return Err(SecretError::EmptyValue { name: name.clone() });
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(SecretError::TooLarge {
            name: name.clone(),
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

fn same(a: &Recipient, b: &Recipient) -> bool {
    a.to_string() == b.to_string()
}

/// `t` as an RFC 3339 UTC timestamp with seconds (`2026-11-26T08:05:52Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::time::Duration;

    fn name(n: &str) -> SecretName {
        SecretName::new(n).unwrap()
    }

    fn store(dir: &Path) -> SecretStore {
        SecretStore::at(
            dir.join("secrets"),
            dir.join("keydir/secret.key"),
            Redactor::default(),
        )
    }

    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |s| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_680_352), "2026-11-26T08:05:52Z");
    }

    #[test]
    fn set_get_list_remove_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let redactor = Redactor::default();
        let s = SecretStore::at(
            tmp.path().join("secrets"),
            tmp.path().join("secret.key"),
            redactor.clone(),
        );
        assert!(matches!(
            s.init(false).unwrap(),
            InitOutcome::Created { .. }
        ));
        let path = s.set(&name("hf_token"), b"hf_abcdefgh").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(s.dir()).unwrap().mode() & 0o777, 0o700);
        let got = s.get(&name("hf_token")).unwrap();
        assert_eq!(got.expose(), b"hf_abcdefgh");
        assert_eq!(
            redactor.redact("token=hf_abcdefgh"),
            "token=«secret:hf_token»"
        );
        let listed: Vec<_> = s.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(listed, vec![name("hf_token")]);
        s.remove(&name("hf_token")).unwrap();
        assert!(matches!(
            s.remove(&name("hf_token")).unwrap_err(),
            SecretError::NotFound { .. }
        ));
        assert!(matches!(
            s.get(&name("hf_token")).unwrap_err(),
            SecretError::NotFound { .. }
        ));
    }

    #[test]
    fn empty_and_oversized_values_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        assert!(matches!(
            s.set(&name("a"), b"").unwrap_err(),
            SecretError::EmptyValue { .. }
        ));
        let big = vec![b'x'; MAX_VALUE_LEN + 1];
        assert!(matches!(
            s.set(&name("a"), &big).unwrap_err(),
            SecretError::TooLarge { .. }
        ));
    }

    #[test]
    fn init_refuses_to_overwrite_and_adopts_a_key_without_recipient() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        let InitOutcome::Created {
            recipient,
            stranded: 0,
        } = s.init(false).unwrap()
        else {
            panic!("not created")
        };
        let key_before = std::fs::read(s.key_path()).unwrap();
        assert!(matches!(
            s.init(false).unwrap_err(),
            SecretError::KeyExists { .. }
        ));
        assert_eq!(std::fs::read(s.key_path()).unwrap(), key_before);
        std::fs::remove_file(s.recipient_path()).unwrap();
        assert!(matches!(
            s.check_key().unwrap_err(),
            SecretError::NoRecipient { .. }
        ));
        assert_eq!(
            s.init(false).unwrap(),
            InitOutcome::Adopted {
                recipient: recipient.clone()
            }
        );
        s.check_key().unwrap();
        s.set(&name("a"), b"value-a").unwrap();
        let InitOutcome::Created {
            recipient: r2,
            stranded: 1,
        } = s.init(true).unwrap()
        else {
            panic!("not created with one stranded secret")
        };
        assert_ne!(r2, recipient);
        s.check_key().unwrap();
        assert!(matches!(
            s.get(&name("a")).unwrap_err(),
            SecretError::WrongKeyForSecret { .. }
        ));
    }

    #[test]
    fn init_refuses_a_store_whose_key_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        s.set(&name("a"), b"value-a").unwrap();
        std::fs::remove_file(s.key_path()).unwrap();
        let err = s.init(false).unwrap_err();
        assert!(
            matches!(err, SecretError::KeyLost { secrets: 1, .. }),
            "{err:?}"
        );
        assert!(!s.key_path().exists());
    }

    #[test]
    fn wrong_key_is_refused_and_changes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        s.set(&name("a"), b"value-a").unwrap();
        let other = SecretStore::at(
            s.dir().to_owned(),
            tmp.path().join("other.key"),
            Redactor::default(),
        );
        key::write(other.key_path(), &Identity::generate()).unwrap();
        let before = snapshot(s.dir());
        let err = other.set(&name("b"), b"value-b").unwrap_err();
        assert!(matches!(err, SecretError::KeyMismatch { .. }), "{err:?}");
        assert!(matches!(
            other.get(&name("a")).unwrap_err(),
            SecretError::KeyMismatch { .. }
        ));
        assert!(matches!(
            other.remove(&name("a")).unwrap_err(),
            SecretError::KeyMismatch { .. }
        ));
        assert!(matches!(
            other.rotate_key().unwrap_err(),
            SecretError::KeyMismatch { .. }
        ));
        assert!(!other.pending_key_path().exists());
        assert_eq!(snapshot(s.dir()), before);
        assert_eq!(err.exit_code(), crate::exit::code::USAGE);
    }

    #[test]
    fn a_file_for_another_key_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        let stranger = Identity::generate().to_public();
        s.write_secret(&stranger, &name("a"), b"value-a").unwrap();
        assert!(matches!(
            s.get(&name("a")).unwrap_err(),
            SecretError::WrongKeyForSecret { .. }
        ));
    }

    #[test]
    fn rotate_key_re_encrypts_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        s.set(&name("a"), b"value-a").unwrap();
        s.set(&name("b"), b"value-b").unwrap();
        let old = key::load(s.key_path()).unwrap();
        let report = s.rotate_key().unwrap();
        assert_eq!(report.secrets, vec![name("a"), name("b")]);
        assert!(!report.resumed);
        assert_ne!(report.old_recipient, report.new_recipient);
        assert!(!s.pending_key_path().exists());
        assert_eq!(s.get(&name("a")).unwrap().expose(), b"value-a");
        assert_eq!(s.get(&name("b")).unwrap().expose(), b"value-b");
        assert!(matches!(
            s.decrypt(&name("a"), &[&old]).unwrap_err(),
            SecretError::WrongKeyForSecret { .. }
        ));
        assert_eq!(
            std::fs::metadata(s.key_path()).unwrap().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn interrupted_rotation_blocks_use_and_resumes() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        s.set(&name("a"), b"value-a").unwrap();
        s.set(&name("b"), b"value-b").unwrap();
        // Simulate a crash after step 2 re-encrypted only `a` and step 3 ran.
        let new = Identity::generate();
        key::write(&s.pending_key_path(), &new).unwrap();
        s.write_secret(&new.to_public(), &name("a"), b"value-a")
            .unwrap();
        s.write_recipient(&new.to_public()).unwrap();
        let err = s.get(&name("b")).unwrap_err();
        assert!(
            matches!(err, SecretError::RotationPending { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("phoenix secret rotate-key"));
        let report = s.rotate_key().unwrap();
        assert!(report.resumed);
        assert_eq!(report.new_recipient, new.to_public().to_string());
        assert_eq!(s.get(&name("a")).unwrap().expose(), b"value-a");
        assert_eq!(s.get(&name("b")).unwrap().expose(), b"value-b");
        assert_eq!(
            key::load(s.key_path()).unwrap().to_public().to_string(),
            new.to_public().to_string()
        );
    }

    #[test]
    fn rotation_refuses_up_front_a_secret_the_key_cannot_open() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        s.set(&name("a"), b"value-a").unwrap();
        let stranger = Identity::generate().to_public();
        s.write_secret(&stranger, &name("b"), b"value-b").unwrap();
        let key_before = std::fs::read(s.key_path()).unwrap();
        let before = snapshot(s.dir());
        let err = s.rotate_key().unwrap_err();
        assert!(
            matches!(err, SecretError::WrongKeyForSecret { .. }),
            "{err:?}"
        );
        assert!(!s.pending_key_path().exists());
        assert_eq!(snapshot(s.dir()), before);
        assert_eq!(std::fs::read(s.key_path()).unwrap(), key_before);
    }

    #[test]
    fn ensure_stores_one_value_for_runs_that_race() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        let generated = std::sync::atomic::AtomicUsize::new(0);
        let values: Vec<(Vec<u8>, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let (s, generated) = (&s, &generated);
                    scope.spawn(move || {
                        let (secret, created) = s
                            .ensure(&name("vllm_api_key"), || {
                                generated.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                Ok(Zeroizing::new(format!("value-from-run-{i}").into_bytes()))
                            })
                            .unwrap();
                        (secret.expose().to_vec(), created)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(generated.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(values.iter().filter(|(_, created)| *created).count(), 1);
        let stored = s.get(&name("vllm_api_key")).unwrap().expose().to_vec();
        assert!(values.iter().all(|(v, _)| *v == stored), "{values:?}");
        // A second ensure returns the stored value without generating.
        let (again, created) = s
            .ensure(&name("vllm_api_key"), || panic!("must not generate"))
            .unwrap();
        assert!(!created);
        assert_eq!(again.expose(), stored.as_slice());
    }

    #[test]
    fn a_change_waits_for_the_store_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        let guard = s.lock(true).unwrap();
        let s2 = s.clone();
        let writer = std::thread::spawn(move || s2.set(&name("a"), b"value-a").map(|_| ()));
        // The writer is blocked on the store's flock: /proc/locks lists a waiting request
        // (`->`) on the directory's inode.
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(s.dir()).unwrap());
        crate::test_support::wait_until("set to wait for the store lock", || {
            std::fs::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .any(|l| {
                    l.contains("->") && l.contains("FLOCK") && l.contains(&format!(":{inode} "))
                })
        });
        assert!(!writer.is_finished(), "set ran while the store was locked");
        assert!(!s.secret_path(&name("a")).exists());
        drop(guard);
        writer.join().unwrap().unwrap();
        assert_eq!(s.get(&name("a")).unwrap().expose(), b"value-a");
    }

    #[test]
    fn key_mode_is_checked_at_every_use() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path());
        s.init(false).unwrap();
        s.set(&name("a"), b"value-a").unwrap();
        std::fs::set_permissions(s.key_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        for err in [
            s.get(&name("a")).unwrap_err(),
            s.list().unwrap_err(),
            s.set(&name("a"), b"x-value").unwrap_err(),
            s.remove(&name("a")).unwrap_err(),
            s.rotate_key().unwrap_err(),
        ] {
            assert!(
                matches!(err, SecretError::KeyMode { mode: 0o644, .. }),
                "{err:?}"
            );
        }
    }
}

//! The write-ahead undo journal (DESIGN.md §1, §10).
//!
//! `$PHOENIX_STATE_DIR/journal.jsonl` is append-only JSON lines, one [`Record`] each, synced
//! to disk before the command it describes runs. A mutating step writes `intent` (with its
//! [`UndoStep`], which is data, never a closure) before it acts and `done` after; an undo
//! writes `undone`. A SIGKILL at any instant therefore leaves a journal from which `phoenix
//! destroy` can remove everything that may exist. A torn last line (a crash mid-write) is
//! tolerated and skipped. Appends from several processes are serialised with `flock` on
//! `journal.lock`.
//!
//! Each run starts with a `run` record naming its host backend, so `destroy` and `status`
//! drive the same backend the run used.
//!
//! **Scopes** (format version 2). Every run serves one container: its `run` record names
//! it (`scope`), and the runs one `phoenix up` (or one `recipe run` with several `--lxc`)
//! starts at once share a `batch` id. A container's journal scope is its runs' records, so
//! rolling back one container of a parallel `up` undoes exactly its steps, and `destroy
//! --lxc` finds the datasets that container's runs created. Records of several runs
//! interleave in the one file (appends are serialised, so each line is whole).
//! Version 1 records (no scope) stay readable: a dataset of such a run counts for every
//! container that run touched, as before. A record of a newer version is refused.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::settings::HostKind;
use crate::types::{AbsPath, DatasetName, StorageId, Vmid};

/// Journal format version, written in every record (2: `run` records carry `scope` and
/// `batch`; version 1 records are read as runs without a scope).
pub const VERSION: u32 = 2;

/// A compensating action, recorded as data before the action it undoes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum UndoStep {
    /// Stop and destroy a phoenix-owned container: one tagged by the run, or what the run's
    /// interrupted create left (a `lock: create` config and maybe a volume, see
    /// [`crate::ownership`]).
    DestroyContainer {
        /// The container.
        vmid: Vmid,
        /// The storage the create allocates the root disk on, where an interrupted create
        /// may leave a volume (absent in journals of older phoenix versions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        storage: Option<StorageId>,
        /// The volumes of `vmid` that were on `storage` before the create: never removed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        volumes_before: Vec<String>,
    },
    /// Stop a container that phoenix started.
    StopContainer {
        /// The container.
        vmid: Vmid,
    },
    /// Put back a container config saved before phoenix edited it.
    RestoreConfig {
        /// The container.
        vmid: Vmid,
        /// The saved copy.
        backup: PathBuf,
    },
    /// Put back config options phoenix changed in place with `pct set` (drift from the
    /// config entry): each option with its value before (`None`: it was not set).
    RestoreOptions {
        /// The container.
        vmid: Vmid,
        /// `(option, old value)`.
        options: Vec<(String, Option<String>)>,
    },
    /// Remove config keys phoenix added (`pct set --delete mp0,dev0`).
    DeleteConfigKeys {
        /// The container.
        vmid: Vmid,
        /// The keys.
        keys: Vec<String>,
    },
    /// Destroy a phoenix-owned ZFS dataset.
    DestroyDataset {
        /// The dataset.
        name: DatasetName,
    },
    /// Give the root directory of a phoenix-owned dataset back to the owner it had before
    /// phoenix gave it to an unprivileged container's mapped root.
    RestoreDatasetOwner {
        /// The container it was given to (which mounts it).
        vmid: Vmid,
        /// The dataset (its mountpoint is looked up when undone).
        name: DatasetName,
        /// The owner before.
        uid: u32,
        /// The group before.
        gid: u32,
    },
    /// Remove a file phoenix wrote inside a container.
    RemoveFile {
        /// The container.
        vmid: Vmid,
        /// The file.
        path: AbsPath,
    },
    /// Remove an empty directory phoenix made inside a container (nothing to do when it
    /// is absent: the step may have been interrupted before it made it).
    RemoveDir {
        /// The container.
        vmid: Vmid,
        /// The directory.
        path: AbsPath,
    },
    /// Give up container `vmid`'s claim on the host unit that creates the NVIDIA device
    /// nodes at boot: the unit is disabled and removed when phoenix wrote it and no other
    /// container on the host passes NVIDIA nodes through.
    ReleaseNodesUnit {
        /// The container that needed the unit.
        vmid: Vmid,
        /// The unit's name.
        unit: String,
    },
    /// Run an argv inside a container (a recipe's own `undo.push`).
    Exec {
        /// The container.
        vmid: Vmid,
        /// The command.
        argv: Vec<String>,
    },
}

impl UndoStep {
    /// The container this step concerns, if any.
    pub fn vmid(&self) -> Option<Vmid> {
        match self {
            Self::DestroyContainer { vmid, .. }
            | Self::StopContainer { vmid }
            | Self::RestoreConfig { vmid, .. }
            | Self::RestoreOptions { vmid, .. }
            | Self::DeleteConfigKeys { vmid, .. }
            | Self::RemoveFile { vmid, .. }
            | Self::RemoveDir { vmid, .. }
            | Self::ReleaseNodesUnit { vmid, .. }
            | Self::Exec { vmid, .. }
            | Self::RestoreDatasetOwner { vmid, .. } => Some(*vmid),
            Self::DestroyDataset { .. } => None,
        }
    }
}

/// What a record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Entry {
    /// A run began.
    Run {
        /// Its host backend.
        host: HostKind,
        /// The emulated host's root, for `--host emulated`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        emu_root: Option<PathBuf>,
        /// The recipe.
        recipe: String,
        /// The process.
        pid: u32,
        /// The container this run serves (its journal scope); absent in version 1 records
        /// and for runs that serve none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Vmid>,
        /// The id shared by the runs one `phoenix up` (or one `recipe run` with several
        /// `--lxc`) started together.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<String>,
    },
    /// A step is about to act; `undo` removes whatever it may create.
    Intent {
        /// The step's stable name (`lxc.create:901`).
        step: String,
        /// How to undo it.
        undo: UndoStep,
    },
    /// The step with sequence number `of` finished.
    Done {
        /// The intent's `seq`.
        of: u64,
    },
    /// The step with sequence number `of` was undone (or found already gone).
    Undone {
        /// The intent's `seq`.
        of: u64,
    },
    /// Something the run reported for the operator (`output.endpoint`, `output.set`);
    /// changes nothing, undoes nothing.
    Output {
        /// What it reported.
        item: crate::report::OutputItem,
    },
    /// A run ended.
    End {
        /// Whether it succeeded.
        ok: bool,
    },
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Format version.
    pub v: u32,
    /// The run that wrote it.
    pub run: String,
    /// Sequence number, unique within the file.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub ts: u64,
    /// What it says.
    #[serde(flatten)]
    pub entry: Entry,
}

/// Journal errors.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// I/O on the journal or its lock.
    #[error("journal {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A record is not valid (not the last line: that one may be torn).
    #[error("journal {path} line {line} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A record of a newer format.
    #[error("journal {path} line {line} has format version {found}; this phoenix reads {VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The version found.
        found: u32,
    },
    /// Another phoenix process holds a container.
    #[error("container {vmid} is locked by phoenix process {holder}; wait for it or stop it")]
    Locked {
        /// The container.
        vmid: Vmid,
        /// The holder's pid (as written in the lock file).
        holder: String,
    },
}

type Result<T> = std::result::Result<T, JournalError>;

/// An intent that has not been undone, as the journal tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outstanding {
    /// The intent's sequence number.
    pub seq: u64,
    /// The run that wrote it.
    pub run: String,
    /// The step's name.
    pub step: String,
    /// How to undo it.
    pub undo: UndoStep,
    /// Whether the step reported `done` (else it may or may not have acted).
    pub done: bool,
}

/// The open journal file and what this process last wrote to it.
#[derive(Debug)]
struct Appender {
    file: File,
    /// `(file length, seq)` after our last append: when the length is unchanged no other
    /// process appended, so the next seq is known without reading the file again.
    last: Option<(u64, u64)>,
}

/// The journal of this state directory, opened for one run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    lock_path: PathBuf,
    run: String,
    /// `None` for `--dry-run`: nothing is written.
    file: Option<Mutex<Appender>>,
    mem: Mutex<Vec<Record>>,
}

impl Journal {
    /// The journal's path in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join("journal.jsonl")
    }

    /// Open (creating the state dir, mode 0700) for run `run`.
    pub fn open(state_dir: &Path, run: &str) -> Result<Self> {
        let io = |source| JournalError::Io {
            path: state_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let path = Self::path_in(state_dir);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| JournalError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(Self {
            lock_path: state_dir.join("journal.lock"),
            path,
            run: run.to_owned(),
            file: Some(Mutex::new(Appender { file, last: None })),
            mem: Mutex::new(Vec::new()),
        })
    }

    /// A journal that writes nothing (`--dry-run`); records are kept in memory.
    pub fn in_memory(run: &str) -> Self {
        Self {
            path: PathBuf::from("(dry run)"),
            lock_path: PathBuf::new(),
            run: run.to_owned(),
            file: None,
            mem: Mutex::new(Vec::new()),
        }
    }

    /// This run's id.
    pub fn run_id(&self) -> &str {
        &self.run
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `entry`, synced to disk before returning; its sequence number.
    pub fn append(&self, entry: Entry) -> Result<u64> {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let Some(file) = &self.file else {
            let mut mem = self.mem.lock().unwrap_or_else(|e| e.into_inner());
            let seq = mem.len() as u64 + 1;
            mem.push(Record {
                v: VERSION,
                run: self.run.clone(),
                seq,
                ts,
                entry,
            });
            return Ok(seq);
        };
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        let mut appender = file.lock().unwrap_or_else(|e| e.into_inner());
        let lock = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(io)?;
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(std::io::Error::from(e)))?;
        // The next seq comes from the file itself, under the lock, so two processes never
        // hand out the same number (read again only when someone else appended).
        let len = appender.file.metadata().map_err(io)?.len();
        let seq = match appender.last {
            Some((l, seq)) if l == len => seq + 1,
            _ => {
                heal_torn_tail(&appender.file).map_err(io)?;
                last_seq(&self.path)? + 1
            }
        };
        let record = Record {
            v: VERSION,
            run: self.run.clone(),
            seq,
            ts,
            entry,
        };
        let mut line = serde_json::to_vec(&record).expect("records always serialise");
        line.push(b'\n');
        appender.file.write_all(&line).map_err(io)?;
        appender.file.sync_data().map_err(io)?;
        appender.last = Some((len + line.len() as u64, seq));
        Ok(seq)
    }

    /// Record an intent for `step`; returns its sequence number for [`Journal::done`].
    pub fn intent(&self, step: &str, undo: UndoStep) -> Result<u64> {
        self.append(Entry::Intent {
            step: step.to_owned(),
            undo,
        })
    }

    /// Record that intent `seq` completed.
    pub fn done(&self, seq: u64) -> Result<()> {
        self.append(Entry::Done { of: seq }).map(drop)
    }

    /// Record that intent `seq` was undone.
    pub fn undone(&self, seq: u64) -> Result<()> {
        self.append(Entry::Undone { of: seq }).map(drop)
    }

    /// Everything this journal holds in memory (dry-run only).
    pub fn memory(&self) -> Vec<Record> {
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A crash mid-write can leave a last line without its newline; drop those bytes (they
/// never formed a record) so the next record starts on a line of its own.
fn heal_torn_tail(file: &File) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.read_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Find the last newline by reading backwards in chunks.
    let mut end = len;
    let mut buf = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.read_at(chunk, start)?;
        if let Some(pos) = chunk.iter().rposition(|&b| b == b'\n') {
            return file.set_len(start + pos as u64 + 1);
        }
        end = start;
    }
    file.set_len(0)
}

impl Entry {
    /// The record that opens a run of `recipe` by this process on the host `settings`
    /// name (with the emulated root, for `--host emulated`), serving `scope`, one of the
    /// runs of `batch`.
    pub fn run_start(
        settings: &crate::settings::Settings,
        recipe: &Path,
        scope: Option<Vmid>,
        batch: Option<String>,
    ) -> Self {
        Self::Run {
            host: settings.host.value,
            emu_root: (settings.host.value == HostKind::Emulated)
                .then(|| settings.emu_root.value.clone()),
            recipe: recipe.display().to_string(),
            pid: std::process::id(),
            scope,
            batch,
        }
    }
}

/// Highest sequence number in the file (0 when empty or missing).
fn last_seq(path: &Path) -> Result<u64> {
    Ok(read(path)?.last().map_or(0, |r| r.seq))
}

/// Read every record; a torn (unparsable) *last* line is skipped.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(JournalError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(|source| JournalError::Io {
            path: path.to_owned(),
            source,
        })?;
    let mut out = Vec::with_capacity(lines.len());
    let n = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) if r.v > VERSION => {
                return Err(JournalError::Version {
                    path: path.to_owned(),
                    line: i + 1,
                    found: r.v,
                });
            }
            Ok(r) => out.push(r),
            Err(_) if i + 1 == n => {
                tracing::warn!(path = %path.display(), line = i + 1, "skipping torn last journal line");
            }
            Err(e) => {
                return Err(JournalError::Corrupt {
                    path: path.to_owned(),
                    line: i + 1,
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// Intents not yet undone, oldest first (undo them in reverse).
pub fn outstanding(records: &[Record]) -> Vec<Outstanding> {
    let mut out: Vec<Outstanding> = Vec::new();
    for r in records {
        match &r.entry {
            Entry::Intent { step, undo } => out.push(Outstanding {
                seq: r.seq,
                run: r.run.clone(),
                step: step.clone(),
                undo: undo.clone(),
                done: false,
            }),
            Entry::Done { of } => {
                let Some(pos) = out.iter().position(|o| o.seq == *of) else {
                    continue;
                };
                out[pos].done = true;
                // A step that a later run completed supersedes its earlier unconfirmed
                // attempts with the same undo: that run found the resource absent before
                // acting (else it would have adopted it and written no intent), so the
                // attempts left nothing the completed step's undo does not cover.
                let (step, undo) = (out[pos].step.clone(), out[pos].undo.clone());
                out.retain(|o| o.seq >= *of || o.done || o.step != step || o.undo != undo);
            }
            Entry::Undone { of } => out.retain(|o| o.seq != *of),
            Entry::Run { .. } | Entry::End { .. } | Entry::Output { .. } => {}
        }
    }
    out
}

/// What run `run` reported with `output.*`, in order.
pub fn outputs_of(records: &[Record], run: &str) -> Vec<crate::report::OutputItem> {
    records
        .iter()
        .filter(|r| r.run == run)
        .filter_map(|r| match &r.entry {
            Entry::Output { item } => Some(item.clone()),
            _ => None,
        })
        .collect()
}

/// The container each run serves, from the `run` records that name one (version 2).
pub fn run_scopes(records: &[Record]) -> std::collections::BTreeMap<String, Vmid> {
    records
        .iter()
        .filter_map(|r| match &r.entry {
            Entry::Run { scope: Some(v), .. } => Some((r.run.clone(), *v)),
            _ => None,
        })
        .collect()
}

/// The host of the run that wrote `run`, from its `run` record.
pub fn run_host(records: &[Record], run: &str) -> Option<(HostKind, Option<PathBuf>)> {
    records.iter().find_map(|r| match &r.entry {
        Entry::Run { host, emu_root, .. } if r.run == run => Some((*host, emu_root.clone())),
        _ => None,
    })
}

/// An exclusive per-container lock, held for the life of the value.
#[derive(Debug)]
pub struct CtLock {
    _flock: nix::fcntl::Flock<File>,
}

impl CtLock {
    /// Take the lock of `vmid` under `state_dir/locks`, failing at once (naming the holder's
    /// pid) when another process holds it.
    pub fn acquire(state_dir: &Path, vmid: Vmid) -> Result<Self> {
        let dir = state_dir.join("locks");
        let io = |source| JournalError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let path = dir.join(format!("{vmid}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(mut flock) => {
                use std::io::Seek;
                flock.set_len(0).map_err(io)?;
                flock.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
                write!(flock, "{}", std::process::id()).map_err(io)?;
                flock.sync_data().map_err(io)?;
                Ok(Self { _flock: flock })
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let holder = std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                Err(JournalError::Locked {
                    vmid,
                    holder: if holder.is_empty() {
                        "unknown".into()
                    } else {
                        holder
                    },
                })
            }
            Err((_, e)) => Err(io(std::io::Error::from(e))),
        }
    }
}

/// A lock on a resource several runs may create at once (a ZFS dataset that is the parent
/// of several containers' datasets), held for the life of the value. Unlike [`CtLock`] it
/// waits for the holder: creating such a resource takes one command, and the waiter then
/// finds it and adopts it instead of failing on "already exists".
#[derive(Debug)]
pub struct ResourceLock {
    _flock: nix::fcntl::Flock<File>,
}

impl ResourceLock {
    /// Wait for the lock of `kind` `name` under `state_dir/locks` (threads of one process
    /// and other processes alike: each call opens the file anew).
    pub fn acquire(state_dir: &Path, kind: &str, name: &str) -> Result<Self> {
        let dir = state_dir.join("locks");
        let io = |source| JournalError::Io {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut file_name = format!("{kind}-");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                file_name.push(b as char);
            } else {
                file_name.push_str(&format!("%{b:02X}"));
            }
        }
        file_name.push_str(".lock");
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(file_name))
            .map_err(io)?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(|flock| Self { _flock: flock })
            .map_err(|(_, e)| io(std::io::Error::from(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmid(n: u64) -> Vmid {
        Vmid::new(n).unwrap()
    }

    #[test]
    fn intent_done_undone_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "r1").unwrap();
        j.append(Entry::Run {
            host: HostKind::Emulated,
            emu_root: Some("/emu".into()),
            recipe: "x.rhai".into(),
            pid: 1,
            scope: Some(vmid(901)),
            batch: None,
        })
        .unwrap();
        let a = j
            .intent(
                "lxc.create:901",
                UndoStep::DestroyContainer {
                    vmid: vmid(901),
                    storage: None,
                    volumes_before: Vec::new(),
                },
            )
            .unwrap();
        j.done(a).unwrap();
        let b = j
            .intent(
                "zfs.dataset:rpool/m",
                UndoStep::DestroyDataset {
                    name: DatasetName::new("rpool/m").unwrap(),
                },
            )
            .unwrap();
        let c = j
            .intent("lxc.start:901", UndoStep::StopContainer { vmid: vmid(901) })
            .unwrap();
        j.undone(c).unwrap();
        let recs = read(&Journal::path_in(dir.path())).unwrap();
        assert_eq!(recs.len(), 6);
        let o = outstanding(&recs);
        assert_eq!(o.len(), 2);
        assert_eq!((o[0].seq, o[0].done), (a, true));
        assert_eq!((o[1].seq, o[1].done), (b, false));
        assert_eq!(
            run_host(&recs, "r1"),
            Some((HostKind::Emulated, Some("/emu".into())))
        );
    }

    #[test]
    fn a_step_completed_later_supersedes_its_unconfirmed_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let create = || UndoStep::DestroyContainer {
            vmid: vmid(901),
            storage: None,
            volumes_before: Vec::new(),
        };
        let failed = Journal::open(dir.path(), "r1").unwrap();
        failed.intent("lxc.create:901", create()).unwrap();
        let other = failed
            .intent("lxc.start:901", UndoStep::StopContainer { vmid: vmid(901) })
            .unwrap();
        let rerun = Journal::open(dir.path(), "r2").unwrap();
        let ok = rerun.intent("lxc.create:901", create()).unwrap();
        let recs = read(&Journal::path_in(dir.path())).unwrap();
        // Not yet confirmed: both attempts are outstanding.
        assert_eq!(outstanding(&recs).len(), 3);
        rerun.done(ok).unwrap();
        let recs = read(&Journal::path_in(dir.path())).unwrap();
        let o = outstanding(&recs);
        let seqs: Vec<(u64, bool)> = o.iter().map(|o| (o.seq, o.done)).collect();
        assert_eq!(seqs, [(other, false), (ok, true)]);
    }

    #[test]
    fn torn_last_line_is_tolerated_but_corruption_elsewhere_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "r1").unwrap();
        j.intent(
            "lxc.create:901",
            UndoStep::DestroyContainer {
                vmid: vmid(901),
                storage: None,
                volumes_before: Vec::new(),
            },
        )
        .unwrap();
        let path = Journal::path_in(dir.path());
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"v":1,"run":"r1","seq":2,"ts":1,"kind":"do"#)
            .unwrap();
        drop(f);
        assert_eq!(read(&path).unwrap().len(), 1);
        // The next append drops the torn bytes and starts a fresh line.
        let j = Journal::open(dir.path(), "r2").unwrap();
        j.done(1).unwrap();
        let recs = read(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].seq, 2);
        // Corruption in the middle is an error.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("garbage\n{text}")).unwrap();
        assert!(matches!(
            read(&path),
            Err(JournalError::Corrupt { line: 1, .. })
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        drop(text);
    }

    #[test]
    fn version_1_records_stay_readable_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_in(dir.path());
        // As phoenix wrote them before scopes existed.
        std::fs::write(
            &path,
            concat!(
                r#"{"v":1,"run":"old","seq":1,"ts":1,"kind":"run","host":"emulated","recipe":"x.rhai","pid":7}"#,
                "\n",
                r#"{"v":1,"run":"old","seq":2,"ts":2,"kind":"intent","step":"lxc.create:901","undo":{"op":"destroy_container","vmid":901}}"#,
                "\n",
            ),
        )
        .unwrap();
        let recs = read(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert!(matches!(
            &recs[0].entry,
            Entry::Run {
                scope: None,
                batch: None,
                ..
            }
        ));
        assert!(run_scopes(&recs).is_empty());
        assert_eq!(outstanding(&recs)[0].step, "lxc.create:901");
        // A new run appends version 2 records after them.
        let j = Journal::open(dir.path(), "new").unwrap();
        j.append(Entry::Run {
            host: HostKind::Emulated,
            emu_root: None,
            recipe: "y.rhai".into(),
            pid: 8,
            scope: Some(vmid(902)),
            batch: Some("b".into()),
        })
        .unwrap();
        let recs = read(&path).unwrap();
        assert_eq!((recs[2].v, recs[2].seq), (2, 3));
        assert_eq!(
            run_scopes(&recs).into_iter().collect::<Vec<_>>(),
            [("new".to_owned(), vmid(902))]
        );
        // A record of a format this phoenix does not know is refused, naming the line.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(r#"{"v":3,"run":"future","seq":4,"ts":4,"kind":"end","ok":true}"#);
        text.push('\n');
        std::fs::write(&path, text).unwrap();
        let err = read(&path).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::Version {
                    line: 4,
                    found: 3,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn file_mode_is_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), "r").unwrap();
        j.done(1).unwrap();
        let mode = std::fs::metadata(j.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn ct_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = CtLock::acquire(dir.path(), vmid(901)).unwrap();
        let err = CtLock::acquire(dir.path(), vmid(901)).unwrap_err();
        assert!(
            err.to_string().contains(&std::process::id().to_string()),
            "{err}"
        );
        // Another container is free.
        CtLock::acquire(dir.path(), vmid(902)).unwrap();
    }

    #[test]
    fn a_resource_lock_makes_the_second_taker_wait() {
        let dir = tempfile::tempdir().unwrap();
        let held = ResourceLock::acquire(dir.path(), "dataset", "rpool/phoenix").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = dir.path().to_owned();
        let waiter = std::thread::spawn(move || {
            let lock = ResourceLock::acquire(&path, "dataset", "rpool/phoenix").unwrap();
            tx.send(()).unwrap();
            lock
        });
        // The waiter blocks in flock: /proc/locks lists a waiting request (`->`) on the
        // lock file's inode.
        let file = dir.path().join("locks/dataset-rpool%2Fphoenix.lock");
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
        crate::test_support::wait_until("the second taker to wait for the lock", || {
            std::fs::read_to_string("/proc/locks")
                .unwrap()
                .lines()
                .any(|l| {
                    l.contains("->") && l.contains("FLOCK") && l.contains(&format!(":{inode} "))
                })
        });
        assert!(rx.try_recv().is_err(), "the lock was taken twice");
        // Another resource is free meanwhile.
        ResourceLock::acquire(dir.path(), "dataset", "rpool/other").unwrap();
        drop(held);
        rx.recv().unwrap();
        drop(waiter.join().unwrap());
    }

    #[test]
    fn dry_run_journal_writes_nothing() {
        let j = Journal::in_memory("r");
        j.intent("x", UndoStep::StopContainer { vmid: vmid(100) })
            .unwrap();
        assert_eq!(j.memory().len(), 1);
    }
}

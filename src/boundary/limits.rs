//! Limits (DESIGN.md §12 "limits"): what a script may spend, and what phoenix reads.
//!
//! **Script CPU time** ([`ScriptMeter`]): the CPU time the recipe's own code uses, between
//! primitive calls, is budgeted per run (`PHOENIX_SCRIPT_CPU`, default 10 s). Rhai's
//! operation limit counts operations, not their cost: a loop over string operations on
//! long strings ran for a minute inside it. The meter reads the script thread's CPU clock
//! every [`CPU_CHECK_EVERY`] operations; time spent in host commands and HTTP requests
//! (the primitives' waits, [`outside_script`]) does not count.
//!
//! **Script memory** ([`ScriptMeter`] with a [`MemoryGroup`]): every allocation made on
//! the script's thread while the recipe runs is attributed to the run (a
//! `tracking-allocator` group; the process's global allocator), and freed memory is
//! subtracted, so values, closures and the values they capture all count
//! (`PHOENIX_SCRIPT_MEMORY`, default 512 MiB). Rhai's own size limits count strings,
//! arrays and maps but not what a closure captures: closures holding large strings
//! reached 7.9 GB.
//!
//! **Input files** (config, recipe, stdlib modules, secret key, settings file) are read
//! through [`read_input`]: opened non-blocking (a FIFO with no writer does not hang the
//! open), checked to be a regular file *before* a byte is read (`/dev/zero`, a FIFO, a
//! directory or a socket is refused, not read), and refused when larger than the cap of
//! their kind ([`Input`]), so a 100 MB recipe fails at once instead of taking gigabytes.

use std::cell::Cell;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use tracking_allocator::{
    AllocationGroupId, AllocationGroupToken, AllocationGuard, AllocationRegistry, AllocationTracker,
};

/// The process's allocator: the system's, wrapped so that allocations can be attributed
/// to a running script ([`MemoryGroup`]). Until a script runs, tracking is off and the
/// wrapper only adds a word per allocation.
#[global_allocator]
static ALLOCATOR: tracking_allocator::Allocator<std::alloc::System> =
    tracking_allocator::Allocator::system();

/// How many scripts can be metered at once (one slot per allocation group; a later group
/// whose id falls on a taken slot takes it over).
const SLOTS: usize = 64;

/// Live bytes per allocation group, by `id % SLOTS`.
struct Slot {
    id: AtomicUsize,
    bytes: AtomicI64,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        id: AtomicUsize::new(0),
        bytes: AtomicI64::new(0),
    }
}; SLOTS];

/// Adds and subtracts the bytes of metered groups; never allocates.
struct Tracker;

impl Tracker {
    fn add(group: &AllocationGroupId, bytes: i64) {
        let id = group.as_usize().get();
        if id == AllocationGroupId::ROOT.as_usize().get() {
            return;
        }
        let slot = &TABLE[id % SLOTS];
        if slot.id.load(Ordering::Relaxed) == id {
            slot.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

impl AllocationTracker for Tracker {
    fn allocated(&self, _addr: usize, _size: usize, wrapped: usize, group: AllocationGroupId) {
        Self::add(&group, i64::try_from(wrapped).unwrap_or(i64::MAX));
    }

    fn deallocated(
        &self,
        _addr: usize,
        _size: usize,
        wrapped: usize,
        source: AllocationGroupId,
        _current: AllocationGroupId,
    ) {
        Self::add(&source, -i64::try_from(wrapped).unwrap_or(i64::MAX));
    }
}

/// The allocations of one script run: enter it on the script's thread for the run.
pub struct MemoryGroup {
    token: AllocationGroupToken,
    id: usize,
}

impl std::fmt::Debug for MemoryGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryGroup").field("id", &self.id).finish()
    }
}

impl MemoryGroup {
    /// A new group with no bytes yet (`None` when groups are exhausted).
    pub fn new() -> Option<Self> {
        static INSTALLED: OnceLock<bool> = OnceLock::new();
        let installed = *INSTALLED.get_or_init(|| {
            let ok = AllocationRegistry::set_global_tracker(Tracker).is_ok();
            if ok {
                AllocationRegistry::enable_tracking();
            }
            ok
        });
        if !installed {
            return None;
        }
        let token = AllocationGroupToken::register()?;
        let id = token.id().as_usize().get();
        let slot = &TABLE[id % SLOTS];
        slot.bytes.store(0, Ordering::SeqCst);
        slot.id.store(id, Ordering::SeqCst);
        Some(Self { token, id })
    }

    /// Attribute this thread's allocations to the group until the guard drops.
    pub fn enter(&mut self) -> AllocationGuard<'_> {
        self.token.enter()
    }

    /// A handle that reads the group's live bytes from anywhere.
    pub fn gauge(&self) -> MemoryGauge {
        MemoryGauge { id: self.id }
    }
}

impl Drop for MemoryGroup {
    fn drop(&mut self) {
        let _ = TABLE[self.id % SLOTS].id.compare_exchange(
            self.id,
            0,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }
}

/// Reads the live bytes of a [`MemoryGroup`].
#[derive(Debug, Clone, Copy)]
pub struct MemoryGauge {
    id: usize,
}

impl MemoryGauge {
    /// Bytes allocated in the group and not freed yet (0 once its slot was taken over).
    pub fn live(&self) -> u64 {
        let slot = &TABLE[self.id % SLOTS];
        if slot.id.load(Ordering::Relaxed) != self.id {
            return 0;
        }
        u64::try_from(slot.bytes.load(Ordering::Relaxed)).unwrap_or(0)
    }
}

/// How often (in script operations) the CPU clock is read.
pub const CPU_CHECK_EVERY: u64 = 64;

thread_local! {
    /// CPU time this thread spent outside the script (host commands, HTTP), in total.
    static OUTSIDE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    /// Nesting of [`outside_script`] sections, and where the outermost began.
    static OUTSIDE_SINCE: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// The calling thread's CPU time.
pub fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Run `f` as primitive work: its CPU time on this thread does not count against a
/// script's budget (host commands, HTTP requests).
pub fn outside_script<T>(f: impl FnOnce() -> T) -> T {
    let outer = OUTSIDE_SINCE.with(|s| {
        if s.get().is_none() {
            s.set(Some(thread_cpu()));
            true
        } else {
            false
        }
    });
    let value = f();
    if outer {
        let since = OUTSIDE_SINCE.with(|s| s.take()).unwrap_or_default();
        let spent = thread_cpu().saturating_sub(since);
        OUTSIDE.with(|o| o.set(o.get() + spent));
    }
    value
}

/// A sandbox limit a script went past.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// The script's own CPU time.
    #[error(
        "sandbox limit: the recipe's own code used more than {} of CPU time between primitive calls (setting script_cpu, PHOENIX_SCRIPT_CPU)",
        crate::types::DurationSpec(*budget)
    )]
    Cpu {
        /// The budget.
        budget: Duration,
    },
    /// The script's memory.
    #[error(
        "sandbox limit: the recipe holds more than {} MiB of memory (values, closures and what they capture; setting script_memory, PHOENIX_SCRIPT_MEMORY)",
        cap >> 20
    )]
    Memory {
        /// The cap in bytes.
        cap: u64,
    },
}

/// The CPU and memory meter of one script run (`Send + Sync`: read from the engine's
/// progress callback).
#[derive(Debug)]
pub struct ScriptMeter {
    cpu_budget: Duration,
    memory_cap: u64,
    gauge: OnceLock<MemoryGauge>,
    /// Thread CPU time and time outside the script when the first check ran.
    start: OnceLock<(Duration, Duration)>,
}

impl ScriptMeter {
    /// A meter with these limits; it starts at its first [`ScriptMeter::check`].
    pub fn new(cpu_budget: Duration, memory_cap: u64) -> Self {
        Self {
            cpu_budget,
            memory_cap,
            gauge: OnceLock::new(),
            start: OnceLock::new(),
        }
    }

    /// Count memory through `gauge` (the run's [`MemoryGroup`]).
    pub fn watch_memory(&self, gauge: MemoryGauge) {
        let _ = self.gauge.set(gauge);
    }

    /// Whether a limit is past, checked from the script's thread: memory at every call,
    /// CPU every [`CPU_CHECK_EVERY`] operations.
    pub fn check(&self, ops: u64) -> Result<(), LimitExceeded> {
        if let Some(g) = self.gauge.get() {
            if g.live() > self.memory_cap {
                return Err(LimitExceeded::Memory {
                    cap: self.memory_cap,
                });
            }
        }
        let outside = || OUTSIDE.with(Cell::get);
        let (cpu0, out0) = *self.start.get_or_init(|| (thread_cpu(), outside()));
        if ops % CPU_CHECK_EVERY == 0 {
            let used = thread_cpu()
                .saturating_sub(cpu0)
                .saturating_sub(outside().saturating_sub(out0));
            if used > self.cpu_budget {
                return Err(LimitExceeded::Cpu {
                    budget: self.cpu_budget,
                });
            }
        }
        Ok(())
    }
}

/// The kinds of input file and their caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The container config (JSON).
    Config,
    /// A recipe or stdlib module (Rhai).
    Recipe,
    /// The secret key (an age identity).
    Key,
    /// The settings override file (TOML).
    Settings,
}

impl Input {
    /// The most bytes a file of this kind may hold.
    pub fn cap(self) -> u64 {
        match self {
            // A config entry is ≈ 1 KiB: thousands of containers fit.
            Self::Config => 4 << 20,
            // The shipped recipe is ≈ 2 KiB; Rhai positions stop at line 65535.
            Self::Recipe => 1 << 20,
            // An identity line is 74 bytes; comments around it are allowed.
            Self::Key => 64 << 10,
            Self::Settings => 1 << 20,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Recipe => "recipe",
            Self::Key => "secret key",
            Self::Settings => "settings",
        }
    }
}

/// The most lines a recipe may have: Rhai's positions are 16-bit, so an error past line
/// 65535 would point at the wrong line.
pub const MAX_RECIPE_LINES: usize = 65_535;

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

/// Read the `kind` file at `path`: regular files only, at most [`Input::cap`] bytes.
/// Errors are `io::Error`s whose text says what is wrong (callers wrap them with the path).
pub fn read_input(path: &Path, kind: Input) -> std::io::Result<Vec<u8>> {
    // `/dev/null` is the usual way to say "no such file" (`PHOENIX_SETTINGS=/dev/null`):
    // it reads as empty and never blocks.
    if path == Path::new("/dev/null") {
        return Ok(Vec::new());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the {} file is {}: phoenix reads only regular files",
                kind.what(),
                kind_of(meta.file_type())
            ),
        ));
    }
    let cap = kind.cap();
    let too_large = |size: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the {} file is {size} bytes; at most {cap} bytes are accepted",
                kind.what()
            ),
        )
    };
    if meta.len() > cap {
        return Err(too_large(meta.len()));
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow while it is read: never more than the cap.
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

/// [`read_input`] as UTF-8 text; a recipe also within [`MAX_RECIPE_LINES`].
pub fn read_input_text(path: &Path, kind: Input) -> std::io::Result<String> {
    let text = String::from_utf8(read_input(path, kind)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the {} file is not UTF-8 text", kind.what()),
        )
    })?;
    if kind == Input::Recipe {
        let lines = text.lines().count();
        if lines > MAX_RECIPE_LINES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the recipe file has {lines} lines; at most {MAX_RECIPE_LINES} are accepted"
                ),
            ));
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = tmp.path().join("ok.rhai");
        std::fs::write(&ok, "let x = 1;\n").unwrap();
        assert_eq!(read_input_text(&ok, Input::Recipe).unwrap(), "let x = 1;\n");

        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Opening a FIFO without a writer would block without O_NONBLOCK.
        let e = read_input(&fifo, Input::Recipe).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the recipe file is a FIFO: phoenix reads only regular files"
        );

        let e = read_input(Path::new("/dev/zero"), Input::Config).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the config file is a character device: phoenix reads only regular files"
        );
        let e = read_input(tmp.path(), Input::Key).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the secret key file is a directory: phoenix reads only regular files"
        );

        let big = tmp.path().join("big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(100 << 20).unwrap();
        let e = read_input(&big, Input::Recipe).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the recipe file is 104857600 bytes; at most 1048576 bytes are accepted"
        );

        let many = tmp.path().join("many.rhai");
        std::fs::write(&many, "\n".repeat(70_000)).unwrap();
        let e = read_input_text(&many, Input::Recipe).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the recipe file has 70000 lines; at most 65535 are accepted"
        );
    }
}

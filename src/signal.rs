//! SIGINT/SIGTERM handling (DESIGN.md §6).
//!
//! The handler only sets a flag (the one piece of global mutable state phoenix has); the
//! process runner polls it, kills and reaps the running child, and the recipe engine stops
//! before the next primitive. A second signal of either kind exits at once with status
//! 128 + N: the journal is still consistent because each record is written and synced
//! whole before the command it describes starts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

/// One flag per handled signal, set by the handler.
static FLAGS: OnceLock<[(i32, Arc<AtomicBool>); 2]> = OnceLock::new();

/// Install the handlers. Safe to call more than once.
pub fn install() -> std::io::Result<()> {
    let mut result = Ok(());
    FLAGS.get_or_init(|| {
        let flags = [
            (SIGINT, Arc::new(AtomicBool::new(false))),
            (SIGTERM, Arc::new(AtomicBool::new(false))),
        ];
        for (sig, _) in &flags {
            // Any second signal (INT or TERM) while one is pending exits immediately.
            for (_, pending) in &flags {
                if let Err(e) = signal_hook::flag::register_conditional_shutdown(
                    *sig,
                    128 + *sig,
                    Arc::clone(pending),
                ) {
                    result = Err(e);
                }
            }
        }
        for (sig, flag) in &flags {
            if let Err(e) = signal_hook::flag::register(*sig, Arc::clone(flag)) {
                result = Err(e);
            }
        }
        flags
    });
    result
}

/// The signal received, if any (SIGINT wins when both arrived).
pub fn received() -> Option<i32> {
    FLAGS.get().and_then(|flags| {
        flags
            .iter()
            .find(|(_, f)| f.load(Ordering::SeqCst))
            .map(|(sig, _)| *sig)
    })
}

//! Waiting on an event in a test: the one place a test sleeps.
//!
//! A test never sleeps to let something happen and never asserts how long something took
//! (timings belong to `benches/main.rs`). It states the event it waits for and polls it
//! here, with a deadline far beyond anything a passing run needs, so a loaded machine (six
//! builds on two cores) slows a test down without failing it, and a broken product still
//! fails it (after [`PATIENCE`]) with the event named.
//!
//! The library's unit tests and the emulator's unit tests include this same file (`#[path]`),
//! so there is one helper for the whole suite.

#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

/// How long a test waits for an event before it fails. Generous on purpose: reaching it
/// means the event did not happen, not that the machine was slow.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// How often the event is polled.
const POLL: Duration = Duration::from_millis(10);

/// Poll `ready` until it returns `Some(value)` and return the value; panic naming `what`
/// when [`PATIENCE`] has passed without it.
pub fn wait_for<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "waited {PATIENCE:?} for {what}: it never happened"
        );
        std::thread::sleep(POLL);
    }
}

/// Poll `ready` until it returns `true`; panic naming `what` after [`PATIENCE`].
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    wait_for(what, || ready().then_some(()));
}

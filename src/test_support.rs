//! Helpers shared by the library's unit tests: the suite's one wait helper
//! (tests/integration/wait.rs, included), [`refused`], which checks that a refusal
//! names its rule, and [`attach_fails_first`], an `lxc-attach` that fails to start.

#[path = "../tests/integration/wait.rs"]
mod wait;

pub(crate) use wait::wait_until;

/// Assert that `result` is a refusal whose message contains `rule` (the rule that refused,
/// not merely some error).
#[track_caller]
pub(crate) fn refused<T, E: std::fmt::Display>(result: Result<T, E>, rule: &str) {
    match result {
        Ok(_) => panic!("accepted; expected a refusal saying {rule:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(rule), "{text}\n(expected the rule {rule:?})");
        }
    }
}

/// What lxc 5.0.2's `lxc-attach` prints and how it ends when the kernel refuses to seal
/// its memfd copy (`src/lxc/rexec.c` `lxc_rexec`; the `free()` abort is its clean-up).
pub(crate) const ATTACH_EBUSY: &str =
    "Device or resource busy - Failed to rexec as memfd\nfree(): invalid pointer\n";

/// A runner whose commands containing `word` (in any argument) fail `fails` times as
/// `lxc-attach` does when it cannot start ([`ATTACH_EBUSY`], exit 134), then print
/// `stdout`; every other command prints `other(argv)` and exits 0.
pub(crate) fn attach_fails_first(
    word: &'static str,
    fails: usize,
    stdout: &'static str,
    other: impl Fn(&[String]) -> &'static str + Send + Sync + 'static,
) -> std::sync::Arc<crate::exec::RecordingRunner> {
    let seen = std::sync::atomic::AtomicUsize::new(0);
    std::sync::Arc::new(crate::exec::RecordingRunner::new(move |cmd| {
        let argv = cmd.argv();
        if !argv.iter().any(|a| a == word) {
            return crate::exec::CommandOutput {
                code: 0,
                stdout: other(&argv).as_bytes().to_vec(),
                stderr: Vec::new(),
            };
        }
        if seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fails {
            crate::exec::CommandOutput {
                code: 134,
                stdout: Vec::new(),
                stderr: ATTACH_EBUSY.as_bytes().to_vec(),
            }
        } else {
            crate::exec::CommandOutput {
                code: 0,
                stdout: stdout.as_bytes().to_vec(),
                stderr: Vec::new(),
            }
        }
    }))
}

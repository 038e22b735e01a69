//! The one exit-code table (DESIGN.md §6).
//!
//! It lives apart from [`crate::error`] so that the modules whose errors `error` gathers
//! (`script`, `secret`) can name their exit codes without importing `error` back: no
//! import cycle between `error` and the modules below it.

/// Exit codes of phoenix (DESIGN.md §6).
pub mod code {
    /// Success.
    pub const OK: u8 = 0;
    /// The run failed (after the rollback, when one was asked for).
    pub const RUN_FAILED: u8 = 1;
    /// Usage, config, validation or secret-key error: nothing was touched.
    pub const USAGE: u8 = 2;
    /// A rollback or destroy left something behind.
    pub const INCOMPLETE: u8 = 3;
    /// Interrupted by SIGINT.
    pub const SIGINT: u8 = 130;
    /// Interrupted by SIGTERM.
    pub const SIGTERM: u8 = 143;
}

/// 128 + N for the signals phoenix handles.
pub fn signal_code(sig: i32) -> u8 {
    match sig {
        2 => code::SIGINT,
        15 => code::SIGTERM,
        n => (128 + n).clamp(0, 255) as u8,
    }
}

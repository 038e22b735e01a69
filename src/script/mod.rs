//! The sandboxed Rhai recipe runtime: engine construction, running a recipe, lint and the
//! generated API reference.

use std::path::PathBuf;

/// Why a recipe could not run to success.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The recipe file could not be read.
    #[error("cannot read recipe {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The recipe does not compile.
    #[error("{path}:{line}:{column}: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Rhai's message.
        message: String,
    },
}

impl RecipeError {
    /// The exit code (DESIGN.md §6).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Read { .. } | Self::Compile { .. } => crate::error::code::USAGE,
        }
    }
}

//! The primitives recipes call, one file per family (DESIGN.md §2).
//!
//! Each family has plain typed Rust functions (testable without Rhai) and one `register`
//! function, the only code in the family that touches Rhai. The recipe-facing spelling is
//! `lxc.create(...)`: every family is a handle type (e.g. [`lxc::LxcApi`]) with registered
//! methods that take the handle by value; the engine's variable resolver hands out the
//! handles by name, so they work at top level, inside `fn`s and inside stdlib modules
//! (DESIGN.md §10). `Dynamic`/`Map` are turned into typed specs at this boundary and go no
//! deeper.
//!
//! Errors cross the script boundary typed: [`script_error`] wraps an [`ApiError`] in a
//! runtime error, so Rhai records the call site and the runner downcasts it back.

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Position};

use crate::runtime::Runtime;

pub mod config;
pub mod gpu;
pub mod http;
pub mod log;
pub mod lxc;
pub mod options;
pub mod output;
pub mod secret;
pub mod support;
pub mod undo;
pub mod vllm;
pub mod zfs;

/// Every error a primitive can raise.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A host operation failed.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// The journal could not be written.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// The models parent dataset is not set and cannot be derived.
    #[error(transparent)]
    Datasets(#[from] crate::datasets::DatasetsError),
    /// A secret could not be read.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A value from the recipe is not acceptable.
    #[error("{call}: {message}")]
    Spec {
        /// The primitive (`lxc.create`).
        call: &'static str,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A validated-type check failed.
    #[error("{call}: {source}")]
    Type {
        /// The primitive.
        call: &'static str,
        /// The refused value.
        #[source]
        source: crate::types::TypeError,
    },
    /// The boundary refused the call (DESIGN.md §12).
    #[error(transparent)]
    Refused(#[from] crate::boundary::Refusal),
    /// A signal asked phoenix to stop.
    #[error("interrupted by a signal")]
    Interrupted,
}

impl From<crate::boundary::BoundaryError> for ApiError {
    fn from(e: crate::boundary::BoundaryError) -> Self {
        match e {
            crate::boundary::BoundaryError::Refused(r) => Self::Refused(r),
            crate::boundary::BoundaryError::Host(h) => Self::Host(h),
        }
    }
}

impl ApiError {
    /// A spec error for `call`.
    pub fn spec(call: &'static str, message: impl Into<String>) -> Self {
        Self::Spec {
            call,
            message: message.into(),
        }
    }
}

/// An [`ApiError`] as carried inside a Rhai runtime error (Rhai values must be `Clone`).
pub type SharedApiError = Arc<ApiError>;

/// Wrap a primitive's error so Rhai fills in the call site and the runner can downcast it.
pub fn script_error(err: impl Into<ApiError>) -> Box<EvalAltResult> {
    let shared: SharedApiError = Arc::new(err.into());
    EvalAltResult::ErrorRuntime(Dynamic::from(shared), Position::NONE).into()
}

/// Register every family's types and methods.
pub fn register_all(engine: &mut Engine) {
    config::register(engine);
    log::register(engine);
    lxc::register(engine);
    gpu::register(engine);
    zfs::register(engine);
    undo::register(engine);
    secret::register(engine);
    http::register(engine);
    vllm::register(engine);
    output::register(engine);
}

/// The API handles by the names recipes use (`lxc`, `gpu`, …), bound to `rt`.
pub fn handles(rt: &Arc<Runtime>) -> Vec<(&'static str, Dynamic)> {
    vec![
        ("config", Dynamic::from(config::ConfigApi::new(rt))),
        ("log", Dynamic::from(log::LogApi::new(rt))),
        ("lxc", Dynamic::from(lxc::LxcApi::new(rt))),
        ("gpu", Dynamic::from(gpu::GpuApi::new(rt))),
        ("zfs", Dynamic::from(zfs::ZfsApi::new(rt))),
        ("undo", Dynamic::from(undo::UndoApi::new(rt))),
        ("secret", Dynamic::from(secret::SecretApi::new(rt))),
        ("http", Dynamic::from(http::HttpApi::new(rt))),
        ("vllm", Dynamic::from(vllm::VllmApi::new(rt))),
        ("output", Dynamic::from(output::OutputApi::new(rt))),
    ]
}

/// The names of every API handle (for lint and docs, which have no runtime).
pub const HANDLE_NAMES: &[&str] = &[
    "config", "log", "lxc", "gpu", "zfs", "undo", "secret", "http", "vllm", "output",
];

/// Each API handle's name with its Rust type, so lint and docs (which have no runtime) can
/// tell which registered methods belong to which handle. Keep in step with [`handles`].
pub fn handle_types() -> Vec<(&'static str, std::any::TypeId)> {
    use std::any::TypeId;
    vec![
        ("config", TypeId::of::<config::ConfigApi>()),
        ("log", TypeId::of::<log::LogApi>()),
        ("lxc", TypeId::of::<lxc::LxcApi>()),
        ("gpu", TypeId::of::<gpu::GpuApi>()),
        ("zfs", TypeId::of::<zfs::ZfsApi>()),
        ("undo", TypeId::of::<undo::UndoApi>()),
        ("secret", TypeId::of::<secret::SecretApi>()),
        ("http", TypeId::of::<http::HttpApi>()),
        ("vllm", TypeId::of::<vllm::VllmApi>()),
        ("output", TypeId::of::<output::OutputApi>()),
    ]
}

/// Define a family's handle type: a cheap clone of the run's [`Runtime`].
macro_rules! handle {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            rt: std::sync::Arc<crate::runtime::Runtime>,
        }

        impl $name {
            /// The handle bound to `rt`.
            pub fn new(rt: &std::sync::Arc<crate::runtime::Runtime>) -> Self {
                Self { rt: std::sync::Arc::clone(rt) }
            }

            /// The run this handle belongs to.
            pub fn runtime(&self) -> &crate::runtime::Runtime {
                &self.rt
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(stringify!($name))
            }
        }
    };
}
pub(crate) use handle;

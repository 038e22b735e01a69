//! The `log` family of recipe primitives.

use rhai::Engine;

crate::api::handle!(
    /// The `log` object recipes call methods on.
    LogApi
);

/// Register the `log` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<LogApi>("LogApi");
}

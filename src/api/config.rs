//! The `config` family of recipe primitives.

use rhai::Engine;

crate::api::handle!(
    /// The `config` object recipes call methods on.
    ConfigApi
);

/// Register the `config` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ConfigApi>("ConfigApi");
}

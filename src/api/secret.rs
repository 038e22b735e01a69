//! The `secret` family of recipe primitives.

use rhai::Engine;

crate::api::handle!(
    /// The `secret` object recipes call methods on.
    SecretApi
);

/// Register the `secret` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<SecretApi>("SecretApi");
}

//! The `lxc` family of recipe primitives.

use rhai::Engine;

crate::api::handle!(
    /// The `lxc` object recipes call methods on.
    LxcApi
);

/// Register the `lxc` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<LxcApi>("LxcApi");
}

//! The `zfs` family of recipe primitives.

use rhai::Engine;

crate::api::handle!(
    /// The `zfs` object recipes call methods on.
    ZfsApi
);

/// Register the `zfs` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ZfsApi>("ZfsApi");
}

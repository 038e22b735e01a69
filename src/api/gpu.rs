//! The `gpu` family of recipe primitives.

use rhai::Engine;

crate::api::handle!(
    /// The `gpu` object recipes call methods on.
    GpuApi
);

/// Register the `gpu` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<GpuApi>("GpuApi");
}

//! The `undo` family of recipe primitives.

use rhai::Engine;

crate::api::handle!(
    /// The `undo` object recipes call methods on.
    UndoApi
);

/// Register the `undo` methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<UndoApi>("UndoApi");
}

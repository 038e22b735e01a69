//! The one integration-test binary (STYLE.md §5): one module per area.

mod golden;
mod real_lxc;
mod secret;
mod support;

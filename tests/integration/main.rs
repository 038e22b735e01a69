//! The one integration-test binary (STYLE.md §5): one module per area.

mod emulator;
mod faults;
mod golden;
mod lint;
mod real_lxc;
mod recipe;
mod secret;
mod support;

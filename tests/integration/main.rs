//! The one integration-test binary (STYLE.md §5): one module per area.

mod acceptance;
mod boundary;
mod config;
mod cookbook;
mod doctor;
mod emulator;
mod emulator_gpu;
mod emulator_inner;
mod faults;
mod golden;
mod golden_file;
mod gpu_host;
#[path = "../../benches/parts/hostcmds.rs"]
#[allow(dead_code)]
mod hostcmds;
mod lint;
mod operator;
mod paths;
mod plan;
mod primitives;
mod progress;
mod real_lxc;
mod recipe;
mod recipe_test;
mod secret;
mod site;
mod support;
mod template;
mod up;
mod wait;

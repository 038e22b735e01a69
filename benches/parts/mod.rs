//! The parts of `phoenix-bench` (a directory without `main.rs`, so cargo does not take it
//! for a bench target of its own).

pub mod hostcmds;
pub mod micro;
pub mod site;

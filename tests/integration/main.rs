//! The one integration test binary: one `mod` per file.

mod real_lxc;

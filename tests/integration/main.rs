//! The one integration test binary: one `mod` per file.

mod secret;

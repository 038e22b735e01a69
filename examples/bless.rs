//! `cargo run --example bless`: accept the pending golden files the last `cargo test` left.
//!
//! A golden test never writes its golden (tests/integration/golden_file.rs): when the
//! output differs it fails and saves what it got under `<target>/golden-pending/`. Read the
//! diff the test printed; if the change is intended, this command copies every pending
//! file over its golden (creating new ones) and removes it. Then commit the goldens.

#[path = "../tests/integration/golden_file.rs"]
mod golden_file;

use std::process::ExitCode;

fn main() -> ExitCode {
    match golden_file::accept_pending() {
        Ok(accepted) if accepted.is_empty() => {
            println!(
                "no pending golden files in {} (run `cargo test` first; a passing test leaves none)",
                golden_file::pending_dir().display()
            );
            ExitCode::SUCCESS
        }
        Ok(accepted) => {
            for rel in &accepted {
                println!("blessed {}", rel.display());
            }
            println!("review with `git diff`, then commit");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "bless: {e} (pending files in {})",
                golden_file::pending_dir().display()
            );
            ExitCode::FAILURE
        }
    }
}

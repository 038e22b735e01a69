//! Golden files: compared by the tests, written only by the bless command.
//!
//! A test compares what the product produced with a checked-in file and never writes that
//! file. When they differ (or the file is missing) the test fails and leaves the output it
//! got as a *pending* file under `<target>/golden-pending/`, mirroring the golden's path in
//! the repository. After reading the diff, a person accepts the pending files with the
//! separate command
//!
//! ```sh
//! cargo run --example bless
//! ```
//!
//! which copies each pending file over its golden (creating missing ones) and removes it.
//! A test that passes removes a stale pending file of its own golden.
//!
//! `examples/bless.rs` includes this file (`#[path]`), so both agree on where pending
//! files live.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

/// The command that accepts pending golden files.
pub const BLESS: &str = "cargo run --example bless";

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/golden-pending`: `<target>` is three levels above the running executable
/// (`<target>/<profile>/deps/<test>` for a test, `<target>/<profile>/examples/bless` for the
/// bless command), so it follows `CARGO_TARGET_DIR` and `--release` alike.
pub fn pending_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the path of the running executable");
    exe.ancestors()
        .nth(3)
        .expect("the executable lies under <target>/<profile>/<dir>/")
        .join("golden-pending")
}

/// Compare `actual` with the golden file `rel` (a path relative to the repository, such as
/// `tests/golden/vllm-901.service`). On a difference or a missing golden, save `actual` as a
/// pending file and panic with the diff and the bless command; on a match, remove a stale
/// pending file.
#[track_caller]
pub fn check(rel: &str, actual: &str) {
    let golden = repo().join(rel);
    let pending = pending_dir().join(rel);
    let want = match std::fs::read_to_string(&golden) {
        Ok(want) => want,
        Err(e) => {
            save_pending(&pending, actual);
            panic!(
                "golden {rel} cannot be read ({e}); this run's output is in {}: \
                 check it, then run `{BLESS}` to create the golden",
                pending.display()
            );
        }
    };
    if actual == want {
        if pending.exists() {
            std::fs::remove_file(&pending).expect("remove a stale pending golden");
        }
        return;
    }
    save_pending(&pending, actual);
    panic!(
        "output differs from golden {rel} (this run's output is in {}; \
         if the change is intended, run `{BLESS}`)\n{}",
        pending.display(),
        diff(&want, actual)
    );
}

fn save_pending(pending: &Path, actual: &str) {
    std::fs::create_dir_all(pending.parent().expect("a pending file has a directory"))
        .expect("create the pending golden directory");
    std::fs::write(pending, actual).expect("write the pending golden");
}

/// A line diff good enough to read in a test failure: the lines only in `want` (`-`) and
/// only in `got` (`+`), each with its line number, in order.
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    // Longest common subsequence table, small inputs only (goldens are a few KiB).
    let mut lcs = vec![vec![0usize; g.len() + 1]; w.len() + 1];
    for i in (0..w.len()).rev() {
        for j in (0..g.len()).rev() {
            lcs[i][j] = if w[i] == g[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < w.len() || j < g.len() {
        if i < w.len() && j < g.len() && w[i] == g[j] {
            i += 1;
            j += 1;
        } else if i < w.len() && (j == g.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("-{:>4} {}\n", i + 1, w[i]));
            i += 1;
        } else {
            out.push_str(&format!("+{:>4} {}\n", j + 1, g[j]));
            j += 1;
        }
    }
    if out.is_empty() {
        // Same lines, different line endings or final newline.
        out = format!("(line endings differ: want {want:?}, got {got:?})\n");
    }
    out
}

/// Accept every pending file: copy it over its golden and remove it. Returns the goldens
/// written, relative to the repository.
pub fn accept_pending() -> std::io::Result<Vec<PathBuf>> {
    let root = pending_dir();
    let mut accepted = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(&root)
                .expect("a pending file lies under the pending directory")
                .to_owned();
            let golden = repo().join(&rel);
            if let Some(parent) = golden.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(&path, &golden)?;
            std::fs::remove_file(&path)?;
            accepted.push(rel);
        }
    }
    accepted.sort();
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::diff;

    #[test]
    fn diff_names_removed_and_added_lines() {
        assert_eq!(
            diff("a\nb\nc\n", "a\nB\nc\nd\n"),
            "-   2 b\n+   2 B\n+   4 d\n"
        );
        assert_eq!(
            diff("a\n", "a"),
            "(line endings differ: want \"a\\n\", got \"a\")\n"
        );
    }
}

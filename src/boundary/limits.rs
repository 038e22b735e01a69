//! Limits on what phoenix reads from its inputs (DESIGN.md §12 "limits").
//!
//! **Input files** (config, recipe, stdlib modules, secret key, settings file) are read
//! through [`read_input`]: opened non-blocking (a FIFO with no writer does not hang the
//! open), checked to be a regular file *before* a byte is read (`/dev/zero`, a FIFO, a
//! directory or a socket is refused, not read), and refused when larger than the cap of
//! their kind ([`Input`]), so a 100 MB recipe fails at once instead of taking gigabytes.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The kinds of input file and their caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The container config (JSON).
    Config,
    /// A recipe or stdlib module (Rhai).
    Recipe,
    /// The secret key (an age identity).
    Key,
    /// The settings override file (TOML).
    Settings,
}

impl Input {
    /// The most bytes a file of this kind may hold.
    pub fn cap(self) -> u64 {
        match self {
            // A config entry is ≈ 1 KiB: thousands of containers fit.
            Self::Config => 4 << 20,
            // The shipped recipe is ≈ 2 KiB; Rhai positions stop at line 65535.
            Self::Recipe => 1 << 20,
            // An identity line is 74 bytes; comments around it are allowed.
            Self::Key => 64 << 10,
            Self::Settings => 1 << 20,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Recipe => "recipe",
            Self::Key => "secret key",
            Self::Settings => "settings",
        }
    }
}

/// The most lines a recipe may have: Rhai's positions are 16-bit, so an error past line
/// 65535 would point at the wrong line.
pub const MAX_RECIPE_LINES: usize = 65_535;

fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

/// Read the `kind` file at `path`: regular files only, at most [`Input::cap`] bytes.
/// Errors are `io::Error`s whose text says what is wrong (callers wrap them with the path).
pub fn read_input(path: &Path, kind: Input) -> std::io::Result<Vec<u8>> {
    // `/dev/null` is the usual way to say "no such file" (`PHOENIX_SETTINGS=/dev/null`):
    // it reads as empty and never blocks.
    if path == Path::new("/dev/null") {
        return Ok(Vec::new());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the {} file is {}: phoenix reads only regular files",
                kind.what(),
                kind_of(meta.file_type())
            ),
        ));
    }
    let cap = kind.cap();
    let too_large = |size: u64| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "the {} file is {size} bytes; at most {cap} bytes are accepted",
                kind.what()
            ),
        )
    };
    if meta.len() > cap {
        return Err(too_large(meta.len()));
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow while it is read: never more than the cap.
    file.take(cap + 1).read_to_end(&mut out)?;
    if out.len() as u64 > cap {
        return Err(too_large(out.len() as u64));
    }
    Ok(out)
}

/// [`read_input`] as UTF-8 text; a recipe also within [`MAX_RECIPE_LINES`].
pub fn read_input_text(path: &Path, kind: Input) -> std::io::Result<String> {
    let text = String::from_utf8(read_input(path, kind)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the {} file is not UTF-8 text", kind.what()),
        )
    })?;
    if kind == Input::Recipe {
        let lines = text.lines().count();
        if lines > MAX_RECIPE_LINES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the recipe file has {lines} lines; at most {MAX_RECIPE_LINES} are accepted"
                ),
            ));
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = tmp.path().join("ok.rhai");
        std::fs::write(&ok, "let x = 1;\n").unwrap();
        assert_eq!(read_input_text(&ok, Input::Recipe).unwrap(), "let x = 1;\n");

        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Opening a FIFO without a writer would block without O_NONBLOCK.
        let e = read_input(&fifo, Input::Recipe).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the recipe file is a FIFO: phoenix reads only regular files"
        );

        let e = read_input(Path::new("/dev/zero"), Input::Config).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the config file is a character device: phoenix reads only regular files"
        );
        let e = read_input(tmp.path(), Input::Key).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the secret key file is a directory: phoenix reads only regular files"
        );

        let big = tmp.path().join("big");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(100 << 20).unwrap();
        let e = read_input(&big, Input::Recipe).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the recipe file is 104857600 bytes; at most 1048576 bytes are accepted"
        );

        let many = tmp.path().join("many.rhai");
        std::fs::write(&many, "\n".repeat(70_000)).unwrap();
        let e = read_input_text(&many, Input::Recipe).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the recipe file has 70000 lines; at most 65535 are accepted"
        );
    }
}

//! The recipe standard library: the only modules a recipe can `import`.
//!
//! Modules live in `stdlib/*.rhai` and are embedded in the binary at build time
//! ([`EMBEDDED`], one `include_str!` per file; a test fails when the list and the directory
//! differ). `PHOENIX_STDLIB` (`settings.stdlib`) may point at another directory instead; it
//! is then read *by name only*: `import "steps"` reads `<dir>/steps.rhai` and nothing else.
//!
//! Decision (DESIGN.md is silent): a module name is `[a-z][a-z0-9_]*`, at most 64
//! characters. That rules out `/`, `.`, `..`, absolute paths and anything that could name a
//! file outside the library before a path is ever built; a file that is a symlink pointing
//! out of the directory is refused as well.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The modules of `stdlib/`, embedded at build time: `(name, source)`.
pub const EMBEDDED: &[(&str, &str)] = &[
    ("docker", include_str!("../../stdlib/docker.rhai")),
    ("nvidia", include_str!("../../stdlib/nvidia.rhai")),
    ("portainer", include_str!("../../stdlib/portainer.rhai")),
    ("steps", include_str!("../../stdlib/steps.rhai")),
    ("systemd", include_str!("../../stdlib/systemd.rhai")),
];

/// Why an import name does not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StdlibError {
    /// The name is not a plain module name (a path, `..`, an absolute path).
    #[error(
        "import \"{name}\" is not a stdlib module name: imports resolve only to modules of stdlib/ by plain name (e.g. \"steps\")"
    )]
    BadName {
        /// The name as written in the recipe.
        name: String,
    },
    /// No module of that name exists.
    #[error("import \"{name}\": no such stdlib module (available: {available})")]
    Unknown {
        /// The name as written in the recipe.
        name: String,
        /// The modules that exist, comma-separated.
        available: String,
    },
    /// The module file exists but cannot be read.
    #[error("import \"{name}\": cannot read {path}: {message}")]
    Read {
        /// The name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The I/O error, as text (this error is cloned into Rhai's resolver cache).
        message: String,
    },
}

impl StdlibError {
    /// The import name as written.
    pub fn name(&self) -> &str {
        match self {
            Self::BadName { name } | Self::Unknown { name, .. } | Self::Read { name, .. } => name,
        }
    }
}

/// Where stdlib modules come from.
#[derive(Debug, Clone)]
pub enum Stdlib {
    /// The modules embedded in the binary.
    Embedded,
    /// `PHOENIX_STDLIB`: modules read by name from this directory.
    Dir(PathBuf),
}

impl Stdlib {
    /// The library the settings ask for.
    pub fn from_settings(settings: &crate::settings::Settings) -> Self {
        match &settings.stdlib.value {
            Some(dir) => Self::Dir(dir.clone()),
            None => Self::Embedded,
        }
    }

    /// Whether `name` is a plain module name.
    pub fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        name.len() <= 64
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }

    /// The source of module `name`.
    pub fn source(&self, name: &str) -> Result<String, StdlibError> {
        if !Self::valid_name(name) {
            return Err(StdlibError::BadName {
                name: name.to_owned(),
            });
        }
        let unknown = || StdlibError::Unknown {
            name: name.to_owned(),
            available: self.names().join(", "),
        };
        match self {
            Self::Embedded => EMBEDDED
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| (*s).to_owned())
                .ok_or_else(unknown),
            Self::Dir(dir) => {
                let path = dir.join(format!("{name}.rhai"));
                if !path.exists() {
                    return Err(unknown());
                }
                let read_err = |message: String| StdlibError::Read {
                    name: name.to_owned(),
                    path: path.clone(),
                    message,
                };
                let real = path.canonicalize().map_err(|e| read_err(e.to_string()))?;
                let real_dir = dir.canonicalize().map_err(|e| read_err(e.to_string()))?;
                if !real.starts_with(&real_dir) {
                    return Err(read_err(format!(
                        "it resolves to {} outside the library",
                        real.display()
                    )));
                }
                crate::boundary::limits::read_input_text(
                    &real,
                    crate::boundary::limits::Input::Recipe,
                )
                .map_err(|e| read_err(e.to_string()))
            }
        }
    }

    /// The names of every module, sorted.
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Embedded => EMBEDDED.iter().map(|(n, _)| (*n).to_owned()).collect(),
            Self::Dir(dir) => module_names_in(dir),
        }
    }

    /// Every module as `(name, source)`; unreadable files are skipped.
    pub fn all(&self) -> BTreeMap<String, String> {
        self.names()
            .into_iter()
            .filter_map(|n| self.source(&n).ok().map(|s| (n, s)))
            .collect()
    }
}

/// The valid module names of `*.rhai` files in `dir`, sorted.
pub fn module_names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".rhai")?;
            Stdlib::valid_name(stem).then(|| stem.to_owned())
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_list_matches_the_stdlib_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib");
        let on_disk = module_names_in(&dir);
        let embedded: Vec<String> = EMBEDDED.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(
            embedded, on_disk,
            "add every stdlib/*.rhai to script::stdlib::EMBEDDED (sorted)"
        );
        for (name, source) in EMBEDDED {
            let file = std::fs::read_to_string(dir.join(format!("{name}.rhai"))).unwrap();
            assert_eq!(&file, source);
        }
    }

    #[test]
    fn names_that_are_paths_are_refused() {
        for bad in [
            "../x",
            "../../x",
            "/etc/passwd",
            "steps.rhai",
            "a/b",
            "",
            "Steps",
            ".",
        ] {
            assert_eq!(
                Stdlib::Embedded.source(bad),
                Err(StdlibError::BadName { name: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_name_lists_the_available_modules() {
        let err = Stdlib::Embedded.source("nosuch").unwrap_err();
        assert_eq!(
            err.to_string(),
            "import \"nosuch\": no such stdlib module (available: docker, nvidia, portainer, steps, systemd)"
        );
    }

    #[test]
    fn directory_library_is_read_by_name_only() {
        let tmp = tempfile::tempdir().unwrap();
        let lib = tmp.path().join("lib");
        std::fs::create_dir(&lib).unwrap();
        std::fs::write(lib.join("mine.rhai"), "fn f() { 1 }").unwrap();
        std::fs::write(tmp.path().join("outside.rhai"), "fn g() { 2 }").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside.rhai"), lib.join("escape.rhai"))
            .unwrap();
        let s = Stdlib::Dir(lib.clone());
        assert_eq!(s.source("mine").unwrap(), "fn f() { 1 }");
        assert!(matches!(
            s.source("outside"),
            Err(StdlibError::Unknown { .. })
        ));
        assert!(matches!(s.source("escape"), Err(StdlibError::Read { .. })));
        assert_eq!(s.names(), ["escape", "mine"]);
    }
}

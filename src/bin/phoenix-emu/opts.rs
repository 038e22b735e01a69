//! Command-line parsing as PVE's CLIs do it (`PVE::JSONSchema::get_options`, built on
//! Getopt::Long with `prefix_pattern=(--|-)`):
//! - `-opt` and `--opt` alike, `--opt value` and `--opt=value`;
//! - boolean options take an optional value (`--force`, `--force 1`); others need one and
//!   take the next argument whatever it looks like;
//! - options and positional arguments may be mixed; `--` ends option parsing;
//! - an unknown option is refused with Getopt's `Unknown option: x` and PVE's
//!   `400 unable to parse option`, then the command's usage line.
//!
//! Decision: Getopt::Long also accepts unique abbreviations (`--host` for `--hostname`);
//! the emulator refuses them, so phoenix never relies on that leniency.

/// How an option takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A mandatory value.
    Value,
    /// A boolean: the value is optional (`1` when absent).
    Bool,
}

/// The parsed command line.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// `(name, value)` in order (names without dashes).
    pub opts: Vec<(String, String)>,
    /// Positional arguments, including everything after `--`.
    pub args: Vec<String>,
    /// Whether a `--` was seen, and where in `args` the part after it starts.
    pub dashdash_at: Option<usize>,
}

impl Parsed {
    /// The last value of option `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.opts
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why parsing failed (printed as PVE prints it).
#[derive(Debug, PartialEq)]
pub enum OptError {
    /// An option the command does not have.
    Unknown(String),
    /// An option that needs a value got none.
    MissingValue(String),
}

impl OptError {
    /// The text Getopt::Long and PVE print.
    pub fn message(&self) -> String {
        match self {
            Self::Unknown(o) => format!("Unknown option: {o}\n400 unable to parse option\n"),
            Self::MissingValue(o) => {
                format!("Option {o} requires an argument\n400 unable to parse option\n")
            }
        }
    }
}

/// Parse `args` with `kind_of` telling each known option's kind (`None`: unknown).
pub fn parse(args: &[String], kind_of: impl Fn(&str) -> Option<Kind>) -> Result<Parsed, OptError> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            p.dashdash_at = Some(p.args.len());
            p.args.extend(args[i..].iter().cloned());
            break;
        }
        let body = if let Some(b) = a.strip_prefix("--") {
            b
        } else if let Some(b) = a.strip_prefix('-') {
            b
        } else {
            p.args.push(a.clone());
            continue;
        };
        if body.is_empty() {
            p.args.push(a.clone());
            continue;
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let kind = kind_of(name).ok_or_else(|| OptError::Unknown(name.to_owned()))?;
        let value = match (inline, kind) {
            (Some(v), _) => v,
            (None, Kind::Value) => {
                let v = args
                    .get(i)
                    .ok_or_else(|| OptError::MissingValue(name.to_owned()))?;
                i += 1;
                v.clone()
            }
            (None, Kind::Bool) => match args.get(i) {
                Some(v) if !v.starts_with('-') => {
                    i += 1;
                    v.clone()
                }
                _ => "1".to_owned(),
            },
        };
        p.opts.push((name.to_owned(), value));
    }
    Ok(p)
}

/// PVE's boolean parsing (`1|on|yes|true`, `0|off|no|false`).
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    fn kinds(n: &str) -> Option<Kind> {
        match n {
            "hostname" => Some(Kind::Value),
            "force" => Some(Kind::Bool),
            _ => None,
        }
    }

    #[test]
    fn single_and_double_dash_and_inline_values() {
        let p = parse(&s(&["901", "-hostname", "a", "--force", "x"]), kinds).unwrap();
        assert_eq!(p.get("hostname"), Some("a"));
        assert_eq!(p.get("force"), Some("x"));
        assert_eq!(p.args, ["901"]);
        let p = parse(&s(&["--hostname=-b", "--force", "--hostname", "-x"]), kinds).unwrap();
        assert_eq!(p.get("force"), Some("1"));
        assert_eq!(p.get("hostname"), Some("-x"));
    }

    #[test]
    fn dashdash_ends_options() {
        let p = parse(&s(&["901", "--", "ls", "--force"]), kinds).unwrap();
        assert_eq!(p.args, ["901", "ls", "--force"]);
        assert_eq!(p.dashdash_at, Some(1));
    }

    #[test]
    fn unknown_and_abbreviated_options_are_refused() {
        assert_eq!(
            parse(&s(&["--bogus", "1"]), kinds),
            Err(OptError::Unknown("bogus".into()))
        );
        assert_eq!(
            parse(&s(&["--host", "a"]), kinds),
            Err(OptError::Unknown("host".into()))
        );
        assert_eq!(
            parse(&s(&["--hostname"]), kinds),
            Err(OptError::MissingValue("hostname".into()))
        );
    }
}

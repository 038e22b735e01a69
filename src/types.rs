//! Validated newtypes for every value that reaches a command line or a config line.
//!
//! A value from a config file or a recipe becomes a command argument only through one of
//! these types, and each type refuses what could change the meaning of the command:
//! option injection (a leading `-`), shell metacharacters (defence in depth: there is no
//! shell), the separators of PVE's composite values (`,` `=` `;`), newlines and NUL (a
//! newline in `<vmid>.conf` could add an `lxc.hook.*` line that runs as root), unicode bidi
//! and other control characters, and absurd lengths.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {shown}: {reason}")]
pub struct TypeError {
    /// The kind of value (`vmid`, `model id`, …).
    pub kind: &'static str,
    /// The value as shown to a human (escaped, truncated).
    pub shown: String,
    /// What is wrong with it.
    pub reason: String,
}

impl TypeError {
    fn new(kind: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            shown: show(value),
            reason: reason.into(),
        }
    }
}

/// `value` escaped (control characters visible) and cut to 60 characters, quoted.
pub fn show(value: &str) -> String {
    let mut s: String = value
        .chars()
        .take(60)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().count() > 60 {
        s.push('…');
    }
    format!("\"{s}\"")
}

/// Characters never allowed in any validated value: control characters (C0, DEL, C1) and
/// the unicode format characters used for bidi/invisible tricks.
fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks shared by every text type: not empty, not too long, no control or bidi
/// characters, no leading `-`.
fn base_checks(kind: &'static str, value: &str, max: usize) -> Result<(), TypeError> {
    if value.is_empty() {
        return Err(TypeError::new(kind, value, "must not be empty"));
    }
    if value.len() > max {
        return Err(TypeError::new(
            kind,
            value,
            format!("is {} bytes long; at most {max} allowed", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|&c| is_forbidden_char(c)) {
        return Err(TypeError::new(
            kind,
            value,
            format!(
                "contains the control or format character U+{:04X}",
                c as u32
            ),
        ));
    }
    if value.starts_with('-') {
        return Err(TypeError::new(
            kind,
            value,
            "must not start with `-` (it would be read as an option)",
        ));
    }
    Ok(())
}

fn only(
    kind: &'static str,
    value: &str,
    ok: impl Fn(char) -> bool,
    what: &str,
) -> Result<(), TypeError> {
    match value.chars().find(|&c| !ok(c)) {
        Some(c) => Err(TypeError::new(
            kind,
            value,
            format!("contains {:?}; allowed: {what}", c),
        )),
        None => Ok(()),
    }
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, TypeError> {
                let value = value.into();
                $check(&value)?;
                Ok(Self(value))
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = TypeError;
            fn try_from(value: String) -> Result<Self, TypeError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl FromStr for $name {
            type Err = TypeError;
            fn from_str(s: &str) -> Result<Self, TypeError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<std::ffi::OsStr> for $name {
            fn as_ref(&self) -> &std::ffi::OsStr {
                self.0.as_ref()
            }
        }
    };
}

/// A Proxmox container id, 100…999999999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Vmid(u32);

impl Vmid {
    /// Smallest id PVE accepts.
    pub const MIN: u64 = 100;
    /// Largest id PVE accepts.
    pub const MAX: u64 = 999_999_999;

    /// Validate a numeric id.
    pub fn new(id: u64) -> Result<Self, TypeError> {
        if (Self::MIN..=Self::MAX).contains(&id) {
            Ok(Self(id as u32))
        } else {
            Err(TypeError::new(
                "vmid",
                &id.to_string(),
                format!("must be between {} and {}", Self::MIN, Self::MAX),
            ))
        }
    }

    /// The id as a number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u64> for Vmid {
    type Error = TypeError;
    fn try_from(v: u64) -> Result<Self, TypeError> {
        Self::new(v)
    }
}

impl From<Vmid> for u64 {
    fn from(v: Vmid) -> u64 {
        u64::from(v.0)
    }
}

impl FromStr for Vmid {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, TypeError> {
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || s.len() > 10
            || s.starts_with('0')
        {
            return Err(TypeError::new(
                "vmid",
                s,
                "must be a decimal number without leading zeros",
            ));
        }
        Self::new(
            s.parse()
                .map_err(|_| TypeError::new("vmid", s, "is not a number"))?,
        )
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn check_hostname(v: &str) -> Result<(), TypeError> {
    const K: &str = "hostname";
    base_checks(K, v, 253)?;
    for label in v.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(TypeError::new(
                K,
                v,
                "each dot-separated label must be 1…63 characters",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(TypeError::new(
                K,
                v,
                "a label must not start or end with `-`",
            ));
        }
        only(
            K,
            label,
            |c| c.is_ascii_alphanumeric() || c == '-',
            "ASCII letters, digits, `-` and `.`",
        )?;
    }
    Ok(())
}
string_newtype!(
    /// A DNS hostname (RFC 1123 labels), used as the container's `--hostname`.
    Hostname,
    check_hostname
);

fn check_model(v: &str) -> Result<(), TypeError> {
    const K: &str = "model id";
    base_checks(K, v, 512)?;
    // `|` is allowed (seed T-101): it can never reach a shell. The other shell
    // metacharacters, whitespace and quotes are refused (seed T-104).
    only(
        K,
        v,
        |c| c.is_ascii_alphanumeric() || "-_./|+@:".contains(c),
        "ASCII letters, digits and - _ . / | + @ :",
    )?;
    if v.starts_with('/') {
        if v.split('/').any(|s| s == "..") {
            return Err(TypeError::new(
                K,
                v,
                "an absolute path must not contain `..`",
            ));
        }
        return Ok(());
    }
    let parts: Vec<&str> = v.split('/').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(TypeError::new(
            K,
            v,
            "must be a Hugging Face repo id `org/name` or an absolute path",
        ));
    }
    if parts
        .iter()
        .any(|p| p.starts_with('-') || p.starts_with('.'))
    {
        return Err(TypeError::new(
            K,
            v,
            "org and name must not start with `-` or `.`",
        ));
    }
    Ok(())
}
string_newtype!(
    /// A model: a Hugging Face repo id `org/name` or an absolute path inside the container.
    ModelId,
    check_model
);

fn check_bridge(v: &str) -> Result<(), TypeError> {
    const K: &str = "bridge name";
    base_checks(K, v, 15)?;
    only(
        K,
        v,
        |c| c.is_ascii_alphanumeric() || "_.".contains(c),
        "ASCII letters, digits, `_` and `.` (at most 15)",
    )?;
    if !v.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(TypeError::new(K, v, "must start with a letter"));
    }
    Ok(())
}
string_newtype!(
    /// A Linux bridge name such as `vmbr0` (at most 15 characters).
    BridgeName,
    check_bridge
);

fn check_iface(v: &str) -> Result<(), TypeError> {
    const K: &str = "interface name";
    base_checks(K, v, 15)?;
    only(
        K,
        v,
        |c| c.is_ascii_alphanumeric() || "_.-".contains(c),
        "ASCII letters, digits, `_`, `.` and `-` (at most 15)",
    )?;
    if !v.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(TypeError::new(K, v, "must start with a letter"));
    }
    Ok(())
}
string_newtype!(
    /// A network interface name inside the container, such as `eth0`.
    IfaceName,
    check_iface
);

fn check_mac(v: &str) -> Result<(), TypeError> {
    const K: &str = "MAC address";
    base_checks(K, v, 17)?;
    let ok = v.len() == 17
        && v.split(':').count() == 6
        && v.split(':')
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(TypeError::new(
            K,
            v,
            "must be six hex pairs separated by `:`",
        ));
    }
    let first = u8::from_str_radix(&v[..2], 16).unwrap_or(1);
    if first & 1 == 1 {
        return Err(TypeError::new(
            K,
            v,
            "is a multicast address (lowest bit of the first octet set)",
        ));
    }
    Ok(())
}
string_newtype!(
    /// A unicast MAC address `aa:bb:cc:dd:ee:ff`.
    Mac,
    check_mac
);

fn check_storage(v: &str) -> Result<(), TypeError> {
    const K: &str = "storage id";
    base_checks(K, v, 64)?;
    only(
        K,
        v,
        |c| c.is_ascii_alphanumeric() || "-_.".contains(c),
        "ASCII letters, digits, `-`, `_` and `.`",
    )?;
    if !v.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(TypeError::new(K, v, "must start with a letter"));
    }
    Ok(())
}
string_newtype!(
    /// A PVE storage id such as `local-zfs` or `local-lvm`.
    StorageId,
    check_storage
);

fn check_package(v: &str) -> Result<(), TypeError> {
    const K: &str = "package name";
    base_checks(K, v, 128)?;
    // Debian Policy §5.6.1: lower-case letters, digits, `+`, `-` and `.`, at least two
    // characters, starting with a letter or digit. An optional `=version` pins a version
    // (apt-get's `pkg=version`; Debian Policy §5.6.12 version characters).
    let (name, version) = match v.split_once('=') {
        Some((n, ver)) => (n, Some(ver)),
        None => (v, None),
    };
    if name.len() < 2 || !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(TypeError::new(
            K,
            v,
            "a package name has at least two characters and starts with a lower-case letter or digit",
        ));
    }
    only(
        K,
        name,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c),
        "lower-case ASCII letters, digits, `+`, `-` and `.`",
    )?;
    if let Some(ver) = version {
        if !ver.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(TypeError::new(K, v, "a pinned version starts with a digit"));
        }
        only(
            K,
            ver,
            |c| c.is_ascii_alphanumeric() || ".+~:-".contains(c),
            "in a version: ASCII letters, digits, `.`, `+`, `~`, `:` and `-`",
        )?;
    }
    Ok(())
}
string_newtype!(
    /// A Debian package to install, `name` or `name=version` (`docker.io`, `curl=8.5.0-2`).
    PackageName,
    check_package
);

fn check_template(v: &str) -> Result<(), TypeError> {
    const K: &str = "template";
    base_checks(K, v, 1024)?;
    only(
        K,
        v,
        |c| c.is_ascii_alphanumeric() || "-_./:+@~".contains(c),
        "ASCII letters, digits and - _ . / : + @ ~",
    )?;
    if v.starts_with('/') {
        if v.split('/').any(|s| s == "..") {
            return Err(TypeError::new(K, v, "must not contain `..`"));
        }
        return Ok(());
    }
    match v.split_once(':') {
        Some((storage, volume)) if !volume.is_empty() => {
            check_storage(storage)
                .map_err(|e| TypeError::new(K, v, format!("storage part: {}", e.reason)))?;
            if volume.split('/').any(|s| s == "..") || volume.starts_with('/') {
                return Err(TypeError::new(
                    K,
                    v,
                    "volume part must be relative without `..`",
                ));
            }
            Ok(())
        }
        _ => Err(TypeError::new(
            K,
            v,
            "must be a PVE volume id `storage:vztmpl/file.tar.zst` or an absolute path",
        )),
    }
}
string_newtype!(
    /// A container template: a PVE volume id (`local:vztmpl/…`) or an absolute path.
    Template,
    check_template
);

fn check_dataset(v: &str) -> Result<(), TypeError> {
    const K: &str = "dataset name";
    base_checks(K, v, 255)?;
    only(
        K,
        v,
        |c| c.is_ascii_alphanumeric() || "-_.:/".contains(c),
        "ASCII letters, digits and - _ . : /",
    )?;
    if v.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(TypeError::new(
            K,
            v,
            "components must be non-empty and not `.` or `..`",
        ));
    }
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(TypeError::new(
            K,
            v,
            "must start with a letter or digit (the pool name)",
        ));
    }
    Ok(())
}
string_newtype!(
    /// A ZFS dataset name `pool/path/to/dataset`.
    DatasetName,
    check_dataset
);

/// The longest models parent: a child named after a container (a hostname label, at most
/// 63 characters, plus `/`) still fits ZFS's 255-character dataset names.
pub const MODELS_PARENT_MAX: usize = 255 - 64;

fn check_models_parent(v: &str) -> Result<(), TypeError> {
    const K: &str = "models dataset";
    check_dataset(v).map_err(|e| TypeError { kind: K, ..e })?;
    if v.len() > MODELS_PARENT_MAX {
        return Err(TypeError::new(
            K,
            v,
            format!(
                "is {} bytes long; at most {MODELS_PARENT_MAX} allowed (its children must fit ZFS's 255)",
                v.len()
            ),
        ));
    }
    // ZFS pool names begin with a letter (zpool(8) "Pool names").
    if !v.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(TypeError::new(
            K,
            v,
            "must start with the pool's name, which begins with a letter",
        ));
    }
    // A pool's root holds the host's own datasets (PVE's `rpool/data`, `rpool/ROOT`):
    // phoenix keeps its datasets in one of their own.
    if !v.contains('/') {
        return Err(TypeError::new(
            K,
            v,
            "must be a dataset inside a pool (`pool/phoenix/models`), not the pool itself",
        ));
    }
    Ok(())
}
string_newtype!(
    /// The parent dataset of phoenix's model datasets (`rpool/phoenix/models`): a dataset
    /// name below a pool's root, with room for children. Where it comes from: the config's
    /// `models_dataset` or the setting of the same name (DESIGN.md §11: pools are the host's).
    ModelsParent,
    check_models_parent
);

impl ModelsParent {
    /// The parent as a dataset name.
    pub fn dataset(&self) -> DatasetName {
        DatasetName(self.0.clone())
    }

    /// Whether `name` is this parent or lies below it (`rpool/phoenix/models/x`; never
    /// `rpool/phoenix/models-x`).
    pub fn holds(&self, name: &DatasetName) -> bool {
        let n = name.as_str();
        n == self.0
            || n.strip_prefix(self.0.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

fn check_ct_path(v: &str) -> Result<(), TypeError> {
    const K: &str = "container path";
    base_checks(K, v, 4096)?;
    if !v.starts_with('/') {
        return Err(TypeError::new(K, v, "must be absolute"));
    }
    if v.split('/').any(|c| c == "..") {
        return Err(TypeError::new(K, v, "must not contain `..`"));
    }
    only(
        K,
        v,
        |c| !",;=\"'\\ ".contains(c),
        "no `,` `;` `=` quotes, backslash or spaces",
    )?;
    Ok(())
}
string_newtype!(
    /// An absolute path (inside a container, or on the host for bind mounts), safe inside
    /// PVE composite values (`mp0: /host,mp=/ct`).
    AbsPath,
    check_ct_path
);

fn check_secret_name(v: &str) -> Result<(), TypeError> {
    const K: &str = "secret name";
    base_checks(K, v, 64)?;
    only(
        K,
        v,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-',
        "lowercase ASCII letters, digits, `_` and `-`",
    )?;
    if !v.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(TypeError::new(K, v, "must start with a lowercase letter"));
    }
    Ok(())
}
string_newtype!(
    /// The name of a stored secret, such as `hf_token` (also its file name in the store).
    SecretName,
    check_secret_name
);

fn check_prop_value(v: &str) -> Result<(), TypeError> {
    const K: &str = "property value";
    base_checks(K, v, 1024)?;
    only(
        K,
        v,
        |c| !",;=\n\r\0".contains(c),
        "no `,` `;` `=` newline or NUL",
    )?;
    Ok(())
}
string_newtype!(
    /// One value inside a composite option or config line (`k=v,k=v`): no separators.
    PropValue,
    check_prop_value
);

fn check_prop_key(v: &str) -> Result<(), TypeError> {
    const K: &str = "property name";
    base_checks(K, v, 256)?;
    only(
        K,
        v,
        |c| c.is_ascii_alphanumeric() || "_-.:".contains(c),
        "ASCII letters, digits and _ - . :",
    )
}
string_newtype!(
    /// A property key such as a ZFS property (`compression`, `phoenix:owner`).
    PropKey,
    check_prop_key
);

/// How GPUs are chosen: all of them, or a list of indices, UUIDs or PCI bus ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GpuSelector {
    /// Every GPU the host has.
    All,
    /// These GPUs, each an index, a UUID (`GPU-…`) or a PCI bus id.
    List(Vec<GpuRef>),
}

/// One GPU named by index, UUID or PCI bus id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GpuRef {
    /// `nvidia-smi` index.
    Index(u32),
    /// `GPU-xxxxxxxx-…`.
    Uuid(String),
    /// `0000:00:06.0` or `00000000:00:06.0`.
    Pci(String),
}

impl fmt::Display for GpuRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Index(i) => write!(f, "{i}"),
            Self::Uuid(u) | Self::Pci(u) => f.write_str(u),
        }
    }
}

impl FromStr for GpuRef {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, TypeError> {
        const K: &str = "GPU selector";
        base_checks(K, s, 64)?;
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Self::Index)
                .map_err(|_| TypeError::new(K, s, "index out of range"));
        }
        if let Some(rest) = s.strip_prefix("GPU-").or_else(|| s.strip_prefix("MIG-")) {
            only(
                K,
                rest,
                |c| c.is_ascii_hexdigit() || c == '-',
                "hex digits and `-` after `GPU-`",
            )?;
            return Ok(Self::Uuid(s.to_owned()));
        }
        let pci = regex_lite_pci(s);
        if pci {
            return Ok(Self::Pci(s.to_ascii_lowercase()));
        }
        Err(TypeError::new(
            K,
            s,
            "must be an index (`0`), a UUID (`GPU-…`) or a PCI bus id (`0000:00:06.0`)",
        ))
    }
}

/// `[dddd[dddd]:]bb:dd.f` in hex.
fn regex_lite_pci(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [bus, devfn] => ("0000", *bus, *devfn),
        [dom, bus, devfn] => (*dom, *bus, *devfn),
        _ => return false,
    };
    let hex = |p: &str, lens: &[usize]| {
        lens.contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit())
    };
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    hex(dom, &[4, 8])
        && hex(bus, &[2])
        && hex(dev, &[2])
        && func.len() == 1
        && func.chars().all(|c| ('0'..='7').contains(&c))
}

impl FromStr for GpuSelector {
    type Err = TypeError;
    /// `all`, or indices/UUIDs/PCI ids separated by `,` or whitespace (the bash form `"0 1"`).
    fn from_str(s: &str) -> Result<Self, TypeError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("all") {
            return Ok(Self::All);
        }
        let refs: Vec<GpuRef> = t
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        if refs.is_empty() {
            return Err(TypeError::new("GPU selector", s, "names no GPU"));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = refs.iter().find(|r| !seen.insert(*r)) {
            return Err(TypeError::new(
                "GPU selector",
                s,
                format!("names GPU {dup} twice"),
            ));
        }
        Ok(Self::List(refs))
    }
}

impl fmt::Display for GpuSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::List(l) => {
                let v: Vec<String> = l.iter().map(ToString::to_string).collect();
                f.write_str(&v.join(","))
            }
        }
    }
}

/// A duration written like `"10s"`, `"500ms"`, `"2m"`, `"1h"`, combined (`"1m30s"`) or
/// spelled out (`"2 min"`), as `humantime` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DurationSpec(pub Duration);

impl FromStr for DurationSpec {
    type Err = TypeError;
    fn from_str(s: &str) -> Result<Self, TypeError> {
        const K: &str = "duration";
        base_checks(K, s, 32)?;
        if s.trim().is_empty() {
            return Err(TypeError::new(K, s, "must not be empty"));
        }
        humantime::parse_duration(s.trim()).map(Self).map_err(|e| {
            TypeError::new(
                K,
                s,
                format!("expected a number such as `10s`, `500ms`, `2m` ({e})"),
            )
        })
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// A size such as Docker's `--shm-size` (`16g`, `512m`, `1024k`, bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size(String);

impl Size {
    /// Validate a size string.
    pub fn new(s: impl Into<String>) -> Result<Self, TypeError> {
        let s = s.into();
        base_checks("size", &s, 24)?;
        let lower = s.to_ascii_lowercase();
        let digits = lower.trim_end_matches(['b', 'k', 'm', 'g', 't']);
        let unit = &lower[digits.len()..];
        let ok = !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && ["", "b", "k", "m", "g", "t", "kb", "mb", "gb", "tb"].contains(&unit);
        if !ok {
            return Err(TypeError::new(
                "size",
                &s,
                "must be a number with an optional unit b, k, m, g or t (e.g. `16g`)",
            ));
        }
        Ok(Self(lower))
    }

    /// The normalised text (lowercase).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Size {
    type Error = TypeError;
    fn try_from(v: String) -> Result<Self, TypeError> {
        Self::new(v)
    }
}

impl From<Size> for String {
    fn from(v: Size) -> String {
        v.0
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile values every text type must refuse (or, for `|`, keep whole).
    fn hostile() -> Vec<String> {
        vec![
            "; rm -rf /".into(),
            "$(reboot)".into(),
            "`id`".into(),
            "a && b".into(),
            "a\nb".into(),
            "a\0b".into(),
            "--help".into(),
            "-o x".into(),
            "a\u{202E}b".into(),
            "x".repeat(10_000),
        ]
    }

    /// Every text type refuses every hostile value, each for the rule that applies: the
    /// shared checks (control characters, length, a leading `-`) first, then the type's
    /// own character set or format. (A vmid is only ever a decimal number.)
    #[test]
    fn every_text_type_refuses_hostile_values() {
        type Check = fn(&str) -> Result<(), String>;
        fn err<T, E: fmt::Display>(r: Result<T, E>) -> Result<(), String> {
            r.map(drop).map_err(|e| e.to_string())
        }
        // (kind as the error names it, the check, the rule for shell characters: `None`
        // when the type's character set refuses them by name).
        let types: [(&str, Check, Option<&str>); 15] = [
            ("hostname", |v| err(Hostname::new(v)), None),
            ("model id", |v| err(ModelId::new(v)), None),
            ("bridge name", |v| err(BridgeName::new(v)), None),
            ("interface name", |v| err(IfaceName::new(v)), None),
            (
                "MAC address",
                |v| err(Mac::new(v)),
                Some("must be six hex pairs separated by `:`"),
            ),
            ("storage id", |v| err(StorageId::new(v)), None),
            ("template", |v| err(Template::new(v)), None),
            ("dataset name", |v| err(DatasetName::new(v)), None),
            (
                "container path",
                |v| err(AbsPath::new(v)),
                Some("must be absolute"),
            ),
            ("secret name", |v| err(SecretName::new(v)), None),
            ("property name", |v| err(PropKey::new(v)), None),
            (
                "GPU selector",
                |v| err(v.parse::<GpuSelector>()),
                Some("must be an index (`0`), a UUID"),
            ),
            (
                "duration",
                |v| err(v.parse::<DurationSpec>()),
                Some("expected a number such as `10s`"),
            ),
            (
                "size",
                |v| err(Size::new(v)),
                Some("must be a number with an optional unit"),
            ),
            (
                "vmid",
                |v| err(v.parse::<Vmid>()),
                Some("must be a decimal number without leading zeros"),
            ),
        ];
        for v in hostile() {
            let first = v.chars().next().unwrap();
            let shell = v.chars().find(|c| ";$` ".contains(*c));
            let shared = if let Some(c) = v.chars().find(|&c| c.is_control() || c == '\u{202E}') {
                Some(format!(
                    "contains the control or format character U+{:04X}",
                    c as u32
                ))
            } else if v.len() > 1024 {
                Some(format!("is {} bytes long; at most", v.len()))
            } else if first == '-' {
                Some("must not start with `-` (it would be read as an option)".to_owned())
            } else {
                None
            };
            for (kind, check, own) in types {
                let e = check(&v).expect_err(&format!("{kind} accepted {v:?}"));
                assert!(
                    e.starts_with(&format!("invalid {kind} ")),
                    "{kind} {v:?}: {e}"
                );
                let rule = match (kind, &shared, own, shell) {
                    ("vmid", ..) => own.unwrap().to_owned(),
                    (_, Some(rule), ..) => rule.clone(),
                    (_, None, Some(own), _) => own.to_owned(),
                    (_, None, None, Some(c)) => format!("contains '{c}'; allowed: "),
                    _ => unreachable!("{v:?} is not hostile"),
                };
                assert!(
                    e.contains(&rule),
                    "{kind} {v:?}: {e}\n(want the rule {rule:?})"
                );
            }
        }
    }

    #[test]
    fn models_parent_is_inside_a_pool_and_holds_its_children() {
        let p = ModelsParent::new("rpool/phoenix/models").unwrap();
        assert_eq!(p.dataset().as_str(), "rpool/phoenix/models");
        for (name, holds) in [
            ("rpool/phoenix/models", true),
            ("rpool/phoenix/models/drdevstral", true),
            ("rpool/phoenix/models-x", false),
            ("rpool/phoenix", false),
            ("rpool/data/subvol-901-disk-0", false),
        ] {
            assert_eq!(p.holds(&DatasetName::new(name).unwrap()), holds, "{name}");
        }
        for (bad, why) in [
            ("rpool", "not the pool itself"),
            ("9pool/x", "begins with a letter"),
            ("rpool//x", "non-empty"),
            ("rpool/../x", "non-empty"),
            ("rpool/a b", "allowed"),
        ] {
            let e = ModelsParent::new(bad).unwrap_err();
            assert_eq!(e.kind, "models dataset");
            assert!(e.reason.contains(why), "{bad}: {}", e.reason);
        }
        assert!(ModelsParent::new(format!("r/{}", "x".repeat(189))).is_ok());
        crate::test_support::refused(
            ModelsParent::new(format!("r/{}", "x".repeat(190))),
            "is 192 bytes long; at most 191 allowed",
        );
    }

    #[test]
    fn prop_value_refuses_separators() {
        for (v, rule) in [
            ("a,b", "contains ','"),
            ("a=b", "contains '='"),
            ("a;b", "contains ';'"),
            (
                "a\nlxc.hook.pre-start: /x",
                "control or format character U+000A",
            ),
            ("a\0", "control or format character U+0000"),
            ("-x", "must not start with `-`"),
        ] {
            crate::test_support::refused(PropValue::new(v), rule);
        }
        assert!(PropValue::new("vmbr0").is_ok());
    }

    #[test]
    fn model_allows_pipe_and_paths() {
        assert_eq!(
            ModelId::new("mistralai/Devstral|Small").unwrap().as_str(),
            "mistralai/Devstral|Small"
        );
        assert!(ModelId::new("mistralai/Devstral-Small-2507").is_ok());
        assert!(ModelId::new("/models/devstral").is_ok());
        crate::test_support::refused(
            ModelId::new("/models/../etc"),
            "an absolute path must not contain `..`",
        );
        crate::test_support::refused(
            ModelId::new("noslash"),
            "must be a Hugging Face repo id `org/name` or an absolute path",
        );
        crate::test_support::refused(
            ModelId::new("a/b/c"),
            "must be a Hugging Face repo id `org/name` or an absolute path",
        );
        let e = ModelId::new("; rm -rf /").unwrap_err();
        assert_eq!(e.kind, "model id");
    }

    #[test]
    fn vmid_range() {
        crate::test_support::refused(Vmid::new(99), "must be between 100 and 999999999");
        assert!(Vmid::new(100).is_ok());
        assert!(Vmid::new(999_999_999).is_ok());
        crate::test_support::refused(
            Vmid::new(1_000_000_000),
            "must be between 100 and 999999999",
        );
        assert_eq!("901".parse::<Vmid>().unwrap().get(), 901);
        crate::test_support::refused(
            "0901".parse::<Vmid>(),
            "must be a decimal number without leading zeros",
        );
        crate::test_support::refused(
            "-901".parse::<Vmid>(),
            "must be a decimal number without leading zeros",
        );
    }

    #[test]
    fn mac_and_hostname() {
        assert!(Mac::new("52:54:00:12:34:56").is_ok());
        crate::test_support::refused(Mac::new("01:00:5e:00:00:01"), "is a multicast address");
        crate::test_support::refused(
            Mac::new("52-54-00-12-34-56"),
            "must be six hex pairs separated by `:`",
        );
        assert!(Hostname::new("drdevstral").is_ok());
        assert!(Hostname::new("gpu-a.lab").is_ok());
        crate::test_support::refused(
            Hostname::new("gpu-"),
            "a label must not start or end with `-`",
        );
        crate::test_support::refused(
            Hostname::new("gpu_a"),
            "contains '_'; allowed: ASCII letters, digits, `-` and `.`",
        );
    }

    #[test]
    fn gpu_selectors() {
        assert_eq!(
            "0 1".parse::<GpuSelector>().unwrap(),
            GpuSelector::List(vec![GpuRef::Index(0), GpuRef::Index(1)])
        );
        assert_eq!("0,1".parse::<GpuSelector>().unwrap().to_string(), "0,1");
        assert_eq!("all".parse::<GpuSelector>().unwrap(), GpuSelector::All);
        assert!(matches!(
            "GPU-660ad3e3-1b5f-dbf1-871d-464e953400c4".parse::<GpuSelector>().unwrap(),
            GpuSelector::List(ref l) if matches!(l[0], GpuRef::Uuid(_))
        ));
        assert!(matches!(
            "00000000:00:06.0".parse::<GpuSelector>().unwrap(),
            GpuSelector::List(ref l) if matches!(l[0], GpuRef::Pci(_))
        ));
        crate::test_support::refused("0,0".parse::<GpuSelector>(), "names GPU 0 twice");
        crate::test_support::refused("".parse::<GpuSelector>(), "names no GPU");
    }

    #[test]
    fn durations() {
        assert_eq!(
            "10s".parse::<DurationSpec>().unwrap().0,
            Duration::from_secs(10)
        );
        assert_eq!(
            "500ms".parse::<DurationSpec>().unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            "1m30s".parse::<DurationSpec>().unwrap().0,
            Duration::from_secs(90)
        );
        assert_eq!(
            "2 min".parse::<DurationSpec>().unwrap().0,
            Duration::from_secs(120)
        );
        crate::test_support::refused("10".parse::<DurationSpec>(), "time unit needed");
        crate::test_support::refused("10x".parse::<DurationSpec>(), "unknown time unit \"x\"");
    }

    #[test]
    fn templates() {
        assert!(Template::new("local:vztmpl/ubuntu-24.04-standard_24.04-2_amd64.tar.zst").is_ok());
        assert!(Template::new("/var/lib/vz/template/cache/x.tar.zst").is_ok());
        crate::test_support::refused(
            Template::new("ubuntu"),
            "must be a PVE volume id `storage:vztmpl/file.tar.zst` or an absolute path",
        );
        crate::test_support::refused(
            Template::new("local:../x"),
            "volume part must be relative without `..`",
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(Size::new("16G").unwrap().as_str(), "16g");
        crate::test_support::refused(Size::new("16 g"), "must be a number with an optional unit");
        crate::test_support::refused(Size::new("g"), "must be a number with an optional unit");
    }
}

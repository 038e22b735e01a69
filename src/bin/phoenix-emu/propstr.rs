//! PVE property strings (`name=eth0,bridge=vmbr0,…`): parsing against a format and printing
//! as `PVE::JSONSchema::print_property_string` does — the default key's bare value first,
//! then required keys sorted, then the rest sorted; booleans normalised to `0`/`1`, sizes
//! printed with PVE's `format_size`.
//!
//! The formats here (`net`, `features`, `rootfs`, `mp`, `dev`) follow pve-container's
//! `PVE::LXC::Config` schemas.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// A value's type within a property string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Free text (no `,`).
    Str,
    /// `0`/`1` (PVE's boolean spellings accepted).
    Bool,
    /// An integer in a range.
    Int(i64, i64),
    /// A decimal number.
    Num,
    /// A disk size (`8G`, `512M`, bare number = GiB… as PVE's `parse_size`: bare = bytes).
    Size,
    /// An IPv4 address.
    Ipv4,
    /// IPv4/CIDR, `dhcp` or `manual`.
    Ipv4Config,
    /// A MAC address.
    Mac,
    /// One of these words.
    Enum(&'static [&'static str]),
}

/// One key of a format.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key.
    pub name: &'static str,
    /// Its type.
    pub ty: Ty,
    /// Must be present.
    pub required: bool,
    /// The key a bare value (without `key=`) belongs to.
    pub default_key: bool,
}

const fn k(name: &'static str, ty: Ty) -> Key {
    Key {
        name,
        ty,
        required: false,
        default_key: false,
    }
}

const fn req(name: &'static str, ty: Ty) -> Key {
    Key {
        name,
        ty,
        required: true,
        default_key: false,
    }
}

const fn dflt(name: &'static str, ty: Ty) -> Key {
    Key {
        name,
        ty,
        required: true,
        default_key: true,
    }
}

/// `netN`.
pub const NET: &[Key] = &[
    req("name", Ty::Str),
    k("bridge", Ty::Str),
    k("firewall", Ty::Bool),
    k("gw", Ty::Ipv4),
    k("gw6", Ty::Str),
    k("host-managed", Ty::Bool),
    k("hwaddr", Ty::Mac),
    k("ip", Ty::Ipv4Config),
    k("ip6", Ty::Str),
    k("link_down", Ty::Bool),
    k("mtu", Ty::Int(64, 65535)),
    k("rate", Ty::Num),
    k("tag", Ty::Int(1, 4094)),
    k("trunks", Ty::Str),
    k("type", Ty::Enum(&["veth"])),
];

/// `features`.
pub const FEATURES: &[Key] = &[
    k("force_rw_sys", Ty::Bool),
    k("fuse", Ty::Bool),
    k("keyctl", Ty::Bool),
    k("mknod", Ty::Bool),
    k("mount", Ty::Str),
    k("nesting", Ty::Bool),
];

/// `rootfs`.
pub const ROOTFS: &[Key] = &[
    dflt("volume", Ty::Str),
    k("acl", Ty::Bool),
    k("mountoptions", Ty::Str),
    k("quota", Ty::Bool),
    k("replicate", Ty::Bool),
    k("ro", Ty::Bool),
    k("shared", Ty::Bool),
    k("size", Ty::Size),
];

/// `mpN`.
pub const MP: &[Key] = &[
    dflt("volume", Ty::Str),
    req("mp", Ty::Str),
    k("acl", Ty::Bool),
    k("backup", Ty::Bool),
    k("keepattrs", Ty::Bool),
    k("mountoptions", Ty::Str),
    k("quota", Ty::Bool),
    k("replicate", Ty::Bool),
    k("ro", Ty::Bool),
    k("shared", Ty::Bool),
    k("size", Ty::Size),
];

/// `devN`.
pub const DEV: &[Key] = &[
    Key {
        name: "path",
        ty: Ty::Str,
        required: false,
        default_key: true,
    },
    k("deny-write", Ty::Bool),
    k("gid", Ty::Int(0, i64::MAX)),
    k("mode", Ty::Str),
    k("uid", Ty::Int(0, i64::MAX)),
];

/// A parsed property string: key → canonical value.
pub type Props = BTreeMap<String, String>;

/// Parse `text` against `format`; the error is PVE's per-key message.
pub fn parse(format: &[Key], text: &str) -> Result<Props, String> {
    let mut res = Props::new();
    for part in text.split(',') {
        if part.is_empty() {
            continue;
        }
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => {
                let dk = format.iter().find(|k| k.default_key).ok_or_else(|| {
                    format!("value without key, but schema does not define a default key: {part}")
                })?;
                (dk.name.to_owned(), part.to_owned())
            }
        };
        let spec = format
            .iter()
            .find(|k| k.name == key)
            .ok_or_else(|| format!("invalid format - format error\n{key}: property is not defined in schema and the schema does not allow additional properties"))?;
        if res.contains_key(&key) {
            return Err(format!(
                "duplicate key in comma-separated list property: {key}"
            ));
        }
        let value = check(spec, &value)?;
        res.insert(key, value);
    }
    for spec in format.iter().filter(|k| k.required) {
        if !res.contains_key(spec.name) {
            return Err(format!(
                "invalid format - format error\n{}: property is missing and it is not optional",
                spec.name
            ));
        }
    }
    Ok(res)
}

fn check(spec: &Key, value: &str) -> Result<String, String> {
    let bad = |what: &str| {
        format!(
            "invalid format - format error\n{}: {what} - got '{value}'",
            spec.name
        )
    };
    if value.contains(['\n', '\r', '\0']) {
        return Err(bad("value contains a line feed"));
    }
    Ok(match spec.ty {
        Ty::Str => value.to_owned(),
        Ty::Bool => match crate::opts::parse_bool(value) {
            Some(true) => "1".into(),
            Some(false) => "0".into(),
            None => return Err(bad("type check ('boolean') failed")),
        },
        Ty::Int(lo, hi) => {
            let n: i64 = value
                .parse()
                .map_err(|_| bad("type check ('integer') failed"))?;
            if n < lo || n > hi {
                return Err(bad(&format!("value must be between {lo} and {hi}")));
            }
            n.to_string()
        }
        Ty::Num => {
            value
                .parse::<f64>()
                .map_err(|_| bad("type check ('number') failed"))?;
            value.to_owned()
        }
        Ty::Size => format_size(parse_size(value).ok_or_else(|| bad("unable to parse size"))?),
        Ty::Ipv4 => {
            value
                .parse::<Ipv4Addr>()
                .map_err(|_| bad("value does not match the regex pattern"))?;
            value.to_owned()
        }
        Ty::Ipv4Config => {
            if value != "dhcp" && value != "manual" {
                let (ip, len) = value
                    .split_once('/')
                    .ok_or_else(|| bad("invalid format - value does not look like a valid IPv4 network configuration"))?;
                let ok = ip.parse::<Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32);
                if !ok {
                    return Err(bad(
                        "invalid format - value does not look like a valid IPv4 network configuration",
                    ));
                }
            }
            value.to_owned()
        }
        Ty::Mac => {
            let parts: Vec<&str> = value.split(':').collect();
            let ok = parts.len() == 6
                && parts
                    .iter()
                    .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
            // PVE refuses multicast addresses (lowest bit of the first octet).
            let unicast = u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0);
            if !ok || !unicast {
                return Err(bad("value does not look like a valid unicast MAC address"));
            }
            value.to_owned()
        }
        Ty::Enum(words) => {
            if !words.contains(&value) {
                return Err(bad(&format!(
                    "value '{value}' does not have a value in the enumeration '{}'",
                    words.join(", ")
                )));
            }
            value.to_owned()
        }
    })
}

/// Print `props` in PVE's order for `format`.
pub fn print(format: &[Key], props: &Props) -> String {
    let mut parts = Vec::new();
    let mut done = std::collections::BTreeSet::new();
    if let Some(dk) = format.iter().find(|k| k.default_key) {
        if let Some(v) = props.get(dk.name) {
            parts.push(v.clone());
            done.insert(dk.name);
        }
    }
    // BTreeMap iterates sorted, like Perl's `sort keys`.
    for (key, v) in props {
        let required = format.iter().any(|k| k.name == key && k.required);
        if required && !done.contains(key.as_str()) {
            parts.push(format!("{key}={v}"));
            done.insert(format.iter().find(|k| k.name == key).map_or("", |k| k.name));
        }
    }
    for (key, v) in props {
        if !done.contains(key.as_str()) {
            parts.push(format!("{key}={v}"));
        }
    }
    parts.join(",")
}

/// PVE's `parse_size`: a number with an optional `K`/`M`/`G`/`T` suffix; bare = bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

/// PVE's `format_size`: the largest unit that divides the size exactly.
pub fn format_size(bytes: u64) -> String {
    let units = [
        (1u64 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (m, u) in units {
        if bytes >= m && bytes % m == 0 {
            return format!("{}{u}", bytes / m);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_prints_in_pve_order() {
        let p = parse(
            NET,
            "ip=10.0.0.5/24,bridge=vmbr0,name=eth0,tag=5,gw=10.0.0.1,type=veth,hwaddr=BC:24:11:00:00:01",
        )
        .unwrap();
        assert_eq!(
            print(NET, &p),
            "name=eth0,bridge=vmbr0,gw=10.0.0.1,hwaddr=BC:24:11:00:00:01,ip=10.0.0.5/24,tag=5,type=veth"
        );
    }

    #[test]
    fn default_key_first_and_sizes_normalised() {
        let p = parse(MP, "mp=/models,/tank/models,ro=yes").unwrap();
        assert_eq!(print(MP, &p), "/tank/models,mp=/models,ro=1");
        let p = parse(ROOTFS, "local-lvm:vm-1-disk-0,size=8192M").unwrap();
        assert_eq!(print(ROOTFS, &p), "local-lvm:vm-1-disk-0,size=8G");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(
            parse(NET, "name=eth0,bogus=1")
                .unwrap_err()
                .contains("bogus: property is not defined")
        );
        assert!(
            parse(NET, "bridge=vmbr0")
                .unwrap_err()
                .contains("name: property is missing")
        );
        let e = parse(NET, "name=eth0,tag=5000").unwrap_err();
        assert!(
            e.contains("tag: value must be between 1 and 4094 - got '5000'"),
            "{e}"
        );
        let e = parse(NET, "name=eth0,ip=10.0.0.5").unwrap_err();
        assert!(
            e.contains(
                "ip: invalid format - value does not look like a valid IPv4 network configuration"
            ),
            "{e}"
        );
        let e = parse(NET, "name=eth0,hwaddr=01:00:00:00:00:00").unwrap_err();
        assert!(
            e.contains("hwaddr: value does not look like a valid unicast MAC address"),
            "{e}"
        );
        let e = parse(FEATURES, "nesting=maybe").unwrap_err();
        assert!(
            e.contains("nesting: type check ('boolean') failed - got 'maybe'"),
            "{e}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(format_size(8 << 30), "8G");
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(1000), "1000");
        assert_eq!(parse_size("0.5G"), Some(512 << 20));
    }
}

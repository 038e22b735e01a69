//! Where `http.probe` and the vLLM readiness ladder may connect (DESIGN.md §12).
//!
//! Only to the IPv4 address the host reports for a phoenix-owned container of the loaded
//! config (loopback ones on the emulated host), on any port of it: inside its own
//! containers a recipe may run any server. Everything is decided *before* a connection:
//! - the URL must be `http://A.B.C.D[:PORT]/…` as written: no user info (`user:pw@`, which
//!   also hides the real host from a reader), no host name (DNS could answer anything), no
//!   IPv6, no odd spelling of an address that the URL parser would quietly rewrite
//!   (`127.1`, `0x7f.1`, `2130706433`, `127.0.0.01`), no port 0, no port with leading zeros
//!   or out of range;
//! - the address must then be one the host reports for such a container
//!   ([`super::Boundary::network`] asks the host).

use std::net::Ipv4Addr;

use super::{Refusal, Rule};

/// A URL that passed the form checks: its parsed value, its address and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The URL as the HTTP client will use it.
    pub url: reqwest::Url,
    /// The IPv4 address it connects to.
    pub addr: Ipv4Addr,
    /// The port it connects to.
    pub port: u16,
}

/// Check the form of `text` (no host lookups): plain http, an IPv4 literal written
/// canonically, no user info, a sane port.
pub fn check_form(call: &'static str, text: &str) -> Result<Checked, Refusal> {
    let refuse = |detail: String| Refusal::new(call, Rule::Network, detail);
    let shown = crate::types::show(text);
    let rest = text.strip_prefix("http://").ok_or_else(|| {
        refuse(format!(
            "{shown}: only plain http://A.B.C.D[:PORT]/ URLs are accepted"
        ))
    })?;
    // The authority as written, up to the first character that ends it in any parser
    // (`\` ends it in the WHATWG parser that reqwest uses).
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('@') {
        return Err(refuse(format!(
            "{shown}: user info in a URL (`…@`) is not accepted: it hides the real host"
        )));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let addr: Ipv4Addr = host.parse().map_err(|_| {
        refuse(format!(
            "{shown}: the host must be an IPv4 address written as A.B.C.D (a container's address from lxc.address), not {}",
            crate::types::show(host)
        ))
    })?;
    if addr.to_string() != host {
        return Err(refuse(format!(
            "{shown}: the address must be written canonically ({addr})"
        )));
    }
    let port = match port {
        None => 80,
        Some(p) => {
            let n: u16 = p
                .parse()
                .ok()
                .filter(|n: &u16| *n != 0 && n.to_string() == p)
                .ok_or_else(|| {
                    refuse(format!(
                        "{shown}: port {} is not a port number 1…65535 written plainly",
                        crate::types::show(p)
                    ))
                })?;
            n
        }
    };
    let url = reqwest::Url::parse(text).map_err(|e| refuse(format!("{shown}: {e}")))?;
    // What the client would connect to must be what was checked (defence in depth
    // against parser differences).
    if url.host_str() != Some(host) || url.port_or_known_default() != Some(port) {
        return Err(refuse(format!(
            "{shown}: the URL parser reads another host or port than written"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(format!(
            "{shown}: user info in a URL is not accepted"
        )));
    }
    Ok(Checked { url, addr, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_urls_keep_their_address_and_port() {
        let c = check_form("http.probe", "http://127.77.0.1:8000/health").unwrap();
        assert_eq!((c.addr, c.port), (Ipv4Addr::new(127, 77, 0, 1), 8000));
        let c = check_form("http.probe", "http://10.0.0.110/v1/models?x=1").unwrap();
        assert_eq!(c.port, 80);
    }

    #[test]
    fn odd_forms_are_refused_naming_the_rule() {
        for (url, why) in [
            ("http://user:pw@127.77.0.1:8000/", "user info"),
            ("http://127.77.0.1:8000@10.0.0.1/", "user info"),
            ("http://@127.77.0.1/", "user info"),
            ("https://127.77.0.1/", "only plain http"),
            ("file:///etc/passwd", "only plain http"),
            ("HTTP://127.77.0.1/", "only plain http"),
            ("http://localhost:8000/", "IPv4 address written as A.B.C.D"),
            ("http://example.com/", "IPv4 address written as A.B.C.D"),
            ("http://[::1]:8000/", "IPv4 address written as A.B.C.D"),
            ("http://127.1:8000/", "IPv4 address written as A.B.C.D"),
            ("http://0x7f.0.0.1/", "IPv4 address written as A.B.C.D"),
            ("http://2130706433/", "IPv4 address written as A.B.C.D"),
            ("http://127.0.0.01/", "IPv4 address written as A.B.C.D"),
            ("http://127.77.0.1:0/", "port \"0\""),
            ("http://127.77.0.1:08000/", "port \"08000\""),
            ("http://127.77.0.1:65536/", "port \"65536\""),
            ("http://127.77.0.1:/", "port \"\""),
            ("http://127.77.0.1:80a/", "port \"80a\""),
        ] {
            let e = check_form("http.probe", url).unwrap_err().to_string();
            assert!(
                e.starts_with("http.probe: refused by the boundary (network): "),
                "{e}"
            );
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn a_backslash_ends_the_authority_as_the_client_reads_it() {
        let c = check_form("http.probe", "http://127.77.0.1\\@10.0.0.1/").unwrap();
        assert_eq!(c.url.host_str(), Some("127.77.0.1"));
    }
}

//! A container's `/etc/pve/lxc/<vmid>.conf`, read and written as pve-container's
//! `parse_pct_config`/`write_pct_config` do: `#` description lines first, then the options
//! sorted by key, then raw `lxc.*` lines in their original order; `[snapshot]` sections are
//! kept verbatim after that.

use std::collections::BTreeMap;

/// A parsed container config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CtConf {
    /// Leading `#` lines (the description), without the `#`.
    pub description: Vec<String>,
    /// Options (sorted on output).
    pub opts: BTreeMap<String, String>,
    /// Raw `lxc.*` lines, in order.
    pub lxc: Vec<(String, String)>,
    /// Everything from the first `[section]` on, verbatim.
    pub tail: String,
}

impl CtConf {
    /// Parse a config file's text.
    pub fn parse(text: &str) -> Self {
        let mut c = Self::default();
        let mut lines = text.split_inclusive('\n');
        for line in lines.by_ref() {
            let l = line.trim_end_matches(['\n', '\r']);
            if l.starts_with('[') {
                c.tail.push_str(line);
                break;
            }
            if let Some(d) = l.strip_prefix('#') {
                c.description.push(d.to_owned());
                continue;
            }
            if l.trim().is_empty() {
                continue;
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
            if k.starts_with("lxc.") {
                c.lxc.push((k, v));
            } else {
                c.opts.insert(k, v);
            }
        }
        for line in lines {
            c.tail.push_str(line);
        }
        c
    }

    /// The file text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for d in &self.description {
            s.push('#');
            s.push_str(d);
            s.push('\n');
        }
        for (k, v) in &self.opts {
            s.push_str(&format!("{k}: {v}\n"));
        }
        for (k, v) in &self.lxc {
            s.push_str(&format!("{k}: {v}\n"));
        }
        if !self.tail.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(self.tail.trim_start_matches('\n'));
        }
        // PVE ends the file with a newline, also after a snapshot section read without one.
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s
    }

    /// What `pct config` prints: options sorted (description as one `description:` line),
    /// then the raw `lxc.*` lines.
    pub fn show(&self) -> String {
        let mut opts = self.opts.clone();
        if !self.description.is_empty() {
            opts.insert("description".into(), self.description.join("%0A") + "%0A");
        }
        let mut s = String::new();
        for (k, v) in &opts {
            s.push_str(&format!("{k}: {v}\n"));
        }
        for (k, v) in &self.lxc {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s
    }

    /// An option's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.opts.get(key).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_raw_lines_and_snapshots() {
        let text = "#my ct\narch: amd64\nhostname: a\nlxc.cgroup2.devices.allow: c 195:* rwm\nlxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n\n[snap1]\narch: amd64\n";
        let c = CtConf::parse(text);
        assert_eq!(c.get("hostname"), Some("a"));
        assert_eq!(c.lxc.len(), 2);
        assert_eq!(c.render(), text);
    }

    #[test]
    fn the_file_ends_with_a_newline() {
        let c = CtConf::parse("arch: amd64\n\n[snap1]\narch: amd64");
        assert_eq!(c.render(), "arch: amd64\n\n[snap1]\narch: amd64\n");
        let c = CtConf::parse("arch: amd64");
        assert_eq!(c.render(), "arch: amd64\n");
    }

    #[test]
    fn options_come_out_sorted_before_raw_lines() {
        let c = CtConf::parse("lxc.apparmor.profile: unconfined\nswap: 1\narch: amd64\n");
        assert_eq!(
            c.render(),
            "arch: amd64\nswap: 1\nlxc.apparmor.profile: unconfined\n"
        );
    }
}

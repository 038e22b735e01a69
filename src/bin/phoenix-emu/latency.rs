//! The emulated host's latency profile: `emu.json`'s `latency` object, which makes each
//! call of a tool take as long as it does on a real Proxmox VE node (for the benchmark,
//! `cargo bench --bench phoenix-bench`, BENCHMARKS.md P1).
//!
//! A real `pct` is a Perl program (pve-container `src/pct`: `use PVE::CLI::pct;
//! PVE::CLI::pct->run_cli_handler();`) that loads the PVE module tree on every start, so
//! even `pct status` costs a few hundred milliseconds before it does anything; `pvesm`
//! (pve-storage `src/pvesm`) and `pveversion` (pve-manager `bin/pveversion`) are Perl CLIs
//! too. The emulator answers in about a millisecond, which hides the cost of every call
//! phoenix makes. The profile puts it back: the call sleeps before it works (outside every
//! lock, as the interpreter's start-up is), then works and is logged as usual.
//!
//! Keys (values are durations as in `faults.json`: `300ms`, `2s`):
//! - a tool's name (`"pct"`, `"pvesm"`, …): every call of that tool;
//! - `"<tool> <subcommand>"` (`"pct create"`, `"pct start"`): that subcommand, *in place
//!   of* the tool's figure (the whole call takes that long);
//! - `"vllm load"`: the emulated vLLM server's load delay ([`crate::vllm_proc`]), unless
//!   `faults.json`'s `vllm.load_delay` sets one (the tests' knob wins).
//!
//! Decision: no profile (the default) means no delay at all; a value that is not a
//! duration fails the call with exit 70, naming the key, as other bad settings do.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::faults::parse_duration;

/// The key of the emulated vLLM server's load delay.
pub const VLLM_LOAD: &str = "vllm load";

/// How long a call of `tool` with `args` takes under `profile` (`None`: no delay).
pub fn for_call(
    profile: &BTreeMap<String, String>,
    tool: &str,
    args: &[String],
) -> Result<Option<Duration>, String> {
    let specific = args
        .first()
        .map(|sub| format!("{tool} {sub}"))
        .filter(|k| profile.contains_key(k));
    lookup(profile, specific.as_deref().unwrap_or(tool))
}

/// The emulated vLLM server's load delay under `profile`, if it sets one.
pub fn vllm_load(profile: &BTreeMap<String, String>) -> Result<Option<Duration>, String> {
    lookup(profile, VLLM_LOAD)
}

fn lookup(profile: &BTreeMap<String, String>, key: &str) -> Result<Option<Duration>, String> {
    profile
        .get(key)
        .map(|v| {
            parse_duration(v)
                .ok_or_else(|| format!("emu.json: latency.{key:?} = {v:?} is not a duration"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_subcommand_figure_replaces_the_tools() {
        let p = profile(&[
            ("pct", "300ms"),
            ("pct create", "2s"),
            ("pct start", "1s"),
            ("vllm load", "3s"),
        ]);
        let ms = Duration::from_millis;
        assert_eq!(
            for_call(&p, "pct", &args(&["create", "901", "t"])),
            Ok(Some(ms(2000)))
        );
        assert_eq!(
            for_call(&p, "pct", &args(&["start", "901"])),
            Ok(Some(ms(1000)))
        );
        assert_eq!(
            for_call(&p, "pct", &args(&["exec", "901", "--", "cat", "/x"])),
            Ok(Some(ms(300)))
        );
        assert_eq!(for_call(&p, "pct", &[]), Ok(Some(ms(300))));
        assert_eq!(for_call(&p, "zfs", &args(&["list"])), Ok(None));
        assert_eq!(vllm_load(&p), Ok(Some(ms(3000))));
    }

    #[test]
    fn no_profile_means_no_delay() {
        let p = BTreeMap::new();
        assert_eq!(for_call(&p, "pct", &args(&["create"])), Ok(None));
        assert_eq!(vllm_load(&p), Ok(None));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let p = profile(&[("pct start", "soon"), ("vllm load", "3 s")]);
        assert_eq!(
            for_call(&p, "pct", &args(&["start", "901"])),
            Err(r#"emu.json: latency."pct start" = "soon" is not a duration"#.to_owned())
        );
        assert_eq!(for_call(&p, "pct", &args(&["stop", "901"])), Ok(None));
        assert_eq!(
            vllm_load(&p),
            Err(r#"emu.json: latency."vllm load" = "3 s" is not a duration"#.to_owned())
        );
    }
}

//! The option maps primitives accept, in one table that the primitives and `recipe lint`
//! both read: the keys each map knows, which of them are durations, and the "did you mean"
//! suggestion for a key that is not known. A literal map in a recipe is checked by lint with
//! the same words the run would use, so a typo fails before anything runs.

/// One options map a primitive takes.
#[derive(Debug, Clone, Copy)]
pub struct OptionMap {
    /// The call as a recipe writes it (`lxc.exec`).
    pub call: &'static str,
    /// Which argument is the map (0-based, the handle not counted).
    pub arg: usize,
    /// The keys it knows.
    pub keys: &'static [&'static str],
    /// The keys whose values are durations (`"10s"`, parsed as [`crate::types::DurationSpec`]).
    pub durations: &'static [&'static str],
}

/// `lxc.exec(ct, argv, opts)`.
pub const EXEC: OptionMap = OptionMap {
    call: "lxc.exec",
    arg: 2,
    keys: &["stdin", "timeout", "ok_codes", "read_only"],
    durations: &["timeout"],
};

/// `lxc.mount(ct, source, ct_path, opts)`.
pub const MOUNT: OptionMap = OptionMap {
    call: "lxc.mount",
    arg: 3,
    keys: &["ro"],
    durations: &[],
};

/// `http.probe(url, opts)`.
pub const PROBE: OptionMap = OptionMap {
    call: "http.probe",
    arg: 1,
    keys: &[
        "attempts",
        "delay",
        "backoff",
        "max_delay",
        "timeout",
        "expect",
    ],
    durations: &["delay", "max_delay", "timeout"],
};

/// `vllm.wait_ready(server, opts)`.
pub const WAIT_READY: OptionMap = OptionMap {
    call: "vllm.wait_ready",
    arg: 1,
    keys: &[
        "timeout",
        "download_timeout",
        "progress_every",
        "completion",
        "poll",
        "max_poll",
        "request_timeout",
    ],
    durations: &[
        "timeout",
        "download_timeout",
        "progress_every",
        "poll",
        "max_poll",
        "request_timeout",
    ],
};

/// `undo.push(step)`.
pub const UNDO_STEP: OptionMap = OptionMap {
    call: "undo.push",
    arg: 0,
    keys: &["ct", "argv"],
    durations: &[],
};

/// `output.endpoint(endpoint)`.
pub const ENDPOINT: OptionMap = OptionMap {
    call: "output.endpoint",
    arg: 0,
    keys: super::output::ENDPOINT_KEYS,
    durations: &[],
};

/// `zfs.dataset(name, props)`: the boundary's property allow-list.
pub const DATASET_PROPS: OptionMap = OptionMap {
    call: "zfs.dataset",
    arg: 1,
    keys: crate::boundary::datasets::ALLOWED_PROPS,
    durations: &[],
};

/// Every options map lint checks.
pub const ALL: &[OptionMap] = &[
    EXEC,
    MOUNT,
    PROBE,
    WAIT_READY,
    UNDO_STEP,
    ENDPOINT,
    DATASET_PROPS,
];

/// The known word closest to `word`, when it is close enough to be a typo (Levenshtein
/// distance at most 2, or a quarter of the word for long ones).
pub fn did_you_mean<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::levenshtein(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

/// The message for an unknown key of `map`: the suggestion, then what it knows.
pub fn unknown_key(key: &str, known: &[&str]) -> String {
    match did_you_mean(key, known) {
        Some(k) => format!(
            "unknown option `{key}` (did you mean `{k}`?); known options: {}",
            known.join(", ")
        ),
        None => format!(
            "unknown option `{key}`; known options: {}",
            known.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion_strangers_do_not() {
        assert_eq!(did_you_mean("timout", EXEC.keys), Some("timeout"));
        assert_eq!(did_you_mean("okcodes", EXEC.keys), Some("ok_codes"));
        assert_eq!(did_you_mean("banana", EXEC.keys), None);
        assert_eq!(
            unknown_key("timout", EXEC.keys),
            "unknown option `timout` (did you mean `timeout`?); known options: stdin, timeout, ok_codes, read_only"
        );
    }

    #[test]
    fn every_duration_key_is_a_key() {
        for m in ALL {
            for d in m.durations {
                assert!(m.keys.contains(d), "{}: {d}", m.call);
            }
        }
    }
}

//! Helpers shared by the library's unit tests: the suite's one wait helper
//! (tests/integration/wait.rs, included) and [`refused`], which checks that a refusal
//! names its rule.

#[path = "../tests/integration/wait.rs"]
mod wait;

pub(crate) use wait::wait_until;

/// Assert that `result` is a refusal whose message contains `rule` (the rule that refused,
/// not merely some error).
#[track_caller]
pub(crate) fn refused<T, E: std::fmt::Display>(result: Result<T, E>, rule: &str) {
    match result {
        Ok(_) => panic!("accepted; expected a refusal saying {rule:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(rule), "{text}\n(expected the rule {rule:?})");
        }
    }
}

//! Lines mode through a sink: the events a step makes, heartbeats included (waited for as
//! events, with a short interval; no sleeps, no timing assertions).

use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use super::*;

/// A reporter with heartbeat `interval` whose events arrive on the receiver.
fn sink(interval: Duration, redactor: Redactor) -> (Progress, Receiver<Event>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let p = Progress::with_sink(interval, redactor, move |e| {
        let _ = lock(&tx).send(e);
    });
    (p, rx)
}

/// The next event of `kind` (others are skipped); fails after a minute without one.
fn next(rx: &Receiver<Event>, kind: EventKind) -> Event {
    loop {
        let e = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no {kind:?} event within a minute"));
        if e.kind == kind {
            return e;
        }
    }
}

/// The first heartbeat that satisfies `pred` (one computed before the state it shows was
/// set may come first); fails after a minute without one.
fn heartbeat_where(rx: &Receiver<Event>, pred: impl Fn(&str) -> bool) -> Event {
    loop {
        let e = next(rx, EventKind::Heartbeat);
        if pred(&e.text) {
            return e;
        }
    }
}

#[test]
fn a_running_step_sends_heartbeats_with_its_stage_note_and_log_line() {
    let (p, rx) = sink(Duration::from_millis(20), Redactor::default());
    let t = p.tracker(None);
    let step = t.wait("vllm.wait_ready:901 phoenix-vllm-901");
    assert_eq!(
        rx.recv().unwrap(),
        Event {
            kind: EventKind::Start,
            text: "wait  vllm.wait_ready:901 phoenix-vllm-901".into()
        }
    );
    step.stage("downloading");
    let e = next(&rx, EventKind::Stage);
    assert!(
        e.text
            .starts_with("vllm.wait_ready:901 phoenix-vllm-901 · downloading ["),
        "{e:?}"
    );
    step.note(Some("1.2 GB".into()));
    step.log_line(Some("INFO Loading weights took 3.1 s\n"));
    // Heartbeats keep coming while the step runs; each shows the step as it is now.
    let want = "still waiting: vllm.wait_ready:901 phoenix-vllm-901 · downloading 1.2 GB [";
    let e = heartbeat_where(&rx, |t| t.contains("last log line"));
    assert!(e.text.starts_with(want), "{e:?}");
    assert!(
        e.text
            .ends_with(" elapsed]; last log line: INFO Loading weights took 3.1 s"),
        "{e:?}"
    );
    let e = next(&rx, EventKind::Heartbeat);
    assert!(e.text.starts_with(want), "{e:?}");
    step.done();
    let e = next(&rx, EventKind::Done);
    assert!(
        e.text
            .starts_with("done   vllm.wait_ready:901 phoenix-vllm-901 ("),
        "{e:?}"
    );
    assert!(e.text.ends_with("s)"), "{e:?}");
}

#[test]
fn heartbeats_name_the_container_and_its_innermost_step() {
    let (p, rx) = sink(Duration::from_millis(10), Redactor::default());
    let a = p.tracker(Some("901"));
    let b = p.tracker(Some("902"));
    let outer = a.step("lxc.start:901");
    assert_eq!(next(&rx, EventKind::Start).text, "901: start lxc.start:901");
    let inner = a.step("lxc.exec:901 apt-get install -y docker.io");
    let other = b.step("lxc.create:902");
    // Each container's heartbeat names it and its innermost step.
    heartbeat_where(&rx, |t| {
        t.starts_with("901: still waiting: lxc.exec:901 apt-get install -y docker.io [")
    });
    heartbeat_where(&rx, |t| {
        t.starts_with("902: still waiting: lxc.create:902 [")
    });
    inner.done();
    assert!(
        next(&rx, EventKind::Done)
            .text
            .starts_with("901: done   lxc.exec:901 apt-get install -y docker.io (")
    );
    // With the inner step done, 901's heartbeat is the outer step's again.
    heartbeat_where(&rx, |t| {
        t.starts_with("901: still waiting: lxc.start:901 [")
    });
    drop(other);
    assert!(
        next(&rx, EventKind::Failed)
            .text
            .starts_with("902: failed lxc.create:902 (")
    );
    outer.done();
}

#[test]
fn a_step_dropped_without_done_is_reported_failed() {
    let (p, rx) = sink(Duration::from_secs(3600), Redactor::default());
    let t = p.tracker(None);
    let run = || -> Result<(), &'static str> {
        let _step = t.step("zfs.create:rpool/phoenix/models/901");
        Err("cannot create")
    };
    assert_eq!(run(), Err("cannot create"));
    let kinds: Vec<EventKind> = rx.try_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Start, EventKind::Failed]);
}

#[test]
fn secrets_never_reach_a_progress_line() {
    let redactor = Redactor::default();
    redactor.register("hf_token", "hf_SECRETVALUE123");
    let (p, rx) = sink(Duration::from_millis(10), redactor);
    let t = p.tracker(None);
    let step = t.step("lxc.exec:901 echo hf_SECRETVALUE123");
    step.log_line(Some("token=hf_SECRETVALUE123 loaded"));
    let hb = heartbeat_where(&rx, |t| t.contains("last log line"));
    step.done();
    let done = next(&rx, EventKind::Done);
    for e in [&hb, &done] {
        assert!(!e.text.contains("hf_SECRETVALUE123"), "{e:?}");
    }
    assert!(hb.text.contains("lxc.exec:901 echo "), "{hb:?}");
    assert!(hb.text.contains("last log line: token="), "{hb:?}");
}

#[test]
fn hidden_shows_nothing_and_elapsed_reads_like_a_clock() {
    let t = Tracker::default();
    assert!(!t.visible());
    t.step("anything").done();
    assert_eq!(elapsed_text(Duration::from_millis(12_900)), "12s");
    assert_eq!(elapsed_text(Duration::from_secs(65)), "1m05s");
    assert_eq!(elapsed_text(Duration::from_secs(7380)), "2h03m");
    assert_eq!(cut("abcdef", 4), "abc…");
    assert_eq!(cut("abc", 4), "abc");
}

//! Windows that do not start or end on an hour (`--since 24h`), on both backends: rollups
//! answer their whole hours and raw records their ends, with the answer of the raw records
//! alone — sockets alive across the boundary between a raw end and a rolled-up hour counted
//! once, with their last counters in the window.

use std::sync::Arc;

use procflow::aggregator::investigate::{Investigator, Question};
use procflow::aggregator::rollups::RollupBuilder;
use procflow::aggregator::store::{EventQuery, Store};
use procflow::investigate::{Comparison, EdgeOrder, Talkers};
use procflow::model::{now_ns, Event, Record};

use crate::rollups::{flow, heartbeat, listener, pod, process, question, Flow, GRACE};
use crate::store::{append, open, retention, Backend};

const HOUR: u64 = 3_600_000_000_000;
const MINUTE: u64 = 60_000_000_000;

/// The sockets, each its own port: (cookie, port, its records as (minute from the start,
/// phase, bytes sent)). The windows below start at minute 150 (in hour 2) and end at 450
/// (in hour 7), or thereabouts.
/// A socket's records: (minute from the start, phase, bytes sent).
type Records = &'static [(u64, &'static str, u64)];

const SOCKETS: &[(u64, u16, Records)] = &[
    // Seen in hour 2 before the window only, again in hour 4: the rolled-up hours count it.
    (
        1,
        1001,
        &[(130, "START", 100), (260, "UPDATE", 300), (305, "END", 500)],
    ),
    // Seen before and in the head, again in hour 3 and 6.
    (
        2,
        1002,
        &[
            (130, "START", 100),
            (160, "UPDATE", 200),
            (195, "UPDATE", 400),
            (360, "END", 900),
        ],
    ),
    // The same edge as 1 in hour 4 (its row there mixes both), seen in the head.
    (12, 1001, &[(160, "START", 1), (265, "UPDATE", 3)]),
    // In the head, again only in the tail, and after the window.
    (
        3,
        1003,
        &[
            (160, "START", 50),
            (430, "UPDATE", 250),
            (470, "UPDATE", 999),
        ],
    ),
    // Seen before the window only (hours 1 and 2), again in the tail.
    (
        4,
        1004,
        &[(110, "START", 10), (140, "UPDATE", 20), (440, "END", 70)],
    ),
    // Born and gone in the head.
    (5, 1005, &[(155, "START", 5), (170, "END", 15)]),
    // Silent through the head's hour: last seen in hour 1.
    (
        6,
        1006,
        &[
            (70, "START", 1000),
            (200, "UPDATE", 2000),
            (240, "END", 2500),
        ],
    ),
    // From the rolled-up hours into the tail and past the window.
    (
        7,
        1007,
        &[(310, "START", 10), (425, "UPDATE", 30), (490, "END", 60)],
    ),
    // Only after the window.
    (8, 1008, &[(460, "START", 1), (465, "END", 2)]),
    // Head, rolled-up hours, tail, after.
    (
        9,
        1009,
        &[
            (165, "START", 1),
            (285, "UPDATE", 2),
            (405, "UPDATE", 3),
            (435, "UPDATE", 4),
            (540, "END", 5),
        ],
    ),
    // In the head, then silent until after the window.
    (10, 1010, &[(175, "START", 7), (510, "END", 8)]),
    // Before the window only.
    (11, 1011, &[(125, "START", 1), (135, "END", 2)]),
    // A new executable's, born in the head, ending in hour 3.
    (63, 1063, &[(161, "START", 10), (210, "END", 40)]),
];

/// Nine hours from `base`: the sockets above, a process in hour 0 and a new one with a
/// listening port in the head, heartbeats twice an hour from the pod and its database.
fn workload(base: u64) -> Vec<(String, Vec<Event>)> {
    let web = pod("c-web", "web-0", "10.0.0.5");
    let db = pod("c-db", "db-0", "10.0.0.9");
    let at = |minute: u64| base + minute * MINUTE + 7;
    let mut events: Vec<(u64, Record)> = vec![
        (at(1), process(7, 70, "/usr/bin/curl")),
        (at(158), process(8, 80, "/tmp/x")),
        (at(159), listener(900, 2222, at(159))),
    ];
    for &(cookie, port, records) in SOCKETS {
        let born = at(records[0].0);
        for &(minute, phase, sent) in records {
            let record = flow(
                Flow {
                    cookie,
                    // East-west: the database pod names the peer.
                    peer: if port % 2 == 0 {
                        "10.0.0.9"
                    } else {
                        "203.0.113.7"
                    },
                    port,
                    inbound: false,
                    phase,
                    sent,
                    born,
                },
                at(minute),
            );
            events.push((at(minute), record));
        }
    }
    for minute in (0..9 * 60).step_by(30) {
        events.push((at(minute) + 1, heartbeat(at(minute) + 1)));
    }
    events.sort_by_key(|(t, _)| *t);
    let mut batches: Vec<(String, Vec<Event>)> = events
        .into_iter()
        .map(|(t, record)| {
            let event = Event {
                source: web.clone(),
                received_at: t,
                record,
            };
            ("c-web".to_owned(), vec![event])
        })
        .collect();
    for minute in (0..9 * 60).step_by(30) {
        let t = at(minute) + 2;
        batches.push((
            "c-db".to_owned(),
            vec![Event {
                source: db.clone(),
                received_at: t,
                record: heartbeat(t),
            }],
        ));
    }
    batches
}

/// Windows by minute from the start (None: open-ended; minutes end a minute's last ns).
const WINDOWS: &[(u64, Option<u64>)] = &[
    (150, Some(450)),
    (150, None),
    (133, Some(437)),
    (170, Some(250)),
    (120, Some(450)),
    (150, Some(420)),
    (145, Some(300)),
    (200, Some(230)),
];

fn window(base: u64, (from, to): (u64, Option<u64>)) -> Question {
    let since = base + from * MINUTE + 3 * 1_000_000_000;
    question(since, to.map_or(0, |to| base + to * MINUTE - 1))
}

/// Talkers over every window (and how many raw flow records each read), and `new` over two
/// against the hours before them.
fn answers(store: &Arc<dyn Store>, base: u64) -> (Vec<(Talkers, usize)>, Vec<Comparison>) {
    let investigator = Investigator::new(store.clone());
    let talkers = WINDOWS
        .iter()
        .map(|&w| {
            let mut raw = 0;
            let answer = investigator
                .talkers(&window(base, w), EdgeOrder::Bytes, 100, &mut |e| {
                    raw += usize::from(matches!(e.record, Record::Flow(_)))
                })
                .unwrap_or_else(|e| panic!("talkers {w:?}: {e}"));
            (answer, raw)
        })
        .collect();
    let comparisons = [WINDOWS[0], WINDOWS[1]]
        .iter()
        .map(|&w| {
            investigator
                .compare(&window(base, w), base, 100, &mut |_| {})
                .unwrap_or_else(|e| panic!("compare {w:?}: {e}"))
        })
        .collect();
    // Asked again a nanosecond later on the same investigator: the baseline's rolled-up
    // hours are the ones it kept, its raw ends read again; the answer is a fresh one's.
    for &w in &[WINDOWS[0], WINDOWS[2]] {
        let mut q = window(base, w);
        q.query.since += 1;
        let again = investigator
            .compare(&q, base, 100, &mut |_| {})
            .unwrap_or_else(|e| panic!("compare {w:?} again: {e}"));
        let fresh = Investigator::new(store.clone())
            .compare(&q, base, 100, &mut |_| {})
            .unwrap_or_else(|e| panic!("compare {w:?} fresh: {e}"));
        assert_eq!(again, fresh, "{w:?}: the kept hours' baseline");
    }
    (talkers, comparisons)
}

fn ends_equal_raw(backend: Backend) {
    let now = now_ns();
    let base = now - now % HOUR - 12 * HOUR;
    let opened = open(backend, retention(14));
    opened.store.maintain(base).expect("partitions");
    for (seq, (collector, events)) in workload(base).into_iter().enumerate() {
        append(&*opened.store, &collector, seq as u64, events);
    }
    let raw = answers(&opened.store, base);
    let first = &raw.0[0].0;
    let bytes = |port: u16| {
        first
            .edges
            .iter()
            .find(|e| e.port == port)
            .map(|e| e.bytes_sent)
    };
    // The window's own answer, worked out by hand for the sockets that straddle its ends.
    assert_eq!(first.flows, 11, "{backend:?}: {first:?}");
    assert_eq!(bytes(1001), Some(500 + 3), "{backend:?}");
    assert_eq!(
        bytes(1003),
        Some(250),
        "{backend:?}: its last counters in the window"
    );
    assert_eq!(bytes(1004), Some(70), "{backend:?}");
    assert_eq!(bytes(1008), None, "{backend:?}: after the window");
    assert_eq!(bytes(1011), None, "{backend:?}: before the window");
    assert_eq!(raw.1[0].new.executables.len(), 1, "{backend:?}");

    let compare = |stage: &str, answers: (Vec<(Talkers, usize)>, Vec<Comparison>)| {
        for (i, ((got, read), (want, all))) in answers.0.iter().zip(&raw.0).enumerate() {
            assert_eq!(
                got, want,
                "{backend:?} {stage}: talkers over {:?}",
                WINDOWS[i]
            );
            // Windows holding a whole hour read rollups for it.
            if i < 7 {
                assert!(read < all, "{backend:?} {stage}: {:?} read raw", WINDOWS[i]);
            }
        }
        assert_eq!(answers.1, raw.1, "{backend:?} {stage}: new");
    };
    // Hours 0..=4 rolled up: the windows' tails start at hour 5.
    let built = RollupBuilder::new(opened.store.clone())
        .catch_up(base + 5 * HOUR + GRACE)
        .expect("roll up five hours");
    assert_eq!(built, 5, "{backend:?}");
    compare("five hours built", answers(&opened.store, base));
    // Every closed hour rolled up: the tails start in the windows' last hours.
    RollupBuilder::new(opened.store.clone())
        .catch_up(now)
        .expect("roll up");
    compare("all built", answers(&opened.store, base));
    // The same raw records, read past: the hours' carries are kept while they are.
    let left = opened
        .store
        .query(&EventQuery {
            since: base,
            until: base + 9 * HOUR,
            ..EventQuery::default()
        })
        .expect("query");
    assert!(!left.is_empty());
}

#[test]
fn a_window_off_the_hour_answers_from_rollups_as_from_raw_records_on_sqlite() {
    ends_equal_raw(Backend::Sqlite);
}

#[test]
fn a_window_off_the_hour_answers_from_rollups_as_from_raw_records_on_postgres() {
    ends_equal_raw(Backend::Postgres);
}

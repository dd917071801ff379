//! A write-once history checker: what recording clients were answered,
//! against the names table as it is at the end.
//!
//! A name is stored at most once and then never changes or goes away, so
//! every answer can be checked against the final table alone, plus the
//! order of requests that did not overlap in time:
//!
//! - at most one `W00T!` per name;
//! - every `W00T!` is in the final table, with its value;
//! - a value a GET served is the final value; `AWESOME!` (EXISTS) and
//!   `RARGH!` (STORE: the name is taken) mean the name is there at the end;
//! - an empty GET or a `RARGH!` EXISTS that was sent after a request of the
//!   name had been answered `W00T!` (or with the name present) contradicts
//!   that earlier answer;
//! - `ERROR`s are allowed (an unknown outcome) and counted.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt;
use std::time::Instant;

/// What was asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Store(String),
    Get,
    Exists,
}

/// One request and its reply, as a client saw them.
#[derive(Debug, Clone)]
pub struct Event {
    /// Which client (for messages).
    pub client: String,
    pub name: String,
    pub op: Op,
    pub sent: Instant,
    pub replied: Instant,
    pub reply: String,
}

impl Event {
    /// Whether the reply says the name was there (stored now or before).
    fn saw_present(&self) -> bool {
        match &self.op {
            Op::Store(_) => self.reply == "W00T!" || self.reply == "RARGH!",
            Op::Get => !self.reply.is_empty() && !self.is_error(),
            Op::Exists => self.reply == "AWESOME!",
        }
    }

    /// Whether the reply says the name was not there.
    fn saw_absent(&self) -> bool {
        match &self.op {
            Op::Store(_) => false,
            Op::Get => self.reply.is_empty(),
            Op::Exists => self.reply == "RARGH!",
        }
    }

    fn is_error(&self) -> bool {
        self.reply.starts_with("ERROR")
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match &self.op {
            Op::Store(value) => format!("STORE {} {value}", self.name),
            Op::Get => format!("GET {}", self.name),
            Op::Exists => format!("EXISTS {}", self.name),
        };
        write!(f, "{}: {op} -> {:?}", self.client, self.reply)
    }
}

/// One way a history breaks the promise.
#[derive(Debug, Clone, PartialEq)]
pub enum Violation {
    /// Two STOREs of one name were both answered `W00T!`.
    TwoWoots {
        name: String,
        first: String,
        second: String,
    },
    /// A `W00T!` whose value is not in the final table (gone, or another).
    WootLost {
        name: String,
        value: String,
        at_end: Option<String>,
    },
    /// A GET served a value that is not the final one.
    ValueContradicted {
        name: String,
        served: String,
        at_end: Option<String>,
    },
    /// `AWESOME!` or a `RARGH!` STORE said the name is there; at the end
    /// it is not.
    PresenceContradicted { request: String },
    /// An empty GET or `RARGH!` EXISTS sent after an answer that had said
    /// the name is there.
    StaleAbsence { request: String, after: String },
    /// A reply that is none of the protocol's (e.g. a client gave up).
    Unexpected { request: String },
}

/// What a history held.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub requests: usize,
    pub woots: usize,
    pub errors: usize,
    /// Errors by reply text.
    pub error_kinds: HashMap<String, usize>,
}

/// Checks `events` against `at_end` (the final table, name → value).
pub fn check(events: &[Event], at_end: &HashMap<String, String>) -> (Summary, Vec<Violation>) {
    let mut summary = Summary {
        requests: events.len(),
        ..Summary::default()
    };
    let mut violations = Vec::new();
    let mut by_name: HashMap<&str, Vec<&Event>> = HashMap::new();
    for event in events {
        by_name.entry(&event.name).or_default().push(event);
    }
    for (name, events) in &by_name {
        let final_value = at_end.get(*name);
        let mut first_woot: Option<&Event> = None;
        for event in events {
            if event.is_error() {
                summary.errors += 1;
                *summary.error_kinds.entry(event.reply.clone()).or_default() += 1;
                continue;
            }
            let known = match &event.op {
                Op::Store(_) => event.reply == "W00T!" || event.reply == "RARGH!",
                Op::Get => true,
                Op::Exists => event.reply == "AWESOME!" || event.reply == "RARGH!",
            };
            if !known {
                violations.push(Violation::Unexpected {
                    request: event.to_string(),
                });
                continue;
            }
            match (&event.op, event.reply.as_str()) {
                (Op::Store(value), "W00T!") => {
                    summary.woots += 1;
                    if let Some(first) = first_woot {
                        violations.push(Violation::TwoWoots {
                            name: name.to_string(),
                            first: first.to_string(),
                            second: event.to_string(),
                        });
                    } else {
                        first_woot = Some(event);
                    }
                    if final_value != Some(value) {
                        violations.push(Violation::WootLost {
                            name: name.to_string(),
                            value: value.clone(),
                            at_end: final_value.cloned(),
                        });
                    }
                }
                (Op::Get, served)
                    if !served.is_empty() && final_value.map(String::as_str) != Some(served) =>
                {
                    violations.push(Violation::ValueContradicted {
                        name: name.to_string(),
                        served: served.to_string(),
                        at_end: final_value.cloned(),
                    });
                }
                (Op::Exists, "AWESOME!") | (Op::Store(_), "RARGH!") if final_value.is_none() => {
                    violations.push(Violation::PresenceContradicted {
                        request: event.to_string(),
                    });
                }
                _ => {}
            }
        }
        // An absence seen after a presence had been answered: the earliest
        // answered presence is the one every later-sent absence must follow.
        let first_present = events
            .iter()
            .filter(|e| e.saw_present())
            .min_by_key(|e| e.replied);
        if let Some(present) = first_present {
            for event in events {
                if event.saw_absent() && event.sent > present.replied {
                    violations.push(Violation::StaleAbsence {
                        request: event.to_string(),
                        after: present.to_string(),
                    });
                }
            }
        }
    }
    (summary, violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Events at whole "ticks" from a common start: (sent, replied).
    struct Clock(Instant);

    impl Clock {
        fn at(&self, tick: u64) -> Instant {
            self.0 + Duration::from_millis(tick * 10)
        }

        fn event(&self, client: &str, name: &str, op: Op, ticks: (u64, u64), reply: &str) -> Event {
            Event {
                client: client.into(),
                name: name.into(),
                op,
                sent: self.at(ticks.0),
                replied: self.at(ticks.1),
                reply: reply.into(),
            }
        }
    }

    fn table(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn store(v: &str) -> Op {
        Op::Store(v.into())
    }

    /// A history every rule allows: a race with one winner, reads before
    /// and after, ERRORs counted, an ERROR'd STORE that did land, and
    /// overlapping reads that may see either state.
    #[test]
    fn a_correct_history_passes_and_errors_are_counted() {
        let c = Clock(Instant::now());
        let events = vec![
            c.event("a", "n", Op::Get, (0, 1), ""),
            c.event("a", "n", store("x"), (2, 5), "W00T!"),
            c.event("b", "n", store("y"), (3, 6), "RARGH!"),
            // Overlaps the W00T!: may still see nothing.
            c.event("c", "n", Op::Exists, (4, 7), "RARGH!"),
            c.event("c", "n", Op::Get, (8, 9), "x"),
            c.event("b", "n", Op::Exists, (8, 9), "AWESOME!"),
            c.event("a", "m", store("z"), (1, 30), "ERROR storage unavailable"),
            c.event("b", "m", Op::Get, (31, 32), "z"),
            c.event("b", "k", store("q"), (1, 30), "ERROR storage unavailable"),
            c.event("b", "k", Op::Get, (31, 32), ""),
        ];
        let (summary, violations) = check(&events, &table(&[("n", "x"), ("m", "z")]));
        assert_eq!(violations, vec![]);
        assert_eq!(summary.requests, 10);
        assert_eq!(summary.woots, 1);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.error_kinds["ERROR storage unavailable"], 2);
    }

    #[test]
    fn two_woots_for_one_name_are_caught() {
        let c = Clock(Instant::now());
        let events = vec![
            c.event("a", "n", store("x"), (0, 2), "W00T!"),
            c.event("b", "n", store("y"), (1, 3), "W00T!"),
        ];
        let (_, violations) = check(&events, &table(&[("n", "x")]));
        assert!(
            matches!(&violations[..], [Violation::TwoWoots { name, .. }, Violation::WootLost { value, .. }] if name == "n" && value == "y"),
            "{violations:?}"
        );
    }

    #[test]
    fn a_lost_woot_is_caught() {
        let c = Clock(Instant::now());
        let events = vec![c.event("a", "n", store("x"), (0, 1), "W00T!")];
        let (_, violations) = check(&events, &HashMap::new());
        assert_eq!(
            violations,
            vec![Violation::WootLost {
                name: "n".into(),
                value: "x".into(),
                at_end: None
            }]
        );
        // There, but with another value.
        let (_, violations) = check(&events, &table(&[("n", "other")]));
        assert_eq!(
            violations,
            vec![Violation::WootLost {
                name: "n".into(),
                value: "x".into(),
                at_end: Some("other".into())
            }]
        );
    }

    #[test]
    fn a_served_value_that_vanished_or_differs_is_caught() {
        let c = Clock(Instant::now());
        let events = vec![c.event("a", "n", Op::Get, (0, 1), "x")];
        let (_, violations) = check(&events, &HashMap::new());
        assert!(
            matches!(&violations[..], [Violation::ValueContradicted { served, at_end: None, .. }] if served == "x"),
            "{violations:?}"
        );
        let (_, violations) = check(&events, &table(&[("n", "y")]));
        assert!(
            matches!(&violations[..], [Violation::ValueContradicted { .. }]),
            "{violations:?}"
        );
    }

    #[test]
    fn a_presence_that_vanished_is_caught() {
        let c = Clock(Instant::now());
        for event in [
            c.event("a", "n", Op::Exists, (0, 1), "AWESOME!"),
            c.event("a", "n", store("v"), (0, 1), "RARGH!"),
        ] {
            let (_, violations) = check(std::slice::from_ref(&event), &HashMap::new());
            assert!(
                matches!(&violations[..], [Violation::PresenceContradicted { .. }]),
                "{event}: {violations:?}"
            );
        }
    }

    #[test]
    fn an_absence_after_a_completed_woot_or_read_is_caught() {
        let c = Clock(Instant::now());
        let at_end = table(&[("n", "x")]);
        for (earlier, later) in [
            (
                c.event("a", "n", store("x"), (0, 1), "W00T!"),
                c.event("b", "n", Op::Get, (2, 3), ""),
            ),
            (
                c.event("a", "n", store("x"), (0, 1), "W00T!"),
                c.event("b", "n", Op::Exists, (2, 3), "RARGH!"),
            ),
            (
                c.event("a", "n", Op::Get, (0, 1), "x"),
                c.event("b", "n", Op::Get, (2, 3), ""),
            ),
        ] {
            let (_, violations) = check(&[earlier.clone(), later.clone()], &at_end);
            assert!(
                matches!(&violations[..], [Violation::StaleAbsence { .. }]),
                "{earlier} then {later}: {violations:?}"
            );
            // Overlapping in time, the same two are allowed.
            let mut overlapping = later.clone();
            overlapping.sent = earlier.sent;
            let (_, violations) = check(&[earlier, overlapping], &at_end);
            assert_eq!(violations, vec![]);
        }
    }

    #[test]
    fn a_reply_outside_the_protocol_is_caught() {
        let c = Clock(Instant::now());
        let events = vec![c.event("a", "n", store("x"), (0, 1), "HANG (no reply)")];
        let (_, violations) = check(&events, &HashMap::new());
        assert!(
            matches!(&violations[..], [Violation::Unexpected { .. }]),
            "{violations:?}"
        );
    }
}

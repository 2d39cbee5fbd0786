//! [`CallTable`] against a reference model: a map of busy slots plus the ids
//! handed out so far. Every operation is applied to both; after every step
//! every observable must agree, and the global rules must hold:
//!
//! - request ids strictly increase (so none is ever reused);
//! - a slot is never handed out while busy, and `busy() <= slot_count()`;
//! - a reply is delivered to at most one call, and only to the call whose
//!   slot and request id it carries; every refused reply gets the exact
//!   [`ReplyError`] variant and leaves the table unchanged.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use crate::mailbox::{CallId, CallTable, ReplyError};

/// A slot as the model sees it (absent from the map = free).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Held {
    InFlight { id: u64 },
    Replied { id: u64, len: u32 },
    Abandoned { id: u64 },
}

impl Held {
    fn id(self) -> u64 {
        match self {
            Held::InFlight { id } | Held::Replied { id, .. } | Held::Abandoned { id } => id,
        }
    }
}

/// Which request id a reply carries.
#[derive(Clone, Debug)]
enum IdPick {
    /// The id of the chosen call (a genuine reply, or a duplicate / late one).
    OfCall,
    /// The id of another call from the history (stale, or crossed slots).
    OfOther(usize),
    /// The id the next `begin` will hand out (a reply from the future).
    Next,
    /// Anything.
    Raw(u64),
}

/// Which slot a reply names.
#[derive(Clone, Debug)]
enum SlotPick {
    OfCall,
    /// Possibly out of range.
    Raw(u32),
}

#[derive(Clone, Debug)]
enum Op {
    Begin,
    /// `call` indexes the history of calls handed out (modulo its length).
    Reply {
        call: usize,
        slot: SlotPick,
        id: IdPick,
        len: u32,
    },
    Finish {
        call: usize,
    },
    Abandon {
        call: usize,
    },
    Withdraw {
        call: usize,
    },
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let call = 0..64usize;
    let slot = prop_oneof![4 => Just(SlotPick::OfCall), 1 => (0..10u32).prop_map(SlotPick::Raw)];
    let id = prop_oneof![
        6 => Just(IdPick::OfCall),
        2 => (0..64usize).prop_map(IdPick::OfOther),
        1 => Just(IdPick::Next),
        1 => prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>(), 0..200u64].prop_map(IdPick::Raw),
    ];
    prop_oneof![
        6 => Just(Op::Begin),
        8 => (call.clone(), slot, id, any::<u32>()).prop_map(|(call, slot, id, len)| Op::Reply { call, slot, id, len }),
        4 => call.clone().prop_map(|call| Op::Finish { call }),
        2 => call.clone().prop_map(|call| Op::Abandon { call }),
        2 => call.prop_map(|call| Op::Withdraw { call }),
        1 => Just(Op::Reset),
    ]
}

struct Model {
    count: u32,
    busy: BTreeMap<u32, Held>,
    last_id: u64,
    /// Every call handed out, oldest first.
    history: Vec<CallId>,
    /// Request ids whose reply was delivered to a call.
    delivered: BTreeSet<u64>,
}

impl Model {
    fn new(count: u32) -> Self {
        Model {
            count,
            busy: BTreeMap::new(),
            last_id: 0,
            history: Vec::new(),
            delivered: BTreeSet::new(),
        }
    }

    fn pick(&self, i: usize) -> Option<CallId> {
        (!self.history.is_empty()).then(|| self.history[i % self.history.len()])
    }

    /// The reference `on_reply`.
    fn on_reply(&mut self, slot: u32, id: u64, len: u32) -> Result<Option<CallId>, ReplyError> {
        if slot >= self.count {
            return Err(ReplyError::SlotOutOfRange {
                slot,
                count: self.count,
            });
        }
        let Some(held) = self.busy.get(&slot).copied() else {
            return Err(ReplyError::NotInFlight { slot, request_id: id });
        };
        match held {
            Held::InFlight { id: want } if want == id => {
                self.busy.insert(slot, Held::Replied { id, len });
                Ok(Some(CallId { slot, request_id: id }))
            }
            Held::Abandoned { id: want } if want == id => {
                self.busy.remove(&slot);
                Ok(None)
            }
            Held::Replied { id: have, .. } if have == id => Err(ReplyError::Duplicate { slot, request_id: id }),
            other => Err(ReplyError::WrongRequest {
                slot,
                expected: other.id(),
                got: id,
            }),
        }
    }

    /// `Some` when `call` still owns its slot (same request id).
    fn state_of(&self, call: CallId) -> Option<Held> {
        self.busy.get(&call.slot).copied().filter(|h| h.id() == call.request_id)
    }
}

/// Every observable of `t` agrees with `m`, for every call ever handed out.
fn agree(t: &CallTable, m: &Model) {
    assert_eq!(t.slot_count(), m.count);
    assert_eq!(t.busy(), m.busy.len(), "busy()");
    assert!(t.busy() <= t.slot_count() as usize);
    for &c in &m.history {
        let want_len = match m.state_of(c) {
            Some(Held::Replied { len, .. }) => Some(len),
            _ => None,
        };
        assert_eq!(t.reply_len(c), want_len, "reply_len({c:?})");
        assert_eq!(
            t.is_in_flight(c),
            matches!(m.state_of(c), Some(Held::InFlight { .. })),
            "is_in_flight({c:?})"
        );
    }
}

fn run(count: u32, ops: &[Op]) {
    let mut t = CallTable::new(count);
    let mut m = Model::new(count);
    for op in ops {
        match op {
            Op::Begin => {
                let got = t.begin();
                if m.busy.len() < count as usize {
                    let c = got.expect("a free slot exists, begin must succeed");
                    assert!(c.slot < count, "{c:?} out of range");
                    assert!(!m.busy.contains_key(&c.slot), "slot {} handed out while busy", c.slot);
                    assert!(c.request_id > m.last_id, "request ids strictly increase: {c:?}");
                    m.last_id = c.request_id;
                    m.busy.insert(c.slot, Held::InFlight { id: c.request_id });
                    m.history.push(c);
                } else {
                    assert_eq!(got, None, "every slot is busy");
                }
            }
            Op::Reply { call, slot, id, len } => {
                let base = m.pick(*call);
                let slot = match (slot, base) {
                    (SlotPick::OfCall, Some(c)) => c.slot,
                    (SlotPick::OfCall, None) => 0,
                    (SlotPick::Raw(s), _) => *s,
                };
                let id = match (id, base) {
                    (IdPick::OfCall, Some(c)) => c.request_id,
                    (IdPick::OfOther(i), _) => m.pick(*i).map_or(1, |c| c.request_id),
                    (IdPick::OfCall, None) | (IdPick::Next, _) => m.last_id + 1,
                    (IdPick::Raw(r), _) => *r,
                };
                let before = m.busy.clone();
                let want = m.on_reply(slot, id, *len);
                let got = t.on_reply(slot, id, *len);
                assert_eq!(got, want, "on_reply(slot {slot}, id {id})");
                match got {
                    Ok(Some(c)) => {
                        assert_eq!((c.slot, c.request_id), (slot, id), "delivered to the call it names");
                        assert!(m.delivered.insert(id), "reply {id} delivered twice");
                    }
                    Ok(None) => {}
                    Err(_) => assert_eq!(m.busy, before, "a refused reply changes nothing"),
                }
            }
            Op::Finish { call } => {
                // Finishing an unreplied call is a caller bug (it panics); only finish replied ones.
                if let Some(c) = m
                    .pick(*call)
                    .filter(|c| matches!(m.state_of(*c), Some(Held::Replied { .. })))
                {
                    t.finish(c);
                    m.busy.remove(&c.slot);
                }
            }
            Op::Abandon { call } => {
                if let Some(c) = m.pick(*call) {
                    t.abandon(c);
                    match m.state_of(c) {
                        Some(Held::InFlight { id }) => {
                            m.busy.insert(c.slot, Held::Abandoned { id });
                        }
                        Some(Held::Replied { .. }) => {
                            m.busy.remove(&c.slot);
                        }
                        Some(Held::Abandoned { .. }) | None => {}
                    }
                }
            }
            Op::Withdraw { call } => {
                if let Some(c) = m.pick(*call) {
                    t.withdraw(c);
                    if matches!(m.state_of(c), Some(Held::InFlight { .. })) {
                        m.busy.remove(&c.slot);
                    }
                }
            }
            Op::Reset => {
                let want: Vec<CallId> = m
                    .busy
                    .iter()
                    .filter_map(|(&slot, h)| match h {
                        Held::InFlight { id } => Some(CallId { slot, request_id: *id }),
                        _ => None,
                    })
                    .collect();
                assert_eq!(t.reset(), want, "reset returns the waiting calls, by slot");
                m.busy.clear();
            }
        }
        agree(&t, &m);
    }
}

proptest! {
    #![proptest_config(super::config(1000))]

    #[test]
    fn call_table_matches_model(count in 1..6u32, ops in proptest::collection::vec(op(), 1..160)) {
        run(count, &ops);
    }
}

#[test]
#[should_panic(expected = "finish of")]
fn finishing_an_unreplied_call_panics() {
    let mut t = CallTable::new(1);
    let c = t.begin().unwrap();
    t.finish(c);
}

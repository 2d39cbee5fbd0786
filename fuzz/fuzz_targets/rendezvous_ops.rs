//! An arbitrary sequence of inputs into one or two rendezvous machines (a
//! driver and a worker sharing a `StoreModel`): start, close, commands
//! answered by the model, lost (and maybe delivered later), failed or answered
//! with an arbitrary or forged reply, raw and structured notifications, store
//! logs read, connect results, time steps. At most 256 inputs.
//!
//! Asserts after every input: no panic; at most one command in flight (after
//! `poll_command` gave one, it gives none until that command's reply, its
//! deadline passed a `handle_timeout`, or `close`); tokens strictly increase;
//! events drained after one call stay within the machine's bound (1024); a
//! `Connect` only comes out of a fetch reply and names the incarnation of the
//! lease in that reply, with endpoint info of the peer it is engaged with;
//! `Ready` only for the peer of the last `Connect` answered `Ok`; `Closed`
//! only after `close`, and a closed machine issues no command.

#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use slimebench_proto::rendezvous::{Command, Event, LocalEndpoint, PeerEndpoint, Rendezvous, Role, Timing};
use slimebench_proto::store::{AgentLookup, StoreFailure, StoreModel, StoreReply};
use slimebench_proto::transport::{MrDesc, TransportAddr};
use slimebench_proto::values::{AgentRecord, ControlValue, EndpointInfo, Geometry, MailboxInfo, Notification};
use slimebench_proto::{Keys, WIRE_VERSION};

const ALIASES: [&str; 2] = ["driver", "worker"];
const INCS: [u64; 2] = [0x11, 0x22];
const MAX_EVENTS: usize = 1024;
const MAX_OPS: usize = 256;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Who {
    Peer,
    Me,
    Other(u8),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum IncSel {
    /// The live incarnation of that agent.
    Live,
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Lookup {
    Absent,
    Present { inc: IncSel, wire_version: u8 },
    Corrupt(String),
}

#[derive(Arbitrary, Debug)]
enum ArbReply {
    Claimed,
    Conflict {
        holder: Lookup,
        ttl_ms: Option<u32>,
    },
    Refreshed,
    NotOwner(Lookup),
    Deleted(u8),
    Put,
    /// Fetched with raw values.
    Fetched {
        agent: Lookup,
        values: Vec<Option<Vec<u8>>>,
    },
    /// Fetched with well-formed values for the peer, of chosen incarnations.
    Forged {
        agent: IncSel,
        info: IncSel,
        mailbox: IncSel,
        same_geometry: bool,
    },
    Appended,
    Skipped,
    Released(u8),
}

#[derive(Arbitrary, Debug)]
enum Reply {
    Model,
    Lose,
    Unavailable,
    Timeout,
    Unexpected,
    Arbitrary(ArbReply),
}

#[derive(Arbitrary, Debug)]
enum Note {
    ConnectPeer {
        from: Who,
        inc: IncSel,
    },
    QpReady {
        from: Who,
        inc: IncSel,
        to: IncSel,
    },
    Cleanup {
        from: Who,
        inc: IncSel,
        to: IncSel,
    },
    Reject {
        from: Who,
        inc: IncSel,
        to: IncSel,
        reason: String,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Start(bool),
    Close(bool),
    Poll { side: bool, reply: Reply },
    Held { side: bool, pick: u8, model: bool },
    Raw { side: bool, bytes: Vec<u8> },
    Notify { side: bool, note: Note },
    ReadLogs(bool),
    Connected { side: bool, ok: bool },
    Advance(u16),
    Timeout(bool),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Both machines, or only the first.
    two: bool,
    /// With one machine: the worker rather than the driver.
    lone_worker: bool,
    ops: Vec<Op>,
}

struct Side {
    m: Rendezvous,
    started: bool,
    close_called: bool,
    closed: bool,
    outstanding: Option<(u64, Duration)>,
    last_token: u64,
    held: Vec<Command>,
    cursor: u64,
    pending_connect: Option<PeerEndpoint>,
    connected_ok: Option<PeerEndpoint>,
}

fn local(i: usize) -> LocalEndpoint {
    LocalEndpoint {
        alias: ALIASES[i].into(),
        incarnation: INCS[i],
        host: "fuzz".into(),
        pid: 1,
        transport: TransportAddr::Sim {
            node: INCS[i],
            endpoint_id: INCS[i],
        },
        mailbox: MrDesc {
            addr: 0x1000,
            len: 4096,
            rkey: INCS[i] as u32,
        },
        geometry: Geometry {
            slot_size: 4096,
            slot_count: 1,
        },
    }
}

struct World {
    store: StoreModel,
    keys: Keys,
    timing: Timing,
    now: Duration,
    sides: Vec<(usize, Side)>,
}

impl World {
    fn alias(&self, i: usize) -> usize {
        self.sides[i].0
    }

    fn who(&self, i: usize, w: Who) -> String {
        match w {
            Who::Peer => ALIASES[1 - self.alias(i)].to_string(),
            Who::Me => ALIASES[self.alias(i)].to_string(),
            Who::Other(n) => format!("agent{n}"),
        }
    }

    fn inc(&self, alias: &str, sel: IncSel) -> u64 {
        match sel {
            IncSel::Live => ALIASES.iter().position(|a| *a == alias).map_or(7, |k| INCS[k]),
            IncSel::Raw(r) => r,
        }
    }

    fn lookup(&self, i: usize, l: &Lookup) -> AgentLookup {
        match l {
            Lookup::Absent => AgentLookup::Absent,
            Lookup::Present { inc, wire_version } => AgentLookup::Present(AgentRecord {
                incarnation: self.inc(&self.who(i, Who::Peer), *inc),
                host: "h".into(),
                pid: 2,
                wire_version: u32::from(*wire_version),
            }),
            Lookup::Corrupt(s) => AgentLookup::Corrupt(s.clone()),
        }
    }

    fn arbitrary_reply(&self, i: usize, r: &ArbReply) -> StoreReply {
        match r {
            ArbReply::Claimed => StoreReply::Claimed,
            ArbReply::Conflict { holder, ttl_ms } => StoreReply::Conflict {
                holder: self.lookup(i, holder),
                ttl_left: ttl_ms.map(|ms| Duration::from_millis(u64::from(ms))),
            },
            ArbReply::Refreshed => StoreReply::Refreshed,
            ArbReply::NotOwner(l) => StoreReply::NotOwner {
                holder: self.lookup(i, l),
            },
            ArbReply::Deleted(n) => StoreReply::Deleted { count: usize::from(*n) },
            ArbReply::Put => StoreReply::Put,
            ArbReply::Fetched { agent, values } => StoreReply::Fetched {
                agent: self.lookup(i, agent),
                values: values.iter().take(4).cloned().collect(),
            },
            ArbReply::Forged {
                agent,
                info,
                mailbox,
                same_geometry,
            } => {
                let me = self.who(i, Who::Me);
                let peer = self.sides[i]
                    .1
                    .m
                    .peer_alias()
                    .map_or_else(|| self.who(i, Who::Peer), str::to_string);
                let (a, e, mb) = (
                    self.inc(&peer, *agent),
                    self.inc(&peer, *info),
                    self.inc(&peer, *mailbox),
                );
                let info = EndpointInfo {
                    wire_version: WIRE_VERSION,
                    alias: peer.clone(),
                    peer: me,
                    incarnation: e,
                    transport: TransportAddr::Sim {
                        node: e,
                        endpoint_id: e,
                    },
                    geometry: Geometry {
                        slot_size: if *same_geometry { 4096 } else { 8192 },
                        slot_count: 1,
                    },
                };
                let mailbox = MailboxInfo {
                    alias: peer,
                    incarnation: mb,
                    mr: MrDesc {
                        addr: 0,
                        len: 8192,
                        rkey: mb as u32,
                    },
                };
                StoreReply::Fetched {
                    agent: AgentLookup::Present(AgentRecord {
                        incarnation: a,
                        host: "h".into(),
                        pid: 2,
                        wire_version: WIRE_VERSION,
                    }),
                    values: vec![Some(info.encode()), Some(mailbox.encode())],
                }
            }
            ArbReply::Appended => StoreReply::Appended,
            ArbReply::Skipped => StoreReply::Skipped,
            ArbReply::Released(n) => StoreReply::Released {
                deleted: usize::from(*n),
            },
        }
    }

    /// Take every event of side `i`; `fetched`: the lease incarnation in the
    /// fetch reply just handled, if that is what produced them.
    fn drain(&mut self, i: usize, fetched: Option<Option<u64>>) {
        let s = &mut self.sides[i].1;
        let mut n = 0;
        while let Some(ev) = s.m.poll_event() {
            n += 1;
            match ev {
                Event::Connect { peer } => {
                    assert_eq!(
                        fetched,
                        Some(Some(peer.incarnation())),
                        "Connect not from the fetched lease"
                    );
                    assert_eq!(Some(peer.alias()), s.m.peer_alias(), "Connect to another peer");
                    assert_eq!(peer.info.peer, s.m.alias());
                    s.pending_connect = Some(peer);
                    s.connected_ok = None;
                }
                Event::Ready { peer } => {
                    assert_eq!(
                        s.connected_ok.as_ref(),
                        Some(&peer),
                        "Ready without a connect to this peer"
                    );
                }
                Event::Closed { .. } => {
                    assert!(s.close_called, "Closed without close()");
                    s.closed = true;
                }
                Event::Down { .. } | Event::Failed { .. } | Event::Note(_) => {}
            }
        }
        assert!(n <= MAX_EVENTS, "{n} events queued");
    }

    fn reply(&mut self, i: usize, token: u64, reply: Result<StoreReply, StoreFailure>) {
        let fetched = match &reply {
            Ok(StoreReply::Fetched { agent, .. }) => Some(match agent {
                AgentLookup::Present(r) => Some(r.incarnation),
                _ => None,
            }),
            _ => None,
        };
        let now = self.now;
        let s = &mut self.sides[i].1;
        if s.outstanding.is_some_and(|(t, _)| t == token) {
            s.outstanding = None;
        }
        s.m.handle_reply(now, token, reply);
        self.drain(i, fetched);
    }

    fn apply(&mut self, op: &Op) {
        let count = self.sides.len();
        let side = |b: bool| usize::from(b) % count;
        let now = self.now;
        match op {
            Op::Start(b) => {
                let s = &mut self.sides[side(*b)].1;
                // Call order: start once, before close (a second start panics by contract).
                if !s.started && !s.close_called {
                    s.started = true;
                    s.m.start(now);
                }
                self.drain(side(*b), None);
            }
            Op::Close(b) => {
                let s = &mut self.sides[side(*b)].1;
                s.m.close(now);
                s.close_called = true;
                s.outstanding = None;
                self.drain(side(*b), None);
            }
            Op::Poll { side: b, reply } => {
                let i = side(*b);
                let s = &mut self.sides[i].1;
                let Some(cmd) = s.m.poll_command(now) else { return };
                assert!(!s.closed, "a closed machine issued {cmd:?}");
                assert!(
                    s.outstanding.is_none(),
                    "#{} issued while {:?} in flight",
                    cmd.token,
                    s.outstanding
                );
                assert!(cmd.token > s.last_token, "token #{} after #{}", cmd.token, s.last_token);
                s.last_token = cmd.token;
                s.outstanding = Some((cmd.token, now + self.timing.op_timeout));
                let r = match reply {
                    Reply::Model => Ok(self.store.apply(now, &cmd.op)),
                    Reply::Lose => {
                        self.sides[i].1.held.push(cmd);
                        return;
                    }
                    Reply::Unavailable => Err(StoreFailure::Unavailable("fuzz".into())),
                    Reply::Timeout => Err(StoreFailure::Timeout),
                    Reply::Unexpected => Err(StoreFailure::Unexpected("fuzz".into())),
                    Reply::Arbitrary(a) => Ok(self.arbitrary_reply(i, a)),
                };
                self.reply(i, cmd.token, r);
            }
            Op::Held { side: b, pick, model } => {
                let i = side(*b);
                let held = &mut self.sides[i].1.held;
                if held.is_empty() {
                    return;
                }
                let cmd = held.remove(usize::from(*pick) % held.len());
                let r = if *model {
                    Ok(self.store.apply(now, &cmd.op))
                } else {
                    Err(StoreFailure::Timeout)
                };
                self.reply(i, cmd.token, r);
            }
            Op::Raw { side: b, bytes } => {
                let i = side(*b);
                self.sides[i].1.m.handle_notification(now, bytes);
                self.drain(i, None);
            }
            Op::Notify { side: b, note } => {
                let i = side(*b);
                let me = self.who(i, Who::Me);
                let n = match note {
                    Note::ConnectPeer { from, inc } => {
                        let from = self.who(i, *from);
                        Notification::ConnectPeer {
                            from_inc: self.inc(&from, *inc),
                            from,
                        }
                    }
                    Note::QpReady { from, inc, to } => {
                        let from = self.who(i, *from);
                        Notification::QpReady {
                            from_inc: self.inc(&from, *inc),
                            to_inc: self.inc(&me, *to),
                            from, again: false }
                    }
                    Note::Cleanup { from, inc, to } => {
                        let from = self.who(i, *from);
                        Notification::Cleanup {
                            from_inc: self.inc(&from, *inc),
                            to_inc: self.inc(&me, *to),
                            from,
                        }
                    }
                    Note::Reject { from, inc, to, reason } => {
                        let from = self.who(i, *from);
                        Notification::Reject {
                            from_inc: self.inc(&from, *inc),
                            to_inc: self.inc(&me, *to),
                            from,
                            reason: reason.clone(),
                        }
                    }
                };
                self.sides[i].1.m.handle_notification(now, &n.encode());
                self.drain(i, None);
            }
            Op::ReadLogs(b) => {
                let i = side(*b);
                let me = ALIASES[self.alias(i)];
                let cursor = self.sides[i].1.cursor;
                let mut raw: Vec<Vec<u8>> = Vec::new();
                for (id, v) in self.store.read_log(now, &self.keys.stream(me), cursor, 32) {
                    self.sides[i].1.cursor = id;
                    raw.push(v);
                }
                raw.extend(self.store.pop_log(now, &self.keys.inbox(me), 32));
                for v in raw {
                    self.sides[i].1.m.handle_notification(now, &v);
                    self.drain(i, None);
                }
            }
            Op::Connected { side: b, ok } => {
                let i = side(*b);
                let s = &mut self.sides[i].1;
                let before = s.m.phase_name();
                let pending = s.pending_connect.take();
                let result = if *ok { Ok(()) } else { Err("fuzz".to_string()) };
                s.m.handle_connected(now, result);
                if before == "connect" {
                    assert!(pending.is_some(), "in phase connect without a Connect event");
                    if *ok {
                        s.connected_ok = pending;
                    }
                } else {
                    assert_eq!(before, s.m.phase_name(), "a connect result outside phase connect acted");
                }
                self.drain(i, None);
            }
            Op::Advance(ms) => self.now += Duration::from_millis(u64::from(*ms)),
            Op::Timeout(b) => {
                let i = side(*b);
                let s = &mut self.sides[i].1;
                s.m.handle_timeout(now);
                if s.outstanding.is_some_and(|(_, deadline)| now >= deadline) {
                    s.outstanding = None;
                }
                self.drain(i, None);
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let keys = Keys::new("f").expect("scope");
    let timing = Timing::default();
    let which: Vec<usize> = match (input.two, input.lone_worker) {
        (true, _) => vec![0, 1],
        (false, false) => vec![0],
        (false, true) => vec![1],
    };
    let sides = which
        .into_iter()
        .map(|k| {
            let role = if k == 0 {
                Role::Initiator {
                    peer: ALIASES[1].into(),
                }
            } else {
                Role::Responder
            };
            let m = Rendezvous::new(keys.clone(), local(k), role, timing.clone());
            let side = Side {
                m,
                started: false,
                close_called: false,
                closed: false,
                outstanding: None,
                last_token: 0,
                held: Vec::new(),
                cursor: 0,
                pending_connect: None,
                connected_ok: None,
            };
            (k, side)
        })
        .collect();
    let mut w = World {
        store: StoreModel::new(),
        keys,
        timing,
        now: Duration::ZERO,
        sides,
    };
    for op in input.ops.iter().take(MAX_OPS) {
        w.apply(op);
    }
});

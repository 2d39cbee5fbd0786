//! One test per rendezvous rule, driving real machines against [`StoreModel`].

use super::*;
use crate::store::StoreModel;
use crate::values::Geometry;

fn local(alias: &str, inc: u64, slot_size: u64) -> LocalEndpoint {
    LocalEndpoint {
        alias: alias.into(),
        incarnation: inc,
        host: "test".into(),
        pid: 1,
        transport: TransportAddr::Sim {
            node: inc,
            endpoint_id: inc,
        },
        mailbox: MrDesc {
            addr: 0x1000,
            len: slot_size,
            rkey: inc as u32,
        },
        geometry: Geometry {
            slot_size,
            slot_count: 1,
        },
    }
}

struct Side {
    m: Rendezvous,
    cursor: u64,
    events: Vec<Event>,
    started: bool,
    /// Commands whose replies the test withholds: (token, op).
    withheld: Vec<Command>,
    withhold_next: usize,
}

struct World {
    store: StoreModel,
    now: Duration,
    sides: Vec<Side>,
    store_down: bool,
    steps: usize,
}

impl World {
    fn new() -> Self {
        World {
            store: StoreModel::new(),
            now: Duration::ZERO,
            sides: Vec::new(),
            store_down: false,
            steps: 0,
        }
    }

    fn add(&mut self, l: LocalEndpoint, role: Role) -> usize {
        let m = Rendezvous::new(Keys::new("t").unwrap(), l, role, Timing::default());
        self.sides.push(Side {
            m,
            cursor: 0,
            events: Vec::new(),
            started: false,
            withheld: Vec::new(),
            withhold_next: 0,
        });
        self.sides.len() - 1
    }

    fn start(&mut self, i: usize) {
        self.sides[i].m.start(self.now);
        self.sides[i].started = true;
    }

    /// Run every side until nothing changes at this instant.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut progress = false;
            for i in 0..self.sides.len() {
                progress |= self.step_side(i);
            }
            if !progress {
                return;
            }
        }
        panic!("no quiescence at {:?}", self.now);
    }

    fn step_side(&mut self, i: usize) -> bool {
        let now = self.now;
        let mut progress = false;
        if !self.sides[i].started {
            return false;
        }
        while let Some(cmd) = self.sides[i].m.poll_command(now) {
            progress = true;
            if self.sides[i].withhold_next > 0 {
                self.sides[i].withhold_next -= 1;
                self.sides[i].withheld.push(cmd);
                continue;
            }
            let reply = if self.store_down {
                Err(StoreFailure::Unavailable("down".into()))
            } else {
                Ok(self.store.apply(now, &cmd.op))
            };
            self.sides[i].m.handle_reply(now, cmd.token, reply);
        }
        while let Some(ev) = self.sides[i].m.poll_event() {
            progress = true;
            if let Event::Connect { .. } = &ev {
                self.sides[i].m.handle_connected(now, Ok(()));
            }
            self.sides[i].events.push(ev);
        }
        if !self.store_down {
            let me = self.sides[i].m.alias().to_string();
            let keys = self.sides[i].m.keys().clone();
            let entries = self.store.read_log(now, &keys.stream(&me), self.sides[i].cursor, 64);
            for (id, raw) in entries {
                self.sides[i].cursor = id;
                self.sides[i].m.handle_notification(now, &raw);
                progress = true;
            }
            for raw in self.store.pop_log(now, &keys.inbox(&me), 64) {
                self.sides[i].m.handle_notification(now, &raw);
                progress = true;
            }
        }
        progress
    }

    /// Settle, then jump to the earliest timer; repeat until `done` or the step limit.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.steps += 1;
            assert!(self.steps < 100_000, "step limit");
            self.settle();
            if done(self) {
                return true;
            }
            let next = self
                .sides
                .iter()
                .filter(|s| s.started)
                .filter_map(|s| s.m.poll_timeout())
                .min();
            let Some(next) = next else { return false };
            if next > end {
                return false;
            }
            self.now = self.now.max(next);
            for s in self.sides.iter_mut().filter(|s| s.started) {
                s.m.handle_timeout(self.now);
            }
        }
    }

    fn ready(&self, i: usize) -> bool {
        self.sides[i].m.is_ready()
    }

    fn failed(&self, i: usize) -> Option<&RendezvousError> {
        self.sides[i].events.iter().find_map(|e| match e {
            Event::Failed { error } => Some(error),
            _ => None,
        })
    }

    fn down(&self, i: usize) -> Option<&DownReason> {
        self.sides[i].events.iter().find_map(|e| match e {
            Event::Down { reason } => Some(reason),
            _ => None,
        })
    }

    fn connects(&self, i: usize) -> Vec<u64> {
        self.sides[i]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Connect { peer } => Some(peer.incarnation()),
                _ => None,
            })
            .collect()
    }
}

fn pair(w: &mut World) -> (usize, usize) {
    let d = w.add(local("driver", 11, 4096), Role::Initiator { peer: "worker".into() });
    let s = w.add(local("worker", 22, 4096), Role::Responder);
    (d, s)
}

#[test]
fn both_sides_become_ready() {
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.start(s);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(1), |w| w.ready(d) && w.ready(s)));
    assert_eq!(w.sides[d].m.peer().unwrap().incarnation(), 22);
    assert_eq!(w.sides[s].m.peer().unwrap().incarnation(), 11);
    assert_eq!(w.connects(d), vec![22]);
}

#[test]
fn initiator_first_then_responder_request_is_not_lost() {
    // The driver announces before the worker exists: its connect_peer sits in
    // stream:worker, which the worker must read (not delete) when it starts.
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.start(d);
    assert!(!w.run_until(Duration::from_millis(50), |w| w.ready(d)));
    assert_eq!(w.store.read_log(w.now, "t:stream:worker", 0, 10).len(), 1);
    w.start(s);
    assert!(w.run_until(Duration::from_secs(2), |w| w.ready(d) && w.ready(s)));
}

#[test]
fn early_qp_ready_is_kept() {
    let mut w = World::new();
    let (d, _s) = pair(&mut w);
    w.start(d);
    // Publish a live worker by hand and drive the driver to its Connect event.
    let worker = local("worker", 22, 4096);
    w.store.apply(
        w.now,
        &StoreOp::Claim {
            key: "t:agent:worker".into(),
            record: AgentRecord {
                incarnation: 22,
                host: "h".into(),
                pid: 2,
                wire_version: WIRE_VERSION,
            },
            ttl: Duration::from_secs(60),
        },
    );
    let info = EndpointInfo {
        wire_version: WIRE_VERSION,
        alias: "worker".into(),
        peer: "driver".into(),
        incarnation: 22,
        transport: worker.transport.clone(),
        geometry: worker.geometry,
    };
    w.store.put_raw("t:exchange:worker:driver", info.encode(), None, w.now);
    w.store.put_raw(
        "t:mr:worker:mailbox",
        MailboxInfo {
            alias: "worker".into(),
            incarnation: 22,
            mr: worker.mailbox,
        }
        .encode(),
        None,
        w.now,
    );
    let m = &mut w.sides[d].m;
    let now = w.now;
    let mut connect = None;
    for _ in 0..20 {
        if let Some(c) = m.poll_command(now) {
            let r = w.store.apply(now, &c.op);
            m.handle_reply(now, c.token, Ok(r));
        }
        while let Some(e) = m.poll_event() {
            if let Event::Connect { peer } = e {
                connect = Some(peer);
            }
        }
        if connect.is_some() {
            break;
        }
    }
    assert!(connect.is_some(), "driver reached connect");
    // The worker's qp_ready arrives before the driver has even connected.
    m.handle_notification(
        now,
        &Notification::QpReady {
            from: "worker".into(),
            from_inc: 22,
            to_inc: 11,
            again: false,
        }
        .encode(),
    );
    m.handle_connected(now, Ok(()));
    let c = m.poll_command(now).expect("signal qp_ready");
    let r = w.store.apply(now, &c.op);
    m.handle_reply(now, c.token, Ok(r));
    assert!(m.is_ready(), "kept notification completes the rendezvous at once");
}

#[test]
fn own_stale_keys_removed_and_older_incarnation_never_used() {
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    // A crashed worker (incarnation 5) left its exchange and mailbox keys.
    let old = local("worker", 5, 4096);
    let info = EndpointInfo {
        wire_version: WIRE_VERSION,
        alias: "worker".into(),
        peer: "driver".into(),
        incarnation: 5,
        transport: old.transport.clone(),
        geometry: old.geometry,
    };
    w.store.put_raw("t:exchange:worker:driver", info.encode(), None, w.now);
    w.store.put_raw(
        "t:mr:worker:mailbox",
        MailboxInfo {
            alias: "worker".into(),
            incarnation: 5,
            mr: old.mailbox,
        }
        .encode(),
        None,
        w.now,
    );
    // The driver starts first and must not connect to the dead incarnation.
    w.start(d);
    assert!(!w.run_until(Duration::from_millis(200), |w| w.ready(d)));
    assert!(w.connects(d).is_empty(), "never connects to a dead incarnation");
    w.start(s);
    assert!(w.run_until(Duration::from_secs(2), |w| w.ready(d) && w.ready(s)));
    assert_eq!(w.connects(d), vec![22]);
    assert!(w.sides[s]
        .events
        .iter()
        .any(|e| matches!(e, Event::Note(Note::StaleKeysRemoved { count: 2 }))));
}

#[test]
fn stale_exchange_with_live_lease_is_retried_not_used() {
    // The lease says incarnation 22 but exchange still holds 5's info (the new
    // worker has not republished yet): an attempt ends early and is retried.
    let mut w = World::new();
    let (d, _) = pair(&mut w);
    w.store.apply(
        w.now,
        &StoreOp::Claim {
            key: "t:agent:worker".into(),
            record: AgentRecord {
                incarnation: 22,
                host: "h".into(),
                pid: 2,
                wire_version: WIRE_VERSION,
            },
            ttl: Duration::from_secs(60),
        },
    );
    let old = local("worker", 5, 4096);
    let info = EndpointInfo {
        wire_version: WIRE_VERSION,
        alias: "worker".into(),
        peer: "driver".into(),
        incarnation: 5,
        transport: old.transport.clone(),
        geometry: old.geometry,
    };
    w.store.put_raw("t:exchange:worker:driver", info.encode(), None, w.now);
    w.start(d);
    w.run_until(Duration::from_millis(100), |_| false);
    assert!(w.connects(d).is_empty());
    assert!(w.sides[d].events.iter().any(|e| matches!(
        e,
        Event::Note(Note::AttemptEnded {
            reason: NotYet::Stale { found: 5, live: 22, .. },
            ..
        })
    )));
}

#[test]
fn lost_reply_does_not_block_the_retry() {
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.start(s);
    w.start(d);
    // Swallow the driver's first commands' replies (claim): the machine must
    // time the command out and retry instead of waiting forever.
    w.sides[d].withhold_next = 1;
    assert!(w.run_until(Duration::from_secs(5), |w| w.ready(d) && w.ready(s)));
    // The abandoned command's reply arrives late; it is ignored by token.
    let late = w.sides[d].withheld.pop().unwrap();
    let r = w.store.apply(w.now, &late.op);
    w.sides[d].m.handle_reply(w.now, late.token, Ok(r));
    assert_eq!(w.sides[d].m.stats().late_replies, 1);
    assert!(w.sides[d].m.is_ready());
}

#[test]
fn notification_cuts_the_backoff_short() {
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.start(d);
    // Let the driver back off to its cap, then start the worker: its qp_ready
    // must trigger the next fetch at once, not after the backoff.
    w.run_until(Duration::from_secs(3), |_| false);
    let t0 = w.now;
    w.start(s);
    assert!(w.run_until(Duration::from_secs(2), |w| w.ready(d) && w.ready(s)));
    assert!(w.now - t0 < Timing::default().retry_max, "took {:?}", w.now - t0);
}

#[test]
fn retries_are_bounded() {
    let mut w = World::new();
    let (d, _) = pair(&mut w);
    w.start(d);
    let deadline = Timing::default().deadline;
    assert!(w.run_until(deadline * 2, |w| w.failed(d).is_some()));
    match w.failed(d).unwrap() {
        RendezvousError::GaveUp {
            peer, attempts, last, ..
        } => {
            assert_eq!(peer, "worker");
            assert!(*attempts > 5 && *attempts < Timing::default().max_attempts);
            assert!(last.contains("no live lease"), "{last}");
        }
        e => panic!("{e:?}"),
    }
    assert!(w.now <= deadline + Timing::default().op_timeout);
}

#[test]
fn geometry_mismatch_is_a_clear_error_on_both_sides() {
    let mut w = World::new();
    let d = w.add(local("driver", 11, 4096), Role::Initiator { peer: "worker".into() });
    let s = w.add(local("worker", 22, 8192), Role::Responder);
    w.start(s);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(1), |w| w.failed(d).is_some()
        && w.failed(s).is_some()));
    assert!(matches!(
        w.failed(d),
        Some(RendezvousError::Incompatible {
            detail: Incompatible::SlotSize {
                ours: 4096,
                theirs: 8192
            },
            ..
        })
    ));
    let msg = w.failed(s).unwrap().to_string();
    assert!(msg.contains("slot size mismatch") && msg.contains("--buf-mb"), "{msg}");
}

#[test]
fn slot_count_and_wire_version_mismatch() {
    let mut w = World::new();
    let mut l = local("worker", 22, 4096);
    l.geometry.slot_count = 4;
    l.mailbox.len = 4 * 4096;
    let d = w.add(local("driver", 11, 4096), Role::Initiator { peer: "worker".into() });
    let s = w.add(l, Role::Responder);
    w.start(s);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(1), |w| w.failed(d).is_some()));
    assert!(matches!(
        w.failed(d),
        Some(RendezvousError::Incompatible {
            detail: Incompatible::SlotCount { ours: 1, theirs: 4 },
            ..
        })
    ));

    let mut w = World::new();
    let (d, _) = pair(&mut w);
    w.store.apply(
        w.now,
        &StoreOp::Claim {
            key: "t:agent:worker".into(),
            record: AgentRecord {
                incarnation: 22,
                host: "h".into(),
                pid: 2,
                wire_version: 9,
            },
            ttl: Duration::from_secs(60),
        },
    );
    let l = local("worker", 22, 4096);
    let info = EndpointInfo {
        wire_version: 9,
        alias: "worker".into(),
        peer: "driver".into(),
        incarnation: 22,
        transport: l.transport.clone(),
        geometry: l.geometry,
    };
    w.store.put_raw("t:exchange:worker:driver", info.encode(), None, w.now);
    w.store.put_raw(
        "t:mr:worker:mailbox",
        MailboxInfo {
            alias: "worker".into(),
            incarnation: 22,
            mr: l.mailbox,
        }
        .encode(),
        None,
        w.now,
    );
    w.start(d);
    assert!(w.run_until(Duration::from_secs(1), |w| w.failed(d).is_some()));
    assert!(matches!(
        w.failed(d),
        Some(RendezvousError::Incompatible {
            detail: Incompatible::WireVersion {
                ours: WIRE_VERSION,
                theirs: 9
            },
            ..
        })
    ));
}

#[test]
fn store_down_then_heals_and_down_for_good() {
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.store_down = true;
    w.start(s);
    w.start(d);
    w.run_until(Duration::from_secs(3), |_| false);
    w.store_down = false;
    assert!(w.run_until(Duration::from_secs(5), |w| w.ready(d) && w.ready(s)));

    let mut w = World::new();
    let (d, _) = pair(&mut w);
    w.store_down = true;
    w.start(d);
    assert!(w.run_until(Duration::from_secs(60), |w| w.failed(d).is_some()));
    let msg = w.failed(d).unwrap().to_string();
    assert!(msg.contains("gave up") && msg.contains("unavailable"), "{msg}");
}

#[test]
fn alias_taken_is_refused_not_taken_over() {
    let mut w = World::new();
    let a = w.add(local("worker", 1, 4096), Role::Responder);
    let b = w.add(local("worker", 2, 4096), Role::Responder);
    w.start(a);
    w.run_until(Duration::from_millis(10), |w| w.sides[0].m.phase_name() == "listen");
    w.start(b);
    assert!(w.run_until(Duration::from_millis(10), |w| w.failed(b).is_some()));
    let msg = w.failed(b).unwrap().to_string();
    assert!(msg.contains("held by a live agent") && msg.contains("--scope"), "{msg}");
    // Closing the refused one must not delete the holder's lease.
    w.sides[b].m.close(w.now);
    w.run_until(Duration::from_secs(1), |w| w.sides[1].m.is_closed());
    assert!(w.sides[b].m.is_closed());
    assert_eq!(
        w.store.keys_matching(w.now, "t:agent:*"),
        vec!["t:agent:worker".to_string()]
    );
    assert!(w.sides[a].m.phase_name() == "listen");
}

#[test]
fn cleanup_event_takes_the_link_down() {
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.start(s);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(1), |w| w.ready(d) && w.ready(s)));
    w.sides[d].m.close(w.now);
    assert!(w.run_until(Duration::from_secs(1), |w| w.down(1).is_some()
        && w.sides[0].m.is_closed()));
    assert_eq!(w.down(s), Some(&DownReason::PeerCleanup { peer: "driver".into() }));
    w.sides[s].m.close(w.now);
    assert!(w.run_until(Duration::from_secs(1), |w| w.sides[1].m.is_closed()));
    assert!(
        w.store.keys_matching(w.now, "t:*").is_empty(),
        "{:?}",
        w.store.keys_matching(w.now, "t:*")
    );
}

#[test]
fn killed_peer_detected_by_lease_expiry() {
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.start(s);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(1), |w| w.ready(d) && w.ready(s)));
    // SIGKILL: the worker stops running; no cleanup, no heartbeats.
    w.sides[s].started = false;
    let t0 = w.now;
    assert!(w.run_until(Duration::from_secs(30), |w| w.down(0).is_some()));
    assert_eq!(w.down(d), Some(&DownReason::PeerLeaseExpired { peer: "worker".into() }));
    let t = Timing::default();
    assert!(w.now - t0 <= t.lease + t.peer_check, "noticed after {:?}", w.now - t0);
}

#[test]
fn stale_and_garbage_notifications_ignored() {
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.start(s);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(1), |w| w.ready(d) && w.ready(s)));
    let m = &mut w.sides[s].m;
    m.handle_notification(w.now, b"{not json");
    m.handle_notification(
        w.now,
        &Notification::Cleanup {
            from: "driver".into(),
            from_inc: 11,
            to_inc: 999,
        }
        .encode(),
    );
    m.handle_notification(
        w.now,
        &Notification::Cleanup {
            from: "driver".into(),
            from_inc: 10,
            to_inc: 22,
        }
        .encode(),
    );
    m.handle_notification(
        w.now,
        &Notification::QpReady {
            from: "intruder".into(),
            from_inc: 1,
            to_inc: 22,
            again: false,
        }
        .encode(),
    );
    assert!(m.is_ready());
    assert_eq!(m.stats().bad_notifications, 1);
    assert_eq!(m.stats().stale_notifications, 3);
}

#[test]
fn garbage_peer_values_end_in_a_clear_error() {
    let mut w = World::new();
    let (d, _) = pair(&mut w);
    w.store.apply(
        w.now,
        &StoreOp::Claim {
            key: "t:agent:worker".into(),
            record: AgentRecord {
                incarnation: 22,
                host: "h".into(),
                pid: 2,
                wire_version: WIRE_VERSION,
            },
            ttl: Duration::from_secs(600),
        },
    );
    w.store
        .put_raw("t:exchange:worker:driver", b"\x00\x01garbage".to_vec(), None, w.now);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(60), |w| w.failed(d).is_some()));
    let msg = w.failed(d).unwrap().to_string();
    assert!(
        msg.contains("t:exchange:worker:driver") && msg.contains("malformed"),
        "{msg}"
    );
}

#[test]
fn restarted_responder_request_supersedes_old_one() {
    // Two connect_peer requests from driver incarnations 10 (dead) and 11 (live)
    // sit in the worker's stream: it must end up connected to 11 only.
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    let old = Notification::ConnectPeer {
        from: "driver".into(),
        from_inc: 10,
    };
    w.store.apply(
        w.now,
        &StoreOp::Append {
            key: "t:stream:worker".into(),
            log: crate::store::LogKind::Stream,
            value: old.encode(),
            if_alive: None,
            max_len: 8,
            ttl: Duration::from_secs(60),
        },
    );
    w.start(s);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(2), |w| w.ready(d) && w.ready(s)));
    assert_eq!(w.connects(s), vec![11]);
}

#[test]
fn peer_leaving_while_we_close_does_not_abort_the_close() {
    // Found by the simulator swarm (seed 283): a cleanup event from the peer
    // arriving while our own close retried a lost reply turned the machine
    // into Failed, so Closed never came.
    let mut w = World::new();
    let (d, s) = pair(&mut w);
    w.start(s);
    w.start(d);
    assert!(w.run_until(Duration::from_secs(1), |w| w.ready(d) && w.ready(s)));
    w.sides[d].withhold_next = 1; // the driver's release reply is lost
    w.sides[d].m.close(w.now);
    w.sides[s].m.close(w.now);
    assert!(w.run_until(Duration::from_secs(30), |w| w.sides[0].m.is_closed()
        && w.sides[1].m.is_closed()));
    assert!(
        w.store.keys_matching(w.now, "t:*").is_empty(),
        "{:?}",
        w.store.keys_matching(w.now, "t:*")
    );
}

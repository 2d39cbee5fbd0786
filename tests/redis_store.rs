//! `RedisStore` against a private `redis-server`: replies identical to
//! `StoreModel`, garbage tolerated, pagination, ownership, expiry,
//! authentication, unreachable servers and restarts.
//!
//! Every test skips out loud when `redis-server` is not installed (see
//! `redis_server.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use slimebench::control::redis::{RedisConnectError, RedisOptions, RedisStore};
use slimebench::control::ControlStore;
use slimebench_proto::rendezvous::{Event, LocalEndpoint, RendezvousError};
use slimebench_proto::store::AgentLookup;
use slimebench_proto::transport::MrDesc;
use slimebench_proto::values::{AgentRecord, ControlValue};
use slimebench_proto::{
    Geometry, Keys, LogKind, Rendezvous, Role, StoreFailure, StoreModel, StoreOp, StoreReply, Timing, TransportAddr,
};

use crate::redis_server::RedisServer;
use crate::util::block_on;

const LONG: Duration = Duration::from_secs(600);

/// Options for tests: few attempts, short backoff.
fn fast() -> RedisOptions {
    RedisOptions {
        connect_attempts: 3,
        connect_backoff: Duration::from_millis(10),
        ..RedisOptions::default()
    }
}

/// A scope no other test or case uses.
fn fresh_scope() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("t{}x{}x{nanos}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

async fn connect(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&server.url(), fast())
        .await
        .expect("connect to the test redis-server")
}

/// A plain connection for planting garbage and looking behind the store's back.
async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection")
}

async fn cmd<T: redis::FromRedisValue>(con: &mut redis::aio::MultiplexedConnection, args: &[&[u8]]) -> T {
    let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(con)
        .await
        .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(args[0])))
}

fn rec(inc: u64, host: &str) -> AgentRecord {
    AgentRecord {
        incarnation: inc,
        host: host.into(),
        pid: 4000 + inc as u32,
        wire_version: 1,
    }
}

async fn exec(store: &RedisStore, op: StoreOp) -> StoreReply {
    store
        .exec(&op)
        .await
        .unwrap_or_else(|e| panic!("{} failed: {e}", op.name()))
}

fn claim(key: &str, inc: u64, ttl: Duration) -> StoreOp {
    StoreOp::Claim {
        key: key.into(),
        record: rec(inc, "host-a"),
        ttl,
    }
}

fn fetch(agent: &str, keys: &[&str]) -> StoreOp {
    StoreOp::Fetch {
        agent_key: agent.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

fn append(key: &str, log: LogKind, v: &[u8], alive: Option<&str>, max_len: usize) -> StoreOp {
    StoreOp::Append {
        key: key.into(),
        log,
        value: v.to_vec(),
        if_alive: alive.map(str::to_string),
        max_len,
        ttl: LONG,
    }
}

// ---------------------------------------------------------------------------
// Differential test against the model
// ---------------------------------------------------------------------------

const ALIASES: [&str; 3] = ["a", "b", "c"];
const VALUES: [&[u8]; 6] = [b"v0", b"v1", b"v2", b"{}", b"[1]", b"x"];
/// Keys per alias: agent, exchange, mr, stream, inbox.
const PER_ALIAS: usize = 5;
const NKEYS: usize = ALIASES.len() * PER_ALIAS;

/// An operation over the tiny alphabet, before it is given a scope.
#[derive(Clone, Debug)]
enum Abs {
    Claim(usize, u64),
    Refresh(usize, u64),
    DeleteStale(usize),
    DeleteScope,
    Put(usize, u64, Vec<(usize, usize)>),
    Fetch(usize, Vec<usize>),
    Append(usize, usize, Option<usize>, usize),
    Release(usize, u64, Vec<usize>),
    Read(usize, usize),
}

fn key(keys: &Keys, idx: usize) -> String {
    let a = ALIASES[idx / PER_ALIAS];
    let peer = ALIASES[(idx / PER_ALIAS + 1) % ALIASES.len()];
    match idx % PER_ALIAS {
        0 => keys.agent(a),
        1 => keys.exchange(a, peer),
        2 => keys.mr(a, "mailbox"),
        3 => keys.stream(a),
        _ => keys.inbox(a),
    }
}

/// One key, one log kind: inboxes are queues, everything else a stream.
fn kind_of(idx: usize) -> LogKind {
    if idx % PER_ALIAS == 4 {
        LogKind::Queue
    } else {
        LogKind::Stream
    }
}

fn abs_op() -> impl Strategy<Value = Abs> {
    // Skewed towards the first alias and incarnation so that ops collide
    // (owned puts, conflicts, releases that delete) often enough.
    let who = prop_oneof![3 => Just(0usize), 2 => Just(1), 1 => Just(2)];
    let inc = prop_oneof![3 => Just(1u64), 2 => Just(2), 1 => Just(3)];
    let any_key = 0..NKEYS;
    let log_key = (who.clone(), prop::bool::ANY).prop_map(|(a, inbox)| a * PER_ALIAS + if inbox { 4 } else { 3 });
    let key_choice = prop_oneof![2 => log_key, 1 => any_key.clone()];
    prop_oneof![
        5 => (who.clone(), inc.clone()).prop_map(|(w, i)| Abs::Claim(w, i)),
        2 => (who.clone(), inc.clone()).prop_map(|(w, i)| Abs::Refresh(w, i)),
        1 => who.clone().prop_map(Abs::DeleteStale),
        1 => Just(Abs::DeleteScope),
        5 => (
            who.clone(),
            inc.clone(),
            prop::collection::vec((any_key.clone(), 0..VALUES.len()), 0..4)
        )
            .prop_map(|(w, i, e)| Abs::Put(w, i, e)),
        4 => (who.clone(), prop::collection::vec(any_key.clone(), 1..5))
            .prop_map(|(w, k)| Abs::Fetch(w, k)),
        5 => (
            key_choice,
            0..VALUES.len(),
            prop::option::of(who.clone()),
            1..4usize
        )
            .prop_map(|(k, v, a, m)| Abs::Append(k, v, a, m)),
        2 => (who.clone(), inc, prop::collection::vec(any_key, 0..4))
            .prop_map(|(w, i, k)| Abs::Release(w, i, k)),
        3 => (who, 1..5usize).prop_map(|(w, m)| Abs::Read(w, m)),
    ]
}

fn concrete(keys: &Keys, op: &Abs) -> Option<StoreOp> {
    let agent = |w: usize| keys.agent(ALIASES[w]);
    let keys_of = |ks: &[usize]| ks.iter().map(|&k| key(keys, k)).collect::<Vec<_>>();
    Some(match op {
        Abs::Claim(w, inc) => StoreOp::Claim {
            key: agent(*w),
            record: rec(*inc, &format!("host-{inc}")),
            ttl: LONG,
        },
        Abs::Refresh(w, inc) => StoreOp::Refresh {
            key: agent(*w),
            incarnation: *inc,
            ttl: LONG,
        },
        Abs::DeleteStale(w) => StoreOp::DeleteMatching {
            patterns: keys.stale_patterns(ALIASES[*w]),
        },
        Abs::DeleteScope => StoreOp::DeleteMatching {
            patterns: vec![keys.scope_pattern()],
        },
        Abs::Put(w, inc, entries) => StoreOp::PutOwned {
            agent_key: agent(*w),
            incarnation: *inc,
            entries: entries
                .iter()
                .map(|&(k, v)| (key(keys, k), VALUES[v].to_vec()))
                .collect(),
        },
        Abs::Fetch(w, ks) => StoreOp::Fetch {
            agent_key: agent(*w),
            keys: keys_of(ks),
        },
        Abs::Append(k, v, alive, max_len) => StoreOp::Append {
            key: key(keys, *k),
            log: kind_of(*k),
            value: VALUES[*v].to_vec(),
            if_alive: alive.map(agent),
            max_len: *max_len,
            ttl: LONG,
        },
        Abs::Release(w, inc, ks) => StoreOp::Release {
            agent_key: agent(*w),
            incarnation: *inc,
            keys: keys_of(ks),
        },
        Abs::Read(..) => return None,
    })
}

/// Replies compared: a conflict's time left only by presence.
fn normalise(r: StoreReply) -> StoreReply {
    match r {
        StoreReply::Conflict { holder, ttl_left } => StoreReply::Conflict {
            holder,
            ttl_left: ttl_left.map(|_| Duration::ZERO),
        },
        other => other,
    }
}

async fn run_case(url: &str, ops: Vec<Abs>) -> Result<(), TestCaseError> {
    let store = RedisStore::connect(url, fast())
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let scope = fresh_scope();
    let keys = Keys::new(&scope).expect("scope");
    let mut model = StoreModel::new();
    let origin = Instant::now();
    let mut model_cursor = [0u64; ALIASES.len()];
    let mut redis_cursor = [0u64; ALIASES.len()];
    for (step, op) in ops.iter().enumerate() {
        match concrete(&keys, op) {
            Some(op) => {
                let want = normalise(model.apply(origin.elapsed(), &op));
                let got = store
                    .exec(&op)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
                prop_assert_eq!(normalise(got), want, "step {} {:?}", step, op);
            }
            None => {
                let Abs::Read(w, max) = *op else { unreachable!() };
                let (stream, inbox) = (keys.stream(ALIASES[w]), keys.inbox(ALIASES[w]));
                let now = origin.elapsed();
                let mut want = Vec::new();
                for (id, v) in model.read_log(now, &stream, model_cursor[w], max) {
                    model_cursor[w] = id;
                    want.push(v);
                }
                want.extend(model.pop_log(now, &inbox, max - want.len()));
                let got = store
                    .read_notifications(&stream, &inbox, &mut redis_cursor[w], max, Duration::ZERO)
                    .await
                    .map_err(|e| TestCaseError::fail(format!("step {step} read: {e}")))?;
                prop_assert_eq!(got, want, "step {} read of {} max {}", step, ALIASES[w], max);
            }
        }
    }
    // Leave the server clean for the next case.
    store
        .exec(&StoreOp::DeleteMatching {
            patterns: vec![keys.scope_pattern()],
        })
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

#[test]
fn redis_store_matches_the_model() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let url = server.url();
    let mut runner = TestRunner::new(Config {
        cases: 40,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop::collection::vec(abs_op(), 15..=25);
    if let Err(e) = runner.run(&strategy, |ops| block_on(run_case(&url, ops))) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------
// Focused tests
// ---------------------------------------------------------------------------

#[test]
fn redis_claim_conflict_names_the_holder() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    block_on(async {
        let store = connect(&server).await;
        let keys = Keys::new(&fresh_scope()).unwrap();
        let lease = keys.agent("bench-worker");
        let holder = AgentRecord {
            incarnation: 0xfeed,
            host: "node-7".into(),
            pid: 4242,
            wire_version: 1,
        };
        let first = StoreOp::Claim {
            key: lease.clone(),
            record: holder.clone(),
            ttl: Duration::from_secs(60),
        };
        assert_eq!(exec(&store, first.clone()).await, StoreReply::Claimed);
        // The same incarnation may claim again (a retry after a lost reply).
        assert_eq!(exec(&store, first).await, StoreReply::Claimed);
        match exec(&store, claim(&lease, 2, Duration::from_secs(60))).await {
            StoreReply::Conflict {
                holder: AgentLookup::Present(r),
                ttl_left: Some(t),
            } => {
                assert_eq!(r, holder);
                assert!(t > Duration::ZERO && t <= Duration::from_secs(60), "{t:?}");
            }
            other => panic!("expected a conflict naming the holder, got {other:?}"),
        }

        // What a second agent of that alias is told, driven through the real machine.
        let local = LocalEndpoint {
            alias: "bench-worker".into(),
            incarnation: 0xbeef,
            host: "node-8".into(),
            pid: 1,
            transport: TransportAddr::Tcp {
                addr: "127.0.0.1:1".into(),
                endpoint_id: 1,
            },
            mailbox: MrDesc {
                addr: 4096,
                len: 4096,
                rkey: 1,
            },
            geometry: Geometry {
                slot_size: 4096,
                slot_count: 1,
            },
        };
        let mut m = Rendezvous::new(keys.clone(), local, Role::Responder, Timing::default());
        let origin = Instant::now();
        m.start(origin.elapsed());
        let mut failure = None;
        for _ in 0..10 {
            while let Some(cmd) = m.poll_command(origin.elapsed()) {
                let reply = store.exec(&cmd.op).await;
                m.handle_reply(origin.elapsed(), cmd.token, reply);
            }
            while let Some(ev) = m.poll_event() {
                if let Event::Failed { error } = ev {
                    failure = Some(error);
                }
            }
            if failure.is_some() {
                break;
            }
        }
        let error = failure.expect("the machine reports the taken alias");
        assert!(matches!(error, RendezvousError::AliasTaken { .. }), "{error:?}");
        let msg = error.to_string();
        for part in ["bench-worker", "0xfeed", "node-7", "4242", "--scope"] {
            assert!(msg.contains(part), "{part:?} missing from {msg:?}");
        }
        // The holder's lease is untouched.
        assert!(matches!(
            exec(&store, fetch(&lease, &[])).await,
            StoreReply::Fetched { agent: AgentLookup::Present(r), .. } if r == holder
        ));
    });
}

#[test]
fn redis_garbage_is_reported_not_trusted() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    block_on(async {
        let store = connect(&server).await;
        let mut con = raw(&server).await;
        let keys = Keys::new(&fresh_scope()).unwrap();

        // Garbage under lease keys: Corrupt, never claimed over, released or refreshed.
        let big = vec![b'x'; 5000];
        let plants: Vec<(&str, Vec<Vec<u8>>)> = vec![
            ("string", vec![b"SET".to_vec(), b"garbage\xff".to_vec()]),
            ("big", vec![b"SET".to_vec(), big]),
            ("json", vec![b"SET".to_vec(), rec(1, "h").encode()]),
            ("list", vec![b"RPUSH".to_vec(), b"x".to_vec()]),
            (
                "stream",
                vec![b"XADD".to_vec(), b"*".to_vec(), b"f".to_vec(), b"v".to_vec()],
            ),
            ("set", vec![b"SADD".to_vec(), b"x".to_vec()]),
            ("zset", vec![b"ZADD".to_vec(), b"1".to_vec(), b"x".to_vec()]),
            ("hash-short", hset(&[("incarnation", "1"), ("host", "h"), ("pid", "1")])),
            (
                "hash-extra",
                hset(&[
                    ("incarnation", "1"),
                    ("host", "h"),
                    ("pid", "1"),
                    ("wire_version", "1"),
                    ("x", "1"),
                ]),
            ),
            (
                "hash-zero",
                hset(&[("incarnation", "0"), ("host", "h"), ("pid", "1"), ("wire_version", "1")]),
            ),
            (
                "hash-lead0",
                hset(&[
                    ("incarnation", "01"),
                    ("host", "h"),
                    ("pid", "1"),
                    ("wire_version", "1"),
                ]),
            ),
            (
                "hash-sign",
                hset(&[
                    ("incarnation", "1"),
                    ("host", "h"),
                    ("pid", "+1"),
                    ("wire_version", "1"),
                ]),
            ),
            (
                "hash-big",
                hset(&[
                    ("incarnation", "1"),
                    ("host", "h"),
                    ("pid", "4294967296"),
                    ("wire_version", "1"),
                ]),
            ),
            (
                "hash-utf8",
                hset(&[
                    ("incarnation", "1"),
                    ("host", "\u{fffd}"),
                    ("pid", "1"),
                    ("wire_version", "1"),
                ]),
            ),
            (
                "hash-name",
                hset(&[
                    ("incarnation", "1"),
                    ("hostname", "h"),
                    ("pid", "1"),
                    ("wire_version", "1"),
                ]),
            ),
        ];
        for (name, args) in &plants {
            let lease = keys.agent(&format!("g-{name}"));
            let mut c: Vec<&[u8]> = vec![&args[0], lease.as_bytes()];
            c.extend(args[1..].iter().map(Vec::as_slice));
            let _: redis::Value = cmd(&mut con, &c).await;
            if *name == "hash-utf8" {
                // Replace the host with bytes that are not UTF-8.
                let _: redis::Value = cmd(&mut con, &[b"HSET", lease.as_bytes(), b"host", b"\xc3\x28"]).await;
            }
            let before: Vec<u8> = cmd(&mut con, &[b"DUMP", lease.as_bytes()]).await;
            match exec(&store, fetch(&lease, &[])).await {
                StoreReply::Fetched {
                    agent: AgentLookup::Corrupt(d),
                    values,
                } => assert!(!d.is_empty() && values.is_empty(), "{name}: {d:?}"),
                other => panic!("{name}: expected Corrupt, got {other:?}"),
            }
            match exec(&store, claim(&lease, 1, LONG)).await {
                StoreReply::Conflict {
                    holder: AgentLookup::Corrupt(_),
                    ttl_left: None,
                } => {}
                other => panic!("{name}: claim over garbage gave {other:?}"),
            }
            assert!(matches!(
                exec(
                    &store,
                    StoreOp::Refresh {
                        key: lease.clone(),
                        incarnation: 1,
                        ttl: LONG
                    }
                )
                .await,
                StoreReply::NotOwner {
                    holder: AgentLookup::Corrupt(_)
                }
            ));
            assert!(matches!(
                exec(
                    &store,
                    StoreOp::PutOwned {
                        agent_key: lease.clone(),
                        incarnation: 1,
                        entries: vec![(keys.exchange("g", "h"), b"x".to_vec())],
                    }
                )
                .await,
                StoreReply::NotOwner {
                    holder: AgentLookup::Corrupt(_)
                }
            ));
            assert_eq!(
                exec(
                    &store,
                    StoreOp::Release {
                        agent_key: lease.clone(),
                        incarnation: 1,
                        keys: vec![]
                    }
                )
                .await,
                StoreReply::Released { deleted: 0 }
            );
            let after: Vec<u8> = cmd(&mut con, &[b"DUMP", lease.as_bytes()]).await;
            assert_eq!(before, after, "{name}: garbage was modified");
            // A liveness check only asks whether something is there.
            assert_eq!(
                exec(&store, append(&keys.inbox("g"), LogKind::Queue, b"n", Some(&lease), 8)).await,
                StoreReply::Appended
            );
        }
        let big_lease = keys.agent("g-big");
        match exec(&store, fetch(&big_lease, &[])).await {
            StoreReply::Fetched {
                agent: AgentLookup::Corrupt(d),
                ..
            } => {
                assert!(d.contains("5000"), "{d}")
            }
            other => panic!("{other:?}"),
        }

        // Garbage under value keys comes back as non-empty bytes, never None or an error.
        let ex = |n: &str| keys.exchange("v", n);
        let _: redis::Value = cmd(&mut con, &[b"RPUSH", ex("list").as_bytes(), b"x"]).await;
        let _: redis::Value = cmd(&mut con, &[b"XADD", ex("stream").as_bytes(), b"*", b"f", b"v"]).await;
        let _: redis::Value = cmd(&mut con, &[b"SADD", ex("set").as_bytes(), b"x"]).await;
        let _: redis::Value = cmd(&mut con, &[b"ZADD", ex("zset").as_bytes(), b"1", b"x"]).await;
        let _: redis::Value = cmd(&mut con, &[b"HSET", ex("hash").as_bytes(), b"a", b"b"]).await;
        let _: redis::Value = cmd(&mut con, &[b"SET", ex("bytes").as_bytes(), b"\x00\xff"]).await;
        let names = ["list", "stream", "set", "zset", "hash", "bytes", "absent"];
        let value_keys: Vec<String> = names.iter().map(|n| ex(n)).collect();
        let refs: Vec<&str> = value_keys.iter().map(String::as_str).collect();
        match exec(&store, fetch(&keys.agent("v"), &refs)).await {
            StoreReply::Fetched {
                agent: AgentLookup::Absent,
                values,
            } => {
                assert_eq!(values.len(), names.len());
                for (n, v) in names.iter().zip(&values) {
                    match (*n, v) {
                        ("absent", None) => {}
                        ("bytes", Some(b)) => assert_eq!(b, b"\x00\xff"),
                        ("list" | "stream", Some(b)) => assert_eq!(b, b"<log>"),
                        (_, Some(b)) => assert!(!b.is_empty(), "{n}"),
                        (_, None) => panic!("{n} came back as None"),
                    }
                }
            }
            other => panic!("{other:?}"),
        }
        // A valid lease under a value key reads as its JSON record, like the model.
        let lease = keys.agent("owner");
        exec(&store, claim(&lease, 9, LONG)).await;
        match exec(&store, fetch(&lease, &[&lease])).await {
            StoreReply::Fetched {
                agent: AgentLookup::Present(r),
                values,
            } => {
                assert_eq!(values, vec![Some(r.encode())]);
            }
            other => panic!("{other:?}"),
        }

        // Logs of the wrong type: reads see nothing (no error), appends replace them.
        let (stream, inbox) = (keys.stream("w"), keys.inbox("w"));
        let _: redis::Value = cmd(&mut con, &[b"SET", stream.as_bytes(), b"junk"]).await;
        let _: redis::Value = cmd(&mut con, &[b"HSET", inbox.as_bytes(), b"a", b"b"]).await;
        let mut cursor = 0;
        let got = store
            .read_notifications(&stream, &inbox, &mut cursor, 8, Duration::ZERO)
            .await
            .expect("read over garbage");
        assert!(got.is_empty());
        exec(&store, append(&stream, LogKind::Stream, b"s1", None, 8)).await;
        exec(&store, append(&inbox, LogKind::Queue, b"q1", None, 8)).await;
        let got = store
            .read_notifications(&stream, &inbox, &mut cursor, 8, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got, vec![b"s1".to_vec(), b"q1".to_vec()]);

        // A stream entry that is not ours (no field `v`) is delivered as its first value.
        let _: redis::Value = cmd(&mut con, &[b"XADD", stream.as_bytes(), b"*", b"other", b"odd"]).await;
        let got = store
            .read_notifications(&stream, &inbox, &mut cursor, 8, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got, vec![b"odd".to_vec()]);
        cleanup(&store, &keys).await;
    });
}

fn hset(fields: &[(&str, &str)]) -> Vec<Vec<u8>> {
    let mut v = vec![b"HSET".to_vec()];
    for (f, x) in fields {
        v.push(f.as_bytes().to_vec());
        v.push(x.as_bytes().to_vec());
    }
    v
}

async fn cleanup(store: &RedisStore, keys: &Keys) {
    exec(
        store,
        StoreOp::DeleteMatching {
            patterns: vec![keys.scope_pattern()],
        },
    )
    .await;
}

#[test]
fn redis_delete_matching_pages_through_scan() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    block_on(async {
        let store = connect(&server).await;
        let mut con = raw(&server).await;
        let mine = Keys::new(&fresh_scope()).unwrap();
        let other = Keys::new(&fresh_scope()).unwrap();
        // 1 200 exchange keys and 300 MR keys of alias `a` in our scope, the
        // same in another scope, and look-alikes in ours that must survive.
        for keys in [&mine, &other] {
            for chunk in (0..1500).collect::<Vec<_>>().chunks(250) {
                let mut c = redis::cmd("MSET");
                for i in chunk {
                    let k = if *i < 1200 {
                        keys.exchange("a", &format!("p{i}"))
                    } else {
                        keys.mr("a", &format!("m{i}"))
                    };
                    c.arg(k).arg("x");
                }
                let () = c.query_async(&mut con).await.unwrap();
            }
        }
        let survivors = [
            mine.exchange("ab", "p1"),
            mine.exchange("b", "a"),
            mine.stream("a"),
            mine.inbox("a"),
            mine.mr("b", "mailbox"),
        ];
        for k in &survivors {
            let () = redis::cmd("SET")
                .arg(k)
                .arg("keep")
                .query_async(&mut con)
                .await
                .unwrap();
        }
        exec(&store, claim(&mine.agent("a"), 1, LONG)).await;
        let reply = exec(
            &store,
            StoreOp::DeleteMatching {
                patterns: mine.stale_patterns("a"),
            },
        )
        .await;
        assert_eq!(reply, StoreReply::Deleted { count: 1500 });
        let count = |con: &mut redis::aio::MultiplexedConnection, pattern: String| {
            let mut con = con.clone();
            async move {
                let mut n = 0usize;
                let mut cursor = 0u64;
                loop {
                    let (next, ks): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern.as_str())
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    n += ks.len();
                    if next == 0 {
                        return n;
                    }
                    cursor = next;
                }
            }
        };
        // Ours: only the look-alikes and the lease are left; theirs: untouched.
        assert_eq!(count(&mut con, mine.scope_pattern()).await, survivors.len() + 1);
        assert_eq!(count(&mut con, other.scope_pattern()).await, 1500);
        // Deleting again finds nothing; an exact key (no `*`) is deleted alone.
        assert_eq!(
            exec(
                &store,
                StoreOp::DeleteMatching {
                    patterns: mine.stale_patterns("a")
                }
            )
            .await,
            StoreReply::Deleted { count: 0 }
        );
        assert_eq!(
            exec(
                &store,
                StoreOp::DeleteMatching {
                    patterns: vec![mine.stream("a")]
                }
            )
            .await,
            StoreReply::Deleted { count: 1 }
        );
        cleanup(&store, &mine).await;
        cleanup(&store, &other).await;
        assert_eq!(count(&mut con, other.scope_pattern()).await, 0);
    });
}

#[test]
fn redis_release_never_deletes_another_incarnations_keys() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    block_on(async {
        let store = connect(&server).await;
        let mut con = raw(&server).await;
        let keys = Keys::new(&fresh_scope()).unwrap();
        let lease = keys.agent("w");
        let owned = vec![keys.exchange("w", "d"), keys.mr("w", "mailbox")];
        let put = |inc: u64| StoreOp::PutOwned {
            agent_key: lease.clone(),
            incarnation: inc,
            entries: owned.iter().map(|k| (k.clone(), b"info".to_vec())).collect(),
        };
        let release = |inc: u64| StoreOp::Release {
            agent_key: lease.clone(),
            incarnation: inc,
            keys: owned.clone(),
        };
        assert_eq!(exec(&store, claim(&lease, 1, LONG)).await, StoreReply::Claimed);
        assert!(matches!(
            exec(&store, put(2)).await,
            StoreReply::NotOwner { holder: AgentLookup::Present(r) } if r.incarnation == 1
        ));
        assert_eq!(exec(&store, put(1)).await, StoreReply::Put);
        // Incarnation 2 (a restarted agent that lost the race) releases: nothing goes.
        assert_eq!(exec(&store, release(2)).await, StoreReply::Released { deleted: 0 });
        let n: usize = redis::cmd("EXISTS")
            .arg(&lease)
            .arg(&owned)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(n, 3);
        // Incarnation 1's lease vanishes, 2 takes over and publishes; 1's late
        // release must not delete 2's keys.
        let () = redis::cmd("DEL").arg(&lease).query_async(&mut con).await.unwrap();
        assert_eq!(exec(&store, claim(&lease, 2, LONG)).await, StoreReply::Claimed);
        assert_eq!(exec(&store, put(2)).await, StoreReply::Put);
        assert_eq!(exec(&store, release(1)).await, StoreReply::Released { deleted: 0 });
        match exec(&store, fetch(&lease, &[&owned[0], &owned[1]])).await {
            StoreReply::Fetched {
                agent: AgentLookup::Present(r),
                values,
            } => {
                assert_eq!(r.incarnation, 2);
                assert_eq!(values, vec![Some(b"info".to_vec()); 2]);
            }
            other => panic!("{other:?}"),
        }
        // The owner's release removes the lease and its keys, and counts them.
        assert_eq!(exec(&store, release(2)).await, StoreReply::Released { deleted: 3 });
        // With the lease gone (expired), a release still removes leftovers.
        let () = redis::cmd("SET")
            .arg(&owned[0])
            .arg("x")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(exec(&store, release(1)).await, StoreReply::Released { deleted: 1 });
        assert_eq!(exec(&store, release(1)).await, StoreReply::Released { deleted: 0 });
    });
}

#[test]
fn redis_lease_expires() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    block_on(async {
        let store = connect(&server).await;
        let keys = Keys::new(&fresh_scope()).unwrap();
        let lease = keys.agent("short");
        assert_eq!(
            exec(&store, claim(&lease, 1, Duration::from_millis(150))).await,
            StoreReply::Claimed
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(matches!(
            exec(&store, fetch(&lease, &[])).await,
            StoreReply::Fetched {
                agent: AgentLookup::Absent,
                ..
            }
        ));
        assert_eq!(
            exec(
                &store,
                append(&keys.inbox("short"), LogKind::Queue, b"bye", Some(&lease), 4)
            )
            .await,
            StoreReply::Skipped
        );
        assert!(matches!(
            exec(
                &store,
                StoreOp::Refresh {
                    key: lease.clone(),
                    incarnation: 1,
                    ttl: LONG
                }
            )
            .await,
            StoreReply::NotOwner {
                holder: AgentLookup::Absent
            }
        ));
        assert_eq!(exec(&store, claim(&lease, 2, LONG)).await, StoreReply::Claimed);
        cleanup(&store, &keys).await;
    });
}

#[test]
fn redis_logs_are_bounded_and_read_by_cursor() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    block_on(async {
        let store = connect(&server).await;
        let mut con = raw(&server).await;
        let keys = Keys::new(&fresh_scope()).unwrap();
        let (stream, inbox) = (keys.stream("r"), keys.inbox("r"));
        for i in 0..10u8 {
            exec(&store, append(&stream, LogKind::Stream, &[b'0' + i], None, 3)).await;
            exec(&store, append(&inbox, LogKind::Queue, &[b'a' + i], None, 4)).await;
        }
        // Exactly max_len entries are kept (MAXLEN =, not ~).
        let xlen: usize = redis::cmd("XLEN").arg(&stream).query_async(&mut con).await.unwrap();
        let llen: usize = redis::cmd("LLEN").arg(&inbox).query_async(&mut con).await.unwrap();
        assert_eq!((xlen, llen), (3, 4));
        let ttl: i64 = redis::cmd("PTTL").arg(&stream).query_async(&mut con).await.unwrap();
        assert!(ttl > 0);
        let mut cursor = 0;
        let got = store
            .read_notifications(&stream, &inbox, &mut cursor, 5, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got, [&b"7"[..], b"8", b"9", b"g", b"h"].map(<[u8]>::to_vec));
        let got = store
            .read_notifications(&stream, &inbox, &mut cursor, 5, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got, [&b"i"[..], b"j"].map(<[u8]>::to_vec));
        // Stream entries are kept for other readers; queue entries were consumed.
        let mut fresh = 0;
        let got = store
            .read_notifications(&stream, &inbox, &mut fresh, 10, Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(got.len(), 3);

        // A stream deleted and re-created at once still reads past the cursor.
        for round in 0..20u8 {
            exec(&store, append(&stream, LogKind::Stream, &[round], None, 8)).await;
            let got = store
                .read_notifications(&stream, &inbox, &mut cursor, 8, Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(got, vec![vec![round]], "round {round}");
            exec(
                &store,
                StoreOp::DeleteMatching {
                    patterns: vec![stream.clone()],
                },
            )
            .await;
        }

        // A reader waiting on the shared connection does not stall other commands.
        let reader = store.clone();
        let (got, appended) = tokio::join!(
            reader.read_notifications(&stream, &inbox, &mut cursor, 8, Duration::from_secs(20)),
            async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                exec(&store, append(&stream, LogKind::Stream, b"late", None, 8)).await
            }
        );
        assert_eq!(appended, StoreReply::Appended);
        assert_eq!(got.unwrap(), vec![b"late".to_vec()]);
        // Nothing there: an empty answer after the wait.
        let got = store
            .read_notifications(&stream, &inbox, &mut cursor, 8, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(got.is_empty());
        cleanup(&store, &keys).await;
    });
}

#[test]
fn redis_authentication_failures_are_clear_and_immediate() {
    let secret = "s3cret-Pw0rd";
    let Some(server) = RedisServer::start_with_password(secret) else {
        return;
    };
    block_on(async {
        let port = server.port();
        // A huge backoff: a retried auth failure would blow the limit below.
        let slow = RedisOptions {
            connect_attempts: 3,
            connect_backoff: Duration::from_secs(30),
            ..RedisOptions::default()
        };
        let attempt = |url: String| {
            let slow = slow.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(20), RedisStore::connect(&url, slow))
                    .await
                    .expect("an auth failure must not be retried")
            }
        };
        for (url, shown) in [
            (
                format!("redis://:wrong-{secret}@127.0.0.1:{port}/"),
                format!("redis://:***@127.0.0.1:{port}/"),
            ),
            (
                format!("redis://nobody:{secret}@127.0.0.1:{port}/"),
                format!("redis://nobody:***@127.0.0.1:{port}/"),
            ),
            (
                format!("redis://127.0.0.1:{port}/"),
                format!("redis://127.0.0.1:{port}/"),
            ),
        ] {
            let err = attempt(url.clone()).await.expect_err("must not connect");
            assert!(matches!(err, RedisConnectError::Auth { .. }), "{url}: {err:?}");
            let msg = err.to_string();
            assert!(msg.contains("authentication failed"), "{msg}");
            assert!(msg.contains(&shown), "{msg}");
            assert!(!msg.contains(secret), "password leaked: {msg}");
        }

        // The right password works, and so does an ACL user.
        let store = attempt(server.url()).await.expect("right password");
        assert_eq!(store.describe(), format!("redis://:***@127.0.0.1:{port}/"));
        let mut con = redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let () = redis::cmd("ACL")
            .arg(&["SETUSER", "bench", "on", ">bench-Pw", "~*", "&*", "+@all"])
            .query_async(&mut con)
            .await
            .unwrap();
        let user_url = format!("redis://bench:bench-Pw@127.0.0.1:{port}/0");
        let user = attempt(user_url).await.expect("ACL user");
        assert_eq!(user.describe(), format!("redis://bench:***@127.0.0.1:{port}/0"));
        let keys = Keys::new(&fresh_scope()).unwrap();
        assert_eq!(exec(&user, claim(&keys.agent("u"), 1, LONG)).await, StoreReply::Claimed);
        assert!(matches!(
            exec(&store, fetch(&keys.agent("u"), &[])).await,
            StoreReply::Fetched {
                agent: AgentLookup::Present(_),
                ..
            }
        ));
        cleanup(&user, &keys).await;
    });
}

#[test]
fn redis_unreachable_is_reported_after_bounded_retries() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // A port where nothing listens: bind one, then let it go.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    assert_ne!(port, server.port());
    block_on(async {
        let url = format!("redis://:hunter2-secret@127.0.0.1:{port}/");
        let err = RedisStore::connect(&url, fast())
            .await
            .expect_err("nothing listens there");
        match &err {
            RedisConnectError::Unreachable { attempts, .. } => assert_eq!(*attempts, 3),
            other => panic!("{other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&format!("redis://:***@127.0.0.1:{port}/")), "{msg}");
        assert!(msg.contains("3 attempt"), "{msg}");
        assert!(!msg.contains("hunter2"), "password leaked: {msg}");
        let bad = RedisStore::connect("http://nope", fast())
            .await
            .expect_err("not a redis URL");
        assert!(matches!(bad, RedisConnectError::InvalidUrl { .. }), "{bad:?}");
    });
}

#[test]
fn redis_store_survives_a_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = Keys::new(&fresh_scope()).unwrap();
    let lease = keys.agent("phoenix");
    let store = rt.block_on(async {
        let store = connect(&server).await;
        assert_eq!(exec(&store, claim(&lease, 1, LONG)).await, StoreReply::Claimed);
        store
    });

    server.stop();
    rt.block_on(async {
        for _ in 0..3 {
            let r = tokio::time::timeout(Duration::from_secs(10), store.exec(&fetch(&lease, &[])))
                .await
                .expect("a store that is down answers with an error, it does not hang");
            assert!(matches!(r, Err(StoreFailure::Unavailable(_))), "{r:?}");
        }
        let mut cursor = 0;
        let r = store
            .read_notifications(&keys.stream("p"), &keys.inbox("p"), &mut cursor, 4, Duration::ZERO)
            .await;
        assert!(matches!(r, Err(StoreFailure::Unavailable(_))), "{r:?}");
    });

    server.restart();
    rt.block_on(async {
        // The connection manager reconnects on its own; the first command
        // after the restart may still see the old connection fail.
        let mut reply = None;
        for _ in 0..50 {
            match store.exec(&claim(&lease, 1, LONG)).await {
                Ok(r) => {
                    reply = Some(r);
                    break;
                }
                Err(StoreFailure::Unavailable(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("{e}"),
            }
        }
        // The restarted server is empty: our lease is claimable again, and the
        // scripts are loaded again behind the scenes (NOSCRIPT).
        assert_eq!(reply, Some(StoreReply::Claimed));
        assert!(matches!(
            exec(&store, fetch(&lease, &[])).await,
            StoreReply::Fetched { agent: AgentLookup::Present(r), .. } if r.incarnation == 1
        ));
        cleanup(&store, &keys).await;
    });
}

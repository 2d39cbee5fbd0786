//! The completion ring: a bounded single-producer single-consumer queue of
//! write-with-immediate notices, in the *receiver's* doorbell segment. The
//! connected peer produces (after copying the payload into our region), we
//! consume in `poll_completions`.
//!
//! Memory (all words atomics, so a peer writing concurrently is never a data
//! race on our side, only a protocol question):
//!
//! ```text
//! RingCtl  line 0 (owner):    epoch_peer  epoch  closed
//!          line 1 (producer): attached  space_wanted
//!          line 2 (consumer): head  sleeping
//! entries  cap × 32 bytes:    seq u64 | addr u64 | rkey u32 | len u32 | imm u32 | tag u32
//! ```
//!
//! **Publication.** Entry `n` (0-based) goes to slot `n % cap`. The producer
//! writes the fields, then `seq = n + 1` with `Release`; the consumer loads
//! `seq` with `Acquire` and takes the entry only if it equals `head + 1`.
//! The payload was copied before the `Release` store, so it is visible too.
//! A slot not yet written holds the value of the previous lap (`n + 1 - cap`,
//! or 0 on the first lap): "empty". **Any other value is a protocol
//! violation** (a duplicate, a stale or a skipped entry), as is a `tag` other
//! than the current link's: nothing in that entry, nor after it, is trusted.
//! The consumer publishes `head` (`Release`) once per batch; the producer reads
//! it (`Acquire`) only when its cached view says the ring is full, and refuses
//! a head that moves backwards or beyond its own tail.
//!
//! **Sleeping without losing a wake-up** (a Dekker pair, both sides `SeqCst`
//! fences):
//! - consumer: `sleeping = 1`; fence; look at the next slot; empty → wait on
//!   the wake socket, else `sleeping = 0` and go on;
//! - producer: publish `seq`; fence; if `sleeping != 0` and `swap(sleeping, 0)`
//!   returned non-zero → send one wake datagram.
//!
//! Two `SeqCst` fences forbid the outcome where the consumer misses the entry
//! *and* the producer misses the flag (store-buffering litmus test), so either
//! the consumer sees the entry before sleeping or the producer sees it asleep
//! and wakes it. The swap makes one wake-up per sleep: while the consumer is
//! busy-polling, producers never make a system call. The same pair, with roles
//! swapped, guards `space_wanted` (a producer waiting for a full ring to drain).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use crate::segment::{CTL_OFFSET, DATA_OFFSET};
use crate::sys::Mapping;

/// Bytes per ring entry.
pub(crate) const ENTRY_SIZE: usize = 32;
/// Largest ring a peer may declare (bounds what we map on its word).
pub(crate) const MAX_CAPACITY: u64 = 1 << 16;

#[repr(C)]
pub(crate) struct Entry {
    seq: AtomicU64,
    addr: AtomicU64,
    rkey: AtomicU32,
    len: AtomicU32,
    imm: AtomicU32,
    tag: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<Entry>() == ENTRY_SIZE);

#[repr(C, align(64))]
pub(crate) struct OwnerLine {
    /// Endpoint id of the producer this ring accepts (0: nobody).
    pub epoch_peer: AtomicU64,
    /// Changes at every (re)connect; its low 32 bits tag every entry.
    pub epoch: AtomicU64,
    /// Non-zero once the owner shut down or failed the link.
    pub closed: AtomicU64,
}

#[repr(C, align(64))]
pub(crate) struct ProducerLine {
    /// Endpoint id of the last peer that mapped this doorbell and its regions.
    pub attached: AtomicU64,
    /// A producer waits for space (see the module docs).
    pub space_wanted: AtomicU64,
}

#[repr(C, align(64))]
pub(crate) struct ConsumerLine {
    /// Entries consumed so far.
    pub head: AtomicU64,
    /// The consumer is about to sleep or sleeping.
    pub sleeping: AtomicU64,
}

#[repr(C)]
pub(crate) struct RingCtl {
    pub owner: OwnerLine,
    pub producer: ProducerLine,
    pub consumer: ConsumerLine,
}

const _: () = assert!(CTL_OFFSET + std::mem::size_of::<RingCtl>() <= DATA_OFFSET);

/// A decoded entry (copied out of shared memory: validated once, used as is).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct EntryData {
    pub addr: u64,
    pub rkey: u32,
    pub len: u32,
    pub imm: u32,
}

/// What is wrong with a ring, as seen by one side.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RingViolation {
    /// A slot holds a sequence number that is neither the next one nor "empty".
    #[error("ring entry out of order: slot for #{expected} holds sequence {found}")]
    OutOfOrder { expected: u64, found: u64 },
    /// An entry of another link (an older connection or a forged entry).
    #[error("ring entry #{seq} carries tag {found:#x}, link tag is {expected:#x}")]
    BadTag { seq: u64, found: u32, expected: u32 },
    /// The consumer's published head is impossible.
    #[error("consumer head {head} outside [{seen}, {tail}]")]
    BadHead { head: u64, seen: u64, tail: u64 },
}

/// A view of a ring inside a mapped doorbell segment.
pub(crate) struct Ring<'a> {
    pub ctl: &'a RingCtl,
    entries: &'a [Entry],
}

impl<'a> Ring<'a> {
    /// The ring of a doorbell mapping holding `cap` entries.
    ///
    /// # Panics
    /// If the mapping is too small for `cap` (callers size-check first).
    pub(crate) fn new(map: &'a Mapping, cap: u64) -> Ring<'a> {
        let bytes = (cap as usize).checked_mul(ENTRY_SIZE).expect("capacity checked");
        assert!(
            cap > 0 && map.len() >= DATA_OFFSET + bytes,
            "ring does not fit its mapping"
        );
        // SAFETY: the mapping is page aligned and holds CTL_OFFSET + size_of::<RingCtl>()
        // and DATA_OFFSET + cap entries (asserted); both types consist of atomics,
        // valid for any bit pattern and for concurrent access by another process;
        // the borrow of `map` keeps the memory mapped while the view exists.
        unsafe {
            Ring {
                ctl: &*map.as_ptr().add(CTL_OFFSET).cast::<RingCtl>(),
                entries: std::slice::from_raw_parts(map.as_ptr().add(DATA_OFFSET).cast::<Entry>(), cap as usize),
            }
        }
    }

    fn cap(&self) -> u64 {
        self.entries.len() as u64
    }

    fn slot(&self, n: u64) -> &Entry {
        &self.entries[(n % self.cap()) as usize]
    }

    /// Owner: make the ring empty and accept only `peer`, under a new `epoch`.
    /// The previous producer (if any) is locked out first.
    pub(crate) fn reset(&self, peer: u64, epoch: u64) {
        let o = &self.ctl.owner;
        o.epoch_peer.store(0, Ordering::Release);
        for e in self.entries {
            e.seq.store(0, Ordering::Relaxed);
        }
        self.ctl.consumer.head.store(0, Ordering::Relaxed);
        self.ctl.consumer.sleeping.store(0, Ordering::Relaxed);
        self.ctl.producer.space_wanted.store(0, Ordering::Relaxed);
        o.closed.store(0, Ordering::Relaxed);
        o.epoch.store(epoch, Ordering::Relaxed);
        o.epoch_peer.store(peer, Ordering::Release);
    }

    /// Owner: no more entries are accepted (shutdown, link failure).
    pub(crate) fn close(&self) {
        self.ctl.owner.closed.store(1, Ordering::Release);
        self.ctl.owner.epoch_peer.store(0, Ordering::Release);
    }

    /// Producer side: the epoch if this ring accepts `me`, else None.
    pub(crate) fn accepts(&self, me: u64) -> Option<u64> {
        let o = &self.ctl.owner;
        if o.closed.load(Ordering::Acquire) != 0 || o.epoch_peer.load(Ordering::Acquire) != me {
            return None;
        }
        Some(o.epoch.load(Ordering::Acquire))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.ctl.owner.closed.load(Ordering::Acquire) != 0
    }
}

/// Producer state (private to the producing process).
#[derive(Debug)]
pub(crate) struct Producer {
    tail: u64,
    head_seen: u64,
    cap: u64,
    tag: u32,
}

impl Producer {
    pub(crate) fn new(cap: u64, tag: u32) -> Producer {
        Producer {
            tail: 0,
            head_seen: 0,
            cap,
            tag,
        }
    }

    fn refresh_head(&mut self, r: &Ring<'_>) -> Result<(), RingViolation> {
        let head = r.ctl.consumer.head.load(Ordering::Acquire);
        if head < self.head_seen || head > self.tail {
            return Err(RingViolation::BadHead {
                head,
                seen: self.head_seen,
                tail: self.tail,
            });
        }
        self.head_seen = head;
        Ok(())
    }

    /// Whether one more entry fits (re-reading the consumer's head only when
    /// the cached view says full).
    pub(crate) fn has_space(&mut self, r: &Ring<'_>) -> Result<bool, RingViolation> {
        if self.tail - self.head_seen < self.cap {
            return Ok(true);
        }
        self.refresh_head(r)?;
        Ok(self.tail - self.head_seen < self.cap)
    }

    /// Publish one entry. The caller checked [`Producer::has_space`] and has
    /// already copied the payload. Returns whether the consumer must be woken.
    pub(crate) fn push(&mut self, r: &Ring<'_>, d: EntryData) -> bool {
        debug_assert!(self.tail - self.head_seen < self.cap);
        let e = r.slot(self.tail);
        e.addr.store(d.addr, Ordering::Relaxed);
        e.rkey.store(d.rkey, Ordering::Relaxed);
        e.len.store(d.len, Ordering::Relaxed);
        e.imm.store(d.imm, Ordering::Relaxed);
        e.tag.store(self.tag, Ordering::Relaxed);
        self.tail += 1;
        e.seq.store(self.tail, Ordering::Release);
        fence(Ordering::SeqCst);
        let s = &r.ctl.consumer.sleeping;
        s.load(Ordering::Relaxed) != 0 && s.swap(0, Ordering::AcqRel) != 0
    }

    /// Announce that we wait for space, then look again. `Ok(true)`: there is
    /// space now (announcement withdrawn); `Ok(false)`: the consumer will wake us.
    pub(crate) fn want_space(&mut self, r: &Ring<'_>) -> Result<bool, RingViolation> {
        r.ctl.producer.space_wanted.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.refresh_head(r)?;
        let space = self.tail - self.head_seen < self.cap;
        if space {
            r.ctl.producer.space_wanted.store(0, Ordering::Relaxed);
        }
        Ok(space)
    }

    #[cfg(test)]
    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }
}

/// Consumer state (private to the ring's owner).
#[derive(Debug)]
pub(crate) struct Consumer {
    head: u64,
    published: u64,
    cap: u64,
    tag: u32,
    announced: bool,
}

impl Consumer {
    pub(crate) fn new(cap: u64, tag: u32) -> Consumer {
        Consumer {
            head: 0,
            published: 0,
            cap,
            tag,
            announced: false,
        }
    }

    fn empty_seq(&self) -> u64 {
        if self.head < self.cap {
            0
        } else {
            self.head + 1 - self.cap
        }
    }

    /// The next entry if it is published, validated for order and tag.
    pub(crate) fn peek(&self, r: &Ring<'_>) -> Result<Option<EntryData>, RingViolation> {
        let e = r.slot(self.head);
        let seq = e.seq.load(Ordering::Acquire);
        if seq == self.head + 1 {
            let tag = e.tag.load(Ordering::Relaxed);
            if tag != self.tag {
                return Err(RingViolation::BadTag {
                    seq,
                    found: tag,
                    expected: self.tag,
                });
            }
            Ok(Some(EntryData {
                addr: e.addr.load(Ordering::Relaxed),
                rkey: e.rkey.load(Ordering::Relaxed),
                len: e.len.load(Ordering::Relaxed),
                imm: e.imm.load(Ordering::Relaxed),
            }))
        } else if seq == self.empty_seq() {
            Ok(None)
        } else {
            Err(RingViolation::OutOfOrder {
                expected: self.head + 1,
                found: seq,
            })
        }
    }

    /// Take the entry [`Consumer::peek`] returned.
    pub(crate) fn advance(&mut self) {
        self.head += 1;
    }

    /// Publish the head after a batch. Returns whether the producer waits for
    /// space and must be woken.
    pub(crate) fn publish(&mut self, r: &Ring<'_>) -> bool {
        if self.head == self.published {
            return false;
        }
        r.ctl.consumer.head.store(self.head, Ordering::Release);
        self.published = self.head;
        fence(Ordering::SeqCst);
        let w = &r.ctl.producer.space_wanted;
        w.load(Ordering::Relaxed) != 0 && w.swap(0, Ordering::AcqRel) != 0
    }

    /// Announce sleeping, then look again. `Ok(true)`: still empty, the
    /// producer will wake us; `Ok(false)`: an entry arrived (announcement withdrawn).
    pub(crate) fn announce_sleep(&mut self, r: &Ring<'_>) -> Result<bool, RingViolation> {
        r.ctl.consumer.sleeping.store(1, Ordering::Relaxed);
        self.announced = true;
        fence(Ordering::SeqCst);
        let empty = self.peek(r)?.is_none();
        if !empty {
            self.withdraw_sleep(r);
        }
        Ok(empty)
    }

    /// We are awake: producers need not send wake-ups.
    pub(crate) fn withdraw_sleep(&mut self, r: &Ring<'_>) {
        if self.announced {
            self.announced = false;
            r.ctl.consumer.sleeping.store(0, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub(crate) fn head(&self) -> u64 {
        self.head
    }
}

/// Test-only: write a raw entry into slot `n % cap` (forged, duplicated, …).
#[cfg(test)]
pub(crate) fn forge(r: &Ring<'_>, n: u64, seq: u64, tag: u32, d: EntryData) {
    let e = r.slot(n);
    e.addr.store(d.addr, Ordering::Relaxed);
    e.rkey.store(d.rkey, Ordering::Relaxed);
    e.len.store(d.len, Ordering::Relaxed);
    e.imm.store(d.imm, Ordering::Relaxed);
    e.tag.store(tag, Ordering::Relaxed);
    e.seq.store(seq, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn mapping(cap: u64) -> Mapping {
        Mapping::anonymous(DATA_OFFSET + cap as usize * ENTRY_SIZE).unwrap()
    }

    fn data(i: u32) -> EntryData {
        EntryData {
            addr: 0x1000 + u64::from(i),
            rkey: 7,
            len: i,
            imm: i.wrapping_mul(3),
        }
    }

    #[test]
    fn wrap_around_keeps_order() {
        let m = mapping(4);
        let r = Ring::new(&m, 4);
        r.reset(9, 1);
        let (mut p, mut c) = (Producer::new(4, 1), Consumer::new(4, 1));
        let mut next_out = 0u32;
        for i in 0..50u32 {
            assert!(p.has_space(&r).unwrap());
            p.push(&r, data(i));
            // Drain every third push, so the ring fills and wraps at odd offsets.
            if i % 3 == 2 {
                while let Some(d) = c.peek(&r).unwrap() {
                    assert_eq!(d, data(next_out));
                    next_out += 1;
                    c.advance();
                }
                c.publish(&r);
            }
        }
        while let Some(d) = c.peek(&r).unwrap() {
            assert_eq!(d, data(next_out));
            next_out += 1;
            c.advance();
        }
        assert_eq!(next_out, 50);
        assert_eq!(c.head(), p.tail());
    }

    #[test]
    fn full_ring_has_no_space_until_head_published() {
        let m = mapping(2);
        let r = Ring::new(&m, 2);
        r.reset(9, 1);
        let (mut p, mut c) = (Producer::new(2, 1), Consumer::new(2, 1));
        p.push(&r, data(0));
        p.push(&r, data(1));
        assert!(!p.has_space(&r).unwrap());
        assert!(!p.want_space(&r).unwrap(), "nothing consumed yet");
        c.peek(&r).unwrap().unwrap();
        c.advance();
        // Consumed but not yet published: still full for the producer.
        assert!(!p.has_space(&r).unwrap());
        assert!(c.publish(&r), "the producer announced it waits for space");
        assert!(p.has_space(&r).unwrap());
        assert!(!c.publish(&r), "nothing new to publish");
    }

    #[test]
    fn duplicate_stale_and_forged_entries_are_violations() {
        let m = mapping(4);
        let r = Ring::new(&m, 4);
        r.reset(9, 5);
        let mut c = Consumer::new(4, 5);
        // A future sequence number (skipped entries).
        forge(&r, 0, 3, 5, data(0));
        assert_eq!(c.peek(&r), Err(RingViolation::OutOfOrder { expected: 1, found: 3 }));
        // A valid first entry, then a duplicate of it in the next slot.
        forge(&r, 0, 1, 5, data(0));
        assert_eq!(c.peek(&r).unwrap(), Some(data(0)));
        c.advance();
        forge(&r, 1, 1, 5, data(0));
        assert_eq!(c.peek(&r), Err(RingViolation::OutOfOrder { expected: 2, found: 1 }));
        // Right sequence, wrong link tag (an older connection's producer).
        forge(&r, 1, 2, 4, data(1));
        assert!(matches!(c.peek(&r), Err(RingViolation::BadTag { found: 4, .. })));
        // Second lap: the previous lap's value reads as empty, anything else is stale.
        let mut p = Producer::new(4, 5);
        let (m2, mut c2) = (mapping(4), Consumer::new(4, 5));
        let r2 = Ring::new(&m2, 4);
        r2.reset(9, 5);
        for i in 0..4 {
            p.push(&r2, data(i));
            c2.peek(&r2).unwrap().unwrap();
            c2.advance();
        }
        c2.publish(&r2);
        assert_eq!(c2.peek(&r2), Ok(None), "slot 0 still holds lap 1's sequence 1: empty");
        forge(&r2, 4, 2, 5, data(9));
        assert_eq!(c2.peek(&r2), Err(RingViolation::OutOfOrder { expected: 5, found: 2 }));
    }

    #[test]
    fn impossible_head_is_a_violation() {
        let m = mapping(2);
        let r = Ring::new(&m, 2);
        r.reset(9, 1);
        let mut p = Producer::new(2, 1);
        p.push(&r, data(0));
        p.push(&r, data(1));
        r.ctl.consumer.head.store(5, Ordering::Relaxed);
        assert!(matches!(p.has_space(&r), Err(RingViolation::BadHead { head: 5, .. })));
    }

    #[test]
    fn reset_and_close_gate_the_producer() {
        let m = mapping(2);
        let r = Ring::new(&m, 2);
        assert_eq!(r.accepts(9), None, "a fresh ring accepts nobody");
        r.reset(9, 3);
        assert_eq!(r.accepts(9), Some(3));
        assert_eq!(r.accepts(8), None);
        r.close();
        assert_eq!(r.accepts(9), None);
        assert!(r.is_closed());
    }

    #[test]
    fn sleep_announcement_and_wake_flag() {
        let m = mapping(4);
        let r = Ring::new(&m, 4);
        r.reset(9, 1);
        let (mut p, mut c) = (Producer::new(4, 1), Consumer::new(4, 1));
        // Busy consumer: no wake needed.
        assert!(!p.push(&r, data(0)));
        // An entry is there: announcing sleep withdraws at once.
        assert!(!c.announce_sleep(&r).unwrap());
        c.advance();
        c.publish(&r);
        // Empty: the consumer sleeps, the next push must wake it, exactly once.
        assert!(c.announce_sleep(&r).unwrap());
        assert!(p.push(&r, data(1)));
        assert!(!p.push(&r, data(2)));
    }

    /// Producer and consumer on two threads (the same memory model as two
    /// processes on one mapping): every entry arrives once, in order, intact.
    #[test]
    fn two_threads_in_order() {
        const N: u32 = 20_000;
        let m = mapping(8);
        Ring::new(&m, 8).reset(9, 1);
        std::thread::scope(|s| {
            s.spawn(|| {
                let r = Ring::new(&m, 8);
                let mut p = Producer::new(8, 1);
                for i in 0..N {
                    while !p.has_space(&r).unwrap() {
                        std::thread::yield_now();
                    }
                    p.push(&r, data(i));
                }
            });
            let r = Ring::new(&m, 8);
            let mut c = Consumer::new(8, 1);
            let mut i = 0;
            while i < N {
                match c.peek(&r).unwrap() {
                    Some(d) => {
                        assert_eq!(d, data(i));
                        c.advance();
                        i += 1;
                        if i % 4 == 0 {
                            c.publish(&r);
                        }
                    }
                    None => {
                        c.publish(&r);
                        std::thread::yield_now();
                    }
                }
            }
        });
    }

    #[derive(Clone, Debug)]
    enum Op {
        Push,
        Pop,
        Publish,
    }

    proptest! {
        /// The ring against a VecDeque model: same contents, same fullness,
        /// for any interleaving of pushes, pops and head publications.
        #[test]
        fn ring_matches_model(cap_log in 0u32..4, ops in proptest::collection::vec(
            prop_oneof![Just(Op::Push), Just(Op::Pop), Just(Op::Publish)], 0..200)) {
            let cap = 1u64 << cap_log;
            let m = mapping(cap);
            let r = Ring::new(&m, cap);
            r.reset(9, 1);
            let (mut p, mut c) = (Producer::new(cap, 1), Consumer::new(cap, 1));
            let mut model: VecDeque<u32> = VecDeque::new();
            let mut published = 0usize; // entries popped and published
            let mut popped = 0usize;
            let mut next = 0u32;
            for op in ops {
                match op {
                    Op::Push => {
                        // The producer sees space iff fewer than cap entries are unpublished.
                        let in_flight = model.len() + (popped - published);
                        prop_assert_eq!(p.has_space(&r).unwrap(), (in_flight as u64) < cap);
                        if (in_flight as u64) < cap {
                            p.push(&r, data(next));
                            model.push_back(next);
                            next += 1;
                        }
                    }
                    Op::Pop => {
                        let got = c.peek(&r).unwrap();
                        prop_assert_eq!(got, model.pop_front().map(data));
                        if got.is_some() {
                            c.advance();
                            popped += 1;
                        }
                    }
                    Op::Publish => {
                        c.publish(&r);
                        published = popped;
                    }
                }
            }
        }
    }

    /// Exhaustive check of the sleep/wake protocol under sequential
    /// consistency (what the two `SeqCst` fences give): over every
    /// interleaving of one consumer going to sleep and a producer publishing
    /// two entries, the consumer never ends asleep with an entry it has not
    /// seen and no wake-up sent.
    #[test]
    fn no_lost_wakeup_in_any_interleaving() {
        // Shared state of the model.
        #[derive(Clone, Copy, Default)]
        struct S {
            published: u32,
            sleeping: bool,
            wakes: u32,
            // consumer
            c_pc: u8,
            c_saw: u32,
            c_asleep: bool,
            // producer
            p_pc: u8,
            p_pushed: u32,
        }
        const PUSHES: u32 = 2;
        fn consumer_step(s: &mut S) -> bool {
            match s.c_pc {
                0 => s.sleeping = true,     // announce
                1 => s.c_saw = s.published, // re-check after the fence
                2 => {
                    if s.c_saw == 0 {
                        s.c_asleep = true; // wait on the socket
                    } else {
                        s.sleeping = false; // withdraw
                    }
                }
                _ => return false,
            }
            s.c_pc += 1;
            true
        }
        fn producer_step(s: &mut S) -> bool {
            if s.p_pushed == PUSHES {
                return false;
            }
            match s.p_pc {
                0 => s.published += 1, // seq store
                1 => {
                    // after the fence: swap(sleeping, 0)
                    if std::mem::replace(&mut s.sleeping, false) {
                        s.wakes += 1;
                    }
                    s.p_pushed += 1;
                    s.p_pc = 0;
                    return true;
                }
                _ => unreachable!(),
            }
            s.p_pc += 1;
            true
        }
        fn explore(s: S, count: &mut u64) {
            let mut a = s;
            let mut b = s;
            let ca = consumer_step(&mut a);
            let pb = producer_step(&mut b);
            if ca {
                explore(a, count);
            }
            if pb {
                explore(b, count);
            }
            if !ca && !pb {
                *count += 1;
                // Final state: a sleeping consumer that missed an entry must have been woken.
                if s.c_asleep && s.published > 0 {
                    assert!(s.wakes >= 1, "lost wake-up");
                }
                assert!(s.wakes <= 1, "one wake-up per sleep");
            }
        }
        let mut count = 0;
        explore(S::default(), &mut count);
        assert!(count > 10, "explored {count} interleavings");
    }
}

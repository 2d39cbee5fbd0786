//! Mailbox bookkeeping for the calling side: slots as credits, request ids,
//! and the rule that a reply is delivered to the call it answers or to none.
//!
//! A slot is a credit: a call takes a free slot, its request goes to the same
//! slot index in the server's mailbox and the reply comes back to that index in
//! ours. A slot is only reused once its reply arrived (or the link was reset),
//! because a late reply would otherwise land on top of the next call's data.

/// Identifies one call: its slot and its request id.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct CallId {
    pub slot: u32,
    pub request_id: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    InFlight {
        request_id: u64,
    },
    Replied {
        request_id: u64,
        len: u32,
    },
    /// The caller gave up waiting; the slot is held until the reply drains.
    Abandoned {
        request_id: u64,
    },
}

/// A reply that does not belong to any waiting call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The immediate names a slot we do not have.
    #[error("reply for slot {slot} but the mailbox has {count} slots")]
    SlotOutOfRange { slot: u32, count: u32 },
    /// Nothing is waiting in this slot.
    #[error("reply in slot {slot} for request {request_id} but no call is waiting there")]
    NotInFlight { slot: u32, request_id: u64 },
    /// A call is waiting in this slot, but for another request (a late or duplicated reply).
    #[error("reply in slot {slot} for request {got}, the waiting call is request {expected}")]
    WrongRequest { slot: u32, expected: u64, got: u64 },
    /// This call already has its reply.
    #[error("second reply for request {request_id} in slot {slot}")]
    Duplicate { slot: u32, request_id: u64 },
}

/// Slot allocator and call tracker. See the module docs.
#[derive(Debug, Clone)]
pub struct CallTable {
    slots: Vec<SlotState>,
    /// Free slot indices; LIFO so a single caller keeps reusing a warm slot.
    free: Vec<u32>,
    next_request_id: u64,
}

impl CallTable {
    /// A table with `count` slots.
    ///
    /// # Panics
    /// If `count` is zero.
    pub fn new(count: u32) -> Self {
        assert!(count > 0, "a mailbox needs at least one slot");
        CallTable {
            slots: vec![SlotState::Free; count as usize],
            free: (0..count).rev().collect(),
            next_request_id: 1,
        }
    }

    pub fn slot_count(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Calls holding a slot (in flight, replied but not finished, or abandoned).
    pub fn busy(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Take a free slot for a new call; `None` when every slot is busy.
    pub fn begin(&mut self) -> Option<CallId> {
        let slot = self.free.pop()?;
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.slots[slot as usize] = SlotState::InFlight { request_id };
        Some(CallId { slot, request_id })
    }

    /// A reply of `len` bytes arrived in `slot` for `request_id`.
    ///
    /// Returns the call it completes. A reply to an abandoned call frees the
    /// slot and returns `Ok(None)`.
    ///
    /// # Errors
    /// [`ReplyError`] when the reply belongs to no waiting call; the table is unchanged.
    pub fn on_reply(&mut self, slot: u32, request_id: u64, len: u32) -> Result<Option<CallId>, ReplyError> {
        let count = self.slot_count();
        let state = self
            .slots
            .get_mut(slot as usize)
            .ok_or(ReplyError::SlotOutOfRange { slot, count })?;
        match *state {
            SlotState::InFlight { request_id: want } if want == request_id => {
                *state = SlotState::Replied { request_id, len };
                Ok(Some(CallId { slot, request_id }))
            }
            SlotState::Abandoned { request_id: want } if want == request_id => {
                *state = SlotState::Free;
                self.free.push(slot);
                Ok(None)
            }
            SlotState::Replied { request_id: have, .. } if have == request_id => {
                Err(ReplyError::Duplicate { slot, request_id })
            }
            SlotState::InFlight { request_id: expected }
            | SlotState::Replied {
                request_id: expected, ..
            }
            | SlotState::Abandoned { request_id: expected } => Err(ReplyError::WrongRequest {
                slot,
                expected,
                got: request_id,
            }),
            SlotState::Free => Err(ReplyError::NotInFlight { slot, request_id }),
        }
    }

    /// Length of the reply of `call`, once it arrived.
    pub fn reply_len(&self, call: CallId) -> Option<u32> {
        match self.slots.get(call.slot as usize)? {
            SlotState::Replied { request_id, len } if *request_id == call.request_id => Some(*len),
            _ => None,
        }
    }

    /// True while `call` waits for its reply.
    pub fn is_in_flight(&self, call: CallId) -> bool {
        matches!(self.slots.get(call.slot as usize), Some(SlotState::InFlight { request_id }) if *request_id == call.request_id)
    }

    /// The caller is done with a replied call: free its slot.
    ///
    /// # Panics
    /// If `call` has not been replied (finishing twice is a caller bug).
    pub fn finish(&mut self, call: CallId) {
        let state = &mut self.slots[call.slot as usize];
        assert!(
            matches!(*state, SlotState::Replied { request_id, .. } if request_id == call.request_id),
            "finish of {call:?} in state {state:?}"
        );
        *state = SlotState::Free;
        self.free.push(call.slot);
    }

    /// The caller stops waiting for `call`; its slot stays held until the
    /// reply drains or [`CallTable::reset`].
    pub fn abandon(&mut self, call: CallId) {
        let state = &mut self.slots[call.slot as usize];
        match *state {
            SlotState::InFlight { request_id } if request_id == call.request_id => {
                *state = SlotState::Abandoned { request_id };
            }
            SlotState::Replied { request_id, .. } if request_id == call.request_id => {
                *state = SlotState::Free;
                self.free.push(call.slot);
            }
            _ => {}
        }
    }

    /// Give back the slot of a call whose request was never sent (the post
    /// failed), so no reply can arrive for it.
    pub fn withdraw(&mut self, call: CallId) {
        if self.is_in_flight(call) {
            self.slots[call.slot as usize] = SlotState::Free;
            self.free.push(call.slot);
        }
    }

    /// The link is gone: nothing can arrive any more. Frees every slot and
    /// returns the calls that were still waiting.
    pub fn reset(&mut self) -> Vec<CallId> {
        let mut waiting = Vec::new();
        for (slot, state) in self.slots.iter_mut().enumerate() {
            if let SlotState::InFlight { request_id } = *state {
                waiting.push(CallId {
                    slot: slot as u32,
                    request_id,
                });
            }
            *state = SlotState::Free;
        }
        self.free = (0..self.slots.len() as u32).rev().collect();
        waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_slot_cycle() {
        let mut t = CallTable::new(1);
        let c = t.begin().unwrap();
        assert_eq!(t.begin(), None, "one credit only");
        assert_eq!(t.on_reply(0, c.request_id, 20), Ok(Some(c)));
        assert_eq!(t.reply_len(c), Some(20));
        assert_eq!(
            t.on_reply(0, c.request_id, 20),
            Err(ReplyError::Duplicate {
                slot: 0,
                request_id: c.request_id
            })
        );
        t.finish(c);
        let d = t.begin().unwrap();
        assert!(d.request_id > c.request_id);
        // A late duplicate of the old reply must not complete the new call.
        assert_eq!(
            t.on_reply(0, c.request_id, 20),
            Err(ReplyError::WrongRequest {
                slot: 0,
                expected: d.request_id,
                got: c.request_id
            })
        );
        assert!(t.is_in_flight(d));
    }

    #[test]
    fn out_of_range_and_free_slot() {
        let mut t = CallTable::new(2);
        assert_eq!(
            t.on_reply(5, 1, 0),
            Err(ReplyError::SlotOutOfRange { slot: 5, count: 2 })
        );
        assert_eq!(
            t.on_reply(1, 1, 0),
            Err(ReplyError::NotInFlight { slot: 1, request_id: 1 })
        );
    }

    #[test]
    fn abandoned_slot_held_until_reply_drains() {
        let mut t = CallTable::new(1);
        let c = t.begin().unwrap();
        t.abandon(c);
        assert_eq!(t.begin(), None);
        assert_eq!(t.on_reply(0, c.request_id, 1), Ok(None));
        assert!(t.begin().is_some());
    }

    #[test]
    fn reset_returns_waiting_calls() {
        let mut t = CallTable::new(3);
        let a = t.begin().unwrap();
        let b = t.begin().unwrap();
        t.on_reply(b.slot, b.request_id, 0).unwrap();
        assert_eq!(t.reset(), vec![a]);
        assert_eq!(t.busy(), 0);
    }
}

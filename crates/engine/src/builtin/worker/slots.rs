//! Which sequence gets which llama.cpp sequence id, and in what order a step's batch lists them.
//!
//! With one KV stream per sequence (the default layout, `kv_unified = false`), llama.cpp splits a
//! batch with `split_equal(.., sequential = true)`, which accepts a sequence into the current
//! micro-batch only if its id is the previous one's plus one, so a step listing 7, 6, 5, .. runs one
//! pass over the weights per sequence. With the unified layout any batch is one pass, whatever its
//! ids. The rules below keep batches in the one-pass shape for either layout, and make a step's batch
//! (and so where its tokens land in the cache) depend only on what runs:
//! - with per-slot streams, while others run, a new sequence takes the lowest free id (and copies
//!   another slot's stream when that holds more of its prompt: `prefix.rs` decides; this module
//!   offers the ids);
//! - running sequences are kept sorted by id, and each step's batch lists them in that order.
//!
//! Pure bookkeeping, no llama.cpp: the tests below pin both rules.

/// Something that runs in a slot.
pub(super) trait SlotId {
    /// Its llama.cpp sequence id.
    fn slot_id(&self) -> i32;
}

/// What one running sequence wants from the next batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Want {
    /// Its last sampled token: exactly one batch token.
    Decode,
    /// `left` prompt tokens still to feed (more than zero).
    Prompt {
        /// Prompt tokens not yet in the KV cache.
        left: usize,
    },
    /// Nothing this step.
    Nothing,
}

/// The running sequences, sorted by slot id, and the ids still free.
#[derive(Debug)]
pub(super) struct Slots<T> {
    /// Number of slot ids: `0..capacity`.
    capacity: i32,
    /// Sorted by [`SlotId::slot_id`], strictly ascending.
    running: Vec<T>,
}

impl<T: SlotId> Slots<T> {
    /// `capacity` empty slots (ids `0..capacity`).
    pub(super) fn new(capacity: u32) -> Self {
        Self {
            capacity: i32::try_from(capacity).unwrap_or(i32::MAX),
            running: Vec::new(),
        }
    }

    /// The lowest id no running sequence holds, if any.
    pub(super) fn lowest_free(&self) -> Option<i32> {
        // Running ids are sorted and distinct: the first index whose id is above it is a gap.
        let mut want = 0;
        for seq in &self.running {
            if seq.slot_id() != want {
                break;
            }
            want += 1;
        }
        (want < self.capacity).then_some(want)
    }

    /// Ids no running sequence holds, ascending.
    pub(super) fn free_ids(&self) -> impl Iterator<Item = i32> + '_ {
        (0..self.capacity).filter(|id| self.running.binary_search_by_key(id, SlotId::slot_id).is_err())
    }

    /// Starts `make(id)` in the lowest free slot; `None` (and `make` not called) when all are taken.
    #[cfg(test)]
    pub(super) fn admit(&mut self, make: impl FnOnce(i32) -> T) -> Option<i32> {
        let id = self.lowest_free()?;
        self.admit_at(id, make)
    }

    /// Starts `make(id)` in slot `id`; `None` (and `make` not called) when `id` is taken or out of
    /// range. With per-slot streams the worker passes the lowest free id while others run.
    pub(super) fn admit_at(&mut self, id: i32, make: impl FnOnce(i32) -> T) -> Option<i32> {
        if !(0..self.capacity).contains(&id) {
            return None;
        }
        let at = self.running.partition_point(|s| s.slot_id() < id);
        if self.running.get(at).is_some_and(|s| s.slot_id() == id) {
            return None;
        }
        let seq = make(id);
        debug_assert_eq!(seq.slot_id(), id, "a sequence must take the id it was given");
        self.running.insert(at, seq);
        Some(id)
    }

    /// Running sequences.
    pub(super) fn len(&self) -> usize {
        self.running.len()
    }

    /// True when nothing runs.
    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// True when every id is taken.
    pub(super) fn is_full(&self) -> bool {
        self.lowest_free().is_none()
    }

    /// The `i`-th running sequence in id order.
    pub(super) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        self.running.get_mut(i)
    }

    /// Running sequences in id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &T> {
        self.running.iter()
    }

    /// Running sequences in id order, mutably.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.running.iter_mut()
    }

    /// Ends the `i`-th running sequence in id order (its id becomes free).
    pub(super) fn remove(&mut self, i: usize) -> T {
        self.running.remove(i)
    }

    /// Ends every running sequence `pred` picks, returning them in id order.
    pub(super) fn remove_where(&mut self, mut pred: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.running.len() {
            if pred(&self.running[i]) {
                gone.push(self.running.remove(i));
            } else {
                i += 1;
            }
        }
        gone
    }

    /// The next step's batch: `(index in id order, tokens)` for each sequence that puts tokens in
    /// it, listed in ascending id order (the order the batch must hold them in). At most `cap` tokens:
    /// every decoding sequence gets its one token first, then prompts share what is left, the one
    /// admitted first (lowest `admitted` ticket) first.
    pub(super) fn plan(&self, cap: usize, want: impl Fn(&T) -> (u64, Want)) -> Vec<(usize, usize)> {
        let wants: Vec<(u64, Want)> = self.running.iter().map(want).collect();
        let mut tokens = vec![0usize; wants.len()];
        let mut room = cap;
        for (i, (_, w)) in wants.iter().enumerate() {
            if *w == Want::Decode && room > 0 {
                tokens[i] = 1;
                room -= 1;
            }
        }
        let mut prompts: Vec<(u64, usize, usize)> = wants
            .iter()
            .enumerate()
            .filter_map(|(i, (ticket, w))| match w {
                Want::Prompt { left } if *left > 0 => Some((*ticket, i, *left)),
                _ => None,
            })
            .collect();
        prompts.sort_unstable_by_key(|&(ticket, i, _)| (ticket, i));
        for (_, i, left) in prompts {
            if room == 0 {
                break;
            }
            let n = left.min(room);
            tokens[i] = n;
            room -= n;
        }
        tokens.into_iter().enumerate().filter(|&(_, n)| n > 0).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug)]
    struct Fake {
        id: i32,
        ticket: u64,
        want: Want,
    }

    impl SlotId for Fake {
        fn slot_id(&self) -> i32 {
            self.id
        }
    }

    /// A small deterministic generator (xorshift), so a failure replays.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn ids(slots: &Slots<Fake>) -> Vec<i32> {
        slots.running.iter().map(|s| s.id).collect()
    }

    fn batch_ids(slots: &Slots<Fake>, cap: usize) -> Vec<i32> {
        let running = ids(slots);
        slots
            .plan(cap, |s| (s.ticket, s.want))
            .into_iter()
            .map(|(i, _)| running[i])
            .collect()
    }

    #[test]
    fn fresh_slots_fill_from_zero() {
        let mut slots = Slots::new(4);
        for expect in 0..4 {
            let got = slots.admit(|id| Fake {
                id,
                ticket: 0,
                want: Want::Decode,
            });
            assert_eq!(got, Some(expect));
        }
        assert!(slots.is_full());
        assert_eq!(
            slots.admit(|_| unreachable!("no free slot: make is not called")),
            None
        );
    }

    /// The issue-14 defect: with a last-in-first-out free list, freeing 0..8 in order and admitting
    /// eight new sequences gave them ids 7, 6, .., 0 in admission order, and the batch listed them
    /// descending. Now every round's batch is 0..8 ascending.
    #[test]
    fn rounds_of_equal_requests_stay_ascending() {
        let mut slots = Slots::new(8);
        let mut ticket = 0;
        for round in 0..4 {
            while slots
                .admit(|id| {
                    ticket += 1;
                    Fake {
                        id,
                        ticket,
                        want: Want::Decode,
                    }
                })
                .is_some()
            {}
            assert_eq!(
                batch_ids(&slots, 512),
                (0..8).collect::<Vec<_>>(),
                "round {round}"
            );
            // Finish in admission order (all equal length), as a closed-loop benchmark does.
            for _ in 0..8 {
                let first = slots
                    .running
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.ticket)
                    .map(|(i, _)| i)
                    .unwrap();
                slots.remove(first);
            }
            assert!(slots.is_empty());
        }
    }

    #[test]
    fn any_order_of_admissions_and_frees_keeps_lowest_free_and_ascending_batches() {
        const CAP: u32 = 8;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut slots = Slots::new(CAP);
        let mut ticket = 0u64;
        for step in 0..20_000 {
            match rng.below(3) {
                0 | 1 if !slots.is_full() => {
                    let taken = ids(&slots);
                    let lowest = (0..CAP as i32).find(|id| !taken.contains(id));
                    ticket += 1;
                    let want = match rng.below(3) {
                        0 => Want::Decode,
                        1 => Want::Prompt {
                            left: 1 + rng.below(700),
                        },
                        _ => Want::Nothing,
                    };
                    let got = slots.admit(|id| Fake { id, ticket, want });
                    assert_eq!(got, lowest, "step {step}: admission takes the lowest free id");
                }
                _ if !slots.is_empty() => {
                    if rng.below(4) == 0 {
                        let gone = slots.remove_where(|s| s.want == Want::Nothing);
                        assert!(gone.windows(2).all(|w| w[0].id < w[1].id));
                    } else {
                        let i = rng.below(slots.len());
                        slots.remove(i);
                    }
                }
                _ => {}
            }
            let running = ids(&slots);
            assert!(
                running.windows(2).all(|w| w[0] < w[1]),
                "step {step}: running ids {running:?} are not strictly ascending"
            );
            let cap = 1 + rng.below(600);
            let batch = batch_ids(&slots, cap);
            assert!(
                batch.windows(2).all(|w| w[0] < w[1]),
                "step {step}: batch ids {batch:?} are not strictly ascending"
            );
            let planned: usize = slots.plan(cap, |s| (s.ticket, s.want)).iter().map(|p| p.1).sum();
            assert!(
                planned <= cap,
                "step {step}: {planned} tokens planned for a batch of {cap}"
            );
        }
    }

    #[test]
    fn admit_at_takes_only_a_free_id_and_keeps_the_order() {
        let mut slots = Slots::new(4);
        let fake = |id| Fake {
            id,
            ticket: 0,
            want: Want::Decode,
        };
        assert_eq!(slots.admit_at(2, fake), Some(2));
        assert_eq!(slots.admit_at(0, fake), Some(0));
        assert_eq!(slots.admit_at(2, |_| unreachable!("2 is taken")), None);
        assert_eq!(slots.admit_at(4, |_| unreachable!("out of range")), None);
        assert_eq!(slots.admit_at(-1, |_| unreachable!("out of range")), None);
        assert_eq!(ids(&slots), vec![0, 2]);
        assert_eq!(slots.free_ids().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(slots.lowest_free(), Some(1));
        assert_eq!(batch_ids(&slots, 8), vec![0, 2]);
    }

    #[test]
    fn decodes_come_first_then_the_oldest_prompt() {
        let mut slots = Slots::new(4);
        let wants = [
            (3, Want::Prompt { left: 100 }),
            (1, Want::Prompt { left: 100 }),
            (2, Want::Decode),
            (4, Want::Nothing),
        ];
        for (ticket, want) in wants {
            slots.admit(|id| Fake { id, ticket, want });
        }
        // Slot 2 decodes (1 token); slot 1 is the oldest prompt (99 tokens), slot 0 gets the rest.
        assert_eq!(slots.plan(100, |s| (s.ticket, s.want)), vec![(1, 99), (2, 1)]);
        assert_eq!(
            slots.plan(150, |s| (s.ticket, s.want)),
            vec![(0, 49), (1, 100), (2, 1)]
        );
        // A batch too small for every decode still takes decodes in id order.
        assert_eq!(slots.plan(1, |s| (s.ticket, s.want)), vec![(2, 1)]);
    }
}

//! The prefix cache's bookkeeping: which tokens each free slot's KV cells hold, and where a new
//! prompt starts.
//!
//! A finished sequence leaves its KV cells in its slot, with the list of tokens at their positions.
//! A new prompt goes to the free slot whose list shares the longest prefix with it (least recently
//! released among equals, then the lowest id), keeps those cells and feeds only the rest. With one
//! KV stream per sequence, while others run it takes the lowest free id instead unless the saving
//! is large (dense ids keep a step to one pass). With the unified KV cache, when a running
//! sequence holds a longer prefix (the same system prompt or question, asked twice at once), the
//! new sequence shares that sequence's cells: a cell can belong to several sequences, so sharing
//! is a copy of metadata, not of data (`llama_memory_seq_cp`).
//!
//! At most all but the prompt's last token is kept: its logits give the first sampled token.
//!
//! Pure bookkeeping, no llama.cpp: the worker applies the [`Placement`] to the KV cache, and the
//! tests below pin the choices.

use llama_cpp_2::token::LlamaToken;

/// What one slot's KV cells hold while the slot is free.
#[derive(Clone, Debug, Default)]
struct Kept {
    /// The token at each position `0..len` of the slot's cells.
    tokens: Vec<LlamaToken>,
    /// When its last sequence left (a count of releases), for least-recently-used.
    released: u64,
}

/// How the context lays out KV cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KvLayout {
    /// One stream of `ctx_per_slot` cells per sequence (`kv_unified = false`): a batch is one
    /// pass over the weights only when its sequence ids rise by one, and nothing is shared.
    PerSequence,
    /// One pool of cells for all sequences (`kv_unified = true`): any batch is one pass, and a
    /// cell can belong to several sequences.
    Unified,
}

/// With [`KvLayout::PerSequence`], a new sequence takes a free slot other than the lowest one only
/// when that slot's cached prefix is at least this many tokens longer while other sequences run.
const SLOT_SWITCH_GAIN: usize = 64;

/// Per slot, what its cells hold.
#[derive(Debug)]
pub(super) struct PrefixCache {
    layout: KvLayout,
    slots: Vec<Kept>,
    /// Sequences released so far.
    releases: u64,
}

/// Where a new prompt goes and what it starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Placement {
    /// The free slot it takes.
    pub(super) id: i32,
    /// Leading prompt tokens whose cells the slot already holds (its own cached prefix).
    pub(super) own: usize,
    /// A running sequence whose cells for the first `n` prompt tokens the new sequence shares,
    /// when that is more than `own`: `(its slot id, n)`. The slot's own cells are dropped first.
    pub(super) share: Option<(i32, usize)>,
}

impl Placement {
    /// Prompt tokens the new sequence does not process.
    pub(super) fn cached(&self) -> usize {
        self.share.map_or(self.own, |(_, n)| n)
    }
}

impl PrefixCache {
    /// `slots` slots holding nothing.
    pub(super) fn new(slots: u32, layout: KvLayout) -> Self {
        Self {
            layout,
            slots: vec![Kept::default(); slots as usize],
            releases: 0,
        }
    }

    fn kept(&self, id: i32) -> Option<&Kept> {
        usize::try_from(id).ok().and_then(|i| self.slots.get(i))
    }

    fn kept_mut(&mut self, id: i32) -> Option<&mut Kept> {
        usize::try_from(id).ok().and_then(|i| self.slots.get_mut(i))
    }

    /// Chooses among the `free` slot ids for `prompt`. `running` gives, for each running
    /// sequence, its slot id and the number of leading prompt tokens its decoded cells hold. With
    /// `reuse` off (a benchmark of prompt processing), the lowest free id and nothing kept.
    pub(super) fn place(
        &self,
        free: &[i32],
        prompt: &[LlamaToken],
        running: impl IntoIterator<Item = (i32, usize)>,
        reuse: bool,
    ) -> Option<Placement> {
        let lowest = free.iter().copied().min()?;
        if !reuse {
            return Some(Placement {
                id: lowest,
                own: 0,
                share: None,
            });
        }
        let limit = prompt.len().saturating_sub(1);
        let own = |id: i32| {
            self.kept(id)
                .map_or(0, |k| common_prefix(&k.tokens, prompt))
                .min(limit)
        };
        let idle_since = |id: i32| self.kept(id).map_or(0, |k| k.released);
        // Longest own prefix first; among equals, the slot released longest ago (so that a few
        // alternating prompts each keep a slot instead of overwriting one in turn), then the
        // lowest id.
        let best = free
            .iter()
            .copied()
            .max_by_key(|&id| (own(id), std::cmp::Reverse(idle_since(id)), std::cmp::Reverse(id)))
            .unwrap_or(lowest);
        let mut running = running.into_iter().peekable();
        let id = match self.layout {
            KvLayout::Unified => best,
            // Per-sequence streams: a gap in the running ids costs a pass over the weights in every
            // step (see `slots`), more than prefilling a few tokens.
            KvLayout::PerSequence if running.peek().is_none() => best,
            KvLayout::PerSequence if own(best) - own(lowest) >= SLOT_SWITCH_GAIN => best,
            KvLayout::PerSequence => lowest,
        };
        let own = own(id);
        let share = match self.layout {
            KvLayout::Unified => running
                .map(|(src, n)| (src, n.min(limit)))
                .filter(|&(_, n)| n > own)
                // The longest; the lowest id among equals.
                .max_by_key(|&(src, n)| (n, std::cmp::Reverse(src))),
            // Cells cannot be shared across streams without copying a whole stream.
            KvLayout::PerSequence => None,
        };
        Some(Placement { id, own, share })
    }

    /// A sequence left slot `id` with its cells intact; `tokens` are what they hold.
    pub(super) fn release(&mut self, id: i32, tokens: Vec<LlamaToken>) {
        self.releases += 1;
        let at = self.releases;
        if let Some(kept) = self.kept_mut(id) {
            kept.tokens = tokens;
            kept.released = at;
        }
    }

    /// Slot `id`'s cells were cleared or taken by a new sequence: it holds nothing to reuse.
    pub(super) fn forget(&mut self, id: i32) {
        if let Some(kept) = self.kept_mut(id) {
            kept.tokens.clear();
        }
    }
}

/// Length of the longest common prefix of two token lists.
pub(super) fn common_prefix<'a>(a: impl IntoIterator<Item = &'a LlamaToken>, b: &[LlamaToken]) -> usize {
    a.into_iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().copied().map(LlamaToken).collect()
    }

    const LAYOUTS: [KvLayout; 2] = [KvLayout::PerSequence, KvLayout::Unified];

    #[test]
    fn an_empty_cache_takes_the_lowest_free_slot() {
        for layout in LAYOUTS {
            let cache = PrefixCache::new(4, layout);
            let p = cache.place(&[2, 0, 3], &toks(&[1, 2, 3]), [], true);
            let want = Placement {
                id: 0,
                own: 0,
                share: None,
            };
            assert_eq!(p, Some(want), "{layout:?}");
            assert_eq!(cache.place(&[], &toks(&[1]), [], true), None);
        }
    }

    #[test]
    fn an_idle_engine_takes_the_longest_prefix_but_never_the_last_prompt_token() {
        for layout in LAYOUTS {
            let mut cache = PrefixCache::new(3, layout);
            cache.release(0, toks(&[1, 2, 9, 9]));
            cache.release(1, toks(&[1, 2, 3, 4, 5, 6]));
            cache.release(2, toks(&[7]));
            let p = cache.place(&[0, 1, 2], &toks(&[1, 2, 3, 4]), [], true).unwrap();
            // Slot 1 holds the whole prompt; its last token is decoded again.
            assert_eq!((p.id, p.own, p.cached()), (1, 3, 3), "{layout:?}");
            let p = cache.place(&[0, 2], &toks(&[1, 2, 3, 4]), [], true).unwrap();
            assert_eq!((p.id, p.own), (0, 2), "{layout:?}");
        }
    }

    #[test]
    fn equal_prefixes_go_to_the_slot_released_longest_ago() {
        for layout in LAYOUTS {
            let mut cache = PrefixCache::new(3, layout);
            cache.release(2, toks(&[5, 1]));
            cache.release(0, toks(&[5, 2]));
            cache.release(1, toks(&[5, 3]));
            let p = cache.place(&[0, 1, 2], &toks(&[5, 4, 4]), [], true).unwrap();
            assert_eq!((p.id, p.own), (2, 1), "{layout:?}");
        }
    }

    #[test]
    fn per_sequence_streams_keep_running_ids_dense_unless_the_saving_is_large() {
        let mut cache = PrefixCache::new(4, KvLayout::PerSequence);
        let short: Vec<i32> = (0..20).collect();
        let long: Vec<i32> = (100..100 + SLOT_SWITCH_GAIN as i32 + 1).collect();
        cache.release(3, toks(&short));
        cache.release(2, toks(&long));
        // Slot 0 runs: a 19-token saving in slot 3 does not justify a gap.
        let prompt = toks(&[short.as_slice(), &[7]].concat());
        let p = cache.place(&[1, 2, 3], &prompt, [(0, 0)], true).unwrap();
        assert_eq!((p.id, p.own, p.share), (1, 0, None));
        // Nothing runs: the longest prefix wins.
        let p = cache.place(&[1, 2, 3], &prompt, [], true).unwrap();
        assert_eq!((p.id, p.own), (3, 20));
        // A saving of SLOT_SWITCH_GAIN tokens does.
        let prompt = toks(&[long.as_slice(), &[7]].concat());
        let p = cache.place(&[1, 2, 3], &prompt, [(0, 0)], true).unwrap();
        assert_eq!((p.id, p.own), (2, SLOT_SWITCH_GAIN + 1));
        // Running sequences' cells are never shared across streams.
        let p = cache.place(&[1], &prompt, [(0, 40)], true).unwrap();
        assert_eq!(p.share, None);
    }

    #[test]
    fn unified_takes_its_prefix_anywhere_and_shares_a_running_sequences_longer_one() {
        let mut cache = PrefixCache::new(4, KvLayout::Unified);
        cache.release(3, toks(&[1, 2, 7]));
        cache.release(2, toks(&[1, 2]));
        let prompt = toks(&[1, 2, 3, 4, 5]);
        // Slot 0 runs the same prompt (4 tokens decoded), slot 1 a shorter match. Slots 3 and 2
        // hold 2 prompt tokens each: slot 3, released longer ago, is taken although slot 1 is
        // lower and a sequence runs.
        let p = cache.place(&[1, 2, 3], &prompt, [(0, 4), (1, 3)], true).unwrap();
        assert_eq!(p.id, 3);
        assert_eq!(p.own, 2);
        assert_eq!(p.share, Some((0, 4)));
        assert_eq!(p.cached(), 4);
        // A running match no longer than the slot's own prefix is not shared.
        let p = cache.place(&[2, 3], &prompt, [(0, 2)], true).unwrap();
        assert_eq!((p.id, p.share), (3, None));
        // Shared prefixes keep the last prompt token out as well.
        let p = cache.place(&[1], &prompt, [(0, 9)], true).unwrap();
        assert_eq!(p.share, Some((0, 4)));
    }

    #[test]
    fn without_reuse_nothing_is_kept_or_shared() {
        for layout in LAYOUTS {
            let mut cache = PrefixCache::new(2, layout);
            cache.release(1, toks(&[1, 2, 3]));
            let p = cache
                .place(&[1, 0], &toks(&[1, 2, 3, 4]), [(0, 3)], false)
                .unwrap();
            let want = Placement {
                id: 0,
                own: 0,
                share: None,
            };
            assert_eq!(p, want, "{layout:?}");
        }
    }

    #[test]
    fn forgetting_a_slot_empties_its_list() {
        let mut cache = PrefixCache::new(2, KvLayout::Unified);
        cache.release(0, toks(&[1, 2, 3]));
        cache.forget(0);
        assert_eq!(cache.place(&[0], &toks(&[1, 2, 3, 4]), [], true).unwrap().own, 0);
        cache.release(1, toks(&[1, 2, 3]));
        cache.forget(1);
        assert_eq!(cache.place(&[1], &toks(&[1, 2, 3, 4]), [], true).unwrap().own, 0);
    }
}

//! The prefix cache's bookkeeping: which tokens each free slot's KV cells hold, and where a new
//! prompt starts.
//!
//! A finished sequence leaves its KV cells in its slot, with the list of tokens at their positions.
//! A new prompt goes to the free slot whose list shares the longest prefix with it (least recently
//! released among equals, then the lowest id), keeps those cells and feeds only the rest. With one
//! KV stream per sequence, while others run it takes the lowest free id instead (dense ids keep a
//! step to one pass), and when another slot, free or running, holds a prefix longer by enough
//! tokens, that slot's stream is copied into its own (`llama_memory_seq_cp` across streams copies
//! the whole stream's data, `ctx_per_slot` cells, at the next decode, before that decode writes any
//! cell; the cells past the prefix are then dropped). With the unified KV cache, when a running
//! sequence holds a longer prefix (the same system prompt or question, asked twice at once), the new
//! sequence shares that sequence's cells: a cell can belong to several sequences, so sharing is a
//! copy of metadata, not of data.
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

/// With [`KvLayout::PerSequence`], while other sequences run, another slot's stream is copied
/// into the lowest one when it holds at least `max(MIN_COPY_GAIN, ctx_per_slot / CELLS_PER_TOKEN)`
/// more prompt tokens. Copying a stream moves all its `ctx_per_slot` cells. Measured with the demo
/// model (SmolLM2-135M, 23 KB of K and V a cell) on the 2-core development machine: a copy of 2,048
/// cells added 5 to 15 ms to its step, one more prompt token in a step 12 ms at 1 thread (about 6
/// at 2), so a token saved pays for 850 cells or more; one per 256 leaves a margin of three.
const MIN_COPY_GAIN: usize = 8;
/// See [`MIN_COPY_GAIN`].
const CELLS_PER_TOKEN: usize = 256;

/// Per slot, what its cells hold.
#[derive(Debug)]
pub(super) struct PrefixCache {
    layout: KvLayout,
    /// Prompt tokens a stream copy must save ([`MIN_COPY_GAIN`]).
    copy_gain: usize,
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
    /// Another slot whose cells for the first `n` prompt tokens the new sequence starts from,
    /// when that is more than `own`: `(its slot id, n)`; the slot's own cells are dropped. Unified:
    /// a running sequence, whose cells are shared. Per-sequence: a free slot or a running
    /// sequence, whose stream is copied.
    pub(super) share: Option<(i32, usize)>,
}

impl Placement {
    /// Prompt tokens the new sequence does not process.
    pub(super) fn cached(&self) -> usize {
        self.share.map_or(self.own, |(_, n)| n)
    }
}

impl PrefixCache {
    /// `slots` slots of `ctx_per_slot` cells, holding nothing.
    pub(super) fn new(slots: u32, layout: KvLayout, ctx_per_slot: u32) -> Self {
        Self {
            layout,
            copy_gain: MIN_COPY_GAIN.max(ctx_per_slot as usize / CELLS_PER_TOKEN),
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
        // Running sequences' decoded prefixes, capped like the slots' own.
        let mut running = running.into_iter().map(|(src, n)| (src, n.min(limit))).peekable();
        let (id, share) = match self.layout {
            KvLayout::Unified => {
                let own = own(best);
                (best, longest(running.filter(|&(_, n)| n > own)))
            }
            KvLayout::PerSequence if running.peek().is_none() => (best, None),
            // Per-sequence streams: a gap in the running ids costs a pass over the weights in every
            // step (see `slots`), so the lowest id, with a copy of the stream holding the longest
            // prefix, free or running, when that saves enough prefill.
            KvLayout::PerSequence => {
                let bar = own(lowest) + self.copy_gain;
                let free = (best != lowest).then(|| (best, own(best)));
                (
                    lowest,
                    longest(free.into_iter().chain(running).filter(|&(_, n)| n >= bar)),
                )
            }
        };
        Some(Placement {
            id,
            own: own(id),
            share,
        })
    }

    /// What slot `id`'s cells hold (nothing while a sequence runs there).
    pub(super) fn kept_tokens(&self, id: i32) -> &[LlamaToken] {
        self.kept(id).map_or(&[], |k| k.tokens.as_slice())
    }

    /// Prompt tokens a copy of cells from elsewhere must save.
    pub(super) fn copy_gain(&self) -> usize {
        self.copy_gain
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

/// Of `(slot id, prefix length)` candidates, the longest prefix; the lowest id among equals.
fn longest(candidates: impl Iterator<Item = (i32, usize)>) -> Option<(i32, usize)> {
    candidates.max_by_key(|&(src, n)| (n, std::cmp::Reverse(src)))
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
            let cache = PrefixCache::new(4, layout, 2048);
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
            let mut cache = PrefixCache::new(3, layout, 2048);
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
            let mut cache = PrefixCache::new(3, layout, 2048);
            cache.release(2, toks(&[5, 1]));
            cache.release(0, toks(&[5, 2]));
            cache.release(1, toks(&[5, 3]));
            let p = cache.place(&[0, 1, 2], &toks(&[5, 4, 4]), [], true).unwrap();
            assert_eq!((p.id, p.own), (2, 1), "{layout:?}");
        }
    }

    #[test]
    fn per_sequence_streams_keep_running_ids_dense_and_copy_a_longer_prefix() {
        // 2,048 cells a slot: a copy must save 8 tokens.
        let mut cache = PrefixCache::new(4, KvLayout::PerSequence, 2048);
        let system: Vec<i32> = (0..20).collect();
        cache.release(1, toks(&system));
        cache.release(
            3,
            toks(&[system.as_slice(), &[50, 51, 52, 53, 54, 55, 56, 57]].concat()),
        );
        cache.release(
            2,
            toks(&[system.as_slice(), &[60, 61, 62, 63, 64, 65, 66]].concat()),
        );
        // Slot 0 runs: the new sequence takes slot 1 (dense ids) and copies slot 3's stream, which
        // holds 8 more of its tokens.
        let prompt = toks(&[system.as_slice(), &[50, 51, 52, 53, 54, 55, 56, 57, 9]].concat());
        let p = cache.place(&[1, 2, 3], &prompt, [(0, 0)], true).unwrap();
        assert_eq!((p.id, p.own, p.share, p.cached()), (1, 20, Some((3, 28)), 28));
        // Nothing runs: the longest prefix's own slot, no copy.
        let p = cache.place(&[1, 2, 3], &prompt, [], true).unwrap();
        assert_eq!((p.id, p.own, p.share), (3, 28, None));
        // Seven tokens more are not worth a copy.
        let prompt = toks(&[system.as_slice(), &[60, 61, 62, 63, 64, 65, 66, 9]].concat());
        let p = cache.place(&[1, 2, 3], &prompt, [(0, 0)], true).unwrap();
        assert_eq!((p.id, p.own, p.share), (1, 20, None));
        // A running sequence's stream is copied too, by the same bar (8 tokens over slot 1's 20);
        // the last prompt token stays out.
        let p = cache.place(&[1], &prompt, [(0, 27)], true).unwrap();
        assert_eq!(p.share, None);
        let prompt = toks(&[system.as_slice(), &[60, 61, 62, 63, 64, 65, 66, 67, 9]].concat());
        let p = cache.place(&[1], &prompt, [(2, 40), (0, 40)], true).unwrap();
        assert_eq!((p.id, p.share, p.cached()), (1, Some((0, 28)), 28));
        // The longest of free and running.
        let prompt = toks(&[system.as_slice(), &[50, 51, 52, 53, 54, 55, 56, 57, 58, 9]].concat());
        let p = cache.place(&[1, 3], &prompt, [(0, 29)], true).unwrap();
        assert_eq!(p.share, Some((0, 29)));
        let p = cache.place(&[1, 3], &prompt, [(0, 27)], true).unwrap();
        assert_eq!(p.share, Some((3, 28)));
        // Longer slots raise the bar: at 4,096 cells a copy must save 16 tokens.
        let mut cache = PrefixCache::new(4, KvLayout::PerSequence, 4096);
        cache.release(1, toks(&system));
        cache.release(
            3,
            toks(&[system.as_slice(), &[50, 51, 52, 53, 54, 55, 56, 57]].concat()),
        );
        let prompt = toks(&[system.as_slice(), &[50, 51, 52, 53, 54, 55, 56, 57, 9]].concat());
        let p = cache.place(&[1, 3], &prompt, [(0, 0)], true).unwrap();
        assert_eq!((p.id, p.share), (1, None));
    }

    #[test]
    fn unified_takes_its_prefix_anywhere_and_shares_a_running_sequences_longer_one() {
        let mut cache = PrefixCache::new(4, KvLayout::Unified, 2048);
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
            let mut cache = PrefixCache::new(2, layout, 2048);
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
        let mut cache = PrefixCache::new(2, KvLayout::Unified, 2048);
        cache.release(0, toks(&[1, 2, 3]));
        cache.forget(0);
        assert_eq!(cache.place(&[0], &toks(&[1, 2, 3, 4]), [], true).unwrap().own, 0);
        cache.release(1, toks(&[1, 2, 3]));
        cache.forget(1);
        assert_eq!(cache.place(&[1], &toks(&[1, 2, 3, 4]), [], true).unwrap().own, 0);
    }
}

//! The prompt cache in host memory: KV states of prefixes that left their slot.
//!
//! A slot keeps the cells of the last sequence it ran until a new sequence takes it. When that new
//! sequence keeps less than the slot held (another question after the same system prompt), the
//! lost part is gone for the next prompt that needs it, however recent. Before the slot is reused,
//! its sequence's state (`llama_state_seq_get_data`: its cells' K and V, with their positions) is
//! saved here when enough would be lost; a later prompt whose longest prefix is here and not in a
//! slot has the state written back into its slot (`llama_state_seq_set_data`) and the cells past
//! its prefix dropped. llama-server keeps such a cache too (`--cache-ram`, 8 GiB by default).
//!
//! Bounded by bytes, least recently used first out; an entry that another one extends is dropped.
//! The bookkeeping is generic over the state so that the tests below need no llama.cpp; the
//! worker's two methods at the end move states between it and the context.

use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::token::LlamaToken;
use tracing::{debug, warn};

use super::Worker;
use super::prefix::common_prefix;

/// One saved prefix.
#[derive(Debug)]
struct Entry<S> {
    /// The tokens at positions `0..len` of the saved cells.
    tokens: Vec<LlamaToken>,
    state: S,
    bytes: usize,
    /// When it was last saved or used (a counter).
    used: u64,
}

/// Saved prefixes, at most `budget` bytes of state.
#[derive(Debug)]
pub(super) struct HostCache<S> {
    budget: usize,
    bytes: usize,
    entries: Vec<Entry<S>>,
    clock: u64,
}

impl<S> HostCache<S> {
    /// A cache of at most `budget` bytes (0: nothing is ever kept).
    pub(super) fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            entries: Vec::new(),
            clock: 0,
        }
    }

    /// Whether saving `tokens` could keep anything: the cache is on and no entry already holds
    /// all of them.
    pub(super) fn wants(&self, tokens: &[LlamaToken]) -> bool {
        self.budget > 0
            && !self
                .entries
                .iter()
                .any(|e| common_prefix(&e.tokens, tokens) == tokens.len())
    }

    /// Saves `state`, the cells of `tokens`, `bytes` long. Entries that are prefixes of `tokens`
    /// go (this one holds them too); then the least recently used ones until it fits. A state
    /// larger than the whole budget is not kept.
    pub(super) fn insert(&mut self, tokens: Vec<LlamaToken>, state: S, bytes: usize) {
        if self.budget == 0 || bytes > self.budget {
            return;
        }
        let mut i = 0;
        while i < self.entries.len() {
            if common_prefix(&self.entries[i].tokens, &tokens) == self.entries[i].tokens.len() {
                let gone = self.entries.swap_remove(i);
                self.bytes -= gone.bytes;
            } else {
                i += 1;
            }
        }
        while self.bytes + bytes > self.budget {
            let Some((oldest, _)) = self.entries.iter().enumerate().min_by_key(|(_, e)| e.used) else {
                break;
            };
            let gone = self.entries.swap_remove(oldest);
            self.bytes -= gone.bytes;
        }
        self.clock += 1;
        self.bytes += bytes;
        self.entries.push(Entry {
            tokens,
            state,
            bytes,
            used: self.clock,
        });
    }

    /// The entry sharing the longest prefix with `prompt`, capped at `limit` tokens, if that is
    /// at least `at_least` tokens: its state and the number of prompt tokens it holds. Marks it
    /// used.
    pub(super) fn best(
        &mut self,
        prompt: &[LlamaToken],
        limit: usize,
        at_least: usize,
    ) -> Option<(&S, usize)> {
        let (i, n) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, common_prefix(&e.tokens, prompt).min(limit)))
            // The longest; the most recently used among equals.
            .max_by_key(|&(i, n)| (n, self.entries[i].used))?;
        if n < at_least.max(1) {
            return None;
        }
        self.clock += 1;
        let entry = &mut self.entries[i];
        entry.used = self.clock;
        Some((&entry.state, n))
    }

    /// Bytes of state held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The worker's side: what goes to the cache and what comes back into a slot.
impl Worker<'_> {
    /// Saves free slot `id`'s sequence state to the host-memory cache when its new sequence keeps
    /// only `keep` of its tokens and the rest is worth keeping (at least a copy's worth of tokens,
    /// not held there already).
    pub(super) fn save_to_host(&mut self, id: i32, keep: usize) {
        let kept = self.prefixes.kept_tokens(id);
        if kept.len() < keep + self.prefixes.copy_gain() || !self.host.wants(kept) {
            return;
        }
        match self.ctx.state_seq_get(id, LlamaStateSeqFlags::empty()) {
            Ok(state) => {
                let bytes = state.byte_len();
                let tokens = kept.len();
                self.host.insert(kept.to_vec(), state, bytes);
                debug!(
                    slot = id,
                    tokens,
                    bytes,
                    held = self.host.bytes(),
                    "prefix saved to host memory"
                );
            }
            Err(e) => debug!(slot = id, error = %e, "saving the slot's state failed; not cached"),
        }
    }

    /// Writes the host-memory cache's longest prefix of `prompt` into slot `id` when it beats
    /// `cached` (what the slots offer) by a copy's worth of tokens; returns the tokens it holds.
    /// A failed write leaves the slot cleared and starts from nothing.
    pub(super) fn restore_from_host(
        &mut self,
        id: i32,
        seq: u32,
        prompt: &[LlamaToken],
        cached: usize,
    ) -> Option<usize> {
        let limit = prompt.len().saturating_sub(1);
        let at_least = cached + self.prefixes.copy_gain();
        let (state, n) = self.host.best(prompt, limit, at_least)?;
        let ok = self.ctx.clear_kv_cache_seq(Some(seq), None, None).is_ok()
            && self.ctx.state_seq_set(state, id).is_ok()
            && u32::try_from(n)
                .ok()
                .is_some_and(|n| matches!(self.ctx.clear_kv_cache_seq(Some(seq), Some(n), None), Ok(true)));
        if ok {
            debug!(slot = id, tokens = n, "prefix restored from host memory");
            return Some(n);
        }
        warn!(
            slot = id,
            "restoring a prefix from host memory failed; clearing the slot"
        );
        self.clear_slot(id);
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn toks(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().copied().map(LlamaToken).collect()
    }

    #[test]
    fn the_longest_prefix_comes_back_capped_and_above_the_bar() {
        let mut cache = HostCache::new(1000);
        cache.insert(toks(&[1, 2, 3, 4, 5]), "a", 100);
        cache.insert(toks(&[1, 2, 7]), "b", 100);
        assert_eq!(cache.best(&toks(&[1, 2, 3, 4, 9]), 4, 1), Some((&"a", 4)));
        // The prompt's last token is never taken from a cache (limit = len - 1).
        assert_eq!(cache.best(&toks(&[1, 2, 3, 4, 5]), 4, 1), Some((&"a", 4)));
        assert_eq!(cache.best(&toks(&[1, 2, 7, 8]), 3, 1), Some((&"b", 3)));
        // Below the bar: nothing.
        assert_eq!(cache.best(&toks(&[1, 2, 7, 8]), 3, 4), None);
        assert_eq!(cache.best(&toks(&[9]), 0, 0), None);
    }

    #[test]
    fn an_extended_prefix_replaces_the_shorter_one_and_covered_lists_are_not_wanted() {
        let mut cache = HostCache::new(1000);
        cache.insert(toks(&[1, 2]), "short", 100);
        assert!(cache.wants(&toks(&[1, 2, 3])));
        assert!(!cache.wants(&toks(&[1])));
        cache.insert(toks(&[1, 2, 3]), "long", 150);
        assert_eq!(cache.bytes(), 150);
        assert!(!cache.wants(&toks(&[1, 2])));
        assert_eq!(cache.best(&toks(&[1, 2, 3, 4]), 3, 1), Some((&"long", 3)));
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let mut cache = HostCache::new(300);
        cache.insert(toks(&[1]), "one", 100);
        cache.insert(toks(&[2]), "two", 100);
        cache.insert(toks(&[3]), "three", 100);
        // Using "one" makes "two" the oldest.
        assert!(cache.best(&toks(&[1, 0]), 1, 1).is_some());
        cache.insert(toks(&[4]), "four", 100);
        assert_eq!(cache.bytes(), 300);
        assert_eq!(cache.best(&toks(&[2, 0]), 1, 1), None);
        assert!(cache.best(&toks(&[1, 0]), 1, 1).is_some());
        // Larger than the budget: not kept, nothing evicted.
        cache.insert(toks(&[5]), "huge", 301);
        assert_eq!(cache.bytes(), 300);
        // Off: nothing is wanted or kept.
        let mut off = HostCache::new(0);
        assert!(!off.wants(&toks(&[1])));
        off.insert(toks(&[1]), "x", 0);
        assert_eq!(off.best(&toks(&[1, 2]), 1, 0), None);
    }
}

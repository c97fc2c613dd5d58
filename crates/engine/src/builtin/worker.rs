//! The decode thread: the only owner of the llama.cpp context.
//!
//! Continuous batching: each step admits queued jobs (FIFO) into free slots, puts every running
//! sequence's last sampled token and as many pending prompt tokens as fit into one batch, decodes it
//! once, and samples one token per sequence whose logits came out. A sequence is a slot: its id is
//! the llama.cpp sequence id.
//!
//! KV layout ([`KvLayout`]): by default each sequence has its own stream of `ctx_per_slot` cells
//! (`kv_unified = false`), and a batch is one pass over the weights when its sequence ids rise by
//! one ([`slots`] keeps them so). No cell is shared, and a sequence's attention reads only its own
//! stream: `tests/it/batching.rs` pins greedy answers that are the same alone and under load. With
//! the unified layout all sequences share one pool of `slots * ctx_per_slot` cells: any batch is one
//! pass, whatever its ids, and concurrent prompts share the cells of a common prefix. llama.cpp then
//! computes attention over the whole pool (in an order that depends on where each cell landed, and
//! with a split of long caches across threads), so answers can differ in the last bits with the
//! traffic around them, as llama-server's do. Either way the worker caps each sequence at
//! `ctx_per_slot` cells, so one long request cannot starve the others.
//!
//! Prefix cache ([`prefix`]): a finished sequence leaves its KV cells in its slot. A new prompt goes
//! to the free slot holding its longest prefix (the system prompt and chat template, or the whole
//! earlier conversation); per slot while others run, to the lowest free slot, into which a slot
//! (free or running) with a longer prefix is copied; unified, it shares the cells of a running
//! sequence with a longer one. It feeds only what follows, always at least its last token, whose
//! logits give the first sampled token. The cells hold what a fresh prefill of the same tokens would
//! write (`prefix_tests.rs`). What a slot held and its new sequence does not keep goes to host
//! memory first ([`host_cache`]), from where a later prompt can have it written back.

mod host_cache;
mod prefix;
mod seq;
mod slots;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::SeqState;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::vocab::LlamaVocab;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, warn};

use self::host_cache::HostCache;
pub(crate) use self::prefix::KvLayout;
use self::prefix::{Placement, PrefixCache};
use self::seq::Seq;
use self::slots::Slots;
use super::params::GenParams;
use super::text::StopScan;
use crate::{Error, Result};

/// One request, tokenized and validated.
pub(crate) struct Job {
    /// Prompt tokens; fewer than the slot context.
    pub(crate) prompt: Vec<LlamaToken>,
    /// Generation parameters.
    pub(crate) params: GenParams,
    /// Where the text goes; a closed receiver means the client has gone.
    pub(crate) events: UnboundedSender<Event>,
    /// May start from a slot's cached prefix (off: the whole prompt is processed, as a benchmark of
    /// prompt processing needs).
    pub(crate) reuse_prefix: bool,
}

/// What the worker tells a request.
#[derive(Debug)]
pub(crate) enum Event {
    /// More text.
    Text(String),
    /// The end, with the last text (possibly empty).
    Finished(Finished),
    /// The request failed; the worker goes on with the others.
    Failed(Error),
}

/// The end of a generation.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Why it ended.
    pub(crate) reason: FinishReason,
    /// Text not sent yet (held back for stop-string matching or an incomplete character).
    pub(crate) tail: String,
    /// Token counts and timings.
    pub(crate) stats: Stats,
    /// Logits of every sampled token (tests compare a cached prefix with a fresh prefill).
    #[cfg(test)]
    pub(crate) sampled_logits: Vec<Vec<f32>>,
}

/// OpenAI's `finish_reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FinishReason {
    /// End-of-generation token or stop string.
    Stop,
    /// `max_tokens` reached or the slot's context is full.
    Length,
}

impl FinishReason {
    /// The wire string.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// Token counts and timings of one request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    /// Prompt tokens.
    pub(crate) prompt_tokens: usize,
    /// Prompt tokens taken from the slot's prefix cache instead of being processed.
    pub(crate) cached_tokens: usize,
    /// Sampled tokens (an end-of-generation token counts, as in vLLM).
    pub(crate) completion_tokens: usize,
    /// From admission to the first sampled token (prompt processing).
    pub(crate) prompt_secs: f64,
    /// From the first to the last sampled token (`completion_tokens - 1` decodes).
    pub(crate) gen_secs: f64,
}

/// Sizes of the context the worker creates.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WorkerConfig {
    /// Concurrent sequences.
    pub(crate) slots: u32,
    /// KV cells per sequence.
    pub(crate) ctx_per_slot: u32,
    /// Tokens per decode call.
    pub(crate) n_batch: u32,
    /// CPU threads.
    pub(crate) threads: i32,
    /// Keep finished sequences' KV cells for the next prompt with the same prefix.
    pub(crate) prefix_cache: bool,
    /// One KV stream per sequence, or one pool for all.
    pub(crate) layout: KvLayout,
    /// Bytes of KV state the prompt cache may keep in host memory (0: none).
    pub(crate) host_cache_bytes: usize,
}

/// Running totals of the prefix cache, shared with the engine handle.
#[derive(Debug, Default)]
pub(crate) struct PrefixCounters {
    /// Prompt tokens of admitted requests.
    pub(crate) prompt_tokens: AtomicU64,
    /// Of those, tokens found in a slot's cached prefix (not processed again).
    pub(crate) cached_tokens: AtomicU64,
}

/// Starts the worker thread and waits until its context exists.
pub(crate) fn spawn(
    model: Arc<LlamaModel>,
    backend: &'static LlamaBackend,
    cfg: WorkerConfig,
    jobs: Receiver<Job>,
    counters: Arc<PrefixCounters>,
) -> Result<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
    std::thread::Builder::new()
        .name("cloister-llama".into())
        .spawn(move || {
            let ctx = match new_context(&model, backend, cfg) {
                Ok(ctx) => ctx,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut worker = Worker::new(&model, ctx, cfg, counters);
            worker.warm_up();
            let _ = ready_tx.send(Ok(()));
            worker.run(&jobs);
            debug!("engine worker stopped");
        })
        .map_err(|e| Error::Load(format!("cannot start the engine thread: {e}")))?;
    ready_rx
        .recv()
        .map_err(|_| Error::Load("the engine thread stopped while starting".into()))?
}

fn new_context<'m>(
    model: &'m LlamaModel,
    backend: &LlamaBackend,
    cfg: WorkerConfig,
) -> Result<LlamaContext<'m>> {
    let n_ctx = cfg
        .slots
        .checked_mul(cfg.ctx_per_slot)
        .and_then(NonZeroU32::new)
        .ok_or_else(|| Error::Config("slots * ctx_per_slot must be below 2^32".into()))?;
    let params = LlamaContextParams::default()
        .with_n_ctx(Some(n_ctx))
        .with_n_batch(cfg.n_batch)
        .with_n_ubatch(cfg.n_batch)
        .with_n_seq_max(cfg.slots)
        .with_kv_unified(cfg.layout == KvLayout::Unified)
        .with_n_threads(cfg.threads)
        .with_n_threads_batch(cfg.threads);
    model.new_context(backend, params).map_err(|e| {
        Error::Load(format!(
            "cannot create a llama.cpp context of {n_ctx} tokens: {e}"
        ))
    })
}

/// What became of a sequence after a step.
enum Outcome {
    Running,
    Finished(FinishReason, String),
    Gone,
}

struct Worker<'m> {
    vocab: LlamaVocab<'m>,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    cfg: WorkerConfig,
    active: Slots<Seq>,
    /// The next admission ticket.
    tickets: u64,
    /// What the free slots' KV cells hold.
    prefixes: PrefixCache,
    /// Prefixes that left their slot, in host memory.
    host: HostCache<SeqState>,
    /// Slots whose streams a copy admitted this step reads at the next decode: their cells must
    /// not be overwritten before it.
    copy_sources: Vec<i32>,
    counters: Arc<PrefixCounters>,
}

impl<'m> Worker<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        cfg: WorkerConfig,
        counters: Arc<PrefixCounters>,
    ) -> Self {
        Self {
            vocab: model.vocab(),
            ctx,
            batch: LlamaBatch::new(cfg.n_batch as usize, 1),
            cfg,
            active: Slots::new(cfg.slots),
            tickets: 0,
            prefixes: PrefixCache::new(cfg.slots, cfg.layout, cfg.ctx_per_slot),
            host: HostCache::new(cfg.host_cache_bytes),
            copy_sources: Vec::new(),
            counters,
        }
    }

    /// One throwaway decode, as llama.cpp's own tools do: the first decode pages the weights in and
    /// allocates compute buffers, which would otherwise land on the first request.
    fn warm_up(&mut self) {
        let started = Instant::now();
        let bos = self.vocab.bos();
        let token = if (0..self.vocab.n_tokens()).contains(&bos.0) {
            bos
        } else {
            LlamaToken(0)
        };
        self.batch.clear();
        let decoded = self
            .batch
            .add(token, 0, &[0], true)
            .map_err(|e| e.to_string())
            .and_then(|()| self.ctx.decode(&mut self.batch).map_err(|e| e.to_string()));
        if let Err(e) = decoded {
            warn!(error = %e, "warm-up decode failed");
        }
        self.ctx.clear_kv_cache();
        self.batch.clear();
        debug!(ms = started.elapsed().as_millis() as u64, "warm-up decode done");
    }

    fn run(&mut self, jobs: &Receiver<Job>) {
        loop {
            if !self.admit(jobs) {
                return;
            }
            self.drop_abandoned();
            if !self.active.is_empty() {
                self.step();
            }
        }
    }

    /// Moves queued jobs into free slots. Blocks when nothing runs. False: shut down.
    fn admit(&mut self, jobs: &Receiver<Job>) -> bool {
        while !self.active.is_full() {
            let job = if self.active.is_empty() {
                match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return false,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            };
            if job.events.is_closed() {
                continue;
            }
            let reuse = self.cfg.prefix_cache && job.reuse_prefix;
            let running = self.active.iter().map(|s| (s.id, s.decoded_prefix(&job.prompt)));
            let free: Vec<i32> = self.active.free_ids().collect();
            let Some(place) = self.prefixes.place(&free, &job.prompt, running, reuse) else {
                break;
            };
            let id = place.id;
            let cached = self.prepare_slot(place, &job.prompt, reuse);
            let c = &self.counters;
            c.prompt_tokens
                .fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
            c.cached_tokens.fetch_add(cached as u64, Ordering::Relaxed);
            let ticket = self.tickets;
            self.tickets += 1;
            self.active.admit_at(id, |id| Seq::new(id, ticket, job, cached));
        }
        true
    }

    /// Readies the slot of `place` for its new sequence: keeps the cells of its own cached prefix
    /// and removes the others, or replaces them with another slot's (unified: a running sequence's
    /// cells, shared; per-sequence: a free or running slot's stream, copied) or with a longer
    /// prefix from the host-memory cache. What the slot held is saved to that cache first when
    /// enough of it would be lost. Returns the number of prompt tokens the sequence starts from.
    fn prepare_slot(&mut self, place: Placement, prompt: &[LlamaToken], reuse: bool) -> usize {
        let id = place.id;
        let Ok(seq) = u32::try_from(id) else {
            return 0;
        };
        if reuse {
            self.save_to_host(id, place.own);
        }
        // The new sequence's own list replaces what the slot held when it is released.
        self.prefixes.forget(id);
        // A copy admitted this step reads this slot's stream at the next decode, and a restore
        // writes at once: no restore into it before then.
        if reuse
            && !self.copy_sources.contains(&id)
            && let Some(n) = self.restore_from_host(id, seq, prompt, place.cached())
        {
            return n;
        }
        let ok = match (place.share, self.cfg.layout) {
            // One pool: the new sequence joins the source's first `n` cells (metadata only).
            (Some((src, n)), KvLayout::Unified) => {
                self.ctx.clear_kv_cache_seq(Some(seq), None, None).is_ok()
                    && u32::try_from(n)
                        .ok()
                        .is_some_and(|n| self.ctx.copy_kv_cache_seq(src, id, Some(0), Some(n)).is_ok())
            }
            // Separate streams: llama.cpp copies only whole streams (a partial range across streams
            // is a failed assertion, so the range stays open here), at the next decode, before the
            // batch's cells are written (a running source's cells up to `n` are final); the copy's
            // cells past the prefix are then dropped.
            (Some((src, n)), KvLayout::PerSequence) => {
                debug!(slot = id, from = src, tokens = n, "copying a KV stream");
                self.copy_sources.push(src);
                self.ctx.copy_kv_cache_seq(src, id, None, None).is_ok()
                    && u32::try_from(n).ok().is_some_and(|n| {
                        matches!(self.ctx.clear_kv_cache_seq(Some(seq), Some(n), None), Ok(true))
                    })
            }
            (None, _) => u32::try_from(place.own).ok().is_some_and(|from| {
                matches!(self.ctx.clear_kv_cache_seq(Some(seq), Some(from), None), Ok(true))
            }),
        };
        if ok {
            return place.cached();
        }
        warn!(
            slot = id,
            "preparing the slot's cached prefix failed; clearing the slot"
        );
        self.clear_slot(id);
        0
    }

    fn drop_abandoned(&mut self) {
        for seq in self.active.remove_where(|s| s.job.events.is_closed()) {
            debug!(
                slot = seq.id,
                generated = seq.n_gen,
                "client went away; slot freed"
            );
            self.release(seq);
        }
    }

    /// A sequence has left [`Self::active`] (its id is free again) with its KV cells intact: they
    /// stay in the slot as its cached prefix, or are cleared when the prefix cache is off.
    fn release(&mut self, seq: Seq) {
        let id = seq.id;
        if self.cfg.prefix_cache {
            self.prefixes.release(id, seq.kv_tokens());
        } else {
            self.clear_slot(id);
        }
    }

    /// Clears slot `id`'s KV cells and forgets its cached prefix.
    fn clear_slot(&mut self, id: i32) {
        self.prefixes.forget(id);
        let cleared = u32::try_from(id)
            .ok()
            .map(|seq| self.ctx.clear_kv_cache_seq(Some(seq), None, None));
        if !matches!(cleared, Some(Ok(true))) {
            warn!(slot = id, "clearing the slot's KV cells failed");
        }
    }

    fn step(&mut self) {
        self.fill_batch();
        if self.batch.n_tokens() == 0 {
            return;
        }
        let decode_started = Instant::now();
        let decoded = self.ctx.decode(&mut self.batch);
        // The decode ran the pending stream copies first.
        self.copy_sources.clear();
        tracing::trace!(
            tokens = self.batch.n_tokens(),
            sequences = self.active.len(),
            ms = format_args!("{:.2}", decode_started.elapsed().as_secs_f64() * 1e3),
            "decode step"
        );
        if let Err(e) = decoded {
            warn!(error = %e, tokens = self.batch.n_tokens(), "decode failed; failing the sequences in the batch");
            for seq in self.active.remove_where(|s| s.in_batch > 0) {
                let _ = seq
                    .job
                    .events
                    .send(Event::Failed(Error::Inference(format!("decode failed: {e}"))));
                // What llama.cpp wrote before failing is unknown: no prefix survives.
                self.clear_slot(seq.id);
            }
            return;
        }
        let mut i = 0;
        while i < self.active.len() {
            let outcome = self.advance(i);
            match outcome {
                Outcome::Running => i += 1,
                Outcome::Gone => {
                    let seq = self.active.remove(i);
                    self.release(seq);
                }
                Outcome::Finished(reason, tail) => {
                    let seq = self.active.remove(i);
                    let stats = seq.stats();
                    log_finished(seq.id, reason, &stats);
                    let _ = seq.job.events.send(Event::Finished(Finished {
                        reason,
                        tail,
                        stats,
                        #[cfg(test)]
                        sampled_logits: seq.sampled_logits.clone(),
                    }));
                    self.release(seq);
                }
            }
        }
    }

    /// Sampled tokens of running sequences first (one each), then prompt chunks, oldest first; the
    /// batch lists the sequences in ascending id order (see [`slots`]).
    fn fill_batch(&mut self) {
        self.batch.clear();
        for seq in self.active.iter_mut() {
            seq.in_batch = 0;
            seq.logits_at = None;
        }
        let plan = self.active.plan(self.cfg.n_batch as usize, Seq::want);
        for (i, n) in plan {
            let Some(seq) = self.active.get_mut(i) else {
                continue;
            };
            if let Some(token) = seq.next {
                if self.batch.add(token, seq.n_past, &[seq.id], true).is_ok() {
                    seq.generated.push(token);
                    seq.in_batch = 1;
                    seq.logits_at = Some(self.batch.n_tokens() - 1);
                }
                continue;
            }
            let end = seq.job.prompt.len().min(seq.fed + n);
            for pos in seq.fed..end {
                let last = pos + 1 == seq.job.prompt.len();
                let p = i32::try_from(pos).unwrap_or(i32::MAX);
                if self.batch.add(seq.job.prompt[pos], p, &[seq.id], last).is_err() {
                    break;
                }
                seq.in_batch += 1;
                seq.fed = pos + 1;
                if last {
                    seq.logits_at = Some(self.batch.n_tokens() - 1);
                }
            }
        }
    }

    /// After a successful decode: account the batch and sample for sequence `i`.
    fn advance(&mut self, i: usize) -> Outcome {
        let ctx_limit = i32::try_from(self.cfg.ctx_per_slot).unwrap_or(i32::MAX);
        let Some(seq) = self.active.get_mut(i) else {
            return Outcome::Running;
        };
        seq.n_past += seq.in_batch;
        let Some(idx) = seq.logits_at else {
            return Outcome::Running;
        };
        #[cfg(test)]
        seq.sampled_logits.push(self.ctx.get_logits_ith(idx).to_vec());
        let token = seq.sampler.sample(&self.ctx, idx);
        let now = Instant::now();
        seq.first_token.get_or_insert(now);
        seq.last_token = Some(now);
        seq.n_gen += 1;
        seq.next = Some(token);

        if !seq.job.params.ignore_eos && self.vocab.is_eog(token) {
            let (tail, _) = seq.drain();
            return Outcome::Finished(FinishReason::Stop, tail);
        }
        let piece = self.vocab.token_to_piece(token, false, None);
        let text = seq.decoder.push(&piece);
        let out = match seq.stops.push(&text) {
            StopScan::Stopped(before) => return Outcome::Finished(FinishReason::Stop, before),
            StopScan::Continue(out) => out,
        };
        let max_reached = seq.job.params.max_tokens.is_some_and(|m| seq.n_gen >= m as usize);
        // The sampled token would be decoded at position `n_past`: no room left for it.
        let context_full = seq.n_past >= ctx_limit;
        if max_reached || context_full {
            let (rest, stopped) = seq.drain();
            let reason = if stopped {
                FinishReason::Stop
            } else {
                FinishReason::Length
            };
            return Outcome::Finished(reason, out + &rest);
        }
        if !out.is_empty() && seq.job.events.send(Event::Text(out)).is_err() {
            return Outcome::Gone;
        }
        Outcome::Running
    }
}

fn log_finished(slot: i32, reason: FinishReason, s: &Stats) {
    let rate = |n: f64, secs: f64| if secs > 0.0 { n / secs } else { 0.0 };
    debug!(
        slot,
        finish_reason = reason.as_str(),
        prompt_tokens = s.prompt_tokens,
        cached_tokens = s.cached_tokens,
        completion_tokens = s.completion_tokens,
        prompt_tok_per_s = format_args!("{:.1}", rate(s.prompt_tokens as f64, s.prompt_secs)),
        gen_tok_per_s = format_args!(
            "{:.1}",
            rate(s.completion_tokens.saturating_sub(1) as f64, s.gen_secs)
        ),
        "request finished"
    );
}

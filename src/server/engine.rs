//! The model thread: loads the model, then runs requests in `-np` slots, one step
//! at a time (continuous batching). A step chooses the next token of every
//! generating slot, takes the next chunk of every prompt being read, and evaluates
//! all those tokens in one forward pass ([`Model::forward_batch`]): each weight is
//! read once per step for every conversation, which is what generation is bound by. A long prompt therefore
//! delays the other streams by one chunk per step, not by the whole prompt, and a
//! cancelled request (its receiver dropped) frees its slot within one step.
//!
//! The slots share one KV pool of `--ctx` positions in pages of [`PAGE`]: a
//! conversation takes pages as it grows, up to the whole pool, and gives them back
//! when it is dropped. A request starts once the pages of its whole prompt are
//! taken (until then it waits in the queue, in order); an answer that finds no
//! free page ends with `length`, as one that fills the context. A slot keeps its
//! cache after a request: the next request whose tokens start with the cached ones
//! (the next chat turn) evaluates only the rest; a new request goes to the free
//! slot sharing the longest prefix with it. Idle slots' caches are what a busy
//! pool takes first, least recently used first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::{ApiError, Shared};
use crate::model::{KvPool, Model, Session};
use crate::sample::{Sampler, SamplerConfig, stop_safe_prefix};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What one request asks the model for (already tokenized and checked).
pub struct Job {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Texts that end the answer; never shown, not even in part.
    pub stops: Vec<String>,
    pub events: UnboundedSender<Event>,
    /// When the request was queued (it waits at most `--timeout`).
    pub queued: Instant,
}

/// What the model thread reports to a request's handler.
pub enum Event {
    /// New text of the answer.
    Text(String),
    /// The answer is complete.
    Done(Finish),
    /// The request failed after it was accepted.
    Error(ApiError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End of text or a stop string.
    Stop,
    /// `max_tokens` or the slot's context.
    Length,
}

impl FinishReason {
    pub fn name(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// How a request ended, with llama.cpp's usage and timings.
#[derive(Clone, Debug)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens found in the slot's cache and not evaluated again.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
    pub prompt_time: Duration,
    pub predicted_time: Duration,
}

/// Prompt tokens one step evaluates for one slot, in the same forward pass as the
/// other slots' next tokens: a 512-token prompt takes 4 steps, and each step
/// delays the streams under way by about one such chunk's prompt time.
const PROMPT_CHUNK: usize = 128;

/// Positions per KV page: what a conversation's cache grows by. Small enough that
/// a short exchange wastes little of the pool, large enough that attention's
/// per-page calls cost nothing measurable.
pub const PAGE: usize = 32;

struct Active<'t> {
    job: Job,
    decoder: StreamDecoder<'t>,
    sampler: Sampler,
    /// Prompt tokens not yet evaluated (from `fed`).
    fed: usize,
    cached: usize,
    logits: Vec<f32>,
    decoder_text: String,
    /// Bytes of `decoder_text` sent.
    sent: usize,
    generated: usize,
    started: Instant,
    prompt_time: Duration,
    decode_start: Option<Instant>,
}

struct Slot<'m, 't> {
    session: Session<'m>,
    /// The tokens the session's cache holds, in order.
    tokens: Vec<u32>,
    active: Option<Active<'t>>,
    /// When the slot last started a request (for evicting idle caches).
    last_used: u64,
}

/// Runs the model thread until the job channel closes and every slot is idle.
pub fn run(
    model: &Model,
    tok: &Tokenizer,
    shared: &Arc<Shared>,
    pool: &Arc<KvPool>,
    jobs: Receiver<Job>,
) {
    let cfg = &shared.config;
    let mut slots: Vec<Slot> = (0..cfg.slots)
        .map(|_| Slot {
            session: model.session_in(pool, pool.tokens()),
            tokens: Vec::new(),
            active: None,
            last_used: 0,
        })
        .collect();
    let mut pending: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    let mut started = 0u64;
    loop {
        let busy = slots.iter().filter(|s| s.active.is_some()).count();
        // Wait for work only when there is none; otherwise take what has arrived.
        if busy == 0 && pending.is_empty() {
            if !open {
                return;
            }
            match jobs.recv_timeout(Duration::from_millis(200)) {
                Ok(job) => pending.push_back(job),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        while let Ok(job) = jobs.try_recv() {
            pending.push_back(job);
        }
        pending.retain(|j| {
            let late = j.queued.elapsed() > cfg.timeout;
            if late {
                let _ = j.events.send(Event::Error(ApiError::unavailable(format!(
                    "no slot was free within --timeout {} s",
                    cfg.timeout.as_secs()
                ))));
            }
            let keep = !late && !j.events.is_closed();
            if !keep {
                shared.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
        while let Some(i) = best_free_slot(&slots, pending.front()) {
            let job = pending.front().expect("best_free_slot saw a job");
            let keep = start_at(&slots[i], job);
            slots[i].session.truncate(keep);
            slots[i].tokens.truncate(keep);
            if !make_room(&mut slots, i, job.prompt.len()) {
                break; // the pool is busy with running answers: wait for one to end
            }
            let job = pending.pop_front().expect("seen above");
            shared.metrics.queued.fetch_sub(1, Ordering::Relaxed);
            started += 1;
            slots[i].last_used = started;
            start(&mut slots[i], tok, job, keep);
        }
        let busy = slots.iter().filter(|s| s.active.is_some()).count();
        shared.metrics.busy.store(busy, Ordering::Relaxed);
        step(model, &mut slots, tok, shared);
        let busy = slots.iter().filter(|s| s.active.is_some()).count();
        shared.metrics.busy.store(busy, Ordering::Relaxed);
    }
}

/// One step: drops requests whose clients left, chooses every generating slot's
/// next token, takes the next chunk of every prefilling slot's prompt, and
/// evaluates all of them in one forward pass (each weight read once per step).
fn step(model: &Model, slots: &mut [Slot], tok: &Tokenizer, shared: &Shared) {
    for slot in slots.iter_mut() {
        if slot
            .active
            .as_ref()
            .is_some_and(|a| a.job.events.is_closed())
        {
            slot.active = None;
        }
    }
    // (slot, tokens to feed): a prompt chunk, or the one token chosen.
    let mut feed: Vec<(usize, Vec<u32>)> = Vec::new();
    for (i, slot) in slots.iter_mut().enumerate() {
        let Some(a) = slot.active.as_ref() else {
            continue;
        };
        if a.fed < a.job.prompt.len() {
            let end = (a.fed + PROMPT_CHUNK).min(a.job.prompt.len());
            feed.push((i, a.job.prompt[a.fed..end].to_vec()));
        } else if let Some(next) = choose(slot, tok, shared) {
            feed.push((i, vec![next]));
        }
    }
    // Every fed token needs a place for its keys and values (a prompt's pages
    // were taken when it started): an answer the pool has no page for ends as one
    // that fills the context.
    feed.retain(|(i, t)| {
        let room = make_room(slots, *i, slots[*i].session.len() + t.len());
        if !room {
            finish(&mut slots[*i], FinishReason::Length, false, shared);
        }
        room
    });
    if feed.is_empty() {
        return;
    }
    let mut sessions: Vec<Option<&mut Session>> =
        slots.iter_mut().map(|s| Some(&mut s.session)).collect();
    let mut parts: Vec<(&mut Session, &[u32])> = feed
        .iter()
        .map(|(i, t)| {
            (
                sessions[*i].take().expect("one part per slot"),
                t.as_slice(),
            )
        })
        .collect();
    let result = model.forward_batch(&mut parts);
    drop(parts);
    let n_vocab = model.hp.n_vocab;
    for (k, (i, t)) in feed.into_iter().enumerate() {
        let slot = &mut slots[i];
        let logits = match &result {
            Ok(l) => &l[k * n_vocab..(k + 1) * n_vocab],
            Err(e) => {
                fail(slot, ApiError::server(format!("evaluating: {e}")));
                continue;
            }
        };
        slot.tokens.extend_from_slice(&t);
        let a = slot.active.as_mut().expect("a fed slot is active");
        a.logits.clear();
        a.logits.extend_from_slice(logits);
        if a.fed < a.job.prompt.len() {
            a.fed += t.len();
            shared
                .metrics
                .prompt_tokens
                .fetch_add(t.len() as u64, Ordering::Relaxed);
            if a.fed == a.job.prompt.len() {
                a.prompt_time = a.started.elapsed();
                a.decode_start = Some(Instant::now());
            }
        }
    }
}

/// Ends `slot`'s request with an error; its cache may hold part of a batch, so it
/// is forgotten.
fn fail(slot: &mut Slot, e: ApiError) {
    if let Some(a) = slot.active.take() {
        let _ = a.job.events.send(Event::Error(e));
    }
    slot.session.truncate(0);
    slot.tokens.clear();
}

/// The free slot whose cache shares the longest prefix with `job`'s prompt.
fn best_free_slot(slots: &[Slot], job: Option<&Job>) -> Option<usize> {
    let job = job?;
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active.is_none())
        // Longest shared prefix; then the least cached (an empty slot before one
        // whose conversation could still be continued), the oldest, the first.
        .max_by_key(|(i, s)| {
            let shared = common_prefix(&s.tokens, &job.prompt);
            (
                shared,
                usize::MAX - s.tokens.len(),
                u64::MAX - s.last_used,
                usize::MAX - i,
            )
        })
        .map(|(i, _)| i)
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// The cached tokens `job` reuses in `slot`: the common prefix, but at least the
/// prompt's last token is evaluated again (its logits choose the first new one).
fn start_at(slot: &Slot, job: &Job) -> usize {
    common_prefix(&slot.tokens, &job.prompt).min(job.prompt.len() - 1)
}

/// Takes the pages `n` positions of slot `i` need, evicting idle slots' caches
/// (least recently used first) while the pool is short. False when even that is
/// not enough: the running answers hold the rest.
fn make_room(slots: &mut [Slot], i: usize, n: usize) -> bool {
    loop {
        if slots[i].session.reserve(n).is_ok() {
            return true;
        }
        let idle = slots
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != i && s.active.is_none() && !s.session.is_empty())
            .min_by_key(|(_, s)| s.last_used)
            .map(|(j, _)| j);
        let Some(j) = idle else {
            return false;
        };
        slots[j].session.truncate(0);
        slots[j].tokens.clear();
    }
}

fn start<'t>(slot: &mut Slot<'_, 't>, tok: &'t Tokenizer, job: Job, keep: usize) {
    slot.active = Some(Active {
        sampler: Sampler::new(job.sampler.clone()),
        decoder: tok.stream_decoder(),
        job,
        fed: keep,
        cached: keep,
        logits: Vec::new(),
        decoder_text: String::new(),
        sent: 0,
        generated: 0,
        started: Instant::now(),
        prompt_time: Duration::ZERO,
        decode_start: None,
    });
}

/// Chooses `slot`'s next token and sends its text. Returns the token to feed, or
/// `None` when the answer is complete (then reported and the slot freed).
fn choose(slot: &mut Slot, tok: &Tokenizer, shared: &Shared) -> Option<u32> {
    let a = slot.active.as_mut().expect("active");
    let mut matched = false;
    let reason = if a.generated >= a.job.max_tokens {
        FinishReason::Length
    } else {
        let next = a.sampler.sample(&a.logits, &slot.tokens);
        if Some(next) == tok.eos_id() {
            FinishReason::Stop
        } else {
            a.generated += 1;
            shared
                .metrics
                .predicted_tokens
                .fetch_add(1, Ordering::Relaxed);
            let text = a.decoder.push(next);
            a.decoder_text.push_str(&text);
            let stops = &a.job.stops;
            if let Some(cut) = stops
                .iter()
                .filter_map(|s| a.decoder_text.find(s.as_str()))
                .min()
            {
                a.decoder_text.truncate(cut);
                matched = true;
                FinishReason::Stop
            } else {
                let safe = stop_safe_prefix(&a.decoder_text, stops);
                send_text(a, safe);
                if a.generated >= a.job.max_tokens || slot.session.len() >= slot.session.n_ctx() {
                    FinishReason::Length
                } else {
                    return Some(next);
                }
            }
        }
    };
    finish(slot, reason, matched, shared);
    None
}

/// Ends `slot`'s request: sends the rest of its text (all that was held back,
/// unless a stop string was `matched` and cut) and how it finished.
fn finish(slot: &mut Slot, reason: FinishReason, matched: bool, shared: &Shared) {
    let Some(mut a) = slot.active.take() else {
        return;
    };
    if !matched {
        let rest = a.decoder.flush();
        a.decoder_text.push_str(&rest);
    }
    let all = a.decoder_text.len();
    send_text(&mut a, all);
    let f = Finish {
        reason,
        prompt_tokens: a.job.prompt.len(),
        cached_tokens: a.cached,
        completion_tokens: a.generated,
        prompt_time: a.prompt_time,
        predicted_time: a.decode_start.map_or(Duration::ZERO, |t| t.elapsed()),
    };
    shared
        .metrics
        .predicted_micros
        .fetch_add(f.predicted_time.as_micros() as u64, Ordering::Relaxed);
    shared.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let _ = a.job.events.send(Event::Done(f));
}

/// Sends `decoder_text[sent..upto]`, if any, on whole characters.
fn send_text(a: &mut Active<'_>, upto: usize) {
    let mut upto = upto.min(a.decoder_text.len());
    while !a.decoder_text.is_char_boundary(upto) {
        upto -= 1;
    }
    if upto > a.sent {
        let _ = a
            .job
            .events
            .send(Event::Text(a.decoder_text[a.sent..upto].to_string()));
        a.sent = upto;
    }
}

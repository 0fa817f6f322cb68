//! The engine: a loaded model behind a bounded admission queue, generating on its own OS thread.
//!
//! [`Engine::submit`] renders and tokenizes the conversation on the caller's thread (cheap, and
//! it lets context-length errors come back at once), then queues the job or refuses it when the
//! queue is full. The generation thread decodes up to the model's batch size of jobs together
//! (continuous batching: jobs join and leave between steps), sends each piece of text as an
//! [`Event`] down an unbounded channel (a slow reader never stalls the model), and drops a job
//! within one step once its receiver is dropped.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::chat_template::{CHATML, ChatTemplate, TemplateError, Turn};
use crate::metadata::Metadata;
use crate::model::{Feed, Model, ModelError, Sequence, Settings};
use crate::sampling::{Sampler, SamplingParams, log_softmax, top_logprobs};
use crate::team::{self, part, split_rows};
use crate::text_stream::{Piece, TextStream};
use crate::tokenizer::{ModelTokenizer, TokenizerError};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub path: PathBuf,
    /// Requests that may wait for the model; more are refused as overloaded.
    pub queue_capacity: usize,
    /// Caps the model's own context length (memory for the rotary tables and KV cache).
    pub max_context: Option<usize>,
    /// Generations decoded together, and the prefix cache's memory bound.
    pub model: Settings,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot load {}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: String,
}

/// What is known about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub architecture: String,
    pub context_length: usize,
    /// The file's `general.name`, if it has one.
    pub name: Option<String>,
}

/// One request for the engine.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub turns: Vec<Turn>,
    pub sampling: SamplingParams,
    /// `None`: up to the end of the context.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
    /// `Some(n)`: report the log-probability of each generated token and of the `n` most likely
    /// alternatives.
    pub logprobs: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the local model's queue is full ({capacity} waiting)")]
    Overloaded { capacity: usize },
    #[error(
        "the prompt has {prompt} tokens and {requested} more were requested, beyond the local model's context of {context} tokens"
    )]
    ContextExceeded {
        prompt: usize,
        requested: usize,
        context: usize,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error("the local engine has stopped")]
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The log-probability of one generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    /// The most likely tokens at that step, most likely first.
    pub top: Vec<(String, Vec<u8>, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More of the answer. `text` is whole characters and may be empty when a token completed
    /// nothing yet; `logprobs` holds one entry per token generated since the last event.
    Delta {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done {
        finish: FinishReason,
        completion_tokens: usize,
    },
    Failed(String),
}

/// A queued or running generation.
pub struct Generation {
    pub prompt_tokens: usize,
    pub events: UnboundedReceiver<Event>,
}

struct Job {
    prompt: Vec<u32>,
    max_tokens: usize,
    request: GenerationRequest,
    events: UnboundedSender<Event>,
}

pub struct Engine {
    jobs: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    shared: Arc<Shared>,
}

/// What both the submitting side and the generation thread read.
struct Shared {
    info: ModelInfo,
    tokenizer: ModelTokenizer,
    template: ChatTemplate,
    generated_tokens: AtomicUsize,
    /// Prompt tokens whose keys and values came from the previous sequence, and the others.
    prompt_tokens_cached: AtomicUsize,
    prompt_tokens_computed: AtomicUsize,
    /// Generations in the batch now.
    running: AtomicUsize,
    prefix_cache_bytes: AtomicUsize,
}

impl Engine {
    /// Loads the model and starts its generation thread.
    pub fn load(config: &EngineConfig) -> Result<Self, LoadError> {
        let path = &config.path;
        let fail = |reason: String| LoadError {
            path: path.clone(),
            reason,
        };
        let started = Instant::now();
        let mut file = File::open(path).map_err(|e| fail(e.to_string()))?;
        let content =
            Content::read(&mut file).map_err(|e| fail(format!("not a readable GGUF file: {e}")))?;
        let tokenizer = ModelTokenizer::from_gguf(&content).map_err(|e| fail(e.to_string()))?;
        let metadata = Metadata(&content);
        let token_text = |id: Option<u32>| {
            id.and_then(|id| tokenizer.token_text(id))
                .unwrap_or_default()
                .to_owned()
        };
        let template = ChatTemplate::new(
            metadata
                .optional_string("tokenizer.chat_template")
                .unwrap_or(CHATML),
            &token_text(tokenizer.bos),
            &token_text(Some(tokenizer.eos)),
        )
        .map_err(|e| fail(e.to_string()))?;
        let name = metadata.optional_string("general.name").map(str::to_owned);
        let model =
            Model::load(content, &mut file, config.model).map_err(|e| fail(model_reason(e)))?;
        let context_length = config
            .max_context
            .map_or(model.context_length, |cap| cap.min(model.context_length));
        let info = ModelInfo {
            path: path.clone(),
            architecture: model.architecture.clone(),
            context_length,
            name,
        };
        tracing::info!(
            path = %path.display(),
            architecture = %info.architecture,
            context_length,
            load_ms = started.elapsed().as_millis() as u64,
            "local model loaded"
        );
        let shared = Arc::new(Shared {
            info,
            tokenizer,
            template,
            generated_tokens: AtomicUsize::new(0),
            prompt_tokens_cached: AtomicUsize::new(0),
            prompt_tokens_computed: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            prefix_cache_bytes: AtomicUsize::new(0),
        });
        let capacity = config.queue_capacity.max(1);
        let (jobs, receiver) = std::sync::mpsc::sync_channel(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            model,
            shared: shared.clone(),
            queued: queued.clone(),
        };
        std::thread::Builder::new()
            .name("local-engine".to_owned())
            .spawn(move || worker.run(receiver))
            .map_err(|e| fail(format!("cannot start the generation thread: {e}")))?;
        Ok(Self {
            jobs,
            queued,
            capacity,
            shared,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.shared.info
    }

    pub fn tokenizer(&self) -> &ModelTokenizer {
        &self.shared.tokenizer
    }

    /// Requests waiting for the model now.
    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Requests that may wait for the model.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether a request submitted now would be refused as overloaded.
    pub fn is_full(&self) -> bool {
        self.queue_depth() >= self.capacity
    }

    /// Tokens generated since the engine started.
    pub fn generated_tokens(&self) -> usize {
        self.shared.generated_tokens.load(Ordering::Relaxed)
    }

    /// Prompt tokens since the engine started: (taken from the cache, computed).
    pub fn prompt_token_counts(&self) -> (usize, usize) {
        (
            self.shared.prompt_tokens_cached.load(Ordering::Relaxed),
            self.shared.prompt_tokens_computed.load(Ordering::Relaxed),
        )
    }

    /// Generations being decoded now (at most the batch size).
    pub fn running(&self) -> usize {
        self.shared.running.load(Ordering::Relaxed)
    }

    /// Memory held by the prefix cache's keys and values.
    pub fn prefix_cache_bytes(&self) -> usize {
        self.shared.prefix_cache_bytes.load(Ordering::Relaxed)
    }

    /// The prompt the model sees for `turns`.
    pub fn prompt_tokens(&self, turns: &[Turn]) -> Result<Vec<u32>, SubmitError> {
        let text = self.shared.template.render(turns)?;
        Ok(self.shared.tokenizer.encode_prompt(&text)?)
    }

    /// Queues a generation, or says at once why it cannot run.
    pub fn submit(&self, request: GenerationRequest) -> Result<Generation, SubmitError> {
        let prompt = self.prompt_tokens(&request.turns)?;
        let context = self.shared.info.context_length;
        let room = context.saturating_sub(prompt.len());
        let max_tokens = match request.max_tokens {
            Some(requested) if requested > room => {
                return Err(SubmitError::ContextExceeded {
                    prompt: prompt.len(),
                    requested,
                    context,
                });
            }
            Some(requested) => requested,
            None if room == 0 => {
                return Err(SubmitError::ContextExceeded {
                    prompt: prompt.len(),
                    requested: 1,
                    context,
                });
            }
            None => room,
        };
        let (events, receiver) = unbounded_channel();
        let prompt_tokens = prompt.len();
        let job = Job {
            prompt,
            max_tokens,
            request,
            events,
        };
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(Generation {
                prompt_tokens,
                events: receiver,
            }),
            Err(error) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Err(match error {
                    TrySendError::Full(_) => SubmitError::Overloaded {
                        capacity: self.capacity,
                    },
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }
}

fn model_reason(error: ModelError) -> String {
    match error {
        ModelError::Candle(e) => format!("the weights cannot be read: {e}"),
        ModelError::Llama(e) => format!("the weights cannot be read: {e}"),
        other => other.to_string(),
    }
}

/// Prompt tokens one step runs beside the decoding sequences' tokens: a long prompt joins in
/// chunks, so the answers already streaming pause for one chunk at a time, not for the whole
/// prompt.
const PROMPT_TOKENS_PER_STEP: usize = 256;

/// The generation thread's state.
struct Worker {
    model: Model,
    shared: Arc<Shared>,
    queued: Arc<AtomicUsize>,
}

/// A generation in progress.
struct Running {
    sequence: Sequence,
    prompt: Vec<u32>,
    max_tokens: usize,
    logprobs: Option<usize>,
    events: UnboundedSender<Event>,
    sampler: Sampler,
    text: TextStream,
    generated: usize,
    /// The token sampled last, fed in the next step; `None` while the prompt runs.
    next: Option<u32>,
}

/// What a step does for one running generation.
#[derive(Clone, Copy)]
enum Work {
    /// Feeds the prompt up to this token; the logits are wanted when that is its end.
    Prompt {
        end: usize,
    },
    Decode,
}

impl Worker {
    /// Continuous batching: generations join between steps as long as there is room, each
    /// step runs every generation's next token (or prompt chunk) together, and a generation
    /// leaves as soon as it is done or its client is gone.
    fn run(mut self, jobs: Receiver<Job>) {
        let mut running: Vec<Running> = Vec::new();
        loop {
            if running.is_empty() {
                match jobs.recv() {
                    Ok(job) => self.admit(job, &mut running),
                    Err(_) => return, // the engine is gone
                }
            }
            while running.len() < self.model.max_batch() {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job, &mut running),
                    Err(_) => break,
                }
            }
            self.leave_if_gone(&mut running);
            // Before the step too, so that whoever reads an answer's first token sees it counted.
            self.shared.running.store(running.len(), Ordering::Relaxed);
            if !running.is_empty() {
                self.step(&mut running);
            }
            self.shared.running.store(running.len(), Ordering::Relaxed);
        }
    }

    /// Ends a generation's sequence (its prefix may stay in the model's cache).
    fn close(&mut self, sequence: Sequence) {
        self.model.close(sequence);
        self.shared
            .prefix_cache_bytes
            .store(self.model.prefix_cache_bytes(), Ordering::Relaxed);
    }

    fn admit(&mut self, job: Job, running: &mut Vec<Running>) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            return; // the client left while the job waited
        }
        let (sequence, cached) = self.model.open(&job.prompt);
        let shared = &self.shared;
        shared
            .prompt_tokens_cached
            .fetch_add(cached, Ordering::Relaxed);
        shared
            .prompt_tokens_computed
            .fetch_add(job.prompt.len() - cached, Ordering::Relaxed);
        running.push(Running {
            sequence,
            prompt: job.prompt,
            max_tokens: job.max_tokens,
            logprobs: job.request.logprobs,
            events: job.events,
            sampler: Sampler::new(job.request.sampling),
            text: TextStream::new(job.request.stop),
            generated: 0,
            next: None,
        });
    }

    fn leave_if_gone(&mut self, running: &mut Vec<Running>) {
        let mut i = 0;
        while i < running.len() {
            if running[i].events.is_closed() {
                let gone = running.remove(i);
                tracing::debug!(
                    generated = gone.generated,
                    "client gone: generation stopped"
                );
                self.close(gone.sequence);
            } else {
                i += 1;
            }
        }
    }

    /// One forward pass over every running generation, then each samples its next token.
    fn step(&mut self, running: &mut Vec<Running>) {
        let plan = self.plan(running);
        let mut feeds: Vec<Feed> = running
            .iter_mut()
            .zip(&plan)
            .filter_map(|(r, work)| {
                let Running {
                    sequence,
                    prompt,
                    next,
                    ..
                } = r;
                Some(match (*work)? {
                    Work::Prompt { end } => Feed {
                        tokens: &prompt[sequence.tokens().len()..end],
                        logits: end == prompt.len(),
                        sequence,
                    },
                    Work::Decode => Feed {
                        tokens: std::slice::from_ref(next.as_ref()?),
                        logits: true,
                        sequence,
                    },
                })
            })
            .collect();
        // A panic in the model code fails this step's generations, not the engine.
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.model.step(&mut feeds)));
        drop(feeds);
        let logits = match outcome {
            Ok(Ok(logits)) => logits,
            failed => {
                let failure = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "the model code panicked".to_owned(),
                };
                tracing::error!(error = %failure, "local generation failed");
                let mut i = 0;
                for work in &plan {
                    if work.is_some() {
                        let failed = running.remove(i);
                        let _ = failed.events.send(Event::Failed(failure.clone()));
                    } else {
                        i += 1;
                    }
                }
                return;
            }
        };
        // Each generation that got logits picks its token, in parallel (sampling reads the
        // whole vocabulary: one after another, eight of them held up the step).
        let mut logits = logits.into_iter();
        let wanted: Vec<_> = plan
            .iter()
            .map(|work| Mutex::new(work.and_then(|_| logits.next()).flatten()))
            .collect();
        let mut choices: Vec<Option<Choice>> = (0..running.len()).map(|_| None).collect();
        {
            let (generations, chosen) = (split_rows(running, 1), split_rows(&mut choices, 1));
            team::for_each(generations.len(), |i| {
                if let Some(logits) = part(&wanted[i]).take() {
                    part(&chosen[i])[0] = Some(part(&generations[i])[0].choose(logits));
                }
            });
        }
        let mut i = 0;
        for choice in choices {
            let outcome = match choice {
                Some(choice) => running[i].advance(choice, &self.shared),
                None => Ok(None),
            };
            match outcome {
                Ok(None) => i += 1,
                Ok(Some(finish)) => {
                    let done = running.remove(i);
                    self.close(done.finish(finish));
                }
                Err(error) => {
                    let failed = running.remove(i);
                    tracing::error!(error = %error, "local generation failed");
                    let _ = failed.events.send(Event::Failed(error.to_string()));
                    self.close(failed.sequence);
                }
            }
        }
    }

    /// What this step does for each generation: every decoding one runs its token, and
    /// prompts share what is left of the step's prompt tokens, first come first served (a model
    /// that cannot take a prompt in chunks takes it whole).
    fn plan(&self, running: &[Running]) -> Vec<Option<Work>> {
        let mut budget = if self.model.takes_prompt_chunks() {
            PROMPT_TOKENS_PER_STEP
        } else {
            usize::MAX
        };
        running
            .iter()
            .map(|r| {
                if r.next.is_some() {
                    return Some(Work::Decode);
                }
                let done = r.sequence.tokens().len();
                let take = (r.prompt.len() - done).min(budget);
                budget -= take;
                (take > 0).then_some(Work::Prompt { end: done + take })
            })
            .collect()
    }
}

/// A generation's next token, and the log-probabilities to report with it.
struct Choice {
    token: u32,
    /// Every token's log-probability, and how many of the most likely to report.
    logprobs: Option<(Vec<f32>, usize)>,
}

impl Running {
    /// Samples the next token from `logits` (what a step does for its generations in
    /// parallel).
    fn choose(&mut self, mut logits: Vec<f32>) -> Choice {
        let logprobs = self.logprobs.map(|top| (log_softmax(&logits), top));
        let token = self.sampler.sample(&mut logits);
        Choice { token, logprobs }
    }

    /// Takes the chosen token and sends its text; says how the generation finished, if it did.
    fn advance(
        &mut self,
        Choice { token, logprobs }: Choice,
        shared: &Shared,
    ) -> Result<Option<FinishReason>, TokenizerError> {
        let tokenizer = &shared.tokenizer;
        self.generated += 1;
        shared.generated_tokens.fetch_add(1, Ordering::Relaxed);
        if tokenizer.is_end(token) {
            return Ok(Some(FinishReason::Stop));
        }
        let token_logprobs = logprobs
            .map(|(all, top)| vec![token_logprob(tokenizer, token, &all, top)])
            .unwrap_or_default();
        let (piece, stopped) = match self.text.push(tokenizer, token)? {
            Piece::Text(piece) => (piece, false),
            Piece::Stop(piece) => (piece, true),
        };
        if !piece.is_empty() || !token_logprobs.is_empty() {
            let _ = self.events.send(Event::Delta {
                text: piece,
                logprobs: token_logprobs,
            });
        }
        if stopped {
            return Ok(Some(FinishReason::Stop));
        }
        if self.generated >= self.max_tokens {
            return Ok(Some(FinishReason::Length));
        }
        self.next = Some(token);
        Ok(None)
    }

    /// Sends the end of the answer, and gives back the sequence.
    fn finish(mut self, finish: FinishReason) -> Sequence {
        // Text held back as a possible stop sequence is answer after all.
        let rest = self.text.finish();
        if !rest.is_empty() {
            let _ = self.events.send(Event::Delta {
                text: rest,
                logprobs: Vec::new(),
            });
        }
        let _ = self.events.send(Event::Done {
            finish,
            completion_tokens: self.generated,
        });
        self.sequence
    }
}

fn token_logprob(tokenizer: &ModelTokenizer, token: u32, all: &[f32], top: usize) -> TokenLogprob {
    let describe = |id: u32| {
        let bytes = tokenizer.token_bytes(id);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let (text, bytes) = describe(token);
    TokenLogprob {
        token: text,
        bytes,
        logprob: all[token as usize],
        top: top_logprobs(all, top)
            .into_iter()
            .map(|(id, lp)| {
                let (text, bytes) = describe(id);
                (text, bytes, lp)
            })
            .collect(),
    }
}

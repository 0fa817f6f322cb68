//! The engine: a loaded model behind a bounded admission queue, generating on its own OS thread.
//!
//! [`Engine::submit`] renders and tokenizes the conversation on the caller's thread (cheap, and
//! it lets context-length errors come back at once), then queues the job or refuses it when the
//! queue is full. The generation thread takes one job at a time, sends each piece of text as an
//! [`Event`] down an unbounded channel (a slow reader never stalls the model), and stops within
//! one decode step once the receiver is dropped.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::Instant;

use candle_core::quantized::gguf_file::Content;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::chat_template::{CHATML, ChatTemplate, TemplateError, Turn};
use crate::metadata::Metadata;
use crate::model::{Model, ModelError};
use crate::sampling::{Sampler, SamplingParams, log_softmax, top_logprobs};
use crate::text_stream::{Piece, TextStream};
use crate::tokenizer::{ModelTokenizer, TokenizerError};

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub path: PathBuf,
    /// Requests that may wait for the model; more are refused as overloaded.
    pub queue_capacity: usize,
    /// Caps the model's own context length (memory for the rotary tables and KV cache).
    pub max_context: Option<usize>,
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
        let model = Model::load(content, &mut file).map_err(|e| fail(model_reason(e)))?;
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

/// Why a generation failed after it started.
#[derive(Debug, thiserror::Error)]
enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
}

fn model_reason(error: ModelError) -> String {
    match error {
        ModelError::Candle(e) => format!("the weights cannot be read: {e}"),
        ModelError::Llama(e) => format!("the weights cannot be read: {e}"),
        other => other.to_string(),
    }
}

/// The generation thread's state.
struct Worker {
    model: Model,
    shared: Arc<Shared>,
    queued: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            if job.events.is_closed() {
                continue; // the client left while the job waited
            }
            let events = job.events.clone();
            // A panic in the model code fails this request, not the engine: the next job
            // starts from a reset model.
            let outcome =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.generate(job)));
            let failure = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error.to_string(),
                Err(_) => "the model code panicked".to_owned(),
            };
            self.model.reset();
            tracing::error!(error = %failure, "local generation failed");
            let _ = events.send(Event::Failed(failure));
        }
    }

    fn generate(&mut self, job: Job) -> Result<(), GenerateError> {
        let Job {
            prompt,
            max_tokens,
            request,
            events,
        } = job;
        let tokenizer = &self.shared.tokenizer;
        let mut sampler = Sampler::new(request.sampling.clone());
        let mut text = TextStream::new(request.stop.clone());
        let (mut logits, cached) = self.model.start(&prompt)?;
        let shared = &self.shared;
        shared
            .prompt_tokens_cached
            .fetch_add(cached, Ordering::Relaxed);
        let computed = prompt.len() - cached;
        shared
            .prompt_tokens_computed
            .fetch_add(computed, Ordering::Relaxed);
        let mut generated = 0;
        let finish = loop {
            if events.is_closed() {
                tracing::debug!(generated, "client gone: generation stopped");
                return Ok(());
            }
            let logprobs = request.logprobs.map(|top| (log_softmax(&logits), top));
            let token = sampler.sample(&mut logits);
            generated += 1;
            self.shared.generated_tokens.fetch_add(1, Ordering::Relaxed);
            if tokenizer.is_end(token) {
                break FinishReason::Stop;
            }
            let token_logprobs = logprobs
                .map(|(all, top)| vec![self.token_logprob(token, &all, top)])
                .unwrap_or_default();
            let (piece, stopped) = match text.push(tokenizer, token)? {
                Piece::Text(piece) => (piece, false),
                Piece::Stop(piece) => (piece, true),
            };
            if !piece.is_empty() || !token_logprobs.is_empty() {
                let _ = events.send(Event::Delta {
                    text: piece,
                    logprobs: token_logprobs,
                });
            }
            if stopped {
                break FinishReason::Stop;
            }
            if generated >= max_tokens {
                break FinishReason::Length;
            }
            logits = self.model.next(token)?;
        };
        // Text held back as a possible stop sequence is answer after all.
        let rest = text.finish();
        if !rest.is_empty() {
            let _ = events.send(Event::Delta {
                text: rest,
                logprobs: Vec::new(),
            });
        }
        let _ = events.send(Event::Done {
            finish,
            completion_tokens: generated,
        });
        Ok(())
    }

    fn token_logprob(&self, token: u32, all: &[f32], top: usize) -> TokenLogprob {
        let tokenizer = &self.shared.tokenizer;
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
}

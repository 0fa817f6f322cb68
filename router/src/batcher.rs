//! Micro-batching for the embedder: requests that queue while a forward pass runs are embedded
//! together in the next one, on the embedder's own thread; the encoder lays a batch's texts end
//! to end, so a batch costs what its tokens cost, with no padding. A bounded queue in front
//! refuses work when full.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::embedder::{Embed, Embedded, EmbedderError};

#[derive(Debug, Clone, Copy)]
pub struct BatchSettings {
    /// How long the first request of a batch waits for company. Zero by default: an idle
    /// embedder starts at once, and under load batches form from what queues meanwhile.
    pub window: Duration,
    /// Texts in one forward pass.
    pub max_batch: usize,
    /// Requests that may wait; more are refused.
    pub queue: usize,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            window: Duration::ZERO,
            max_batch: 16,
            queue: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("the embedder's queue is full")]
    Overloaded,
    #[error("the embedder has stopped")]
    Stopped,
    #[error(transparent)]
    Embedder(#[from] EmbedderError),
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Embedded, BatchError>>,
}

/// A handle to the embedding thread.
pub struct EmbeddingService {
    jobs: SyncSender<Job>,
    model: Arc<dyn Embed>,
}

impl EmbeddingService {
    pub fn start(embedder: Arc<dyn Embed>, settings: BatchSettings) -> std::io::Result<Self> {
        let (jobs, receiver) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let model = embedder.clone();
        std::thread::Builder::new()
            .name("embedder".to_owned())
            .spawn(move || run(embedder.as_ref(), &receiver, settings))?;
        Ok(Self { jobs, model })
    }

    pub fn dimensions(&self) -> usize {
        self.model.dimensions()
    }

    /// The model itself, for work outside the request path (embedding a policy's examples at
    /// start) that may block its caller.
    pub fn model(&self) -> &Arc<dyn Embed> {
        &self.model
    }

    pub async fn embed(&self, texts: Vec<String>) -> Result<Embedded, BatchError> {
        self.submit(texts)?.wait().await
    }

    /// Queues the texts now, so that the caller can do other work while they are embedded.
    pub fn submit(&self, texts: Vec<String>) -> Result<Pending, BatchError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .try_send(Job { texts, reply })
            .map_err(|e| match e {
                TrySendError::Full(_) => BatchError::Overloaded,
                TrySendError::Disconnected(_) => BatchError::Stopped,
            })?;
        Ok(Pending(answer))
    }
}

/// Texts being embedded.
pub struct Pending(oneshot::Receiver<Result<Embedded, BatchError>>);

impl Pending {
    pub async fn wait(self) -> Result<Embedded, BatchError> {
        self.0.await.map_err(|_| BatchError::Stopped)?
    }
}

fn run(embedder: &dyn Embed, jobs: &Receiver<Job>, settings: BatchSettings) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let mut texts: usize = batch[0].texts.len();
        let deadline = Instant::now() + settings.window;
        while texts < settings.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(left) {
                Ok(job) => {
                    texts += job.texts.len();
                    batch.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        answer(embedder, batch, settings.max_batch);
    }
}

/// Embeds every text of the batch, `max_batch` texts per forward pass, and replies to each job.
fn answer(embedder: &dyn Embed, batch: Vec<Job>, max_batch: usize) {
    let order: Vec<(usize, usize)> = batch
        .iter()
        .enumerate()
        .flat_map(|(j, job)| (0..job.texts.len()).map(move |t| (j, t)))
        .collect();
    let mut results: Vec<Embedded> = batch
        .iter()
        .map(|job| Embedded {
            vectors: vec![Vec::new(); job.texts.len()],
            tokens: vec![0; job.texts.len()],
        })
        .collect();
    let mut failure = None;
    for chunk in order.chunks(max_batch.max(1)) {
        let texts: Vec<&str> = chunk
            .iter()
            .map(|&(j, t)| batch[j].texts[t].as_str())
            .collect();
        match embedder.embed(&texts) {
            Ok(embedded) => {
                for (k, &(j, t)) in chunk.iter().enumerate() {
                    results[j].vectors[t] = embedded.vectors[k].clone();
                    results[j].tokens[t] = embedded.tokens[k];
                }
            }
            Err(error) => {
                failure = Some(error.to_string());
                break;
            }
        }
    }
    for (job, result) in batch.into_iter().zip(results) {
        let reply = match &failure {
            Some(message) => Err(BatchError::Embedder(EmbedderError::Run(message.clone()))),
            None => Ok(result),
        };
        let _ = job.reply.send(reply);
    }
}

//! The local tier: a model answered on the company's own machines, by the in-process engine,
//! by a pool of servers (other Switchboard nodes, llama.cpp or vLLM servers), or both.
//!
//! Each request goes to the member with the fewest requests in flight, among those that are up
//! and have room (ties go to the first listed, the in-process engine first). A member that is
//! full, down, or fails before answering passes the request to the next one; a request the
//! member judged malformed is not tried again. The pool is full when no member has room: that
//! is what the policy's `when_local_busy` weighs, as for a single engine.

mod engine;
mod server;

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use switchboard_local_engine::Engine;

pub use server::{PoolServer, ServerStats};

use super::{ChunkStream, Completion};
use crate::api::ChatCompletionRequest;
use crate::error::ApiError;

pub struct LocalModel {
    pub name: String,
    engine: Option<Arc<Engine>>,
    servers: Vec<PoolServer>,
    /// The tokens a request may take: the engine's model window, else the configured one.
    context_window: u64,
    health_every: Duration,
}

/// Why one member did not answer.
enum Declined {
    /// Full, down, or failed before answering: another member may.
    TryNext(ApiError),
    /// The request itself is at fault, or the answer broke off: no member would do better.
    Fail(ApiError),
}

impl Declined {
    fn into_error(self) -> ApiError {
        match self {
            Declined::TryNext(error) | Declined::Fail(error) => error,
        }
    }
}

/// A member of the pool, by its place in it.
#[derive(Clone, Copy)]
enum Member<'a> {
    Engine(&'a Arc<Engine>),
    Server(&'a PoolServer),
}

impl Member<'_> {
    fn in_flight(self) -> usize {
        match self {
            Member::Engine(engine) => engine.queue_depth() + engine.running(),
            Member::Server(server) => server.in_flight(),
        }
    }

    fn has_room(self) -> bool {
        match self {
            Member::Engine(engine) => !engine.is_full(),
            Member::Server(server) => server.has_room(),
        }
    }
}

/// What the members are asked for, in one of the two shapes an answer takes.
trait Ask: Sync {
    type Output: Send;

    fn engine(
        &self,
        model: &LocalModel,
        engine: &Arc<Engine>,
        request: &ChatCompletionRequest,
    ) -> impl Future<Output = Result<Self::Output, Declined>> + Send;

    /// Holds `place` until the answer is complete (a stream's last chunk).
    fn server(
        &self,
        server: &PoolServer,
        place: server::Place,
        request: &ChatCompletionRequest,
    ) -> impl Future<Output = Result<Self::Output, Declined>> + Send;
}

/// The whole answer, and how sure the model was of it when `measure` asks for it.
struct Whole {
    measure: bool,
}

impl Ask for Whole {
    type Output = (Completion, Option<f64>);

    async fn engine(
        &self,
        model: &LocalModel,
        engine: &Arc<Engine>,
        request: &ChatCompletionRequest,
    ) -> Result<Self::Output, Declined> {
        engine::complete(engine, &model.name, request, self.measure).await
    }

    async fn server(
        &self,
        server: &PoolServer,
        _place: server::Place,
        request: &ChatCompletionRequest,
    ) -> Result<Self::Output, Declined> {
        server.complete(request, self.measure).await
    }
}

/// The answer's chunks.
struct Streamed;

impl Ask for Streamed {
    type Output = ChunkStream;

    async fn engine(
        &self,
        model: &LocalModel,
        engine: &Arc<Engine>,
        request: &ChatCompletionRequest,
    ) -> Result<ChunkStream, Declined> {
        engine::stream(engine, &model.name, request).await
    }

    async fn server(
        &self,
        server: &PoolServer,
        place: server::Place,
        request: &ChatCompletionRequest,
    ) -> Result<ChunkStream, Declined> {
        let chunks = server.stream(request).await?;
        let held = chunks.map(move |chunk| {
            let _ = &place;
            chunk
        });
        Ok(Box::pin(held))
    }
}

/// Room in the template for each turn's role markers, when the prompt is bounded by its bytes.
const TEMPLATE_BYTES_PER_TURN: u64 = 16;
const TEMPLATE_BYTES: u64 = 256;

/// What a pool answers when none of its members has room.
fn overloaded() -> ApiError {
    ApiError::Overloaded {
        retry_after: Duration::from_secs(1),
    }
}

impl LocalModel {
    /// A model of `engine` and `servers` (at least one of the two, validated).
    pub fn new(
        name: String,
        engine: Option<Engine>,
        servers: Vec<PoolServer>,
        context_window: u64,
        health_every: Duration,
    ) -> Self {
        Self {
            name,
            engine: engine.map(Arc::new),
            servers,
            context_window,
            health_every,
        }
    }

    /// The in-process engine, if it runs one.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_deref()
    }

    pub fn servers(&self) -> &[PoolServer] {
        &self.servers
    }

    pub fn context_window(&self) -> u64 {
        self.context_window
    }

    fn members(&self) -> impl Iterator<Item = Member<'_>> {
        let engine = self.engine.iter().map(Member::Engine);
        engine.chain(self.servers.iter().map(Member::Server))
    }

    /// Whether no member would take a request now.
    pub fn is_full(&self) -> bool {
        !self.members().any(Member::has_room)
    }

    /// Probes every server once, together.
    pub async fn probe_servers(&self) {
        futures_util::future::join_all(self.servers.iter().map(PoolServer::probe)).await;
    }

    /// Probes the servers every `health_every` until the model is dropped.
    pub fn watch_servers(self: &Arc<Self>) {
        if self.servers.is_empty() {
            return;
        }
        let model: Weak<Self> = Arc::downgrade(self);
        let every = self.health_every;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(model) = model.upgrade() else {
                    return;
                };
                model.probe_servers().await;
            }
        });
    }

    /// The tokens `request` needs in this model's context: its prompt and its completion
    /// allowance. A token is at least one byte, so when the bytes already fit they bound the
    /// count; only a request near the window is tokenized exactly, by the engine (a pool of
    /// servers only keeps the bound).
    pub async fn context_need(&self, request: &ChatCompletionRequest) -> Result<u64, ApiError> {
        let allowance = request.max_output_tokens().map_or(0, u64::from);
        let turns = request.messages.len() as u64;
        let bound =
            request.text_bytes() + turns * TEMPLATE_BYTES_PER_TURN + TEMPLATE_BYTES + allowance;
        let Some(engine) = self.engine.as_ref().filter(|_| bound > self.context_window) else {
            return Ok(bound);
        };
        let prompt = engine::prompt_tokens(engine, request).await?;
        Ok(prompt.map_or(bound, |tokens| tokens + allowance))
    }

    /// Generates the whole answer.
    pub async fn complete(&self, request: &ChatCompletionRequest) -> Result<Completion, ApiError> {
        let (completion, _) = self.complete_measured(request, false).await?;
        Ok(completion)
    }

    /// Generates the whole answer, with the mean log-probability of its tokens under the
    /// model (how sure the model was of it; `None` for an empty answer or a server that gives
    /// none).
    pub async fn complete_scored(
        &self,
        request: &ChatCompletionRequest,
    ) -> Result<(Completion, Option<f64>), ApiError> {
        self.complete_measured(request, true).await
    }

    async fn complete_measured(
        &self,
        request: &ChatCompletionRequest,
        measure: bool,
    ) -> Result<(Completion, Option<f64>), ApiError> {
        self.ask(request, &Whole { measure }).await
    }

    /// Starts a generation and returns its chunks: the assistant role first, the text, the
    /// finish reason, then usage. Dropping the stream stops the generation.
    pub async fn stream(&self, request: &ChatCompletionRequest) -> Result<ChunkStream, ApiError> {
        self.ask(request, &Streamed).await
    }

    /// Asks the members, least loaded first, until one answers.
    async fn ask<A: Ask>(
        &self,
        request: &ChatCompletionRequest,
        ask: &A,
    ) -> Result<A::Output, ApiError> {
        let mut members: Vec<Member<'_>> = self.members().collect();
        // Stable: ties keep the configured order.
        members.sort_by_key(|member| member.in_flight());
        let mut last_error = None;
        for member in members {
            let answered = match member {
                Member::Engine(engine) => ask.engine(self, engine, request).await,
                Member::Server(server) => {
                    let Some(place) = server.take_place() else {
                        continue;
                    };
                    ask.server(server, place, request).await
                }
            };
            match answered {
                Ok(answer) => return Ok(answer),
                Err(Declined::Fail(error)) => return Err(error),
                Err(Declined::TryNext(error)) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(overloaded))
    }
}

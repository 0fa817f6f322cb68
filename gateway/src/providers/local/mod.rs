//! The local tier: a model answered on the company's own machines, by the in-process engine,
//! by a pool of servers (other Switchboard nodes, llama.cpp or vLLM servers), or both.
//!
//! Each request goes to the member with the fewest requests in flight, among those that are up
//! and have room (ties go to the first listed, the in-process engine first). A member that is
//! full, down, refuses the request or fails before answering passes it to the next one (members
//! may differ: a longer window, tools), all within the request's deadline; the client gets the
//! last refusal. The pool is full when no member has room: that is what the policy's
//! `when_local_busy` weighs, as for a single engine.
//!
//! A request a pool sends to a server carries [`POOL_HOP_HEADER`]; a Switchboard node answers
//! such a request in-process only ([`Reach::InProcess`]), so that nodes that list each other
//! never pass a request round in a loop.

mod engine;
mod server;

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use switchboard_local_engine::Engine;
use tokio::time::Instant;

pub use server::{PoolServer, ServerStats};

use super::{ChunkStream, Completion};
use crate::api::ChatCompletionRequest;
use crate::error::ApiError;

/// Marks a request that a local pool sent to one of its servers.
pub const POOL_HOP_HEADER: &str = "x-switchboard-pool-hop";

/// Which members of a local model may answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Every member: the engine and the servers.
    Pool,
    /// The in-process engine only: the request came from another node's pool, and this node's
    /// own servers could pass it back.
    InProcess,
}

pub struct LocalModel {
    pub name: String,
    engine: Option<Arc<Engine>>,
    servers: Vec<PoolServer>,
    /// The tokens a request may take: the engine's model window, else the configured one.
    context_window: u64,
    health_every: Duration,
    /// How long the servers may take for one request, all tries together.
    request_timeout: Duration,
}

/// Why one member did not answer.
enum Declined {
    /// Full, down, refused the request or failed before answering: another member may answer.
    TryNext(ApiError),
    /// The engine failed in the middle of the answer: no member is asked again.
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

    fn ask_engine(
        &self,
        model: &LocalModel,
        engine: &Arc<Engine>,
        request: &ChatCompletionRequest,
    ) -> impl Future<Output = Result<Self::Output, Declined>> + Send;

    /// Holds `place` until the answer is complete (a stream: until it is dropped).
    fn ask_server(
        &self,
        server: &PoolServer,
        place: server::Place,
        request: &ChatCompletionRequest,
        deadline: Instant,
    ) -> impl Future<Output = Result<Self::Output, Declined>> + Send;
}

/// The whole answer, and how sure the model was of it when `measure` asks for it.
struct Whole {
    measure: bool,
}

impl Ask for Whole {
    type Output = (Completion, Option<f64>);

    async fn ask_engine(
        &self,
        model: &LocalModel,
        engine: &Arc<Engine>,
        request: &ChatCompletionRequest,
    ) -> Result<Self::Output, Declined> {
        engine::complete(engine, &model.name, request, self.measure).await
    }

    async fn ask_server(
        &self,
        server: &PoolServer,
        _place: server::Place,
        request: &ChatCompletionRequest,
        deadline: Instant,
    ) -> Result<Self::Output, Declined> {
        server.complete(request, self.measure, deadline).await
    }
}

/// The answer's chunks.
struct Streamed;

impl Ask for Streamed {
    type Output = ChunkStream;

    async fn ask_engine(
        &self,
        model: &LocalModel,
        engine: &Arc<Engine>,
        request: &ChatCompletionRequest,
    ) -> Result<ChunkStream, Declined> {
        engine::stream(engine, &model.name, request).await
    }

    async fn ask_server(
        &self,
        server: &PoolServer,
        place: server::Place,
        request: &ChatCompletionRequest,
        deadline: Instant,
    ) -> Result<ChunkStream, Declined> {
        let chunks = server.stream(request, deadline).await?;
        // The closure owns the place, so the stream holds it until it is dropped: when it
        // ends, or when the client goes away.
        let holding_the_place = chunks.map(move |chunk| {
            let _ = &place;
            chunk
        });
        Ok(Box::pin(holding_the_place))
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
        request_timeout: Duration,
    ) -> Self {
        Self {
            name,
            engine: engine.map(Arc::new),
            servers,
            context_window,
            health_every,
            request_timeout,
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

    fn members(&self, reach: Reach) -> impl Iterator<Item = Member<'_>> {
        let engine = self.engine.iter().map(Member::Engine);
        let servers = match reach {
            Reach::Pool => &self.servers[..],
            Reach::InProcess => &[],
        };
        engine.chain(servers.iter().map(Member::Server))
    }

    /// Whether no member within `reach` would take a request now.
    pub fn is_full(&self, reach: Reach) -> bool {
        !self.members(reach).any(Member::has_room)
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
    pub async fn complete(
        &self,
        request: &ChatCompletionRequest,
        reach: Reach,
    ) -> Result<Completion, ApiError> {
        let (completion, _) = self.ask(request, reach, &Whole { measure: false }).await?;
        Ok(completion)
    }

    /// Generates the whole answer, with the mean log-probability of its tokens under the
    /// model (how sure the model was of it; `None` for an empty answer or a server that gives
    /// none).
    pub async fn complete_scored(
        &self,
        request: &ChatCompletionRequest,
        reach: Reach,
    ) -> Result<(Completion, Option<f64>), ApiError> {
        self.ask(request, reach, &Whole { measure: true }).await
    }

    /// Starts a generation and returns its chunks: the assistant role first, the text, the
    /// finish reason, then usage. Dropping the stream stops the generation.
    pub async fn stream(
        &self,
        request: &ChatCompletionRequest,
        reach: Reach,
    ) -> Result<ChunkStream, ApiError> {
        self.ask(request, reach, &Streamed).await
    }

    /// Asks the members, least loaded first, until one answers.
    async fn ask<A: Ask>(
        &self,
        request: &ChatCompletionRequest,
        reach: Reach,
        ask: &A,
    ) -> Result<A::Output, ApiError> {
        let deadline = Instant::now() + self.request_timeout;
        let mut members: Vec<Member<'_>> = self.members(reach).collect();
        // Stable: ties keep the configured order.
        members.sort_by_key(|member| member.in_flight());
        let mut last_error = None;
        for member in members {
            let answered = match member {
                Member::Engine(engine) => ask.ask_engine(self, engine, request).await,
                Member::Server(_) if Instant::now() >= deadline => break,
                Member::Server(server) => {
                    let Some(place) = server.take_place() else {
                        continue;
                    };
                    ask.ask_server(server, place, request, deadline).await
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

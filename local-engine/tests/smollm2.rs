//! The engine on the real SmolLM2-135M-Instruct GGUF, against llama.cpp's reference output
//! (`reference/make_reference.py` made `reference/smollm2.json`).
//!
//! The model comes from `switchboard models fetch` (./test.sh runs it first); its path is
//! `$SWITCHBOARD_TEST_GGUF`, else the default model directory.

mod common;

use std::time::Duration;

use candle_core::quantized::gguf_file::Content;
use serde::Deserialize;
use switchboard_local_engine::text_stream::{Piece, TextStream};
use switchboard_local_engine::tokenizer::ModelTokenizer;
use switchboard_local_engine::{
    Engine, EngineConfig, Event, FinishReason, Generation, GenerationRequest, SamplingParams,
    SubmitError, Turn,
};

use common::{load_model, load_model_with, model_path};
use switchboard_local_engine::ModelSettings;
use switchboard_local_engine::model::{Feed, Model, Sequence};

#[derive(Deserialize)]
struct Reference {
    strings: Vec<StringCase>,
    conversations: Vec<Conversation>,
}

#[derive(Deserialize)]
struct StringCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Conversation {
    /// `exact` or `near_tie` (see make_reference.py).
    check: String,
    messages: Vec<Turn>,
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    /// At each step, how far llama.cpp's choice led its runner-up.
    greedy_margins: Vec<f32>,
}

impl Conversation {
    fn turns(&self) -> Vec<Turn> {
        self.messages.clone()
    }
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("reference/smollm2.json")).unwrap()
}

fn tokenizer() -> ModelTokenizer {
    let mut file = std::fs::File::open(model_path()).unwrap();
    let content = Content::read(&mut file).unwrap();
    ModelTokenizer::from_gguf(&content).unwrap()
}

fn engine(queue_capacity: usize) -> Engine {
    engine_with(queue_capacity, ModelSettings::default())
}

fn engine_with(queue_capacity: usize, model: ModelSettings) -> Engine {
    Engine::load(&EngineConfig {
        path: model_path(),
        queue_capacity,
        max_context: None,
        model,
    })
    .unwrap()
}

fn request(turns: Vec<Turn>, max_tokens: usize) -> GenerationRequest {
    GenerationRequest {
        turns,
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        logprobs: None,
    }
}

fn ask(text: &str) -> Vec<Turn> {
    vec![Turn {
        role: "user".to_owned(),
        content: text.to_owned(),
    }]
}

/// Reads a generation to its end: the text, the finish reason, the completion tokens.
fn collect(mut generation: Generation) -> (String, FinishReason, usize) {
    let mut text = String::new();
    loop {
        match generation
            .events
            .blocking_recv()
            .expect("a generation ends with Done")
        {
            Event::Delta { text: piece, .. } => text.push_str(&piece),
            Event::Done {
                finish,
                completion_tokens,
            } => return (text, finish, completion_tokens),
            Event::Failed(error) => panic!("generation failed: {error}"),
        }
    }
}

#[test]
fn token_ids_match_llama_cpp() {
    let tokenizer = tokenizer();
    for case in reference().strings {
        assert_eq!(
            tokenizer.encode(&case.text).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
    }
}

#[test]
fn text_round_trips_through_the_tokenizer() {
    let tokenizer = tokenizer();
    for case in reference()
        .strings
        .iter()
        .filter(|c| !c.text.contains("<|"))
    {
        let ids = tokenizer.encode(&case.text).unwrap();
        assert_eq!(tokenizer.decode(&ids).unwrap(), case.text);
    }
}

#[test]
fn streamed_text_never_splits_a_character() {
    let tokenizer = tokenizer();
    let text = "日本語 🚀🔥 naïve café — ∑ done";
    let ids = tokenizer.encode(text).unwrap();
    assert!(ids.len() > 10, "multi-byte characters span several tokens");
    let mut stream = TextStream::new(Vec::new());
    let mut out = String::new();
    for id in ids {
        let Piece::Text(piece) = stream.push(&tokenizer, id).unwrap() else {
            panic!("no stop sequence was given");
        };
        assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
        out.push_str(&piece);
    }
    out.push_str(&stream.finish());
    assert_eq!(out, text);
}

#[test]
fn stop_sequences_are_found_across_tokens_and_not_emitted() {
    let tokenizer = tokenizer();
    let ids = tokenizer
        .encode("The answer is forty-two, said the computer.")
        .unwrap();
    let mut stream = TextStream::new(vec!["forty-two".to_owned()]);
    let mut out = String::new();
    for id in ids {
        match stream.push(&tokenizer, id).unwrap() {
            Piece::Text(piece) => out.push_str(&piece),
            Piece::Stop(piece) => {
                out.push_str(&piece);
                assert_eq!(out, "The answer is ");
                return;
            }
        }
    }
    panic!("the stop sequence was not found in {out:?}");
}

#[test]
fn prompts_render_like_the_reference() {
    let engine = engine(4);
    for conversation in reference().conversations {
        let ids = engine.prompt_tokens(&conversation.turns()).unwrap();
        let text = engine.tokenizer().encode(&conversation.prompt).unwrap();
        assert_eq!(text, conversation.prompt_ids);
        assert_eq!(ids, conversation.prompt_ids, "{}", conversation.prompt);
    }
}

/// How far the lead of one token over another may move between the engines. Their logits
/// differ with a standard deviation of about 0.15 (measured against llama.cpp's on these
/// conversations: the activations' 8-bit rounding turns a last-bit difference of a sum into a
/// different quantum now and then), a lead by about 0.21; this is five times that.
const MAX_SHIFT: f32 = 1.0;

/// Where our greedy choice `ours` is not llama.cpp's `theirs`, which led its runner-up by
/// `margin`: the two must have been close in both engines.
fn assert_a_near_tie(logits: &[f32], ours: u32, theirs: u32, margin: f32, at: &str) {
    let gap = logits[ours as usize] - logits[theirs as usize];
    assert!(
        gap + margin < MAX_SHIFT,
        "{at}: we chose {ours}, {gap} above llama.cpp's {theirs}, which led by {margin}"
    );
}

/// A new sequence (the test's models keep no finished ones) after `prompt`, with its logits.
fn run_prompt(model: &mut Model, prompt: &[u32]) -> (Sequence, Vec<f32>) {
    let (mut sequence, cached) = model.open(prompt);
    assert_eq!(cached, 0);
    let logits = model.feed(&mut sequence, prompt).unwrap();
    (sequence, logits)
}

#[test]
fn greedy_tokens_match_llama_cpp() {
    let mut model = load_model();
    let conversations = reference().conversations;
    assert!(conversations.iter().filter(|c| c.check == "exact").count() >= 3);
    for conversation in conversations {
        let prompt = &conversation.prompt_ids;
        let expected = &conversation.greedy_ids;
        if conversation.check == "exact" {
            assert!(expected.len() >= 16, "{}", conversation.prompt);
            // Free-running: our own tokens are fed back, and they are llama.cpp's until a near
            // tie, where two engines' small differences may pick either side (and the rest of
            // the answer follows it).
            let (mut sequence, mut logits) = run_prompt(&mut model, prompt);
            for (step, &theirs) in expected.iter().enumerate() {
                let ours = switchboard_local_engine::sampling::argmax(&logits);
                if ours != theirs {
                    let at = format!("free-running step {step} of {:?}", conversation.prompt);
                    let margin = conversation.greedy_margins[step];
                    assert_a_near_tie(&logits, ours, theirs, margin, &at);
                    break;
                }
                logits = model.feed(&mut sequence, &[ours]).unwrap();
            }
        }
        // Teacher-forced: llama.cpp's tokens are fed back, and each of its choices is ours or a
        // near tie with ours.
        let (mut sequence, mut logits) = run_prompt(&mut model, prompt);
        for (step, &token) in expected.iter().enumerate() {
            let best = switchboard_local_engine::sampling::argmax(&logits);
            if best != token {
                let at = format!("teacher-forced step {step} of {:?}", conversation.prompt);
                assert_a_near_tie(&logits, best, token, conversation.greedy_margins[step], &at);
            }
            logits = model.feed(&mut sequence, &[token]).unwrap();
        }
    }
}

#[test]
fn the_engine_answers_greedily_with_stops_limits_and_logprobs() {
    let engine = engine(4);
    let tokenizer = engine.tokenizer().clone();
    // "Write a Python function that reverses a string."
    let conversation = &reference().conversations[2];
    let expected = tokenizer.decode(&conversation.greedy_ids[..12]).unwrap();

    let generation = engine.submit(request(conversation.turns(), 12)).unwrap();
    assert_eq!(generation.prompt_tokens, conversation.prompt_ids.len());
    let (text, finish, tokens) = collect(generation);
    assert_eq!(text, expected);
    assert_eq!(finish, FinishReason::Length);
    assert_eq!(tokens, 12);

    // The answer starts "```python\ndef add_numbers": stop at "def".
    let mut stopped = request(conversation.turns(), 12);
    stopped.stop = vec!["def".to_owned()];
    let (text, finish, _) = collect(engine.submit(stopped).unwrap());
    assert_eq!(finish, FinishReason::Stop);
    assert_eq!(text, "```python\n");

    let mut with_logprobs = request(conversation.turns(), 4);
    with_logprobs.logprobs = Some(3);
    let mut generation = engine.submit(with_logprobs).unwrap();
    let mut reported = Vec::new();
    while let Some(event) = generation.events.blocking_recv() {
        if let Event::Delta { logprobs, .. } = event {
            reported.extend(logprobs);
        }
    }
    assert_eq!(reported.len(), 4);
    for (entry, &id) in reported.iter().zip(&conversation.greedy_ids) {
        assert!(entry.logprob <= 0.0);
        assert_eq!(entry.top.len(), 3);
        assert_eq!(
            entry.top[0].2, entry.logprob,
            "greedy takes the most likely token"
        );
        assert_eq!(entry.bytes, tokenizer.token_bytes(id));
    }

    // A seed reproduces a sampled answer.
    let sampled = |seed| {
        let mut request = request(ask("Tell me a story."), 16);
        request.sampling = SamplingParams {
            temperature: 1.0,
            seed: Some(seed),
            ..SamplingParams::default()
        };
        collect(engine.submit(request).unwrap()).0
    };
    assert_eq!(sampled(11), sampled(11));
}

#[test]
fn requests_beyond_the_context_are_refused_with_the_numbers() {
    let engine = engine(4);
    let context = engine.info().context_length;
    assert_eq!(context, 8192, "SmolLM2 says 8192");
    let Err(SubmitError::ContextExceeded {
        prompt,
        requested,
        context: limit,
    }) = engine.submit(request(ask("hi"), 9000))
    else {
        panic!("expected ContextExceeded");
    };
    assert_eq!((requested, limit), (9000, 8192));
    assert!(prompt > 1);
}

#[test]
fn dropped_receivers_stop_generation_and_a_full_queue_refuses() {
    let batch = ModelSettings {
        max_batch: 2,
        ..ModelSettings::default()
    };
    let engine = engine_with(1, batch);
    // One after the other: the queue has room for one job until the thread takes it.
    let running: Vec<Generation> = (0..2)
        .map(|_| {
            let mut generation = engine
                .submit(request(ask("Count from one to one hundred."), 400))
                .unwrap();
            assert!(matches!(
                generation.events.blocking_recv(),
                Some(Event::Delta { .. })
            ));
            generation
        })
        .collect();
    assert_eq!(engine.running(), 2);
    // The batch is full: the queue has room for one more, and no other.
    let waiting = engine.submit(request(ask("hi"), 2)).unwrap();
    assert!(matches!(
        engine.submit(request(ask("hi"), 2)),
        Err(SubmitError::Overloaded { capacity: 1 })
    ));
    assert_eq!(engine.queue_depth(), 1);

    drop(running);
    // The waiting job joins once a place is free, so the running ones must have stopped early.
    let (_, finish, tokens) = collect(waiting);
    assert_eq!((finish, tokens), (FinishReason::Length, 2));
    let after_cancel = engine.generated_tokens();
    assert!(
        after_cancel < 200,
        "generation stopped early: {after_cancel} tokens"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        engine.generated_tokens(),
        after_cancel,
        "nothing runs in the background"
    );
    assert_eq!(engine.running(), 0);
}

#[test]
fn unreadable_files_are_refused_with_the_file_and_the_reason() {
    let dir = std::env::temp_dir().join(format!("switchboard-engine-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let error = Engine::load(&EngineConfig {
            path: path.clone(),
            queue_capacity: 1,
            max_context: None,
            model: Default::default(),
        })
        .err()
        .expect("loading must fail")
        .to_string();
        assert!(error.contains(&path.display().to_string()), "{error}");
        error
    };
    let error = load("not-a-model.gguf", b"hello, I am a text file");
    assert!(error.contains("not a readable GGUF file"), "{error}");

    let whole = std::fs::read(model_path()).unwrap();
    let error = load("truncated.gguf", &whole[..whole.len() / 2]);
    assert!(error.contains("weights cannot be read"), "{error}");

    let error = load("missing-header.gguf", &whole[..1000]);
    assert!(error.contains("GGUF"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_shared_prompt_prefix_comes_from_the_cache_with_the_same_logits() {
    let mut model = load_model_with(ModelSettings::default());
    let conversations = reference().conversations;
    // The same system prompt, two questions.
    let (first, second) = (&conversations[0].prompt_ids, &conversations[2].prompt_ids);
    let shared = first.iter().zip(second).take_while(|(a, b)| a == b).count();
    assert!(
        shared > 10,
        "the reference conversations share their system prompt"
    );

    let (mut sequence, cached) = model.open(first);
    assert_eq!(cached, 0);
    model.feed(&mut sequence, first).unwrap();
    for token in [28u32, 2618, 2828] {
        model.feed(&mut sequence, &[token]).unwrap();
    }
    model.close(sequence);
    let (mut sequence, cached) = model.open(second);
    assert_eq!(cached, shared);
    let from_cache = model.feed(&mut sequence, &second[cached..]).unwrap();
    drop(sequence);

    model.clear_prefix_cache();
    let (mut sequence, cached) = model.open(second);
    assert_eq!(cached, 0);
    let fresh = model.feed(&mut sequence, second).unwrap();
    assert_eq!(from_cache, fresh, "the cached prefix changes nothing");
    model.close(sequence);

    // The same prompt again: all but its last token come from the cache.
    let (mut sequence, cached) = model.open(second);
    assert_eq!(cached, second.len() - 1);
    let again = model.feed(&mut sequence, &second[cached..]).unwrap();
    assert_eq!(again, fresh);

    let off = ModelSettings {
        prefix_cache_bytes: 0,
        ..ModelSettings::default()
    };
    let mut model = load_model_with(off);
    let (mut sequence, _) = model.open(second);
    model.feed(&mut sequence, second).unwrap();
    model.close(sequence);
    assert_eq!(model.open(second).1, 0, "a cache of 0 bytes keeps nothing");
    assert_eq!(model.prefix_cache_bytes(), 0);
}

#[test]
fn sequences_stepped_together_get_the_logits_they_get_alone() {
    let conversations = reference().conversations;
    let prompts: Vec<&[u32]> = conversations[..3]
        .iter()
        .map(|c| c.prompt_ids.as_slice())
        .collect();
    // Each alone: the prompt, then its greedy tokens one at a time.
    let mut model = load_model();
    let alone: Vec<Vec<Vec<f32>>> = prompts
        .iter()
        .map(|prompt| {
            let (mut sequence, mut logits) = run_prompt(&mut model, prompt);
            let mut all = vec![logits.clone()];
            for _ in 0..4 {
                let token = switchboard_local_engine::sampling::argmax(&logits);
                logits = model.feed(&mut sequence, &[token]).unwrap();
                all.push(logits.clone());
            }
            all
        })
        .collect();

    // Together: the first prompt alone in the first step, then the second one's prompt in two
    // chunks beside the first one's decoding, the third joining later.
    let mut sequences: Vec<Sequence> = prompts.iter().map(|p| model.open(p).0).collect();
    let mut logits: Vec<Vec<Vec<f32>>> = vec![Vec::new(); 3];
    let mut next = [0u32; 3];
    let half = prompts[1].len() / 2;
    for step in 0..8 {
        let mut work: Vec<(usize, Vec<u32>, bool)> = Vec::new();
        for s in 0..3 {
            let done = sequences[s].tokens().len();
            let joins = [0, 1, 3][s];
            if step < joins || logits[s].len() == alone[s].len() {
                continue;
            }
            let prompt = prompts[s];
            work.push(if s == 1 && done == 0 {
                (s, prompt[..half].to_vec(), false)
            } else if done < prompt.len() {
                (s, prompt[done..].to_vec(), true)
            } else {
                (s, vec![next[s]], true)
            });
        }
        let mut taken: Vec<Option<&mut Sequence>> = sequences.iter_mut().map(Some).collect();
        let mut feeds: Vec<Feed> = work
            .iter()
            .map(|(s, tokens, wanted)| Feed {
                sequence: taken[*s].take().unwrap(),
                tokens,
                logits: *wanted,
            })
            .collect();
        let results = model.step(&mut feeds).unwrap();
        for ((s, _, wanted), result) in work.iter().zip(results) {
            assert_eq!(result.is_some(), *wanted);
            if let Some(result) = result {
                next[*s] = switchboard_local_engine::sampling::argmax(&result);
                logits[*s].push(result);
            }
        }
    }
    for s in 0..3 {
        assert_eq!(
            logits[s].len(),
            alone[s].len(),
            "sequence {s} ran to its end"
        );
        assert!(logits[s] == alone[s], "sequence {s}: batched logits differ");
    }
}

#[test]
fn concurrent_requests_get_the_answers_they_get_alone() {
    let engine = engine(8);
    let questions: Vec<Vec<Turn>> = reference().conversations[..4]
        .iter()
        .map(Conversation::turns)
        .collect();
    let alone: Vec<String> = questions
        .iter()
        .map(|turns| collect(engine.submit(request(turns.clone(), 24)).unwrap()).0)
        .collect();
    let generations: Vec<Generation> = questions
        .iter()
        .map(|turns| engine.submit(request(turns.clone(), 24)).unwrap())
        .collect();
    let together: Vec<String> = generations.into_iter().map(|g| collect(g).0).collect();
    assert_eq!(together, alone);
    let (cached, _) = engine.prompt_token_counts();
    assert!(
        cached > 0,
        "the second round found its prompts in the cache"
    );
    assert!(engine.prefix_cache_bytes() > 0);
}

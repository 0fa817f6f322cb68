//! `switchboard router label`: runs the local engine over questions with known answers and
//! writes whether it got each right (see `switchboard_router_train::labelling`).

use std::io::Write;

use anyhow::Context;
use switchboard_gateway::model_store::{ModelStore, SMOLLM2};
use switchboard_local_engine::{
    Engine, EngineConfig, Event, GenerationRequest, SamplingParams, Turn,
};
use switchboard_router_train::dataset;
use switchboard_router_train::labelling::{self, Labelled, MultipleChoice};

use crate::args::LabelArgs;

/// How many alternatives to read at the answer position of a multiple-choice question: enough to
/// find every option letter among a small model's likely next tokens.
const TOP_ALTERNATIVES: usize = 20;

pub fn label(args: LabelArgs) -> anyhow::Result<()> {
    let model = match args.model {
        Some(path) => path,
        None => {
            let store = ModelStore::from_env();
            store.fetch(&SMOLLM2)?;
            store.main_file(&SMOLLM2)
        }
    };
    let engine = Engine::load(&EngineConfig {
        path: model,
        queue_capacity: 1,
        max_context: None,
        model: Default::default(),
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = LabelFile {
        file: std::io::BufWriter::new(
            std::fs::File::create(&args.out)
                .with_context(|| format!("cannot create {}", args.out.display()))?,
        ),
        right: 0,
        total: 0,
    };

    let problems = match args.gsm8k {
        0 => Vec::new(),
        n => {
            let data = args.data.as_deref().context(
                "GSM8K problems come from the public data sets: give their folder with --data (or --gsm8k 0)",
            )?;
            let mut problems = dataset::gsm8k_problems(data)?;
            problems.truncate(n);
            problems
        }
    };
    for problem in problems {
        let reference = labelling::reference_number(&problem.answer)
            .context("a GSM8K answer without a final number")?;
        let request = request(
            labelling::gsm8k_prompt(&problem.question),
            args.max_tokens,
            None,
        );
        let (answer, _) = runtime.block_on(generate(&engine, request))?;
        let got_it = labelling::last_number(&answer).is_some_and(|n| n == reference);
        out.write(Labelled {
            text: problem.question,
            hard: !got_it,
            domain: Some("math".to_owned()),
            source: Some("gsm8k".to_owned()),
        })?;
    }

    if let Some(path) = &args.questions {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let question: MultipleChoice = serde_json::from_str(line)
                .with_context(|| format!("{} line {}", path.display(), n + 1))?;
            let right_index = question
                .right_index()
                .with_context(|| format!("{} line {}: no valid answer", path.display(), n + 1))?;
            let request = request(question.prompt(), 1, Some(TOP_ALTERNATIVES));
            let (_, candidates) = runtime.block_on(generate(&engine, request))?;
            let chosen = labelling::chosen_option(&candidates, question.choices.len());
            out.write(Labelled {
                text: question.prompt(),
                hard: chosen != Some(right_index),
                domain: question.domain,
                source: Some("multiple_choice".to_owned()),
            })?;
        }
    }
    out.file.flush()?;
    println!(
        "{} of {} right; wrote {}",
        out.right,
        out.total,
        args.out.display()
    );
    Ok(())
}

/// The labelled file being written, with a count of what the model got right.
struct LabelFile {
    file: std::io::BufWriter<std::fs::File>,
    right: usize,
    total: usize,
}

impl LabelFile {
    fn write(&mut self, labelled: Labelled) -> anyhow::Result<()> {
        self.total += 1;
        self.right += usize::from(!labelled.hard);
        writeln!(self.file, "{}", serde_json::to_string(&labelled)?)?;
        Ok(())
    }
}

fn request(prompt: String, max_tokens: usize, logprobs: Option<usize>) -> GenerationRequest {
    GenerationRequest {
        turns: vec![Turn {
            role: "user".to_owned(),
            content: prompt,
        }],
        sampling: SamplingParams::greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
        logprobs,
    }
}

/// The answer's text, and the candidates for its first token with their log-probabilities.
async fn generate(
    engine: &Engine,
    request: GenerationRequest,
) -> anyhow::Result<(String, Vec<(String, f32)>)> {
    let mut generation = engine.submit(request)?;
    let mut text = String::new();
    let mut first = None;
    while let Some(event) = generation.events.recv().await {
        match event {
            Event::Delta {
                text: delta,
                logprobs,
            } => {
                text.push_str(&delta);
                if first.is_none() {
                    first = logprobs.into_iter().next().map(|token| {
                        token
                            .top
                            .into_iter()
                            .map(|(text, _, logprob)| (text, logprob))
                            .collect()
                    });
                }
            }
            Event::Done { .. } => break,
            Event::Failed(reason) => anyhow::bail!("the local model failed: {reason}"),
        }
    }
    Ok((text, first.unwrap_or_default()))
}

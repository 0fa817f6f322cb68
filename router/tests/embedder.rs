//! The embedder against sentence-transformers (`reference/make_embeddings.py` made
//! `reference/minilm.json`), on the model from `switchboard models fetch`.

mod common;

use serde::Deserialize;
use switchboard_router::embedder::{BertEmbedder, Embed, MAX_TOKENS, cosine};
use switchboard_router::encoder::Isa;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    vector: Vec<f32>,
}

#[test]
fn embeddings_match_sentence_transformers_alone_and_in_a_batch() {
    for isa in Isa::supported() {
        let embedder = BertEmbedder::load_with(&common::model_dir(), 2, isa).unwrap();
        matches_sentence_transformers(&embedder, isa);
    }
}

fn matches_sentence_transformers(embedder: &BertEmbedder, isa: Isa) {
    assert_eq!(embedder.dimensions(), 384);
    let reference: Reference = serde_json::from_str(include_str!("reference/minilm.json")).unwrap();
    assert_eq!(reference.sentences.len(), 20);
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .map(|s| s.text.as_str())
        .collect();
    let batched = embedder.embed(&texts).unwrap().vectors;
    for (sentence, from_batch) in reference.sentences.iter().zip(&batched) {
        let alone = &embedder.embed(&[&sentence.text]).unwrap().vectors[0];
        let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit length: {norm}");
        let similarity = cosine(alone, &sentence.vector);
        assert!(
            similarity >= 0.999,
            "{isa:?}: {similarity} for {:?}",
            sentence.text
        );
        let batch_similarity = cosine(from_batch, &sentence.vector);
        assert!(
            batch_similarity >= 0.999,
            "{isa:?}: {batch_similarity} in a batch for {:?}",
            sentence.text
        );
    }
    // The long sentence is cut at MAX_TOKENS: adding more text after the cut changes nothing.
    let long = texts.last().unwrap();
    let longer = format!("{long} And one more sentence that falls beyond the limit.");
    let (a, b) = (
        embedder.embed(&[long]).unwrap(),
        embedder.embed(&[&longer]).unwrap(),
    );
    assert_eq!((a.tokens[0], b.tokens[0]), (MAX_TOKENS, MAX_TOKENS));
    let similarity = cosine(&a.vectors[0], &b.vectors[0]);
    assert!(similarity > 0.99999, "truncated at {MAX_TOKENS} tokens");
}

#[test]
fn similar_requests_are_closer_than_unrelated_ones() {
    let embedder = BertEmbedder::load(&common::model_dir()).unwrap();
    let v = embedder
        .embed(&[
            "How do I reset my VPN password?",
            "I forgot my VPN password, how can I change it?",
            "Prove that there are infinitely many primes.",
        ])
        .unwrap()
        .vectors;
    assert!(cosine(&v[0], &v[1]) > cosine(&v[0], &v[2]) + 0.3);
}

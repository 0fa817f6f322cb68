//! The shipped heads on hand-written requests that appear in no training set: everyday
//! questions score below hard tasks, domains come out right, custom domains take over what
//! their examples describe, and scoring is the same alone or in a crowd.

mod common;

use std::sync::{Arc, LazyLock};

use switchboard_router::batcher::{BatchSettings, EmbeddingService};
use switchboard_router::classifier::Classifier;
use switchboard_router::conversation::Turn;
use switchboard_router::embedder::{BertEmbedder, Embed};
use switchboard_router::heads::Heads;

static SERVICE: LazyLock<Arc<EmbeddingService>> = LazyLock::new(|| {
    let embedder: Arc<dyn Embed> = Arc::new(BertEmbedder::load(&common::model_dir()).unwrap());
    Arc::new(EmbeddingService::start(embedder, BatchSettings::default()).unwrap())
});

fn classifier(domains: Vec<(String, Vec<String>)>) -> Classifier {
    Classifier::new(SERVICE.clone(), Heads::shipped(), domains).unwrap()
}

async fn score(classifier: &Classifier, text: &str) -> (f32, String) {
    let scores = classifier.classify(&[Turn::user(text)]).await.unwrap();
    (scores.complexity, scores.top_domain().to_owned())
}

const EVERYDAY: [&str; 6] = [
    "How do I reset my VPN password?",
    "My laptop won't connect to the office wifi",
    "How many vacation days do I have left this year?",
    "hi there, thanks for the help yesterday!",
    "When is the next payday?",
    "Can you book a table for two at 7pm?",
];

const HARD: [&str; 5] = [
    "Natalie bought 3 boxes of 24 pencils and gave away two fifths of them. She then split the rest equally among 4 friends. How many pencils did each friend get?",
    "Write a Python function that merges k sorted linked lists in O(n log k) time and explain its complexity.",
    "Prove that there are infinitely many prime numbers of the form 4k+3.",
    "Compare the doctrine of promissory estoppel with consideration in contract formation, citing how courts treat gratuitous promises.",
    "Compose a sonnet about the ethics of artificial intelligence, then explain the metaphor in each quatrain.",
];

#[tokio::test]
async fn every_everyday_request_scores_below_every_hard_one() {
    let classifier = classifier(Vec::new());
    let mut easy = Vec::new();
    for text in EVERYDAY {
        easy.push(score(&classifier, text).await.0);
    }
    let mut hard = Vec::new();
    for text in HARD {
        hard.push(score(&classifier, text).await.0);
    }
    let highest_easy = easy.iter().copied().fold(0f32, f32::max);
    let lowest_hard = hard.iter().copied().fold(1f32, f32::min);
    assert!(
        highest_easy < lowest_hard,
        "everyday {easy:?} against hard {hard:?}"
    );
}

#[tokio::test]
async fn domains_of_plain_requests() {
    let classifier = classifier(Vec::new());
    let cases = [
        ("My laptop won't connect to the office wifi", "it_helpdesk"),
        ("How many vacation days do I have left this year?", "hr"),
        (
            "What is the interest rate on my savings account?",
            "finance",
        ),
        ("Write a Python function that reverses a string", "coding"),
        ("Solve for x: 3x + 7 = 22", "math"),
        ("Is a verbal agreement legally binding in court?", "legal"),
        ("hello, how are you doing today?", "small_talk"),
        (
            "What is the largest planet in the solar system?",
            "general_knowledge",
        ),
    ];
    for (text, expected) in cases {
        let (_, domain) = score(&classifier, text).await;
        assert_eq!(domain, expected, "{text}");
    }
}

#[tokio::test]
async fn custom_domains_take_what_their_examples_describe_and_nothing_else() {
    let facilities = vec![
        "The heating in meeting room 3 is broken".to_owned(),
        "Can someone fix the light in the second floor kitchen?".to_owned(),
        "The badge reader at the north entrance does not work".to_owned(),
    ];
    let classifier = classifier(vec![("facilities".to_owned(), facilities)]);
    let (_, domain) = score(
        &classifier,
        "The radiator in the third floor meeting room is cold",
    )
    .await;
    assert_eq!(domain, "facilities");
    let (_, domain) = score(
        &classifier,
        "Write a Python function that reverses a string",
    )
    .await;
    assert_eq!(domain, "coding");

    let scores = classifier
        .classify(&[Turn::user("The lights in the kitchen flicker")])
        .await
        .unwrap();
    let nearest = classifier.nearest(&scores.embedding, 1);
    assert_eq!(nearest[0].domain, "facilities");
    assert!(nearest[0].text.contains("kitchen"), "{:?}", nearest[0].text);
    let total: f32 = scores.domains.iter().map(|(_, p)| p).sum();
    assert!((total - 1.0).abs() < 1e-4);
}

#[tokio::test]
async fn scores_are_the_same_alone_and_in_a_crowd() {
    let classifier = Arc::new(classifier(Vec::new()));
    let alone = score(&classifier, HARD[1]).await.0;
    let crowd: Vec<_> = (0..12)
        .map(|i| {
            let classifier = classifier.clone();
            let text = if i % 2 == 0 {
                HARD[1]
            } else {
                EVERYDAY[i % EVERYDAY.len()]
            };
            tokio::spawn(async move { (text, score(&classifier, text).await.0) })
        })
        .collect();
    for task in crowd {
        let (text, complexity) = task.await.unwrap();
        if text == HARD[1] {
            assert!((complexity - alone).abs() < 1e-4, "{complexity} vs {alone}");
        }
    }
}

#[tokio::test]
async fn a_repeated_request_is_served_from_the_recent_embeddings() {
    let classifier = classifier(Vec::new());
    let first = classifier
        .classify(&[Turn::user("Where do I find the guest wifi password?")])
        .await
        .unwrap();
    let again = classifier
        .classify(&[Turn::user("Where do I find the guest wifi password?")])
        .await
        .unwrap();
    assert_eq!(classifier.recent_hits_and_misses(), (1, 1));
    assert_eq!(first.embedding, again.embedding);
    assert_eq!(first.complexity, again.complexity);
    assert_eq!(first.tokens, again.tokens);
}

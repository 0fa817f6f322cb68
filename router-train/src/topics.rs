//! The topic regions behind the complexity prior: MMLU's subjects, each split by k-means into
//! groups of at least [`MIN_PER_REGION`] training questions (at most [`REGIONS_PER_SUBJECT`]),
//! each with the strong model's expected gain over the weak one on its questions.
//!
//! Why regions and not one centroid per subject: a subject's questions differ (high-school
//! arithmetic and proofs both sit in "mathematics"), and the gain of escalating differs with
//! them; alone, the prior ranks MMLU's validation questions at APGR 0.651 with one centroid per
//! subject and 0.658 with regions. A region's gain is shrunk toward its subject's,
//! [`SHRINKAGE`] questions' worth, since some regions are small.

use crate::dataset::Example;
use switchboard_router::heads::{QuantizedVector, TopicPrior, dot};

pub const REGIONS_PER_SUBJECT: usize = 8;
pub const MIN_PER_REGION: usize = 15;
const SHRINKAGE: f32 = 10.0;
const ITERATIONS: usize = 20;

/// The regions of the MMLU questions among `rows`.
pub fn fit_topics(
    examples: &[Example],
    embeddings: &[Vec<f32>],
    rows: &[usize],
) -> Vec<TopicPrior> {
    let mut subjects: Vec<(&str, Vec<usize>)> = Vec::new();
    for &i in rows {
        if examples[i].outcome.is_none() {
            continue;
        }
        let subject = examples[i].source.trim_start_matches("mmlu/");
        match subjects.iter_mut().find(|(s, _)| *s == subject) {
            Some((_, members)) => members.push(i),
            None => subjects.push((subject, vec![i])),
        }
    }
    let gain = |i: usize| {
        let outcome = examples[i].outcome.expect("MMLU rows have outcomes");
        f32::from(u8::from(outcome.strong_right)) - f32::from(u8::from(outcome.weak_right))
    };
    let mut topics = Vec::new();
    for (subject, members) in subjects {
        let vectors: Vec<&[f32]> = members.iter().map(|&i| embeddings[i].as_slice()).collect();
        let regions = (members.len() / MIN_PER_REGION).clamp(1, REGIONS_PER_SUBJECT);
        let (centroids, assignment) = k_means(&vectors, regions, subject);
        let subject_gain = members.iter().map(|&i| gain(i)).sum::<f32>() / members.len() as f32;
        for (region, centroid) in centroids.iter().enumerate() {
            let (sum, count) = members
                .iter()
                .zip(&assignment)
                .filter(|(_, a)| **a == region)
                .fold((0.0, 0.0), |(sum, count), (&i, _)| {
                    (sum + gain(i), count + 1.0)
                });
            topics.push(TopicPrior {
                topic: subject.to_owned(),
                rate: (sum + SHRINKAGE * subject_gain) / (count + SHRINKAGE),
                centroid: QuantizedVector::new(centroid),
            });
        }
    }
    topics
}

/// Spherical k-means (cosine similarity, unit centroids), seeded from the subject's name so
/// that training is reproducible. Returns the centroids and each vector's region.
fn k_means(vectors: &[&[f32]], k: usize, seed: &str) -> (Vec<Vec<f32>>, Vec<usize>) {
    let mut rng = fastrand::Rng::with_seed(crate::dataset::stable_hash(seed));
    let mut picks: Vec<usize> = (0..vectors.len()).collect();
    rng.shuffle(&mut picks);
    let mut centroids: Vec<Vec<f32>> = picks[..k].iter().map(|&i| vectors[i].to_vec()).collect();
    let mut assignment = vec![0; vectors.len()];
    for _ in 0..ITERATIONS {
        for (a, v) in assignment.iter_mut().zip(vectors) {
            *a = nearest(&centroids, v);
        }
        for (region, centroid) in centroids.iter_mut().enumerate() {
            let mut sum = vec![0f32; centroid.len()];
            let mut any = false;
            for (v, _) in vectors
                .iter()
                .zip(&assignment)
                .filter(|(_, a)| **a == region)
            {
                any = true;
                sum.iter_mut().zip(v.iter()).for_each(|(s, x)| *s += x);
            }
            let norm = dot(&sum, &sum).sqrt();
            // An emptied region keeps its centroid.
            if any && norm > 0.0 {
                *centroid = sum.iter().map(|s| s / norm).collect();
            }
        }
    }
    (centroids, assignment)
}

fn nearest(centroids: &[Vec<f32>], vector: &[f32]) -> usize {
    centroids
        .iter()
        .map(|c| dot(c, vector))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_means_separates_two_clear_groups() {
        let up: Vec<Vec<f32>> = (0..10).map(|i| vec![1.0, i as f32 / 100.0]).collect();
        let side: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32 / 100.0, 1.0]).collect();
        let vectors: Vec<&[f32]> = up.iter().chain(&side).map(Vec::as_slice).collect();
        let (centroids, assignment) = k_means(&vectors, 2, "seed");
        assert_eq!(centroids.len(), 2);
        assert!(assignment[..10].iter().all(|&a| a == assignment[0]));
        assert!(assignment[10..].iter().all(|&a| a == assignment[10]));
        assert_ne!(assignment[0], assignment[10]);
    }
}

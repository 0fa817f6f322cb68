//! How the router's heads are made and judged, offline: nothing here runs in the gateway.
//!
//! - what they learn from: [`dataset`] (the public data sets), [`enterprise`] (the development
//!   set written like employees' chat, `data/enterprise/`), [`labelling`] (labels for your own
//!   local model);
//! - how they are made: [`fit`] (logistic and softmax regression), [`topics`] (the MMLU topic
//!   regions of the complexity prior), [`training`] (the whole run, from examples to heads);
//! - how they are judged: [`evaluation`] (AUROC, APGR, the cost–quality curve),
//!   [`pii_benchmark`] (the private-data scanner per finding) and [`cache_pairs`] (the semantic
//!   cache's paraphrases against its near misses).

pub mod cache_pairs;
pub mod dataset;
pub mod enterprise;
pub mod evaluation;
pub mod fit;
pub mod labelling;
pub mod pii_benchmark;
pub mod topics;
pub mod training;

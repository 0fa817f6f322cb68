//! Durations are written in the file as seconds (fractions allowed: `0.25`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, de::Error};

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| D::Error::custom(format!("{secs} is not a valid number of seconds")))
}

/// An optional duration in seconds: `None` when the key is absent.
pub mod optional {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }
}

//! `POST /v1/embeddings`: OpenAI-compatible embeddings from the in-process embedder, float or
//! base64 (the OpenAI SDKs ask for base64 by default).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_policies::Placement;
use switchboard_router::batcher::BatchError;
use tokio::time::Instant;

use super::extract::{Admitted, JsonBody, Refused, RequestId, Validate};
use super::{admit, failed, tag_with_id};
use crate::api::Usage;
use crate::error::ApiError;
use crate::pipeline::{Answerer, RequestRecord};
use crate::state::Gateway;

/// OpenAI's limit on inputs per request.
const MAX_INPUTS: usize = 2048;

#[derive(Deserialize)]
pub struct EmbeddingRequest {
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<Encoding>,
    #[serde(default)]
    dimensions: Option<usize>,
}

/// Its inputs are checked against the model it names, once that is found.
impl Validate for EmbeddingRequest {
    fn validate(&self) -> Result<(), ApiError> {
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    Float,
    Base64,
}

pub async fn embeddings(
    State(gateway): State<Arc<Gateway>>,
    RequestId(id): RequestId,
    admission: Result<Admitted, Refused>,
    body: JsonBody<EmbeddingRequest>,
) -> Response {
    let metrics = gateway.metrics.clone();
    let mut record = RequestRecord::start(metrics, id.clone(), Instant::now(), Placement::Local);
    let mut response = match answer(&gateway, admission, body, &mut record).await {
        Ok(response) => {
            record.finished(200);
            response
        }
        Err(error) => failed(error, &mut record),
    };
    tag_with_id(&mut response, &id);
    response
}

async fn answer(
    gateway: &Gateway,
    admission: Result<Admitted, Refused>,
    body: JsonBody<EmbeddingRequest>,
    record: &mut RequestRecord,
) -> Result<Response, ApiError> {
    let tenant = admit(admission, record)?;
    let request = body.read().await?;
    let service = gateway
        .catalog
        .embedder(&request.model)
        .filter(|_| tenant.may_use(&request.model))
        .ok_or_else(|| ApiError::ModelNotFound(request.model.clone()))?;
    record.answered_by(&Answerer::local(&request.model));
    let texts = match request.input {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
    };
    if texts.is_empty() || texts.len() > MAX_INPUTS {
        return Err(ApiError::bad_request(
            format!("'input' must hold 1 to {MAX_INPUTS} strings"),
            Some("input"),
        ));
    }
    if let Some(i) = texts.iter().position(String::is_empty) {
        return Err(ApiError::bad_request(
            "'input' must not contain empty strings",
            Some(&format!("input[{i}]")),
        ));
    }
    if let Some(dimensions) = request.dimensions
        && dimensions != service.dimensions()
    {
        return Err(ApiError::bad_request(
            format!(
                "'{}' has {} dimensions and cannot be shortened to {dimensions}",
                request.model,
                service.dimensions()
            ),
            Some("dimensions"),
        ));
    }
    let embedded = service.embed(texts).await.map_err(|error| match error {
        BatchError::Overloaded => ApiError::Overloaded {
            retry_after: std::time::Duration::from_secs(1),
        },
        other => ApiError::UpstreamFailed {
            message: format!("The local embedder failed: {other}"),
        },
    })?;
    let tokens: usize = embedded.tokens.iter().sum();
    record.answered(Some(Usage::new(tokens as u64, 0)), 0);
    let base64 = request.encoding_format == Some(Encoding::Base64);
    let data: Vec<Value> = embedded
        .vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                Value::String(base64_f32(vector))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

/// Little-endian f32s in standard base64, as OpenAI encodes them.
fn base64_f32(vector: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_encoding() {
        // 1.0f32 = 00 00 80 3f; 1.0, 2.0 = 00 00 80 3f 00 00 00 40
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        assert_eq!(base64_f32(&[1.0, 2.0]), "AACAPwAAAEA=");
        assert_eq!(base64_f32(&[]), "");
    }
}

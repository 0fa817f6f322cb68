//! Typed reads of GGUF metadata, with errors that name the missing or mistyped key.

use candle_core::quantized::gguf_file::{Content, Value};

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata key '{0}' is missing")]
    Missing(String),
    #[error("metadata key '{key}' is not {expected}")]
    WrongType { key: String, expected: &'static str },
}

/// A view of a GGUF file's metadata.
pub struct Metadata<'a>(pub &'a Content);

impl<'a> Metadata<'a> {
    fn get(&self, key: &str) -> Result<&'a Value, MetadataError> {
        self.0
            .metadata
            .get(key)
            .ok_or_else(|| MetadataError::Missing(key.to_owned()))
    }

    fn wrong(key: &str, expected: &'static str) -> MetadataError {
        MetadataError::WrongType {
            key: key.to_owned(),
            expected,
        }
    }

    pub fn string(&self, key: &str) -> Result<&'a str, MetadataError> {
        self.get(key)?
            .to_string()
            .map(String::as_str)
            .map_err(|_| Self::wrong(key, "a string"))
    }

    pub fn optional_string(&self, key: &str) -> Option<&'a str> {
        self.string(key).ok()
    }

    pub fn optional_u32(&self, key: &str) -> Option<u32> {
        let value = self.get(key).ok()?;
        value
            .to_u32()
            .ok()
            .or_else(|| value.to_i32().ok().and_then(|v| u32::try_from(v).ok()))
            .or_else(|| value.to_u64().ok().and_then(|v| u32::try_from(v).ok()))
    }

    pub fn optional_f32(&self, key: &str) -> Option<f32> {
        let value = self.get(key).ok()?;
        value
            .to_f32()
            .ok()
            .or_else(|| value.to_f64().ok().map(|v| v as f32))
    }

    pub fn optional_bool(&self, key: &str) -> Option<bool> {
        self.get(key).ok()?.to_bool().ok()
    }

    pub fn floats(&self, key: &str) -> Result<Vec<f32>, MetadataError> {
        self.array(key, "an array of numbers", |v| v.to_f32().ok())
    }

    pub fn strings(&self, key: &str) -> Result<Vec<String>, MetadataError> {
        self.array(key, "an array of strings", |v| v.to_string().ok().cloned())
    }

    /// Every element of an array value, each read by `read`.
    fn array<T>(
        &self,
        key: &str,
        expected: &'static str,
        read: impl Fn(&Value) -> Option<T>,
    ) -> Result<Vec<T>, MetadataError> {
        let Value::Array(values) = self.get(key)? else {
            return Err(Self::wrong(key, "an array"));
        };
        values
            .iter()
            .map(|v| read(v).ok_or_else(|| Self::wrong(key, expected)))
            .collect()
    }
}

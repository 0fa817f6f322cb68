//! Generated tokens into text that is safe to send piece by piece: only whole UTF-8 characters
//! (a character split across tokens waits for its last byte), and never any part of a stop
//! sequence (text that could still become one is held back until it is ruled out).

use crate::tokenizer::{ModelTokenizer, TokenizerError};

/// What one more token produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text that can go out now (possibly empty).
    Text(String),
    /// A stop sequence appeared: the text before it, then the answer ends.
    Stop(String),
}

pub struct TextStream {
    tokens: Vec<u32>,
    /// Tokens before this index are already in `decoded`.
    prefix: usize,
    read: usize,
    /// Decoded text not yet sent.
    pending: String,
    stops: Vec<String>,
}

impl TextStream {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            tokens: Vec::new(),
            prefix: 0,
            read: 0,
            pending: String::new(),
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    pub fn push(
        &mut self,
        tokenizer: &ModelTokenizer,
        token: u32,
    ) -> Result<Piece, TokenizerError> {
        self.tokens.push(token);
        // Decoding from a few tokens back keeps the spacing right for tokenizers whose first
        // token of a sequence decodes differently.
        let before = tokenizer.decode(&self.tokens[self.prefix..self.read])?;
        let after = tokenizer.decode(&self.tokens[self.prefix..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') && after.starts_with(&before)
        {
            self.pending.push_str(&after[before.len()..]);
            self.prefix = self.read;
            self.read = self.tokens.len();
        }
        Ok(self.release())
    }

    /// The text still held back once the answer has ended for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    fn release(&mut self) -> Piece {
        let found = self
            .stops
            .iter()
            .filter_map(|stop| self.pending.find(stop.as_str()))
            .min();
        if let Some(at) = found {
            let text = self.pending[..at].to_owned();
            self.pending.clear();
            return Piece::Stop(text);
        }
        let held = self.partial_stop_len();
        let cut = self.pending.len() - held;
        let text = self.pending[..cut].to_owned();
        self.pending.drain(..cut);
        Piece::Text(text)
    }

    /// The length of the longest end of `pending` that begins some stop sequence.
    fn partial_stop_len(&self) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| {
                stop.char_indices()
                    .skip(1)
                    .map(|(i, _)| &stop[..i])
                    .filter(|prefix| self.pending.ends_with(prefix))
                    .map(str::len)
            })
            .max()
            .unwrap_or(0)
    }
}

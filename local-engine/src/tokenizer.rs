//! The model's tokenizer, built from its GGUF metadata (`tokenizer.ggml.*`) into a `tokenizers`
//! tokenizer, so that no separate `tokenizer.json` is needed.
//!
//! Both GGUF vocabulary kinds are supported: byte-level BPE (`tokenizer.ggml.model = gpt2`:
//! SmolLM, Llama 3, Qwen 2 and 3, …), whose pre-tokenizer (how text is cut before BPE) is named by
//! `tokenizer.ggml.pre` and uses the regular expressions llama.cpp uses for that name; and
//! SentencePiece (`llama`: TinyLlama, Llama 2, Mistral). Both give llama.cpp's ids for the same
//! text (the tests check it).

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{
    NormalizerWrapper, Prepend, Replace, Sequence as NormalizerSequence,
};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::metadata::{Metadata, MetadataError};

/// GGUF token types (llama.cpp's `llama_token_type`).
const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("tokenizer model '{0}' is not supported (supported: gpt2, llama)")]
    UnsupportedModel(String),
    #[error("tokenizer pre-processing '{0}' is not supported")]
    UnsupportedPre(String),
    #[error("the vocabulary is malformed: {0}")]
    Malformed(String),
}

/// A model's tokenizer and its special tokens.
#[derive(Clone)]
pub struct ModelTokenizer {
    inner: Tokenizer,
    pub bos: Option<u32>,
    pub eos: u32,
    /// Tokens that end a turn besides `eos` (`<|im_end|>`, `<|eot_id|>`, …).
    pub end_of_turn: Vec<u32>,
    /// Whether a BOS token is put before every prompt.
    pub add_bos: bool,
    tokens: Vec<String>,
}

impl ModelTokenizer {
    pub fn from_gguf(content: &Content) -> Result<Self, TokenizerError> {
        let metadata = Metadata(content);
        let tokens = metadata.strings("tokenizer.ggml.tokens")?;
        let types = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(Value::Array(values)) => values
                .iter()
                .map(|v| v.to_i32().unwrap_or(1))
                .collect::<Vec<_>>(),
            _ => vec![1; tokens.len()],
        };
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id as u32))
            .collect();
        let mut inner = match metadata.string("tokenizer.ggml.model")? {
            "gpt2" => byte_level_bpe(&metadata, vocab)?,
            "llama" => sentencepiece(&metadata, &tokens, &types, vocab)?,
            other => return Err(TokenizerError::UnsupportedModel(other.to_owned())),
        };
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| matches!(**t, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
            .map(|(token, _)| AddedToken::from(token.clone(), true))
            .collect();
        inner
            .add_special_tokens(special)
            .map_err(|e| TokenizerError::Malformed(e.to_string()))?;

        let id = |key: &str| metadata.optional_u32(key);
        let eos = id("tokenizer.ggml.eos_token_id")
            .ok_or(MetadataError::Missing("tokenizer.ggml.eos_token_id".into()))?;
        let end_of_turn = [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end|>",
            "<end_of_turn>",
            "<|eom_id|>",
        ]
        .iter()
        .filter_map(|t| inner.token_to_id(t))
        .chain(id("tokenizer.ggml.eot_token_id"))
        .filter(|t| *t != eos)
        .collect();
        Ok(Self {
            bos: id("tokenizer.ggml.bos_token_id"),
            eos,
            end_of_turn,
            add_bos: metadata
                .optional_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(false),
            inner,
            tokens,
        })
    }

    /// The ids of `text`, special tokens written in it (`<|im_start|>`) recognised as such.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| TokenizerError::Malformed(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The ids of a rendered prompt, with BOS first when the model wants it and the template did
    /// not already put it there.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let mut ids = self.encode(text)?;
        if let Some(bos) = self.bos.filter(|_| self.add_bos)
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// The text of `ids`; special tokens are skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.inner
            .decode(ids, true)
            .map_err(|e| TokenizerError::Malformed(e.to_string()))
    }

    /// The raw bytes of one token, for `logprobs`.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.decode(&[id])
            .map(String::into_bytes)
            .unwrap_or_default()
    }

    /// The text of a token as the vocabulary spells it (`<|im_end|>`), for lookups and logs.
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Whether generating `id` ends the answer.
    pub fn is_end(&self, id: u32) -> bool {
        id == self.eos || self.end_of_turn.contains(&id)
    }
}

/// Byte-level BPE (`gpt2`): merges from the file, text cut by the pre-tokenizer's expressions,
/// bytes mapped to printable characters.
fn byte_level_bpe(metadata: &Metadata, vocab: Vocab) -> Result<Tokenizer, TokenizerError> {
    let pre = metadata
        .optional_string("tokenizer.ggml.pre")
        .unwrap_or("default");
    let splits = split_expressions(pre)?;
    let merges = metadata
        .strings("tokenizer.ggml.merges")?
        .iter()
        .map(|merge| {
            merge
                .split_once(' ')
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .ok_or_else(|| TokenizerError::Malformed(format!("merge '{merge}'")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.starts_with("llama3") || pre == "llama-bpe")
        .build()
        .map_err(|e| TokenizerError::Malformed(e.to_string()))?;
    let mut pre_tokenizers = Vec::new();
    for expression in splits {
        let split = Split::new(
            SplitPattern::Regex(expression.to_owned()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| TokenizerError::Malformed(e.to_string()))?;
        pre_tokenizers.push(PreTokenizerWrapper::Split(split));
    }
    pre_tokenizers.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, false, false,
    )));
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_pre_tokenizer(Some(Sequence::new(pre_tokenizers)))
        .with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tokenizer)
}

/// SentencePiece (`llama`: TinyLlama, Llama 2, Mistral): spaces become `▁`, a leading `▁` is
/// added, and pieces merge pairwise, the pair whose merged piece scores highest first, as
/// llama.cpp does; characters outside the vocabulary fall back to `<0xXX>` byte tokens. The
/// file has no merge list: it is derived from the scores (every piece that splits into two
/// pieces gives a merge ranked by its score).
fn sentencepiece(
    metadata: &Metadata,
    tokens: &[String],
    types: &[i32],
    vocab: Vocab,
) -> Result<Tokenizer, TokenizerError> {
    let scores = metadata.floats("tokenizer.ggml.scores")?;
    let mut merges: Vec<(f32, u32, String, String)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if types.get(id) != Some(&TOKEN_TYPE_NORMAL) {
            continue;
        }
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                let score = scores.get(id).copied().unwrap_or(f32::MIN);
                merges.push((score, id as u32, left.to_owned(), right.to_owned()));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let merges = merges.into_iter().map(|(_, _, l, r)| (l, r)).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true);
    if let Some(unk) = metadata
        .optional_u32("tokenizer.ggml.unknown_token_id")
        .and_then(|id| tokens.get(id as usize))
    {
        builder = builder.unk_token(unk.clone());
    }
    let bpe = builder
        .build()
        .map_err(|e| TokenizerError::Malformed(e.to_string()))?;
    let mut normalizers = Vec::new();
    if metadata
        .optional_bool("tokenizer.ggml.add_space_prefix")
        .unwrap_or(true)
    {
        normalizers.push(NormalizerWrapper::Prepend(Prepend::new("▁".to_owned())));
    }
    normalizers.push(NormalizerWrapper::Replace(
        Replace::new(" ", "▁").map_err(|e| TokenizerError::Malformed(e.to_string()))?,
    ));
    let decoders = vec![
        DecoderWrapper::Replace(
            Replace::new("▁", " ").map_err(|e| TokenizerError::Malformed(e.to_string()))?,
        ),
        DecoderWrapper::ByteFallback(ByteFallback::default()),
        DecoderWrapper::Fuse(Fuse::default()),
        DecoderWrapper::Strip(Strip::new(' ', 1, 0)),
    ];
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(|e| TokenizerError::Malformed(e.to_string()))?
        .with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tokenizer)
}

/// llama.cpp's pre-tokenizer expressions for each `tokenizer.ggml.pre` name.
fn split_expressions(pre: &str) -> Result<Vec<&'static str>, TokenizerError> {
    Ok(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "dbrx" | "smaug-bpe" => vec![LLAMA3_SPLIT],
        "qwen2" | "stablelm2" | "hunyuan" => vec![QWEN2_SPLIT],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            vec![r"\p{N}", GPT2_SPLIT]
        }
        "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "trillion" => vec![GPT2_SPLIT],
        "default" => vec![
            r"[\p{P}\$\+<=>\^~\|]+",
            GPT2_SPLIT,
            r"\p{N}+",
            r"[0-9][0-9][0-9]",
        ],
        other => return Err(TokenizerError::UnsupportedPre(other.to_owned())),
    })
}

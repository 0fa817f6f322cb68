//! SentencePiece vocabularies (TinyLlama, Llama 2, Mistral) against llama.cpp, on a small
//! vocabulary of our own (`reference/make_spm_reference.py` made it and the reference ids).

use candle_core::quantized::gguf_file::Content;
use serde::Deserialize;
use switchboard_local_engine::tokenizer::ModelTokenizer;

#[derive(Deserialize)]
struct Reference {
    strings: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
}

fn tokenizer() -> ModelTokenizer {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/spm-vocab.gguf"
    );
    let mut file = std::fs::File::open(path).unwrap();
    ModelTokenizer::from_gguf(&Content::read(&mut file).unwrap()).unwrap()
}

#[test]
fn token_ids_match_llama_cpp() {
    let tokenizer = tokenizer();
    let reference: Reference = serde_json::from_str(include_str!("reference/spm.json")).unwrap();
    for case in reference.strings {
        assert_eq!(
            tokenizer.encode(&case.text).unwrap(),
            case.ids,
            "{:?}",
            case.text
        );
    }
}

#[test]
fn text_round_trips_with_byte_fallback() {
    let tokenizer = tokenizer();
    // Most of these characters are not in the vocabulary: they travel as <0xXX> byte tokens.
    for text in [
        "Hello world",
        "Café 中文 🚀 xylophone",
        "two  spaces\nand a newline",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    }
    assert!(tokenizer.add_bos, "the vocabulary asks for BOS");
    assert_eq!(
        tokenizer.encode_prompt("Hi").unwrap()[0],
        tokenizer.bos.unwrap()
    );
}

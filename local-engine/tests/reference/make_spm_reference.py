"""Makes a small SentencePiece (llama-type) vocabulary as a vocab-only GGUF file, and llama.cpp's
token ids for fixed strings with it, so that local-engine's SentencePiece tokenizer (TinyLlama,
Llama 2, Mistral) is checked against llama.cpp without a multi-gigabyte model.

The vocabulary is trained here, with the `sentencepiece` package, on text of this script's own
(the CORPUS below): it is our data, not a model's.

Usage: python make_spm_reference.py   (writes spm-vocab.gguf and spm.json beside this file)
Needs: pip install sentencepiece gguf llama-cpp-python==0.3.36
"""

import io
import json
from pathlib import Path

import gguf
import sentencepiece as spm
from llama_cpp import Llama

HERE = Path(__file__).parent

CORPUS = """
Switchboard is the front door for enterprise chat traffic. It speaks the OpenAI API, reads every
request with a small embedding model, and answers it either with a small language model running
in-process on the gateway's own CPU, or by escalating it to a remote large model.
How do I reset my VPN password? My laptop does not connect to the printer on the third floor.
Please order a new monitor for the design team; the old one flickers. I'll be out of office
tomorrow, can you move the meeting to Friday at 10:30? The quarterly report is due on 2026-11-30.
def add(a, b):
    return a + b
The capital of France is Paris. Café, naïve, Straße and Ελληνικά are words too.
"""

STRINGS = [
    "Hello world",
    "How do I reset my VPN password?",
    "  two leading spaces and   three inside",
    "don't won't I'll",
    "Numbers 12345 and 3.14",
    "Café naïve Straße Ελληνικά 中文 🚀",
    "def add(a, b):\n    return a + b\n",
    "unseen words: xylophone zebra quokka",
]


def main():
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS.strip().splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=500,
        hard_vocab_limit=False,
        minloglevel=2,
        byte_fallback=True,
        character_coverage=1.0,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        split_digits=True,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    tokens, scores, types = [], [], []
    for i in range(processor.get_piece_size()):
        tokens.append(processor.id_to_piece(i))
        scores.append(processor.get_score(i))
        if processor.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif processor.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif processor.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)

    path = HERE / "spm-vocab.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("switchboard test vocabulary")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    cases = [{"text": s, "ids": llm.tokenize(s.encode(), add_bos=False, special=True)} for s in STRINGS]
    rows = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in cases)
    (HERE / "spm.json").write_text("{\n \"strings\": [\n" + rows + "\n ]\n}\n")


if __name__ == "__main__":
    main()

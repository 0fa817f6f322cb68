"""Makes the reference data that local-engine's tests compare against, with llama.cpp
(llama-cpp-python 0.3.36 from PyPI) on the same GGUF file:

- token ids of fixed strings (llama.cpp's tokenizer, special tokens parsed);
- prompts rendered from fixed conversations with the GGUF's own chat template (jinja2, as
  llama-cpp-python renders it), their token ids, llama.cpp's greedy continuation, and at each
  of its steps the margin by which llama.cpp's choice led its runner-up (a near tie there may
  go either way in another engine).

Usage: python make_reference.py MODEL.gguf > smollm2.json
Needs: pip install cmake ninja && CMAKE_BUILD_PARALLEL_LEVEL=2 pip install llama-cpp-python==0.3.36
(it builds from source in about 6 minutes; the test suite does not need it, only this file's output).
"""

import json
import sys

import jinja2
import numpy as np
from llama_cpp import Llama

STRINGS = [
    "Hello, world!",
    "How do I reset my VPN password?",
    "  leading spaces, trailing spaces   ",
    "don't won't I'll we've they're it's",
    "Numbers: 3.14159, 1234567890, 42nd, 2026-11-26",
    "Ünïcödé: café, naïve, Straße, Ελληνικά, русский, 中文分词, 日本語",
    "Emoji 🚀🔥👍🏽 and symbols ∑∫√ ≤ ≥ → ©",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "line one\n\nline three\r\n\ttabbed\n   \n",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "mixed<|im_end|>special tokens <|endoftext|>inside",
]

# Conversations whose greedy answer both engines must produce token for token ("exact"), and
# conversations where llama.cpp's greedy choice is, at some step, a near-tie with the runner-up:
# there the two engines' small numerical differences (different kernels and accumulation order,
# logits differing with a standard deviation of about 0.15) may pick either, and the test checks
# every step with the reference's own tokens fed in ("near_tie").
CONVERSATIONS = [
    ("exact", [{"role": "user", "content": "What is the capital of France?"}]),
    ("exact", [
        {"role": "system", "content": "You are an IT help desk assistant."},
        {"role": "user", "content": "How do I reset my VPN password?"},
    ]),
    ("exact", [{"role": "user", "content": "Write a Python function that reverses a string."}]),
    ("exact", [{"role": "user", "content": "List three tips for a strong password."}]),
    ("near_tie", [{"role": "user", "content": "Write a Python function that adds two numbers."}]),
    ("near_tie", [{"role": "user", "content": "What is 12 times 7?"}]),
    ("near_tie", [{"role": "user", "content": "Translate 'good morning' into Spanish."}]),
]

GREEDY_TOKENS = 24


def main(path):
    # An f32 KV cache (llama.cpp defaults to f16): the reference is then the more exact of the
    # two, and near-ties between tokens are not decided by the cache's rounding.
    llm = Llama(model_path=path, n_ctx=2048, n_threads=2, verbose=False, type_k=0, type_v=0,
                logits_all=True)
    template = llm.metadata["tokenizer.chat_template"]
    env = jinja2.Environment(loader=jinja2.BaseLoader())
    tokens = {
        "bos_token": llm.detokenize([llm.token_bos()], special=True).decode(),
        "eos_token": llm.detokenize([llm.token_eos()], special=True).decode(),
    }
    out = {"strings": [], "conversations": []}
    for text in STRINGS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=True)
        out["strings"].append({"text": text, "ids": ids})
    for check, messages in CONVERSATIONS:
        prompt = env.from_string(template).render(
            messages=messages, add_generation_prompt=True, **tokens
        )
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        greedy = []
        llm.reset()
        for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            if token == llm.token_eos() or len(greedy) >= GREEDY_TOKENS:
                break
            greedy.append(token)
        margins = []
        for step, token in enumerate(greedy):
            logits = np.array(llm.scores[len(ids) - 1 + step], dtype=np.float32)
            runner_up = np.max(np.delete(logits, token))
            margins.append(round(float(logits[token] - runner_up), 3))
        out["conversations"].append({
            "check": check,
            "messages": messages,
            "prompt": prompt,
            "prompt_ids": ids,
            "greedy_ids": greedy,
            "greedy_margins": margins,
            "greedy_text": llm.detokenize(greedy).decode(errors="replace"),
        })
    # One string or conversation a line, so that a change reads well in a diff.
    print("{")
    for key in ("strings", "conversations"):
        rows = ",\n".join("  " + json.dumps(row, ensure_ascii=False) for row in out[key])
        print(f' "{key}": [\n{rows}\n ]' + ("," if key == "strings" else ""))
    print("}")


if __name__ == "__main__":
    main(sys.argv[1])

"""llama.cpp (llama-cpp-python) on the same GGUF, the same two threads and the same prompt tokens
as Switchboard's engine (read from the figures bench/src/bin/local_engine.rs wrote), then both
side by side with the ratios. Run by bench/local_engine.sh."""

import json
import statistics
import sys
import time

from llama_cpp import Llama

THREADS = 2
REPEATS = 3


def run(llm, ids, max_tokens, reset=True):
    """(seconds to the first token, tokens generated, seconds from the first token to the last)."""
    if reset:
        llm.reset()  # otherwise llama-cpp-python reuses the longest common prefix
    started = time.perf_counter()
    first = None
    count = 0
    for token in llm.generate(ids, temp=0.0, top_k=1, reset=reset):
        count += 1
        if first is None:
            first = time.perf_counter()
        if token == llm.token_eos() or count >= max_tokens:
            break
    return first - started, count, time.perf_counter() - first


def main(model, ours_path):
    ours = json.load(open(ours_path))
    prompts = ours["prompts"]
    llm = Llama(model_path=model, n_threads=THREADS, n_threads_batch=THREADS, n_ctx=2048,
                n_batch=512, verbose=False)
    run(llm, prompts["decode"][:8], 4)  # warm-up

    firsts = [run(llm, prompts["prefill"], 1)[0] for _ in range(REPEATS)]
    first = statistics.median(firsts)
    decodes = []
    for _ in range(REPEATS):
        _, count, seconds = run(llm, prompts["decode"], ours["decode_tokens"])
        decodes.append((count - 1) / seconds)
    cold = run(llm, prompts["system_cold"], 1)[0]
    warm = run(llm, prompts["system_warm"], 1, reset=False)[0]
    theirs = {
        "prefill_tokens_per_s": len(prompts["prefill"]) / first,
        "first_token_ms": first * 1000,
        "decode_tokens_per_s": statistics.median(decodes),
        "system_prompt_first_token_ms": {"cold": cold * 1000, "warm": warm * 1000},
    }

    rows = [
        (f"prompt processing, {len(prompts['prefill'])} tokens (tokens/s)",
         ours["prefill_tokens_per_s"], theirs["prefill_tokens_per_s"]),
        ("time to first token, same prompt (ms)", ours["first_token_ms"], theirs["first_token_ms"]),
        (f"decoding, {ours['decode_tokens']} tokens (tokens/s)",
         ours["decode_tokens_per_s"], theirs["decode_tokens_per_s"]),
        (f"first token, {ours['system_prompt_tokens']}-token system prompt, cold (ms)",
         ours["system_prompt_first_token_ms"]["cold"], theirs["system_prompt_first_token_ms"]["cold"]),
        ("first token, same system prompt again (ms)",
         ours["system_prompt_first_token_ms"]["warm"], theirs["system_prompt_first_token_ms"]["warm"]),
    ]
    print(f"{'':58} {'switchboard':>12} {'llama.cpp':>12} {'ratio':>7}")
    for name, a, b in rows:
        print(f"{name:58} {a:12.1f} {b:12.1f} {a / b:7.2f}")
    for key, what in (("aggregate_decoding_tokens_per_s", "decoding"),
                      ("aggregate_tokens_per_s", "over wall time")):
        aggregate = ours[key]
        single = aggregate["1"]
        for streams, rate in aggregate.items():
            name = f"switchboard, {streams} concurrent streams, {what} (tokens/s)"
            print(f"{name:58} {rate:12.1f} {'':>12} {rate / single:6.2f}x")
    print("(ratio: switchboard / llama.cpp for rates, the same for times (lower is better); "
          "concurrent streams' ratio is against one stream. Decoding: the tokens after each "
          "stream's first, from the first first token to the last; wall time includes prompts)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

"""The router's latency against ONNX Runtime and sentence-transformers, same model, same texts,
same machine, same run, two threads each.

For 16, 64 and 256 tokens: p50/p99 of one embedding (tokenize, forward, mean pool, normalise) on
each runtime, and of Switchboard's full scoring (embedding of the routing text, heads, PII,
language); then requests per second with 8 concurrent callers at 64 tokens. Run by
bench/router.sh, which builds `router_latency` and supplies the Python packages.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Tokenizer
from transformers import AutoModel

THREADS = 2
WARMUP, SAMPLES = 5, 60
TOKENS = [16, 64, 256]
CALLERS, RUN_SECONDS = 8, 8.0
SENTENCE = ("My laptop keeps losing the connection to the office wifi whenever I move between "
            "meeting rooms, and the VPN client then asks for my password again. ")


def texts_of_exact_length(tokenizer):
    """Texts that tokenize to exactly n tokens, [CLS] and [SEP] included."""
    words = (SENTENCE * 40).split()
    texts = {}
    for n in TOKENS:
        lo, hi = 1, len(words)
        while lo < hi:  # the longest prefix of words with at most n tokens
            mid = (lo + hi + 1) // 2
            if len(tokenizer.encode(" ".join(words[:mid])).ids) <= n:
                lo = mid
            else:
                hi = mid - 1
        text = " ".join(words[:lo])
        while len(tokenizer.encode(text).ids) < n:
            text += " a"
        texts[str(n)] = text
    return texts


def percentiles(call):
    for _ in range(WARMUP):
        call()
    millis = []
    for _ in range(SAMPLES):
        started = time.perf_counter()
        call()
        millis.append((time.perf_counter() - started) * 1e3)
    millis.sort()
    return statistics.median(millis), millis[round((len(millis) - 1) * 0.99)]


def onnx_session(model_dir, out):
    if not out.exists():
        class LastHiddenState(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = AutoModel.from_pretrained(model_dir).eval()

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state

        dummy = torch.ones(1, 8, dtype=torch.long)
        with torch.no_grad():
          torch.onnx.export(
            LastHiddenState(), (dummy, dummy, torch.zeros_like(dummy)), out, dynamo=False,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={k: {0: "batch", 1: "sequence"}
                          for k in ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]},
            opset_version=17,
          )
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])


def ort_embed(session, tokenizer, text):
    encoding = tokenizer.encode(text)
    ids = np.array([encoding.ids], dtype=np.int64)
    mask = np.array([encoding.attention_mask], dtype=np.int64)
    hidden = session.run(None, {"input_ids": ids, "attention_mask": mask,
                                "token_type_ids": np.zeros_like(ids)})[0]
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def throughput(call):
    done, stop = [0], time.perf_counter() + RUN_SECONDS
    lock = threading.Lock()

    def caller():
        while time.perf_counter() < stop:
            call()
            with lock:
                done[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.perf_counter() - started)


def main():
    binary, model_dir, work = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(THREADS)
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to a fixed length, which would time padding
    tokenizer.no_truncation()
    texts = texts_of_exact_length(tokenizer)
    tokenizer.enable_truncation(256)
    texts_file = work / "router_texts.json"
    texts_file.write_text(json.dumps(texts))

    switchboard = json.loads(subprocess.run(
        [binary, model_dir, texts_file], check=True, capture_output=True, text=True,
        env=dict(os.environ, RAYON_NUM_THREADS=str(THREADS)),
    ).stdout)
    session = onnx_session(model_dir, work / "minilm.onnx")
    sentence_transformers = SentenceTransformer(str(model_dir), device="cpu")

    print(f"all-MiniLM-L6-v2, {THREADS} threads each, p50 / p99 in ms (lower is better)")
    print(f"{'tokens':>6} | {'switchboard embed':>18} | {'onnxruntime':>14} | {'sent.-transf.':>14} |"
          f" {'ratio ort/sb':>12} | {'switchboard full scoring, new request':>38} |"
          f" {'repeated request':>16}")
    for n in TOKENS:
        text = texts[str(n)]
        ours = switchboard[str(n)]
        ort_p50, ort_p99 = percentiles(lambda: ort_embed(session, tokenizer, text))
        st_p50, st_p99 = percentiles(lambda: sentence_transformers.encode([text]))
        print(f"{n:>6} | {ours['embed_p50_ms']:>7.2f} / {ours['embed_p99_ms']:>7.2f} |"
              f" {ort_p50:>6.2f} / {ort_p99:>5.2f} | {st_p50:>6.2f} / {st_p99:>5.2f} |"
              f" {ort_p50 / ours['embed_p50_ms']:>11.2f}x |"
              f" {ours['score_p50_ms']:>6.2f} / {ours['score_p99_ms']:>6.2f}"
              f" ({ours['routing_text_tokens']} tokens read) |"
              f" {ours['repeat_p50_ms']:>6.3f} / {ours['repeat_p99_ms']:>6.3f}")
    text = texts["64"]
    ort_rate = throughput(lambda: ort_embed(session, tokenizer, text))
    ours = switchboard["throughput_8_callers_64_tokens_per_s"]
    print(f"8 concurrent callers, 64 tokens, distinct requests: switchboard {ours:.0f}/s (full scoring, micro-batched),"
          f" onnxruntime {ort_rate:.0f}/s (embedding only); ratio {ours / ort_rate:.2f}x")


if __name__ == "__main__":
    main()

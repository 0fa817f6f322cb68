"""`switchboard route` and `switchboard router label` as a user runs them: real model weights,
real process, output parsed as documented."""

import json
import subprocess
from harness import BIN


def route(*args, stdin=None):
    done = subprocess.run([BIN / "switchboard", "route", "--json", *args], input=stdin,
                          capture_output=True, text=True, check=True, timeout=120)
    return json.loads(done.stdout)


def test_route_prints_the_documented_object():
    scores = route("My card 4111 1111 1111 1111 was charged twice, mail me at ann@example.com")
    assert 0 <= scores["complexity"] <= 1
    assert abs(sum(scores["domain"].values()) - 1) < 1e-4
    assert max(scores["domain"], key=scores["domain"].get) == "finance"
    assert sorted(p["kind"] for p in scores["pii"]) == ["email", "payment_card"]
    email = next(p for p in scores["pii"] if p["kind"] == "email")
    assert email["end"] - email["start"] == len("ann@example.com")
    assert scores["language"] == "en"
    assert scores["tokens"] > 10
    assert scores["nearest"] and all(n["text"] for n in scores["nearest"])


def test_route_reads_a_conversation_from_stdin():
    conversation = {"messages": [
        {"role": "system", "content": "You are the IT help desk."},
        {"role": "user", "content": "Mein Drucker druckt nur leere Seiten, was kann ich tun?"},
    ]}
    scores = route(stdin=json.dumps(conversation))
    assert scores["language"] == "de"
    easy = scores["complexity"]
    hard = route("Prove that every bounded monotone sequence of real numbers converges, "
                 "then show that the sequence (1 + 1/n)^n is bounded and increasing.")
    assert easy < hard["complexity"]


def test_router_label_writes_one_label_per_question(tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text("\n".join(json.dumps(q) for q in [
        {"question": "What is the capital of France?", "choices": ["Berlin", "Paris", "Rome"],
         "answer": 1, "domain": "general_knowledge"},
        {"question": "Which planet is known as the red planet?",
         "choices": ["Venus", "Mars", "Jupiter", "Saturn"], "answer": "B"},
    ]))
    out = tmp_path / "labels.jsonl"
    done = subprocess.run(
        [BIN / "switchboard", "router", "label", "--gsm8k", "0", "--questions", questions, "--out", out],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    labels = [json.loads(line) for line in out.read_text().splitlines()]
    assert [l["source"] for l in labels] == ["multiple_choice"] * 2
    assert all(isinstance(l["hard"], bool) for l in labels)
    assert labels[0]["domain"] == "general_knowledge"
    assert "B. Paris" in labels[0]["text"]
    right = sum(not l["hard"] for l in labels)
    assert f"{right} of 2 right" in done.stdout

#!/usr/bin/env python3
"""Checks files of the enterprise development set against LABELLING.md and prints their counts.

usage: python3 check.py FILE.jsonl [...]
"""
import collections
import json
import re
import sys

DOMAINS = {"it_helpdesk", "hr", "finance", "legal", "coding", "math", "small_talk", "general_knowledge"}
KINDS = {"person", "personal_id", "national_id", "address", "date_of_birth", "special_category",
         "email", "phone", "iban", "payment_card", "us_ssn", "ip_address", "secret"}
MARK = re.compile(r"⟦([a-z_]+)\|([^⟦⟧]+)⟧")

def main(paths):
    problems = 0
    domains, routes, langs, kinds = (collections.Counter() for _ in range(4))
    seen, seen_anywhere = set(), set()
    total = with_pii = shared = 0
    for path in paths:
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                print(f"{where}: not JSON: {e}"); problems += 1; continue
            text = row.get("text")
            if not isinstance(text, str) or not text.strip():
                print(f"{where}: no text"); problems += 1; continue
            if set(row) - {"text", "domain", "route", "lang"}:
                print(f"{where}: unknown fields {set(row) - {'text', 'domain', 'route', 'lang'}}"); problems += 1
            if row.get("domain") not in DOMAINS:
                print(f"{where}: domain {row.get('domain')!r}"); problems += 1
            if row.get("route") not in ("local", "remote"):
                print(f"{where}: route {row.get('route')!r}"); problems += 1
            if row.get("lang") not in ("en", "fr", "de", "es"):
                print(f"{where}: lang {row.get('lang')!r}"); problems += 1
            marks = MARK.findall(text)
            for kind, _ in marks:
                if kind not in KINDS:
                    print(f"{where}: kind {kind!r}"); problems += 1
            plain = MARK.sub(lambda m: m.group(2), text)
            if "⟦" in plain or "⟧" in plain:
                print(f"{where}: a mark is malformed"); problems += 1
            # Within one file a repeat is a slip; across writers short messages ("hi!") recur
            # naturally, and the loader keeps a test message out of the training files.
            if (path, plain) in seen:
                print(f"{where}: duplicate message"); problems += 1
            elif plain in seen_anywhere:
                shared += 1
            seen.add((path, plain))
            seen_anywhere.add(plain)
            total += 1
            domains[row.get("domain")] += 1
            routes[(row.get("domain"), row.get("route"))] += 1
            langs[row.get("lang")] += 1
            with_pii += bool(marks)
            kinds.update(k for k, _ in marks)
    print(f"{total} messages, {with_pii} with private data, {problems} problems")
    if shared:
        print(f"  {shared} messages also written by another writer")
    for d in sorted(DOMAINS):
        print(f"  {d:<18} {domains[d]:>4}  local {routes[(d, 'local')]:>3}  remote {routes[(d, 'remote')]:>3}")
    print("  languages:", dict(langs))
    print("  kinds:", dict(kinds))
    return 1 if problems else 0

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

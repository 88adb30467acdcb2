"""Loading the shared wire-contract test vectors (tests/vectors/*.json)."""

from __future__ import annotations

import json
from pathlib import Path

VECTORS = Path(__file__).parent / "vectors"


def payload_bytes(case: dict) -> bytes:
    if "payload" in case:
        return json.dumps(case["payload"], separators=(",", ":"), ensure_ascii=False).encode()
    if "payload_text" in case:
        return case["payload_text"].encode()
    if "payload_hex" in case:
        return bytes.fromhex(case["payload_hex"])
    repeat = case["payload_repeat"]
    return (repeat["text"] * repeat["times"]).encode()


def load_cases() -> list[dict]:
    """The wire contract's cases: every file with ``cases``. Other vectors (``scenarios``,
    such as ticket_queue.json, the resident counter's queue) have tests of their own."""
    cases = []
    for path in sorted(VECTORS.glob("*.json")):
        vectors = json.loads(path.read_text(encoding="utf-8"))
        if "scenarios" in vectors and "cases" not in vectors:
            continue
        for case in vectors["cases"]:
            cases.append({**case, "file": path.name})
    return cases

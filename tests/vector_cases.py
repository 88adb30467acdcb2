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
    cases = []
    for path in sorted(VECTORS.glob("*.json")):
        for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
            cases.append({**case, "file": path.name})
    return cases

"""Parsing throughput: the linear-time text/Markdown/HTML parsers against ``unstructured``'s
partitioners, measured in the same run on the same bytes (``python -m bench parsing``).

The baseline runs on a small slice (unstructured classifies each paragraph with spaCy, ~20-30 KB/s
here); the fast path on the slice (for the ratio) and on a 49 MB text file, end to end through
``rag.parsing.parse`` (decoding included).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from rag.config import ParsingSettings
from rag.parsing import parse

WORDS = [
    "the",
    "quarterly",
    "budget",
    "review",
    "covers",
    "travel",
    "hiring",
    "payroll",
    "revenue",
    "forecast",
    "policy",
    "team",
    "office",
    "security",
    "incident",
    "customer",
    "contract",
    "renewal",
    "schedule",
    "approval",
    "manager",
]


def corpus(size: int, seed: int = 7) -> dict[str, bytes]:
    rng = random.Random(seed)
    parts: list[str] = []
    total = 0
    i = 0
    while total < size:
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 90)))
        parts += [f"Section {i} Overview", body.capitalize() + ".", "- first item\n- second item"]
        total += len(body) + 60
        i += 1
    text = "\n\n".join(parts)
    md = "\n\n".join(("## " + p) if p.startswith("Section") else p for p in parts)
    html = "".join(f"<h2>{p}</h2>" if p.startswith("Section") else f"<p>{p}</p>" for p in parts)
    return {
        "a.txt": text.encode()[:size],
        "a.md": md.encode()[:size],
        "a.html": f"<html><head><title>T</title></head><body>{html}</body></html>".encode(),
    }


def rate(data: bytes, name: str, settings: ParsingSettings, repeats: int) -> float:
    """Median MB/s over ``repeats`` parses."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        parse(data, name, settings)
        times.append(time.perf_counter() - start)
    return len(data) / statistics.median(times) / 1e6


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench parsing")
    parser.add_argument("--slice-kb", type=int, default=100, help="bytes the baseline parses")
    parser.add_argument("--big-mb", type=int, default=49, help="size of the large text file")
    args = parser.parse_args(argv)
    fast = ParsingSettings()
    slow = ParsingSettings(text_parser="unstructured", min_timeout_seconds=3600)
    print(f"parsing throughput (MB/s, median), baseline on a {args.slice_kb} KB slice")
    print(f"{'format':8} {'unstructured':>13} {'fast':>9} {'ratio':>8}")
    for name, data in corpus(args.slice_kb * 1000).items():
        parse(data[:2000], name, slow)  # warm spaCy and imports outside the timing
        base = rate(data, name, slow, repeats=1)
        ours = rate(data, name, fast, repeats=5)
        print(f"{name[2:]:8} {base:13.3f} {ours:9.2f} {ours / base:7.0f}x")
    big = corpus(args.big_mb * 1_000_000)["a.txt"]
    start = time.perf_counter()
    elements = parse(big, "big.txt", fast)
    seconds = time.perf_counter() - start
    print(
        f"{len(big) / 1e6:.0f} MB text file: {seconds:.1f} s ({len(big) / seconds / 1e6:.1f} MB/s),"
        f" {len(elements)} elements"
    )


if __name__ == "__main__":
    main([])

#!/usr/bin/env python
"""Batch-encoding throughput of CogViewTokenizer (sentencepiece) vs CogViewTokenizerFast (tokenizers) on CogView's
real SentencePiece model, over random Chinese/English/emoji captions. Writes a JSON result."""

import argparse
import json
import platform
import random
import time
from pathlib import Path

import torch

from processing_cogview import CogViewTokenizer, CogViewTokenizerFast


ROOT = Path(__file__).resolve().parent.parent
SP_MODEL = ROOT / "tests" / "fixtures" / "golden" / "tokenizer" / "cog-pretrain.model"


def captions(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    chinese = [chr(c) for c in range(0x4E00, 0x9FFF)]
    words = "a cat dog girl boy tiger on the grass red car parked by sea beautiful painting of mountain".split()
    out = []
    for i in range(count):
        if i % 2:
            out.append("".join(rng.choice(chinese) for _ in range(rng.randint(5, 30))))
        else:
            out.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 15))) + rng.choice(["", " 🐱", "!"]))
    return out


def throughput(tokenizer, texts: list[str], batch_size: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            tokenizer(texts[i : i + batch_size], add_special_tokens=False)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--batch_size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "tokenizer_speed.json"))
    args = parser.parse_args()
    texts = captions(args.texts)
    rows = []
    for name, tokenizer in (("slow (sentencepiece)", CogViewTokenizer(vocab_file=str(SP_MODEL))),
                            ("fast (tokenizers)", CogViewTokenizerFast(vocab_file=str(SP_MODEL)))):  # fmt: skip
        speed = throughput(tokenizer, texts, args.batch_size, args.repeats)
        rows.append({"tokenizer": name, "texts_per_s": round(speed)})
        print(f"{name:22s} {speed:10.0f} texts/s")
    result = {
        "benchmark": "tokenizer_speed",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/tokenizer_speed.py",
        "texts": args.texts,
        "batch_size": args.batch_size,
        "results": rows,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

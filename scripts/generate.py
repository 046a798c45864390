#!/usr/bin/env python
"""Generate images from text prompts with a CogView model: one PNG per image plus a grid (a row per prompt)."""

import argparse
import re
import sys
from pathlib import Path

import torch
from diffusers.utils import make_image_grid

from modeling_cogview.hardware import add_hardware_arguments, load_model_and_processor


DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "cogview-digits"


MEMORY = """memory: the KV cache holds layers x 2 x hidden x positions x bytes per sequence, and one call runs
batch_size x candidates sequences, twice that with --guidance_scale. At the release's size that is
48 x 2 x 2560 x 1089 x 2 B ~ 0.53 GB per fp16/bf16 sequence: --batch_size 8 --candidates 4 --guidance_scale 3 needs
~34 GB of cache on top of 7.9 GB of weights. Self-reranking scores --scoring_chunk_size candidates at a time."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, epilog=MEMORY, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder (default: the bundled digits model)")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for several")
    parser.add_argument("--prompts_file", help="a text file with one prompt per line")
    parser.add_argument("--num_images", type=int, default=4, help="images per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs", help="where the PNGs and grid.png go")
    parser.add_argument("--guidance_scale", type=float, default=None, help="classifier-free guidance (default: off)")
    parser.add_argument("--top_k", type=int, default=None, help="default: the model's generation_config")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's generation_config")
    parser.add_argument("--candidates", type=int, default=None,
                        help="self-reranking: draw N candidates per image and keep the one whose caption score is best "
                        "(default: the model's generation_config rerank_candidates, else 1)")
    parser.add_argument("--batch_size", type=int, default=8, help="images generated at once")
    parser.add_argument("--scoring_chunk_size", type=int, default=8, help="candidates scored at once by self-reranking")
    add_hardware_arguments(parser)
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.prompts_file:
        args.prompt += [line.strip() for line in Path(args.prompts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not args.prompt:
        parser.error("give at least one --prompt or a --prompts_file")
    if args.num_images < 1:
        parser.error("--num_images must be at least 1")
    if not Path(args.model).is_dir():
        parser.error(f"model folder not found: {args.model}")
    return args


def slug(text: str) -> str:
    return re.sub(r"[^\w]+", "-", text, flags=re.UNICODE).strip("-")[:40] or "prompt"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model, processor = load_model_and_processor(args.model, args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    sampling = {k: v for k, v in (("top_k", args.top_k), ("temperature", args.temperature)) if v is not None}
    candidates = args.candidates or getattr(model.generation_config, "rerank_candidates", None) or 1
    torch.manual_seed(args.seed)

    all_images = []
    for index, prompt in enumerate(args.prompt):
        try:
            inputs = processor(text=prompt).to(model.device)
        except ValueError as error:
            print(f"error: prompt {index + 1}: {error}", file=sys.stderr)
            return 2
        images = []
        for start in range(0, args.num_images, args.batch_size):
            count = min(args.batch_size, args.num_images - start)
            sequences = model.generate(
                **inputs, num_return_sequences=count * candidates, guidance_scale=args.guidance_scale,
                progress_bar=not args.no_progress, **sampling,
            )  # fmt: skip
            sequences = model.best_of(sequences, candidates, chunk_size=args.scoring_chunk_size)
            images += processor.postprocess(model.decode_image_tokens(sequences[:, -model.config.num_image_tokens :]))
        for i, image in enumerate(images):
            image.save(output_dir / f"{index:03d}-{slug(prompt)}-{i}.png")
        all_images += images
        print(f"{prompt!r}: {len(images)} images")
    grid = make_image_grid(all_images, rows=len(args.prompt), cols=args.num_images)
    grid.save(output_dir / "grid.png")
    print(f"wrote {len(all_images)} images and {output_dir / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

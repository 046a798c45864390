"""Draw images from text prompts with a CogView model: one PNG per image plus a grid (a row per prompt). Every
sampling option left unset takes the model's generation_config.json (guidance, top-k, temperature and the
self-reranking candidates of the bundled model: 2.5, 8, 0.7 and 16)."""

import argparse
import re
import sys
from pathlib import Path

from transformers import pipeline

from ..hardware import add_hardware_arguments, add_model_argument, load_model_and_processor
from ..images import image_grid


MEMORY = """memory: the KV cache holds layers x 2 x hidden x positions x bytes per sequence, and one call runs
batch_size x candidates sequences, twice that with guidance. At the release's size that is
48 x 2 x 2560 x 1089 x 2 B ~ 0.53 GB per fp16/bf16 sequence: --batch_size 8 --candidates 4 --guidance_scale 3 needs
~34 GB of cache on top of 7.9 GB of weights. Self-reranking scores --scoring_chunk_size candidates at a time."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, epilog=MEMORY, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(parser)
    parser.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for several")
    parser.add_argument("--prompts_file", help="a text file with one prompt per line")
    parser.add_argument("--num_images", type=int, default=4, help="images per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs", help="where the PNGs and grid.png go")
    parser.add_argument("--guidance_scale", type=float, default=None, help="classifier-free guidance, 1 = off (default: the model's)")
    parser.add_argument("--top_k", type=int, default=None, help="0 = off (default: the model's)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's")
    parser.add_argument("--candidates", type=int, default=None,
                        help="self-reranking: draw N candidates per image and keep the one whose caption score is best "
                        "(default: the model's rerank_candidates, else 1)")  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=8, help="images generated at once")
    parser.add_argument("--scoring_chunk_size", type=int, default=8, help="candidates scored at once by self-reranking")
    parser.add_argument("--sr_model", default=None,
                        help="a super-resolution model (folder or Hub id): each image is also doubled, NAME-2x.png and "
                        "grid-2x.png (text -> image -> 2x image)")  # fmt: skip
    parser.add_argument("--sr_mode", choices=("magnify", "low-level"), default="magnify", help="how --sr_model doubles (default: magnify)")
    add_hardware_arguments(parser)
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.prompts_file:
        args.prompt += [line.strip() for line in Path(args.prompts_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not args.prompt:
        parser.error("give at least one --prompt or a --prompts_file")
    if args.num_images < 1:
        parser.error("--num_images must be at least 1")
    if args.candidates is not None and args.candidates < 1:
        parser.error("--candidates must be at least 1")
    return args


def slug(text: str) -> str:
    return re.sub(r"[^\w]+", "-", text, flags=re.UNICODE).strip("-")[:40] or "prompt"


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model, processor = load_model_and_processor(args.model, args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    draw = pipeline("text-to-image", model=model, processor=processor)
    double = None
    if args.sr_model:
        try:
            sr_model, sr_processor = load_model_and_processor(args.sr_model, args)
            double = pipeline("image-to-image", model=sr_model, processor=sr_processor)
        except (OSError, ValueError) as error:
            print(f"error: --sr_model: {error}", file=sys.stderr)
            return 2
    options = dict(
        guidance_scale=args.guidance_scale, top_k=args.top_k, temperature=args.temperature, rerank_candidates=args.candidates,
        scoring_chunk_size=args.scoring_chunk_size, progress_bar=not args.no_progress,
    )  # fmt: skip
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    all_images, all_doubled = [], []
    for index, prompt in enumerate(args.prompt):
        images = []
        for batch, start in enumerate(range(0, args.num_images, args.batch_size)):
            count = min(args.batch_size, args.num_images - start)
            try:
                drawn = draw(prompt, num_images_per_prompt=count, seed=args.seed + 1000 * index + batch, **options)
            except ValueError as error:
                print(f"error: prompt {index + 1}: {error}", file=sys.stderr)
                return 2
            images += [output["image"] for output in drawn]
        for i, image in enumerate(images):
            image.save(output_dir / f"{index:03d}-{slug(prompt)}-{i}.png")
            if double is not None:
                doubled = double(image, prompt=prompt, mode=args.sr_mode, seed=args.seed + i, progress_bar=not args.no_progress)
                doubled.save(output_dir / f"{index:03d}-{slug(prompt)}-{i}-2x.png")
                all_doubled.append(doubled)
        all_images += images
        print(f"{prompt!r}: {len(images)} images")
    image_grid(all_images, columns=args.num_images, gap=0).save(output_dir / "grid.png")
    print(f"wrote {len(all_images)} images and {output_dir / 'grid.png'}")
    if all_doubled:
        image_grid(all_doubled, columns=args.num_images, gap=0).save(output_dir / "grid-2x.png")
        print(f"wrote {len(all_doubled)} doubled images and {output_dir / 'grid-2x.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

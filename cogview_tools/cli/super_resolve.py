"""Double images with a CogView super-resolution model (cogview-sr, or the bundled cogview-digits-sr): each image is
written at twice the size as OUTPUT_DIR/NAME-2x.png.

--mode magnify (default): the image is read at the model's size and doubled through the release's nine overlapping
windows (256 px -> 512 px in the release; 32 px -> 64 px for the bundled digits). --mode low-level: the image is read
at half the model's size and the model draws the full-size image in one go (128 px -> 256 px; 16 px -> 32 px)."""

import argparse
import sys
from pathlib import Path

from transformers import pipeline

from ..hardware import BUNDLED_MODEL, add_hardware_arguments, add_model_argument, load_model_and_processor
from ..images import read_images


BUNDLED_SR_MODEL = BUNDLED_MODEL.with_name("cogview-digits-sr")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_argument(parser, BUNDLED_SR_MODEL)
    parser.add_argument("--image", nargs="+", required=True, help="image file(s)")
    parser.add_argument("--prompt", default="", help="the images' caption, which the model conditions on (default: none)")
    parser.add_argument("--mode", choices=("magnify", "low-level"), default="magnify")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--top_k", type=int, default=None, help="0 = off (default: the model's)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's")
    parser.add_argument("--output_dir", default="outputs", help="where the doubled images go")
    add_hardware_arguments(parser)
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        images = read_images(args.image)
        model, processor = load_model_and_processor(args.model, args)
        double = pipeline("image-to-image", model=model, processor=processor)
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for path, image in zip(args.image, images):
            doubled = double(image, prompt=args.prompt, mode=args.mode, seed=args.seed, top_k=args.top_k,
                             temperature=args.temperature, progress_bar=not args.no_progress)  # fmt: skip
            target = output_dir / f"{Path(path).stem}-2x.png"
            doubled.save(target)
            print(f"{path}: {doubled.width}x{doubled.height} -> {target}")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

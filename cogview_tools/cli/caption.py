"""Caption images with a CogView model (image -> text, the release's caption layout). Prints one line per caption."""

import argparse
import sys

import torch

from ..hardware import add_hardware_arguments, add_model_argument, load_model_and_processor
from ..images import read_images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_model_argument(parser)
    parser.add_argument("--image", nargs="+", required=True, help="image file(s)")
    parser.add_argument("--num_captions", type=int, default=1, help="sampled captions per image")
    parser.add_argument("--max_new_tokens", type=int, default=None, help="default: the model's caption_length, else the release's 20")
    parser.add_argument("--greedy", action="store_true", help="the most likely caption instead of sampling")
    parser.add_argument("--seed", type=int, default=0)
    add_hardware_arguments(parser)
    args = parser.parse_args(argv)

    try:
        images = read_images(args.image)
        model, processor = load_model_and_processor(args.model, args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    torch.manual_seed(args.seed)
    options = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    if args.greedy:
        options["do_sample"] = False
    for path, image in zip(args.image, images):
        sequences = model.generate(**processor(images=image).to(model.device), num_return_sequences=args.num_captions, progress_bar=False, **options)
        for sequence in sequences:
            print(f"{path}\t{processor.decode_caption(sequence)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

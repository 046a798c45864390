"""Self-reranking (CogView §6.3): score images by the model's log-likelihood of the prompt as their caption.
Prints `score<TAB>path`, best first."""

import argparse
import sys

from ..hardware import add_hardware_arguments, add_model_argument, load_model_and_processor
from ..images import read_images


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_model_argument(parser)
    parser.add_argument("--prompt", required=True, help="the text the images should show")
    parser.add_argument("--images", nargs="+", required=True, help="candidate image files")
    parser.add_argument("--batch_size", type=int, default=8, help="images scored at once")
    add_hardware_arguments(parser)
    args = parser.parse_args(argv)

    try:
        images = read_images(args.images)
        model, processor = load_model_and_processor(args.model, args)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    scores = []
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        scores += model.caption_scores(**processor(images=chunk, text=[args.prompt] * len(chunk)).to(model.device)).tolist()
    for score, path in sorted(zip(scores, args.images), key=lambda pair: -pair[0]):
        print(f"{score:.4f}\t{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

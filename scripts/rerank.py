#!/usr/bin/env python
"""Self-reranking (CogView §6.3): score images by the model's log-likelihood of the prompt as their caption.
Prints `score<TAB>path`, best first."""

import argparse
import sys
from pathlib import Path

import torch

from modeling_cogview import CogViewForCausalLM
from modeling_cogview.image_folder import open_image
from processing_cogview import CogViewProcessor


DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "cogview-digits"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder (default: the bundled digits model)")
    parser.add_argument("--prompt", required=True, help="the text the images should show")
    parser.add_argument("--images", nargs="+", required=True, help="candidate image files")
    parser.add_argument("--batch_size", type=int, default=8)
    args = parser.parse_args(argv)

    images = [open_image(path) for path in args.images]
    if unreadable := [path for path, image in zip(args.images, images) if image is None]:
        print(f"error: cannot read image(s): {', '.join(unreadable)}", file=sys.stderr)
        return 2
    model = CogViewForCausalLM.from_pretrained(args.model).eval()
    processor = CogViewProcessor.from_pretrained(args.model)
    scores = []
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        scores += model.caption_scores(**processor(images=chunk, text=[args.prompt] * len(chunk))).tolist()
    for score, path in sorted(zip(scores, args.images), key=lambda pair: -pair[0]):
        print(f"{score:.4f}\t{path}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())

"""Tokenize image-caption data once into CogView training data (a `datasets` dataset on disk, OUT/dataset).

Sources: an image folder with captions (`metadata.jsonl` rows `{"file_name", "text", ...}`, loaded by
`load_dataset("imagefolder")`), any `datasets` dataset with an image and a text column, or CogView's `.bin` format
(§7.1: int32 records of 64 text ids + the image codes). Each row becomes `codes` (the VQ-VAE's row-major codes),
`text_ids` (the model's text ids), `text`, plus the source's scalar columns (e.g. `label`, `split`). Tokenization is
one `Dataset.map(batched=True)`; unreadable or odd images are skipped and counted. With --num_proc N the work runs in N
processes, each keeping its finished part in OUT/cache, so an interrupted run redoes only the unfinished parts."""

import argparse
import json
import sys
from pathlib import Path

import PIL.Image
from datasets import load_dataset, load_from_disk

from modeling_cogview import CogViewForCausalLM, CogViewVQVAE
from processing_cogview import CogViewImageProcessor, CogViewProcessor, CogViewTokenizerFast

from ..data import fingerprint_of, load_image_folder, only_split, read_bin, tokenize_image_captions


RESAMPLE = {"bilinear": PIL.Image.BILINEAR, "lanczos": PIL.Image.LANCZOS}


def load_encoder(path: str) -> tuple[CogViewVQVAE, CogViewImageProcessor]:
    """A CogViewVQVAE folder (train_vqvae) or a whole CogView model folder; with its image processor."""
    config = json.loads((Path(path) / "config.json").read_text())
    vqvae = CogViewForCausalLM.from_pretrained(path).vqvae if config.get("model_type") == "cogview" else CogViewVQVAE.from_pretrained(path)
    if vqvae is None:
        raise SystemExit(f"error: {path} has no VQ-VAE")
    if (Path(path) / "preprocessor_config.json").is_file():
        image_processor = CogViewImageProcessor.from_pretrained(path)
    else:
        image_processor = CogViewProcessor.from_pretrained(path).image_processor
    return vqvae.eval(), image_processor


def load_tokenizer(path: str, image_vocab_size: int):
    if Path(path).is_dir():
        return CogViewProcessor.from_pretrained(path).tokenizer
    return CogViewTokenizerFast(vocab_file=path, image_vocab_size=image_vocab_size)


def load_source(args):
    if args.images_dir:
        return load_image_folder(args.images_dir, split=args.split)
    if Path(args.dataset).is_dir():
        return only_split(load_from_disk(args.dataset), args.split)
    return load_dataset(args.dataset, split=args.split or "train")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images_dir", help="an image folder with metadata.jsonl captions")
    source.add_argument("--dataset", help="a datasets dataset (save_to_disk folder or Hub name)")
    source.add_argument("--bin", help="a CogView .bin file (codes already computed)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--split", default=None, help="only this split (the 'split' column, or the datasets split)")
    parser.add_argument("--vqvae", help="a VQ-VAE folder (train_vqvae) or a CogView model folder")
    parser.add_argument("--tokenizer", required=True, help="a SentencePiece .model file or a processor/model folder")
    parser.add_argument("--image_tokens", type=int, default=1024, help=".bin only: codes per record")
    parser.add_argument("--image_vocab_size", type=int, default=8192, help=".bin only, with a .model tokenizer")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=64, help="images encoded at once")
    parser.add_argument("--num_proc", type=int, default=None, help="processes (each keeps its finished part for a rerun)")
    parser.add_argument("--super_resolution", action="store_true",
                        help="a super-resolution model's data: each image also at half and twice the size (low_codes, high_codes)")
    parser.add_argument("--resample", choices=("bilinear", "lanczos"), default=None,
                        help="the resizing filter (default: the image processor's, bilinear as the release)")  # fmt: skip
    args = parser.parse_args(argv)
    output = Path(args.output_dir)

    if args.bin:
        tokenizer = load_tokenizer(args.tokenizer, args.image_vocab_size)
        read_bin(args.bin, args.image_tokens, tokenizer).save_to_disk(output / "dataset")
        print(f"wrote {output / 'dataset'}")
        return 0
    if not args.vqvae:
        parser.error("--vqvae is needed to encode images")
    try:
        source = load_source(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if len(source) == 0:
        print("error: no rows to tokenize", file=sys.stderr)
        return 2
    vqvae, image_processor = load_encoder(args.vqvae)
    tokenizer = load_tokenizer(args.tokenizer, vqvae.config.num_embeddings)
    (output / "cache").mkdir(parents=True, exist_ok=True)
    # the cache files are named by what decides their rows: a rerun with other options does not reuse them
    fingerprint = fingerprint_of(source._fingerprint, Path(args.vqvae).resolve(), Path(args.tokenizer).resolve(), args.batch_size,
                                 args.super_resolution, args.resample)  # fmt: skip
    try:
        dataset = tokenize_image_captions(
            source, vqvae, image_processor, tokenizer, image_column=args.image_column, text_column=args.text_column,
            batch_size=args.batch_size, num_proc=args.num_proc, cache_file_name=str(output / "cache" / f"tokenized-{fingerprint}.arrow"),
            fingerprint=fingerprint, super_resolution=args.super_resolution, resample=RESAMPLE.get(args.resample),
        )  # fmt: skip
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dataset.save_to_disk(output / "dataset")
    skipped = len(source) - len(dataset)
    summary = {"rows": len(dataset), "skipped": skipped, "image_tokens": len(dataset[0]["codes"]) if len(dataset) else 0}
    (output / "tokenize_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {output / 'dataset'}: {len(dataset)} rows, {skipped} unreadable or odd images skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Tokenize image-caption data once into CogView training data (a `datasets` dataset on disk).

Sources: an image folder with captions (`metadata.jsonl` rows `{"file_name", "text", ...}`), any `datasets` dataset
with an image and a text column, or CogView's `.bin` format (§7.1: int32 records of 64 text ids + the image codes).
Each row becomes `codes` (the VQ-VAE's row-major codes), `text_ids` (the model's text ids), `text`, plus the
source's scalar fields (e.g. `label`, `split`). Images are VQ-encoded in batches; unreadable or odd images are skipped
and counted. Work is saved in shards, so an interrupted run resumes where it stopped."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, concatenate_datasets, load_from_disk
from tqdm.auto import tqdm

from modeling_cogview import CogViewForCausalLM, CogViewVQVAE
from modeling_cogview.image_folder import open_image, read_image_folder
from processing_cogview import CogViewImageProcessor, CogViewProcessor, CogViewTokenizerFast


def load_encoder(path: str) -> tuple[CogViewVQVAE, CogViewImageProcessor]:
    """A CogViewVQVAE folder (train_vqvae.py) or a whole CogView model folder; with its image processor."""
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


def source_rows(args) -> list[dict]:
    if args.images_dir:
        return read_image_folder(args.images_dir, split=args.split)
    from datasets import load_dataset

    data = load_from_disk(args.dataset) if Path(args.dataset).is_dir() else load_dataset(args.dataset, split=args.split or "train")
    for column in (args.image_column, args.text_column):
        if column not in data.column_names:
            raise SystemExit(f"error: the dataset has no column {column!r} (columns: {', '.join(data.column_names)})")
    return [{**row, "image": row.pop(args.image_column), "text": row.pop(args.text_column)} for row in data]


def extras(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("path", "image", "text", "file_name") and isinstance(v, (int, float, str, bool))}


def encode_shard(rows, vqvae, image_processor, tokenizer, batch_size, progress) -> tuple[dict, int]:
    records = {"codes": [], "text_ids": [], "text": []}
    extra_keys = sorted(extras(rows[0])) if rows else []
    records.update({k: [] for k in extra_keys})
    skipped = 0
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        kept, images = [], []
        for row in batch:
            image = row["image"] if "image" in row else open_image(row["path"])
            try:
                pixels = image_processor(image, return_tensors="pt")["pixel_values"] if image is not None else None
            except (ValueError, TypeError, OSError):  # odd images: wrong size, mode or content
                pixels = None
            if pixels is None:
                skipped += 1
                continue
            kept.append(row)
            images.append(pixels)
        if kept:
            with torch.no_grad():
                codes = vqvae.encode(torch.cat(images)).flatten(1)
            text_ids = tokenizer([row["text"] for row in kept], add_special_tokens=False, split_special_tokens=True)["input_ids"]  # captions are text: "[BOI1]" in one stays characters
            records["codes"] += codes.tolist()
            records["text_ids"] += text_ids
            records["text"] += [row["text"] for row in kept]
            for key in extra_keys:
                records[key] += [row.get(key) for row in kept]
        progress.update(len(batch))
    return records, skipped


def read_bin(path: str, image_tokens: int, tokenizer) -> list[dict]:
    """CogView's .bin: flat int32 records of 64 text ids (unified vocabulary, -1 padded) + the image codes."""
    data = np.fromfile(path, dtype=np.int32)
    width = 64 + image_tokens
    if data.size % width:
        raise SystemExit(f"error: {path} holds {data.size} ints, not a multiple of 64 + {image_tokens}")
    records = data.reshape(-1, width)
    text_ids = [[int(t) for t in record[:64] if t >= 0] for record in records]
    return {"codes": records[:, 64:].tolist(), "text_ids": text_ids, "text": tokenizer.batch_decode(text_ids, skip_special_tokens=True)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images_dir", help="an image folder with metadata.jsonl captions")
    source.add_argument("--dataset", help="a datasets dataset (save_to_disk folder or Hub name)")
    source.add_argument("--bin", help="a CogView .bin file (codes already computed)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--text_column", default="text")
    parser.add_argument("--split", default=None, help="only this split (metadata.jsonl 'split' field or datasets split)")
    parser.add_argument("--vqvae", help="a VQ-VAE folder (train_vqvae.py) or a CogView model folder")
    parser.add_argument("--tokenizer", required=True, help="a SentencePiece .model file or a processor/model folder")
    parser.add_argument("--image_tokens", type=int, default=1024, help=".bin only: codes per record")
    parser.add_argument("--image_vocab_size", type=int, default=8192, help=".bin only, with a .model tokenizer")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--shard_size", type=int, default=2000, help="rows per resumable shard")
    args = parser.parse_args(argv)
    output = Path(args.output_dir)

    if args.bin:
        tokenizer = load_tokenizer(args.tokenizer, args.image_vocab_size)
        Dataset.from_dict(read_bin(args.bin, args.image_tokens, tokenizer)).save_to_disk(output / "dataset")
        print(f"wrote {output / 'dataset'}")
        return 0
    if not args.vqvae:
        parser.error("--vqvae is needed to encode images")
    vqvae, image_processor = load_encoder(args.vqvae)
    tokenizer = load_tokenizer(args.tokenizer, vqvae.config.num_embeddings)
    rows = source_rows(args)
    if not rows:
        raise SystemExit("error: no rows to tokenize")

    shard_dirs, skipped = [], 0
    progress = tqdm(total=len(rows), desc="tokenizing", unit="img")
    for index, start in enumerate(range(0, len(rows), args.shard_size)):
        shard_dir = output / "shards" / f"{index:05d}"
        shard_rows = rows[start : start + args.shard_size]
        stats_file = shard_dir / "skipped.json"
        if stats_file.is_file():  # done in an earlier run
            skipped += json.loads(stats_file.read_text())["skipped"]
            progress.update(len(shard_rows))
        else:
            records, shard_skipped = encode_shard(shard_rows, vqvae, image_processor, tokenizer, args.batch_size, progress)
            Dataset.from_dict(records).save_to_disk(shard_dir)
            stats_file.write_text(json.dumps({"skipped": shard_skipped}))
            skipped += shard_skipped
        shard_dirs.append(shard_dir)
    progress.close()
    dataset = concatenate_datasets([load_from_disk(d) for d in shard_dirs])
    dataset.save_to_disk(output / "dataset")
    summary = {"rows": len(dataset), "skipped": skipped, "image_tokens": len(dataset[0]["codes"]) if len(dataset) else 0}
    (output / "tokenize_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {output / 'dataset'}: {len(dataset)} rows, {skipped} unreadable or odd images skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

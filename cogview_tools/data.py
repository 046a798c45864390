"""Image-caption data on `datasets`: an image folder loads with `load_dataset("imagefolder")` (captions and other
columns from its `metadata.jsonl`), any dataset with an image and a text column works the same, and tokenization is
one `Dataset.map(batched=True)`: images VQ-encoded and captions tokenized in batches, unreadable or odd images skipped
(and counted), in `num_proc` processes whose finished shards a rerun reuses. CogView's `.bin` files read too."""

import hashlib
import io
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from datasets import Dataset, Image, load_dataset

from .images import open_image


TOKENIZED_COLUMNS = ("codes", "text_ids", "text", "low_codes", "high_codes")
# a super-resolution model's data: each image also at half (`low_codes`) and twice (`high_codes`) the model's size
SCALES = {"low_codes": 0.5, "high_codes": 2}


def load_image_folder(folder: str | Path, split: str | None = None) -> Dataset:
    """`load_dataset("imagefolder")` of a folder: its images with the columns of `metadata.jsonl` (`file_name`,
    `text`, ...). With `split`, only the rows whose `split` column has that value (when there is such a column)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    dataset = load_dataset("imagefolder", data_dir=str(folder), split="train")
    return only_split(dataset, split)


def only_split(dataset: Dataset, split: str | None) -> Dataset:
    if split is None or "split" not in dataset.column_names:
        return dataset
    return dataset.filter(lambda value: value == split, input_columns="split")


def decoded_image(value) -> PIL.Image.Image | None:
    """A stored image cell (`Image(decode=False)`: a path or bytes, or an already decoded image) as a PIL image, or
    None when it does not decode."""
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, dict):
        if value.get("bytes"):
            return open_image(io.BytesIO(value["bytes"]))
        if value.get("path"):
            return open_image(value["path"])
    return None


def scalar_columns(dataset: Dataset, skip: tuple[str, ...]) -> list[str]:
    """Columns kept beside the tokens (a label, a split): those of numbers, strings and booleans."""
    kept = []
    for name, feature in dataset.features.items():
        if name not in skip and getattr(feature, "dtype", None) in ("int64", "int32", "float64", "float32", "string", "bool"):
            kept.append(name)
    return kept


def tokenize_image_captions(
    dataset: Dataset,
    vqvae,
    image_processor,
    tokenizer,
    image_column: str = "image",
    text_column: str = "text",
    batch_size: int = 64,
    num_proc: int | None = None,
    cache_file_name: str | None = None,
    fingerprint: str | None = None,
    super_resolution: bool = False,
    resample=None,
) -> Dataset:
    """Rows `codes` (the VQ-VAE's row-major codes), `text_ids` (the model's ids of the caption, read as text:
    "[BOI1]" in a caption stays characters), `text`, plus the dataset's scalar columns. Rows whose image does not
    decode or process are dropped: count them as `len(dataset) - len(result)`. With `cache_file_name`, the result
    (per process with `num_proc`) is kept there and a rerun loads what was finished.

    `super_resolution`: also `low_codes` and `high_codes`, the image at half and at twice the image processor's size,
    each resized once from the source image (with `resample`, e.g. `PIL.Image.LANCZOS`; default the processor's)."""
    if image_column not in dataset.column_names:
        raise ValueError(f"the dataset has no column {image_column!r} (columns: {', '.join(dataset.column_names)})")
    if isinstance(dataset.features[image_column], Image):
        dataset = dataset.cast_column(image_column, Image(decode=False))  # decoded by us, so a bad file is skipped
    extras = scalar_columns(dataset, skip=(image_column, text_column, *TOKENIZED_COLUMNS))
    side = image_processor.crop_size["height"]
    sizes = {"codes": side, **({name: round(side * scale) for name, scale in SCALES.items()} if super_resolution else {})}
    options = {"resample": resample} if resample is not None else {}

    def process(image, size: int):
        return image_processor(image, size={"shortest_edge": size}, crop_size={"height": size, "width": size}, return_tensors="pt", **options)["pixel_values"]

    in_workers = num_proc is not None and num_proc > 1

    def encode(batch: dict) -> dict:
        if in_workers:  # a forked worker: torch's thread pool was the parent's, and waiting on it would hang
            torch.set_num_threads(1)
        kept, pixels = [], {name: [] for name in sizes}
        for index, value in enumerate(batch[image_column]):
            image = decoded_image(value)
            try:
                processed = {name: process(image, size) for name, size in sizes.items()} if image is not None else None
            except (ValueError, TypeError, OSError):  # odd images: wrong size, mode or content
                processed = None
            if processed is not None:
                kept.append(index)
                for name, values in processed.items():
                    pixels[name].append(values)
        texts = [batch[text_column][i] if text_column in batch else "" for i in kept]
        with torch.no_grad():
            codes = {name: vqvae.encode(torch.cat(values)).flatten(1).tolist() if values else [] for name, values in pixels.items()}
        text_ids = tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else []
        return {**codes, "text_ids": text_ids, "text": texts, **{name: [batch[name][i] for i in kept] for name in extras}}

    return dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=dataset.column_names,
        cache_file_name=cache_file_name,
        new_fingerprint=fingerprint,
        desc="tokenizing",
    )


def fingerprint_of(*parts) -> str:
    """A `datasets` fingerprint from what decides a result (the source's fingerprint, the encoder, the tokenizer),
    instead of hashing the function with its VQ-VAE inside."""
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:16]


def read_bin(path: str | Path, image_tokens: int, tokenizer) -> Dataset:
    """CogView's `.bin` (§7.1): flat int32 records of 64 text ids (unified vocabulary, -1 padded) + the image codes."""
    data = np.fromfile(path, dtype=np.int32)
    width = 64 + image_tokens
    if data.size % width:
        raise ValueError(f"{path} holds {data.size} ints, not a multiple of 64 + {image_tokens}")
    records = data.reshape(-1, width)
    text_ids = [[int(t) for t in record[:64] if t >= 0] for record in records]
    texts = tokenizer.batch_decode(text_ids, skip_special_tokens=True)
    return Dataset.from_dict({"codes": records[:, 64:].tolist(), "text_ids": text_ids, "text": texts})


__all__ = ["decoded_image", "fingerprint_of", "load_image_folder", "only_split", "read_bin", "tokenize_image_captions"]

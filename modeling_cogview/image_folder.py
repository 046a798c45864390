"""Image-caption data on disk: an image folder (optionally with `metadata.jsonl` rows `{"file_name", "text", ...}`,
the `datasets` imagefolder convention), read robustly: unreadable files are reported, not fatal."""

import json
from pathlib import Path

import PIL.Image


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read_image_folder(folder: str | Path, split: str | None = None) -> list[dict]:
    """Rows `{"path", "text", ...}`: from metadata.jsonl when present (filtered by its `split` field if asked),
    else every image file under the folder with an empty caption."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    metadata = folder / "metadata.jsonl"
    if metadata.is_file():
        rows = []
        for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "file_name" not in row:
                raise ValueError(f"{metadata}:{number}: a row needs a file_name")
            if split is not None and row.get("split", split) != split:
                continue
            rows.append({**row, "path": str(folder / row["file_name"]), "text": row.get("text", "")})
        return rows
    return [{"path": str(p), "text": ""} for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]


def open_image(path: str) -> PIL.Image.Image | None:
    """The image, fully decoded, or None when the file is unreadable or not an image."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return None

"""Image files and pictures of several images, for the programs, the card and the benchmarks."""

import math

import PIL.Image


def open_image(path: str) -> PIL.Image.Image | None:
    """The image, fully decoded, or None when the file is unreadable or not an image."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, ValueError, PIL.Image.DecompressionBombError):
        return None


def read_images(paths: list[str]) -> list[PIL.Image.Image]:
    """Every image of `paths`, or a ValueError that names each one that does not read."""
    images = [open_image(path) for path in paths]
    if unreadable := [path for path, image in zip(paths, images) if image is None]:
        raise ValueError(f"cannot read image(s): {', '.join(unreadable)}")
    return images


def enlarge(image: PIL.Image.Image, side: int) -> PIL.Image.Image:
    """Enlarged by the whole factor that brings its longer side nearest to `side` from below (nearest neighbour: the
    same pixels, only bigger); images already that large are returned as they are."""
    factor = max(1, side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), PIL.Image.NEAREST) if factor > 1 else image


def image_grid(images: list[PIL.Image.Image], columns: int, min_side: int = 0, gap: int = 2) -> PIL.Image.Image:
    """The images in rows of `columns` on white, `gap` pixels apart, each enlarged to about `min_side` when smaller."""
    tiles = [enlarge(image.convert("RGB"), min_side) for image in images]
    width, height = max(tile.width for tile in tiles), max(tile.height for tile in tiles)
    rows = math.ceil(len(tiles) / columns)
    columns = min(columns, len(tiles))
    grid = PIL.Image.new("RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), "white")
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % columns) * (width + gap), (index // columns) * (height + gap)))
    return grid


__all__ = ["enlarge", "image_grid", "open_image", "read_images"]

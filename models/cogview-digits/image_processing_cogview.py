"""CogView's pixel pipeline (§5): shorter-side bilinear resize, center crop, /255, the VQ-VAE's own mean/std.
`postprocess` turns decoded pixels back into PIL images."""

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, Unpack


COGVIEW_MEAN = [0.79093, 0.76271, 0.75340]
COGVIEW_STD = [0.30379, 0.32279, 0.32800]


def to_rgb_array(image: PIL.Image.Image) -> np.ndarray:
    """Any PIL mode -> uint8 RGB [H, W, 3]. Alpha is dropped, not composited, as the release does
    (`ToTensor()` then the first 3 channels); 16-bit and float images are scaled to 8 bits, not clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        gray = np.asarray(image, dtype=np.float64) / 65535.0
        return np.repeat(np.round(gray * 255).astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode in ("I", "F"):
        gray = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode == "I" and gray.max() > 255 else (255.0 if image.mode == "I" else 1.0)
        return np.repeat(np.round(np.clip(gray / peak, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert(image.mode.replace("a", "A").replace("PA", "RGBA"))
        return np.asarray(image.convert("RGBA"))[..., :3].copy()
    return np.asarray(image.convert("RGB"))


class CogViewImageProcessor(PilBackend):
    """PIL backend. Accepts PIL images of any mode, numpy arrays and torch tensors ([H, W, C] or [C, H, W], uint8
    0-255 or float), one or a batch; returns `pixel_values` [B, 3, crop, crop]."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    size = {"shortest_edge": 256}
    default_to_square = False
    crop_size = {"height": 256, "width": 256}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    image_mean = COGVIEW_MEAN
    image_std = COGVIEW_STD

    def __init__(self, **kwargs: Unpack[ImagesKwargs]):
        super().__init__(**kwargs)

    def convert_to_rgb(self, image, input_data_format=None) -> np.ndarray:
        if isinstance(image, PIL.Image.Image):
            return to_rgb_array(image)
        if image.ndim == 2:
            return np.repeat(image[..., None], 3, axis=-1)
        channels_first = image.shape[0] in (1, 3, 4) and image.shape[-1] not in (1, 3, 4)
        if input_data_format == ChannelDimension.FIRST or channels_first:
            image = np.moveaxis(image, 0, -1)
        if image.shape[-1] == 1:
            return np.repeat(image, 3, axis=-1)
        if image.shape[-1] in (3, 4):
            return image[..., :3]
        raise ValueError(f"images must have 1, 3 or 4 channels, got an array of shape {image.shape}")

    def resize(self, image: np.ndarray, size: SizeDict, resample=None, **kwargs) -> np.ndarray:
        """Shorter side to `shortest_edge`, the longer one rounded to the nearest pixel (the golden pixels: a
        427x640 photo becomes 256x384, not 256x383)."""
        if size.shortest_edge and not size.longest_edge:
            height, width = image.shape[-2:]
            scale = size.shortest_edge / min(height, width)
            size = SizeDict(height=max(1, round(height * scale)), width=max(1, round(width * scale)))
        return super().resize(image, size, resample=resample, **kwargs)

    def center_crop(self, image: np.ndarray, size, **kwargs) -> np.ndarray:
        """torchvision's CenterCrop offsets (round((H - h) / 2)), so crops land on the release's pixels."""
        height, width = image.shape[-2:]
        if height < size.height or width < size.width:
            raise ValueError(f"image of {height}x{width} is smaller than the crop {size.height}x{size.width}")
        top = int(round((height - size.height) / 2.0))
        left = int(round((width - size.width) / 2.0))
        return image[..., top : top + size.height, left : left + size.width]

    def postprocess(self, pixel_values: torch.Tensor, output_type: str = "pil", rescale: str = "clamp"):
        """Normalised pixels [B, 3, H, W] -> a list of PIL images (or a uint8 array [B, H, W, 3] with
        `output_type="np"`). `rescale="clamp"` de-normalises and clamps to [0, 1]; `rescale="minmax"` rescales each
        image's min..max to 0..1, as the release's `save_image(normalize=True)` did."""
        if output_type not in ("pil", "np"):
            raise ValueError(f"output_type must be 'pil' or 'np', got {output_type!r}")
        pixels = pixel_values.detach().float().cpu()
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixel_values must have shape [batch, 3, height, width], got {tuple(pixels.shape)}")
        mean = torch.tensor(self.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std).view(1, 3, 1, 1)
        pixels = pixels * std + mean
        if rescale == "minmax":
            low = pixels.amin(dim=(1, 2, 3), keepdim=True)
            high = pixels.amax(dim=(1, 2, 3), keepdim=True)
            pixels = (pixels - low) / (high - low).clamp_min(1e-8)
        elif rescale != "clamp":
            raise ValueError(f"rescale must be 'clamp' or 'minmax', got {rescale!r}")
        array = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return array if output_type == "np" else [PIL.Image.fromarray(image) for image in array]


__all__ = ["CogViewImageProcessor"]

# Generated from the cogview package's processing_cogview.py by modeling_cogview/remote_code.py: do not edit this copy.
"""CogView's preprocessing: text and images in, one CogView id sequence out (COGVIEW.md §2.3, §5, §7.1).

    text-to-image prompt      [ROI1] text [BASE] [BOI1]                        (left-padded, for generate)
    super-resolution prompt   [ROI1] text [BASE] [BOI1] low-res [EOI1] [ROI2] [POS0] [BASE] [BOI2]   (an SR model)
    super-resolution training the prompt + the high-resolution (2x) image
    text-to-image training    [ROI1] text [BASE] [BOI1] image [EOI1]           (right-padded, with labels)
    captioning prompt         [BASE] [BOI1] image [EOI1] [ROI1] (text)         (text given: for scoring/reranking)
    captioning training       [BASE] [BOI1] image [EOI1] [ROI1] text

Three parts, in the order data flows through them:
- the tokenizers (`CogViewTokenizer` on `sentencepiece`, `CogViewTokenizerFast` on `tokenizers`): ids ARE the model's
  ids. Image codes at `[0, image_vocab_size)`, SentencePiece piece `p` at `image_vocab_size + p`, then the 27
  command tokens (`[PAD]`, `[BOI1]`, `[ROI1]`, `[BASE]`, ...) as special tokens. No BOS/EOS is ever added (CogView
  has none). Image ids decode as `<image_N>`; `skip_special_tokens` drops them.
- the image processor (`CogViewImageProcessor`): shorter-side bilinear resize, center crop, /255, the VQ-VAE's own
  mean/std; `postprocess` turns decoded pixels back into PIL images.
- the processor (`CogViewProcessor`): the layouts above. An image enters as pixels (PIL/numpy/torch: `images=`; its
  positions hold the placeholder and the model's VQ-VAE fills them from `pixel_values`) or as precomputed VQ codes
  (`image_codes=`, [B, h, w] or [B, h*w]).
"""

import json
import logging
import math
import os
import re

import numpy as np
import PIL.Image
import sentencepiece as spm
import torch
from tokenizers import AddedToken as FastAddedToken
from tokenizers import Tokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import ChannelDimension, PILImageResampling, SizeDict
from transformers.processing_utils import ImagesKwargs, ProcessorMixin, Unpack
from transformers.tokenization_python import PreTrainedTokenizer
from transformers.tokenization_utils_base import AddedToken
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from .configuration_cogview import COMMAND_TOKENS, CogViewConfig


# Tokenizers

VOCAB_FILES_NAMES = {"vocab_file": "tokenizer.model"}
IMAGE_TOKEN = re.compile(r"<image_(\d+)>")


def image_token(code: int) -> str:
    return f"<image_{code}>"


def command_tokens_decoder(command_token_offset: int) -> dict[int, AddedToken]:
    return {
        command_token_offset + i: AddedToken(name, special=True, normalized=False, lstrip=False, rstrip=False)
        for i, name in enumerate(COMMAND_TOKENS)
    }


class SkipImageTokensMixin:
    """`skip_special_tokens` also drops image ids (they are not special tokens: 8192 of them would bloat the list)."""

    def _decode(self, token_ids, skip_special_tokens: bool = False, **kwargs) -> str:
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if skip_special_tokens:
            token_ids = [i for i in token_ids if i >= self.image_vocab_size]
        return super()._decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)


class CogViewTokenizer(SkipImageTokensMixin, PreTrainedTokenizer):
    """SentencePiece (the `sentencepiece` package only) with CogView's id offsets and command tokens."""

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"  # prompts are continued by generate

    def __init__(self, vocab_file: str, image_vocab_size: int = 8192, pad_token="[PAD]", unk_token="<unk>", **kwargs):
        if not vocab_file or not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"SentencePiece model not found: {vocab_file!r} (a tokenizer.model file is needed)")
        self.vocab_file = vocab_file
        self.sp_model = spm.SentencePieceProcessor(model_file=vocab_file)
        self.image_vocab_size = image_vocab_size
        self.text_vocab_size = self.sp_model.get_piece_size()
        kwargs["added_tokens_decoder"] = command_tokens_decoder(image_vocab_size + self.text_vocab_size)
        kwargs.setdefault("special_tokens_pattern", "none")
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs["extra_special_tokens"] = list(COMMAND_TOKENS)  # so skip_special_tokens drops them
        super().__init__(pad_token=pad_token, unk_token=unk_token, image_vocab_size=image_vocab_size, **kwargs)

    @property
    def vocab_size(self) -> int:
        return self.image_vocab_size + self.text_vocab_size

    def get_vocab(self) -> dict[str, int]:
        vocab = {image_token(i): i for i in range(self.image_vocab_size)}
        offset = self.image_vocab_size
        vocab.update({self.sp_model.id_to_piece(i): i + offset for i in range(self.text_vocab_size)})
        vocab.update(self.added_tokens_encoder)
        return vocab

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.sp_model.encode(text, out_type=str)

    def _convert_token_to_id(self, token: str) -> int:
        if (match := IMAGE_TOKEN.fullmatch(token)) and int(match.group(1)) < self.image_vocab_size:
            return int(match.group(1))
        return self.sp_model.piece_to_id(token) + self.image_vocab_size  # unknown pieces: <unk>

    def _convert_id_to_token(self, index: int) -> str:
        if 0 <= index < self.image_vocab_size:
            return image_token(index)
        if index < self.vocab_size:
            return self.sp_model.id_to_piece(index - self.image_vocab_size)
        raise ValueError(f"id {index} is outside this tokenizer's vocabulary (0..{len(self) - 1})")

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Runs of text pieces (<unk> included) decode through SentencePiece; image and command tokens stay as they
        are."""
        out, pieces = [], []
        for token in tokens:
            if token in COMMAND_TOKENS or IMAGE_TOKEN.fullmatch(token):
                out.append(self.sp_model.decode_pieces(pieces))
                out.append(token)
                pieces = []
            else:
                pieces.append(token)
        out.append(self.sp_model.decode_pieces(pieces))
        return "".join(out)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        out_file = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"])
        save_sentencepiece_model(self.vocab_file, out_file)
        return (out_file,)


def save_sentencepiece_model(source: str, target: str):
    """Copy a SentencePiece model without the trainer's input and output paths (folders of the machine that trained
    it, which must not travel with a shared model); the pieces and the normalizer, all that encoding reads, are kept."""
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    with open(source, "rb") as f:
        proto.ParseFromString(f.read())
    del proto.trainer_spec.input[:]
    proto.trainer_spec.ClearField("model_prefix")
    with open(target, "wb") as f:
        f.write(proto.SerializeToString())


def build_fast_backend(vocab_file: str, image_vocab_size: int) -> Tokenizer:
    """A `tokenizers` pipeline that encodes like SentencePiece (transformers' own SPM conversion, which follows the
    model's normalizer spec), with every piece id shifted by `image_vocab_size` and the image and command tokens
    placed at their ids."""
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    with open(vocab_file, "rb") as f:
        proto.ParseFromString(f.read())
    if proto.trainer_spec.model_type not in (1, 2):
        raise ValueError(f"{vocab_file}: only BPE and unigram SentencePiece models are supported")
    if proto.trainer_spec.model_type == 2:
        vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    else:
        vocab = [(piece.piece, piece.score) for piece in proto.pieces]
    backend = json.loads(SpmConverter.build_tokenizer_from_spm_proto(proto, vocab).to_str())

    model = backend["model"]
    if model["type"] == "BPE":
        model["vocab"] = {
            **{image_token(i): i for i in range(image_vocab_size)},
            **{piece: i + image_vocab_size for piece, i in model["vocab"].items()},
        }
    else:  # unigram ids are positions in its list: put the image tokens first, never chosen (score -inf-ish)
        model["vocab"] = [[image_token(i), -1e9] for i in range(image_vocab_size)] + model["vocab"]
        model["unk_id"] += image_vocab_size
    command_offset = image_vocab_size + len(proto.pieces)
    backend["added_tokens"] = []
    tokenizer = Tokenizer.from_str(json.dumps(backend))
    tokenizer.add_special_tokens([FastAddedToken(name, special=True, normalized=False) for name in COMMAND_TOKENS])
    for i, name in enumerate(COMMAND_TOKENS):
        if tokenizer.token_to_id(name) != command_offset + i:
            raise RuntimeError(f"command token {name} landed at {tokenizer.token_to_id(name)}, not {command_offset + i}")
    return tokenizer


class CogViewTokenizerFast(SkipImageTokensMixin, TokenizersBackend):
    """The same ids as `CogViewTokenizer`, from the `tokenizers` library (built from the SentencePiece model the
    first time, then saved and reloaded as `tokenizer.json`)."""

    vocab_files_names = {**VOCAB_FILES_NAMES, "tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "left"
    slow_tokenizer_class = CogViewTokenizer

    def __init__(
        self,
        vocab_file: str | None = None,
        tokenizer_file: str | None = None,
        image_vocab_size: int = 8192,
        pad_token="[PAD]",
        unk_token="<unk>",
        **kwargs,
    ):
        if tokenizer_file is None or not os.path.isfile(tokenizer_file):
            if not vocab_file or not os.path.isfile(vocab_file):
                raise FileNotFoundError("CogViewTokenizerFast needs tokenizer.json or a SentencePiece tokenizer.model")
            kwargs["tokenizer_object"] = build_fast_backend(vocab_file, image_vocab_size)
        self.image_vocab_size = image_vocab_size
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        kwargs.pop("added_tokens_decoder", None)  # the backend holds the command tokens at their ids
        super().__init__(
            vocab_file=vocab_file,
            tokenizer_file=tokenizer_file,
            pad_token=pad_token,
            unk_token=unk_token,
            image_vocab_size=image_vocab_size,
            **kwargs,
        )

    @classmethod
    def convert_to_native_format(cls, trust_remote_code=False, **kwargs):
        return kwargs  # __init__ loads tokenizer.json itself, or builds it from the SentencePiece model

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None):
        # keep the SentencePiece model beside tokenizer.json so the slow tokenizer loads from the same folder
        if self.vocab_file and os.path.isfile(self.vocab_file):
            out_file = os.path.join(str(save_directory), (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"])
            save_sentencepiece_model(self.vocab_file, out_file)
            file_names = file_names + (out_file,)
        return super()._save_pretrained(save_directory, file_names, legacy_format, filename_prefix)


# Image processor

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


def check_image_has_pixels(image) -> None:
    """Refuse, with the reason, an image that resizing cannot handle: no pixels (0xN) or NaN/infinite values."""
    if isinstance(image, PIL.Image.Image):
        width, height = image.size
        if width == 0 or height == 0:
            raise ValueError(f"the image is empty: {width}x{height} pixels")
        if image.mode != "F":  # only float images can hold NaN
            return
        image = np.asarray(image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().numpy() if image.is_floating_point() else image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.size == 0:
        raise ValueError(f"the image is empty: an array of shape {tuple(array.shape)} has no pixels")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise ValueError(f"the image has {bad} NaN or infinite values (of {array.size}); pixels must be finite numbers")


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

    def process_image(self, image, *args, **kwargs) -> np.ndarray:
        check_image_has_pixels(image)  # else a 0x0 image divides by zero in resize, a NaN one fails deep in PIL
        return super().process_image(image, *args, **kwargs)

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 2:
            check_image_has_pixels(images)  # a 0x0 array is an empty image, not an empty batch
            images = [images[..., None]]  # one grayscale [H, W] image, as [H, W, 1]
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

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


# Processor

logger = logging.getLogger(__name__)


def texts_of(text: str | list[str] | None) -> list[str] | None:
    texts = [text] if isinstance(text, str) else text
    if texts is not None and not all(isinstance(t, str) for t in texts):
        raise TypeError("text must be a string or a list of strings")
    return texts

TASKS = ("text-to-image", "image-to-text", "super-resolution")
MIDFIX = ("[EOI1]", "[ROI2]", "[POS0]", "[BASE]", "[BOI2]")  # between a super-resolution sequence's two images


class CogViewProcessor(ProcessorMixin):
    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        image_seq_length: int = 1024,
        max_length: int = 1089,
        image_placeholder: str = "[MASK]",
        super_resolution: bool = False,
        **kwargs,
    ):
        """`image_seq_length`: codes of a generated image; `max_length`: the longest sequence; `super_resolution`:
        the processor of a super-resolution model, whose input images are half the generated ones
        (`source_seq_length` codes) and which an image defaults to."""
        self.image_seq_length = image_seq_length
        self.max_length = max_length
        self.image_placeholder = image_placeholder
        self.super_resolution = super_resolution
        super().__init__(image_processor, tokenizer, **kwargs)

    @property
    def image_side(self) -> int:
        return math.isqrt(self.image_seq_length)

    @property
    def source_seq_length(self) -> int:
        """Codes of a super-resolution model's input image: half the generated grid's side (256 of 1024 in the release)."""
        return (self.image_side // 2) ** 2

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also writes the code bundle, so the folder loads with `trust_remote_code=True` where this project is
        not installed."""
        from .remote_code import write_remote_code  # the bundle knows every file; imported late

        result = super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(save_directory)
        return result

    @classmethod
    def from_sentencepiece(cls, sentencepiece_model, config: CogViewConfig, fast: bool = True) -> "CogViewProcessor":
        """Build the processor of a model from a SentencePiece file and the model's config (vocabulary offsets,
        grid and VQ-VAE downsampling decide the layout and the image size)."""
        tokenizer_class = CogViewTokenizerFast if fast else CogViewTokenizer
        tokenizer = tokenizer_class(vocab_file=str(sentencepiece_model), image_vocab_size=config.image_vocab_size)
        if tokenizer.vocab_size != config.command_token_offset:
            raise ValueError(
                f"the SentencePiece model has {tokenizer.vocab_size - config.image_vocab_size} pieces but the model's "
                f"text vocabulary has {config.text_vocab_size}"
            )
        factor = config.vq_config.downsample_factor if config.vq_config is not None else 8
        side = config.image_grid_size * factor
        image_processor = CogViewImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        return cls(
            image_processor,
            tokenizer,
            image_seq_length=config.num_image_tokens,
            max_length=config.longest_sequence,
            super_resolution=config.super_resolution,
        )

    def token_id(self, token: str) -> int:
        return self.tokenizer.convert_tokens_to_ids(token)

    @property
    def image_placeholder_id(self) -> int:
        return self.token_id(self.image_placeholder)

    def __call__(
        self,
        text: str | list[str] | None = None,
        images=None,
        image_codes: torch.Tensor | np.ndarray | list | None = None,
        task: str | None = None,
        return_labels: bool = False,
        target_codes: torch.Tensor | np.ndarray | list | None = None,
        keep_rows: int | None = None,
        truncation: bool = False,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Build CogView sequences. `task` defaults to image-to-text when an image is given (without `keep_rows`),
        else text-to-image.
        With `return_labels=True` the full training sequence is built (right padding, `labels` = ids with padding
        set to -100; the text-loss weight of §3.8 is applied by the model from `config.txt_loss_scale`).
        With `keep_rows=k` and `image_codes`, a text-to-image prompt keeps the first k rows of each image, for
        text-guided completion of the rest.
        Super-resolution (the default task of a super-resolution model's processor when an image is given): the
        input image as pixels (`images=`, resized to half the generated size, as the release reads it) or codes
        (`image_codes=`, `source_seq_length` of them); for training, `return_labels=True` with the 2x image's codes
        as `target_codes=`."""
        if given := [name for name in ("videos", "audio") if kwargs.pop(name, None) is not None]:
            raise ValueError(f"CogView reads text and images, not {' or '.join(given)}")
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        has_image = images is not None or image_codes is not None
        if images is not None and image_codes is not None:
            raise ValueError("pass images (pixels) or image_codes, not both")
        if task is None:
            task = "text-to-image" if not has_image or keep_rows is not None else ("super-resolution" if self.super_resolution else "image-to-text")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if target_codes is not None and task != "super-resolution":
            raise ValueError("target_codes are the 2x image of a super-resolution training sequence (task='super-resolution')")
        if task == "super-resolution":
            return self._super_resolution(texts_of(text), images, image_codes, target_codes, return_labels, truncation, return_tensors)
        texts = texts_of(text)
        pixel_values, image_ids = None, None
        if images is not None:
            pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]
            image_ids = [[self.image_placeholder_id] * self.image_seq_length] * len(pixel_values)
        elif image_codes is not None:
            image_ids = self._codes_to_ids(image_codes)

        if task == "text-to-image":
            if texts is None:
                raise ValueError("text-to-image needs text")
            if return_labels and image_ids is None:
                raise ValueError("text-to-image training sequences need the target images (images= or image_codes=)")
            if not return_labels and image_ids is not None:
                if keep_rows is None or image_codes is None:
                    raise ValueError(
                        "a text-to-image prompt takes an image only for completion (image_codes= with keep_rows=k) or "
                        "training (return_labels=True)"
                    )
                side = int(round(self.image_seq_length**0.5))
                if not 0 <= keep_rows <= side:
                    raise ValueError(f"keep_rows must lie in [0, {side}], got {keep_rows}")
                image_ids = [ids[: keep_rows * side] for ids in image_ids]
        else:
            if image_ids is None:
                raise ValueError("image-to-text needs images (pixels) or image_codes")
            if return_labels and texts is None:
                raise ValueError("captioning training sequences need the captions (text=)")
        count = len(texts) if texts is not None else len(image_ids)
        if texts is not None and image_ids is not None and len(image_ids) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(image_ids)} images")

        sequences = []
        for i in range(count):
            text_ids = self.encode_text(texts[i]) if texts is not None else []
            image = image_ids[i] if image_ids is not None else None
            sequences.append(self.layout(task, text_ids, image, return_labels, truncation))

        encoding = self.pad_sequences(sequences, padding_side="right" if return_labels else "left", return_labels=return_labels)
        if pixel_values is not None:
            encoding["pixel_values"] = pixel_values
        return BatchFeature(encoding, tensor_type=return_tensors)

    def _super_resolution(self, texts, images, image_codes, target_codes, return_labels, truncation, return_tensors) -> BatchFeature:
        if not self.super_resolution:
            raise ValueError("super-resolution sequences are for a super-resolution model's processor (super_resolution=True)")
        if images is None and image_codes is None:
            raise ValueError("super-resolution needs the input image: images= (pixels) or image_codes= (its codes)")
        if return_labels != (target_codes is not None):
            raise ValueError("a super-resolution training sequence takes return_labels=True with target_codes= (the 2x image's codes); a prompt takes neither")
        pixel_values = None
        if images is not None:
            side = self.image_processor.crop_size["height"] // 2
            pixel_values = self.image_processor(images, size={"shortest_edge": side}, crop_size={"height": side, "width": side}, return_tensors="pt")["pixel_values"]
            sources = [[self.image_placeholder_id] * self.source_seq_length] * len(pixel_values)
        else:
            sources = self._codes_to_ids(image_codes, self.source_seq_length)
        targets = self._codes_to_ids(target_codes) if target_codes is not None else [None] * len(sources)
        if texts is None:
            texts = [""] * len(sources)
        if not len(texts) == len(sources) == len(targets):
            raise ValueError(f"got {len(texts)} texts, {len(sources)} input images and {len(targets)} target images")
        sequences = [
            self.layout("super-resolution", self.encode_text(text), source, truncation=truncation, target_ids=target)
            for text, source, target in zip(texts, sources, targets)
        ]
        encoding = self.pad_sequences(sequences, padding_side="right" if return_labels else "left", return_labels=return_labels)
        if pixel_values is not None:
            encoding["pixel_values"] = pixel_values
        return BatchFeature(encoding, tensor_type=return_tensors)

    def encode_text(self, text: str) -> list[int]:
        """User text is text: command-token names typed in it ("[BOI1]", "[MASK]") are escaped, i.e. SentencePiece
        encodes their characters like any others (`split_special_tokens=True`, the same ids in both tokenizers), so
        a prompt cannot forge the layout. Command tokens come only from `layout` and `encode_query`'s own parts."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _codes_to_ids(self, image_codes, length: int | None = None) -> list[list[int]]:
        length = length or self.image_seq_length
        codes = torch.as_tensor(np.asarray(image_codes) if not isinstance(image_codes, torch.Tensor) else image_codes)
        if codes.ndim == 1 or (codes.ndim == 2 and codes.numel() == length != codes.shape[1]):
            codes = codes.reshape(1, -1)  # one image: flat, or a single [h, w] grid
        codes = codes.reshape(codes.shape[0], -1).long()
        if codes.shape[1] != length:
            raise ValueError(f"each image must have {length} codes, got {codes.shape[1]}")
        image_vocab_size = self.tokenizer.image_vocab_size
        if codes.numel() and (codes.min() < 0 or codes.max() >= image_vocab_size):
            raise ValueError(f"image codes must lie in [0, {image_vocab_size}), got [{int(codes.min())}, {int(codes.max())}]")
        return codes.tolist()

    def layout(
        self,
        task: str,
        text_ids: list[int],
        image_ids: list[int] | None,
        full: bool = False,
        truncation: bool = False,
        target_ids: list[int] | None = None,
    ) -> list[int]:
        """One sequence of ids in the release layout of `task` (`full`: the training sequence) from text ids and image
        ids that are already tokenized (what a data pipeline stores). Super-resolution: `image_ids` is the input
        image, `target_ids` (training) the 2x image; without them, the prompt that generation completes."""
        roi, base, boi, eoi = (self.token_id(t) for t in ("[ROI1]", "[BASE]", "[BOI1]", "[EOI1]"))
        if task == "super-resolution":
            self._check_image_ids(image_ids, self.source_seq_length)
            if target_ids is not None:
                self._check_image_ids(target_ids)
        elif image_ids is not None and (full or task == "image-to-text"):
            self._check_image_ids(image_ids)
        # room the sequence needs besides the text: commands, plus the image (generated or given)
        if task == "text-to-image":
            fixed = 3 + self.image_seq_length + (1 if full else 0)
        elif task == "super-resolution":
            fixed = 3 + self.source_seq_length + len(MIDFIX) + self.image_seq_length
        else:
            fixed = 4 + self.image_seq_length
        room = self.max_length - fixed
        if len(text_ids) > room:
            if not truncation:
                raise ValueError(
                    f"the text has {len(text_ids)} tokens but at most {room} fit in {self.max_length} positions with "
                    f"a {self.image_seq_length}-token image; shorten it or pass truncation=True"
                )
            logger.warning("text of %d tokens truncated to %d to fit %d positions", len(text_ids), room, self.max_length)
            text_ids = text_ids[:room]
        if task == "text-to-image":
            prompt = [roi, *text_ids, base, boi, *(image_ids or [])]
            return prompt + [eoi] if full else prompt
        if task == "super-resolution":
            return [roi, *text_ids, base, boi, *image_ids, *(self.token_id(t) for t in MIDFIX), *(target_ids or [])]
        return [base, boi, *image_ids, eoi, roi, *text_ids]

    def _check_image_ids(self, image_ids: list[int] | None, length: int | None = None):
        length = length or self.image_seq_length
        if image_ids is None or len(image_ids) != length:
            raise ValueError(f"an image must have {length} codes for this model, got {None if image_ids is None else len(image_ids)}")
        image_vocab_size, placeholder = self.tokenizer.image_vocab_size, self.image_placeholder_id
        if any(not (0 <= i < image_vocab_size or i == placeholder) for i in image_ids):
            raise ValueError(f"image codes must lie in [0, {image_vocab_size})")

    def pad_sequences(self, sequences: list[list[int]], padding_side: str, return_labels: bool) -> dict:
        """[PAD] to the longest, an attention mask, and (training) labels with padding set to -100."""
        pad = self.token_id("[PAD]")
        longest = max(len(s) for s in sequences)
        input_ids, attention_mask = [], []
        for sequence in sequences:
            padding = [pad] * (longest - len(sequence))
            ones, zeros = [1] * len(sequence), [0] * len(padding)
            input_ids.append(padding + sequence if padding_side == "left" else sequence + padding)
            attention_mask.append(zeros + ones if padding_side == "left" else ones + zeros)
        encoding = {"input_ids": input_ids, "attention_mask": attention_mask}
        if return_labels:
            encoding["labels"] = [
                [token if keep else -100 for token, keep in zip(ids, mask)] for ids, mask in zip(input_ids, attention_mask)
            ]
        return encoding

    def encode_query(self, query: str) -> list[int]:
        """The release's query syntax (`UnifiedTokenizer.parse_query`): parts split on single spaces; a part that is a
        command token name is that token, `[MASK]*N` is N placeholders (-1, to be generated), everything else is
        re-joined with single spaces and encoded as one text chunk. (`[Image]path` is not supported: encode images
        with the model's VQ-VAE and pass `image_codes`.)"""
        ids, text_buffer = [], []

        def flush():
            if text_buffer:
                ids.extend(self.encode_text(" ".join(text_buffer)))
                text_buffer.clear()

        for part in query.split(" "):
            if part == "[MASK]":  # one position to generate, as in the release
                flush()
                ids.append(-1)
            elif part in COMMAND_TOKENS:
                flush()
                ids.append(self.token_id(part))
            elif part.startswith("[MASK]*") and part[len("[MASK]*") :].isdigit():
                flush()
                ids.extend([-1] * int(part[len("[MASK]*") :]))
            elif part.startswith("[Image"):
                raise ValueError("[Image] parts are not supported in queries: pass the image's codes as image_codes")
            else:
                text_buffer.append(part)
        flush()
        return ids

    def decode_caption(self, token_ids) -> str:
        """The text after the last [ROI1] (what a captioning generate produced), without special tokens."""
        token_ids = [int(t) for t in token_ids]
        roi = self.token_id("[ROI1]")
        start = len(token_ids) - token_ids[::-1].index(roi) if roi in token_ids else 0
        return self.tokenizer.decode(token_ids[start:], skip_special_tokens=True)

    def postprocess(self, pixel_values: torch.Tensor, **kwargs):
        """Decoded pixels -> PIL images (see `CogViewImageProcessor.postprocess`)."""
        return self.image_processor.postprocess(pixel_values, **kwargs)

    def post_process_multimodal_output(self, generated_outputs, skip_special_tokens=True, generation_mode=None, **kwargs):
        """The any-to-any pipeline's hook: decoded pixels -> PIL images (`generation_mode="image"`), or id sequences
        -> their text after the last [ROI1] (`"text"`)."""
        if generation_mode == "image":
            return self.postprocess(generated_outputs)
        if generation_mode in (None, "text"):
            return [self.decode_caption(sequence) for sequence in generated_outputs]
        raise ValueError(f"CogView generates text or images, not {generation_mode!r}")

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


# save_pretrained writes auto_map and the code files, so a saved folder loads as remote code.
CogViewImageProcessor.register_for_auto_class("AutoImageProcessor")
CogViewTokenizerFast.register_for_auto_class("AutoTokenizer")
CogViewProcessor.register_for_auto_class("AutoProcessor")


__all__ = ["CogViewImageProcessor", "CogViewProcessor", "CogViewTokenizer", "CogViewTokenizerFast"]

"""CogViewProcessor: text and images in, one CogView id sequence out (COGVIEW.md §2.3, §7.1).

    text-to-image prompt      [ROI1] text [BASE] [BOI1]                        (left-padded, for generate)
    text-to-image training    [ROI1] text [BASE] [BOI1] image [EOI1]           (right-padded, with labels)
    captioning prompt         [BASE] [BOI1] image [EOI1] [ROI1] (text)         (text given: for scoring/reranking)
    captioning training       [BASE] [BOI1] image [EOI1] [ROI1] text

An image enters as pixels (PIL/numpy/torch: `images=`; its positions hold the placeholder and the model's VQ-VAE
fills them from `pixel_values`) or as precomputed VQ codes (`image_codes=`, [B, h, w] or [B, h*w]).
"""

import logging

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .configuration_cogview import COMMAND_TOKENS, CogViewConfig
from .image_processing_cogview import CogViewImageProcessor
from .tokenization_cogview import CogViewTokenizer, CogViewTokenizerFast


logger = logging.getLogger(__name__)

TASKS = ("text-to-image", "image-to-text")


class CogViewProcessor(ProcessorMixin):
    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        image_seq_length: int = 1024,
        max_length: int = 1089,
        image_placeholder: str = "[MASK]",
        **kwargs,
    ):
        self.image_seq_length = image_seq_length
        self.max_length = max_length
        self.image_placeholder = image_placeholder
        super().__init__(image_processor, tokenizer, **kwargs)

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
        return cls(image_processor, tokenizer, image_seq_length=config.num_image_tokens, max_length=config.max_position_embeddings)

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
        text-guided completion of the rest."""
        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(kwargs)}")
        has_image = images is not None or image_codes is not None
        if images is not None and image_codes is not None:
            raise ValueError("pass images (pixels) or image_codes, not both")
        task = task or ("image-to-text" if has_image and keep_rows is None else "text-to-image")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        texts = [text] if isinstance(text, str) else text
        if texts is not None and not all(isinstance(t, str) for t in texts):
            raise TypeError("text must be a string or a list of strings")

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
            text_ids = self._encode_text(texts[i]) if texts is not None else []
            image = image_ids[i] if image_ids is not None else None
            sequences.append(self.layout(task, text_ids, image, return_labels, truncation))

        encoding = self.pad_sequences(sequences, padding_side="right" if return_labels else "left", return_labels=return_labels)
        if pixel_values is not None:
            encoding["pixel_values"] = pixel_values
        return BatchFeature(encoding, tensor_type=return_tensors)

    def _encode_text(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _codes_to_ids(self, image_codes) -> list[list[int]]:
        codes = torch.as_tensor(np.asarray(image_codes) if not isinstance(image_codes, torch.Tensor) else image_codes)
        if codes.ndim == 1 or (codes.ndim == 2 and codes.numel() == self.image_seq_length != codes.shape[1]):
            codes = codes.reshape(1, -1)  # one image: flat, or a single [h, w] grid
        codes = codes.reshape(codes.shape[0], -1).long()
        if codes.shape[1] != self.image_seq_length:
            raise ValueError(f"each image must have {self.image_seq_length} codes, got {codes.shape[1]}")
        image_vocab_size = self.tokenizer.image_vocab_size
        if codes.numel() and (codes.min() < 0 or codes.max() >= image_vocab_size):
            raise ValueError(f"image codes must lie in [0, {image_vocab_size}), got [{int(codes.min())}, {int(codes.max())}]")
        return codes.tolist()

    def layout(
        self, task: str, text_ids: list[int], image_ids: list[int] | None, full: bool = False, truncation: bool = False
    ) -> list[int]:
        """One sequence of ids in the release layout of `task` (`full`: the training sequence) from text ids and image
        ids that are already tokenized (what a data pipeline stores)."""
        roi, base, boi, eoi = (self.token_id(t) for t in ("[ROI1]", "[BASE]", "[BOI1]", "[EOI1]"))
        if image_ids is not None and (full or task == "image-to-text"):
            self._check_image_ids(image_ids)
        # room the sequence needs besides the text: commands, plus the image (generated or given)
        if task == "text-to-image":
            fixed = 3 + self.image_seq_length + (1 if full else 0)
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
        return [base, boi, *image_ids, eoi, roi, *text_ids]

    def _check_image_ids(self, image_ids: list[int]):
        if len(image_ids) != self.image_seq_length:
            raise ValueError(f"an image must have {self.image_seq_length} codes for this model, got {len(image_ids)}")
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
                ids.extend(self._encode_text(" ".join(text_buffer)))
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

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


# Importing registers the Auto classes, and makes save_pretrained write auto_map plus these files (remote code).
AutoImageProcessor.register(CogViewConfig, image_processor_classes={"pil": CogViewImageProcessor}, exist_ok=True)
AutoTokenizer.register(CogViewConfig, slow_tokenizer_class=CogViewTokenizer, fast_tokenizer_class=CogViewTokenizerFast, exist_ok=True)
AutoProcessor.register(CogViewConfig, CogViewProcessor, exist_ok=True)
CogViewImageProcessor.register_for_auto_class("AutoImageProcessor")
CogViewTokenizerFast.register_for_auto_class("AutoTokenizer")
CogViewProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["CogViewProcessor"]

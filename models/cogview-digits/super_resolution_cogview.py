# Generated from the cogview package's modeling_cogview/super_resolution_cogview.py by modeling_cogview/remote_code.py: do not edit this copy.
"""CogView's super-resolution by windows (`magnify`, the release's `generation/magnify.py`): an S x S code grid becomes
2S x 2S through nine overlapping windows of a super-resolution model, each one a low-level super-resolution of a
quarter-size source block, conditioned on the target codes that earlier windows already drew.

At the release's size (S = 32: 256 px to 512 px) the plan is the release's, window for window. Window (i, j) reads
the source codes `[8i : 8i+16, 8j : 8j+16]` and covers target rows `16i .. 16i+rows-1`, columns `16j .. 16j+31`; the
windows run in the release's centre-continuous order with rows 18, 30, 30, 30, 30, 30, 32, 32, 32. For another S (a
multiple of 4) the same plan is scaled: source blocks of S/2 codes at a stride of S/4, target windows S wide at a
stride of S/2, and rows S/2 + m for the first window, S - m for the others of the first two window rows and S for the
last, with a margin m = S/16 (2 at the release), at least 1.

Each window's sequence is `[ROI1] text [BASE] [BOI1] source block [EOI1] [ROI2] [POS0] [BASE] [BOI2] target`: the
target codes already on the canvas are given, the others (-1) are drawn. Drawing runs on transformers' `generate`
with the KV cache: the given codes before the first missing one are part of the prompt, the later ones are forced at
their steps by `CogViewGivenTokensLogitsProcessor`, which equals feeding them as ids."""

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .generation_cogview import CogViewGivenTokensLogitsProcessor


RELEASE_WINDOW_ORDER = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))


@dataclass(frozen=True)
class MagnifyWindow:
    """Window (i, j) of an S x S source grid: its source block and the target rows and columns it covers."""

    i: int
    j: int
    rows: int
    source_size: int  # S

    @property
    def source_rows(self) -> slice:
        return slice(self.source_size // 4 * self.i, self.source_size // 4 * self.i + self.source_size // 2)

    @property
    def source_columns(self) -> slice:
        return slice(self.source_size // 4 * self.j, self.source_size // 4 * self.j + self.source_size // 2)

    @property
    def target_rows(self) -> slice:
        return slice(self.source_size // 2 * self.i, self.source_size // 2 * self.i + self.rows)

    @property
    def target_columns(self) -> slice:
        return slice(self.source_size // 2 * self.j, self.source_size // 2 * self.j + self.source_size)


def magnify_plan(source_size: int) -> list[MagnifyWindow]:
    """The nine windows, in the order they run, for an S x S source grid (see the module's docstring)."""
    if source_size % 4 or source_size < 4:
        raise ValueError(f"magnify needs a source grid whose side is a multiple of 4, got {source_size}")
    margin = max(1, source_size // 16)
    windows = []
    for i, j in RELEASE_WINDOW_ORDER:
        rows = source_size if i == 2 else (source_size // 2 + margin if (i, j) == (0, 0) else source_size - margin)
        windows.append(MagnifyWindow(i, j, rows, source_size))
    return windows


class WindowFiller:
    """Draws a window's missing target codes with the model's `generate`: `__call__(sequences)` takes each image's
    window sequence (ids, -1 where a code is missing; the same places in every row) and returns the target part
    filled [B, target length]. Generation options (`top_k`, `temperature`, `guidance_scale`, ...) pass on; the rest
    comes from the model's generation_config."""

    def __init__(self, model, target_length: int, **generate_kwargs):
        self.model = model
        self.target_length = target_length
        self.generate_kwargs = generate_kwargs

    def __call__(self, sequences: list[list[int]]) -> torch.LongTensor:
        device = self.model.device
        targets = torch.tensor([sequence[-self.target_length :] for sequence in sequences], device=device)
        missing = (targets < 0).any(0)
        first = int(missing.nonzero()[0]) if bool(missing.any()) else self.target_length  # the same place in every row
        prompts = [sequence[: len(sequence) - self.target_length + first] for sequence in sequences]
        longest = max(len(prompt) for prompt in prompts)
        pad = self.model.config.pad_token_id
        input_ids = torch.tensor([[pad] * (longest - len(p)) + p for p in prompts], device=device)
        attention_mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts], device=device)
        given = targets[:, first:]
        if given.shape[1] == 0:
            return targets
        processors = [CogViewGivenTokensLogitsProcessor(given, prompt_length=longest)]
        generated = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=given.shape[1], logits_processor=processors, **self.generate_kwargs
        )
        return torch.cat([targets[:, :first], generated[:, longest:]], dim=1)


def magnify(
    model,
    image_tokens: torch.LongTensor,
    text_ids: list[list[int]],
    fill: Callable[[list[list[int]]], torch.LongTensor] | None = None,
    progress_bar: bool = False,
    on_window: Callable[[int, torch.LongTensor], None] | None = None,
    **generate_kwargs,
) -> torch.LongTensor:
    """A super-resolution model's magnification of a batch of S x S code grids `image_tokens` [B, S, S] (or
    [B, S*S]) with their captions' text ids (the model's ids, without command tokens) -> the 2S x 2S grids
    [B, 2S, 2S], window by window. `fill` draws a window (default: the model's `generate`, see `WindowFiller`);
    `on_window(index, canvas)` runs after each window (the canvas [B, 2S, 2S], -1 where nothing is drawn yet)."""
    config = model.config
    if image_tokens.ndim == 2:
        side = int(round(image_tokens.shape[1] ** 0.5))
        image_tokens = image_tokens.view(-1, side, side)
    batch, size = image_tokens.shape[0], image_tokens.shape[-1]
    if len(text_ids) != batch:
        raise ValueError(f"got {batch} images but {len(text_ids)} texts")
    if size != config.image_grid_size:
        raise ValueError(f"this model magnifies {config.image_grid_size} x {config.image_grid_size} code grids, got {size} x {size}")
    token = config.command_token_id
    head = [token("[BASE]"), token("[BOI1]")]
    midfix = [token(name) for name in ("[EOI1]", "[ROI2]", "[POS0]", "[BASE]", "[BOI2]")]
    canvas = image_tokens.new_full((batch, 2 * size, 2 * size), -1)
    windows = magnify_plan(size)
    if progress_bar:
        from tqdm.auto import tqdm

        windows = tqdm(windows, desc="magnify windows")
    for index, window in enumerate(windows):
        source = image_tokens[:, window.source_rows, window.source_columns].reshape(batch, -1)
        target = canvas[:, window.target_rows, window.target_columns].reshape(batch, -1)
        sequences = [[token("[ROI1]"), *text, *head, *source[b].tolist(), *midfix, *target[b].tolist()] for b, text in enumerate(text_ids)]
        filler = fill or WindowFiller(model, target.shape[1], **generate_kwargs)
        filled = filler(sequences).to(canvas.device)
        canvas[:, window.target_rows, window.target_columns] = filled.view(batch, window.rows, size)
        if on_window is not None:
            on_window(index, canvas)
    return canvas


__all__ = ["RELEASE_WINDOW_ORDER", "MagnifyWindow", "WindowFiller", "magnify", "magnify_plan"]

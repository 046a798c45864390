"""CogView's generation rules, classifier-free guidance and progress, as pieces `generate` plugs in."""

from collections.abc import Callable

import torch
from transformers.generation.logits_process import LogitsProcessor
from transformers.generation.streamers import BaseStreamer

from configuration_cogview import CogViewConfig


class CogViewLogitsProcessor(LogitsProcessor):
    """The release's masking rules (§6.1), per sequence, from the ids so far:

    - inside an image (after the last `[BOI1]`/`[BOI2]`, until the grid is full): only image ids; once full, the
      matching `[EOI1]`/`[EOI2]`;
    - in a caption (the last `[ROI1]` comes after the last `[EOI1]`): only text ids;
    - otherwise (writing text before an image): no image ids.
    Ids past the command tokens (the embedding's padding rows) are never allowed. Runs before top-k, so top-k
    ranks only allowed ids."""

    def __init__(self, config: CogViewConfig):
        self.image_vocab_size = config.image_vocab_size
        self.text_range = (config.text_token_offset, config.command_token_offset)
        self.num_real_tokens = config.num_real_tokens
        self.grid_tokens = config.num_image_tokens
        self.boi_ids = [config.command_token_id("[BOI1]"), config.command_token_id("[BOI2]")]
        self.eoi_ids = [config.command_token_id("[EOI1]"), config.command_token_id("[EOI2]")]
        self.eoi1 = config.command_token_id("[EOI1]")
        self.boi2, self.eoi2 = self.boi_ids[1], self.eoi_ids[1]
        self.roi1 = config.command_token_id("[ROI1]")

    @staticmethod
    def last_position(input_ids: torch.LongTensor, token_ids: list[int]) -> torch.LongTensor:
        """Per row: the position of the last of `token_ids`, or -1."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        found = torch.isin(input_ids, torch.tensor(token_ids, device=input_ids.device))
        return torch.where(found, positions, -1).amax(-1)

    def image_tokens_so_far(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """Per row: image tokens since the last open [BOI], or -1 when no image is open."""
        last_boi = self.last_position(input_ids, self.boi_ids)
        open_image = last_boi > self.last_position(input_ids, self.eoi_ids)
        return torch.where(open_image, input_ids.shape[1] - 1 - last_boi, -1)

    def in_caption(self, input_ids: torch.LongTensor) -> torch.BoolTensor:
        """Per row: no open image and the last [ROI1] comes after the last [EOI1]."""
        last_eoi = self.last_position(input_ids, [self.eoi1])
        no_open_image = self.image_tokens_so_far(input_ids) < 0
        return no_open_image & (last_eoi >= 0) & (self.last_position(input_ids, [self.roi1]) > last_eoi)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        vocab = torch.arange(scores.shape[-1], device=scores.device)
        is_image_id = vocab < self.image_vocab_size
        is_text_id = (vocab >= self.text_range[0]) & (vocab < self.text_range[1])
        is_real = vocab < self.num_real_tokens

        filled = self.image_tokens_so_far(input_ids)
        in_image = (filled >= 0) & (filled < self.grid_tokens)
        image_full = filled >= self.grid_tokens
        last_boi = self.last_position(input_ids, self.boi_ids).clamp_min(0)
        closing = torch.where(input_ids.gather(1, last_boi[:, None]).squeeze(1) == self.boi2, self.eoi2, self.eoi1)

        allowed = torch.where(in_image[:, None], is_image_id, is_real & ~is_image_id)
        allowed = torch.where(self.in_caption(input_ids)[:, None], is_text_id, allowed)
        allowed = torch.where(image_full[:, None], vocab == closing[:, None], allowed)
        return scores.masked_fill(~allowed, -float("inf"))


class CogViewGuidance:
    """Classifier-free guidance in one doubled batch: every row gets an unconditional twin whose prompt is
    `[ROI1] [BASE] [BOI1]` (left-padded to the prompt's length) and which then receives the same sampled tokens.
    The model's forward runs both halves together (one cache of 2B rows) and returns the guided log-probabilities
    `uncond + scale * (cond - uncond)` for the B rows `generate` sees."""

    def __init__(self, config: CogViewConfig, scale: float, attention_mask: torch.Tensor | None = None):
        self.scale = scale
        self.pad = config.pad_token_id
        self.unconditional_prompt = [config.command_token_id(t) for t in ("[ROI1]", "[BASE]", "[BOI1]")]
        # Both halves' 2D masks are kept here: generate hands static-cache models a prepared 4D mask instead.
        self.masks: torch.Tensor | None = None
        self.prompt_mask = attention_mask

    def double_inputs(self, input_ids: torch.LongTensor) -> tuple[torch.LongTensor, torch.Tensor]:
        batch, length = input_ids.shape
        if self.masks is None:  # the first step: build the twins
            unconditional_rows = [self.unconditional_row(row) for row in input_ids.tolist()]
            if any(len(row) > length for row in unconditional_rows):
                raise ValueError("a prompt shorter than its unconditional twin cannot be guided")
            unconditional = torch.tensor([[self.pad] * (length - len(row)) + row for row in unconditional_rows], device=input_ids.device)
            conditional_mask = torch.ones(batch, length, dtype=torch.long, device=input_ids.device)
            if self.prompt_mask is not None:  # expanded by num_return_sequences like the ids
                conditional_mask = self.prompt_mask.to(input_ids.device).long().repeat_interleave(batch // len(self.prompt_mask), dim=0)
            unconditional_mask = torch.tensor([[0] * (length - len(row)) + [1] * len(row) for row in unconditional_rows], device=input_ids.device)
            self.masks = torch.cat([conditional_mask, unconditional_mask])
            return torch.cat([input_ids, unconditional]), self.masks
        self.masks = torch.cat([self.masks, torch.ones(2 * batch, length, dtype=torch.long, device=input_ids.device)], dim=1)
        return torch.cat([input_ids, input_ids]), self.masks  # the twin receives the same tokens

    def unconditional_row(self, row: list[int]) -> list[int]:
        """`[ROI1] [BASE] [BOI1]` plus the image tokens the prompt already holds (a completion keeps its rows)."""
        boi = self.unconditional_prompt[-1]
        if boi not in row:
            raise ValueError("guidance_scale applies to text-to-image prompts (ending in an open [BOI1] image)")
        start = len(row) - row[::-1].index(boi)
        return self.unconditional_prompt + row[start:]

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        conditional, unconditional = logits.float().log_softmax(-1).chunk(2)
        return unconditional + self.scale * (conditional - unconditional)


class CogViewProgressStreamer(BaseStreamer):
    """A progress bar over the token loop and, optionally, a streaming preview: every `preview_every_rows` completed
    grid rows, `preview_callback(codes_so_far)` gets the image tokens generated so far ([B, n], row-major)."""

    def __init__(
        self,
        total_tokens: int,
        grid_size: int,
        progress_bar: bool = True,
        preview_callback: Callable[[torch.LongTensor], None] | None = None,
        preview_every_rows: int = 4,
        inner: BaseStreamer | None = None,
    ):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_tokens, desc="image tokens", unit="tok", disable=not progress_bar)
        self.grid_size = grid_size
        self.preview_callback = preview_callback
        self.preview_every = preview_every_rows * grid_size
        self.inner = inner
        self.generated: list[torch.Tensor] = []
        self.prompt_seen = False

    def put(self, value: torch.Tensor):
        if self.inner is not None:
            self.inner.put(value)
        if not self.prompt_seen:  # generate first hands over the prompt
            self.prompt_seen = True
            return
        self.generated.append(value.reshape(-1, 1))
        self.bar.update(1)
        count = len(self.generated)
        if self.preview_callback is not None and count % self.preview_every == 0:
            self.preview_callback(torch.cat(self.generated, dim=1))

    def end(self):
        if self.inner is not None:
            self.inner.end()
        self.bar.close()


__all__ = ["CogViewGuidance", "CogViewLogitsProcessor", "CogViewProgressStreamer"]

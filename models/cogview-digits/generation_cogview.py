# Generated from the cogview package's modeling_cogview/generation_cogview.py by modeling_cogview/remote_code.py: do not edit this copy.
"""CogView's generation rules, classifier-free guidance twins and progress: the pieces the model plugs into
GenerationMixin's hooks. Nothing here reads tensor values in Python on the per-step path."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers.generation import GenerationConfig
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    LogitNormalization,
    LogitsProcessor,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)
from transformers.generation.streamers import BaseStreamer

from .configuration_cogview import CogViewConfig


def last_position(input_ids: torch.LongTensor, token_ids: torch.LongTensor) -> torch.LongTensor:
    """Per row: the position of the last of `token_ids`, or -1 (also for an empty row, as from `inputs_embeds`)."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    found = torch.where(torch.isin(input_ids, token_ids.to(input_ids.device)), positions, -1)
    return nn.functional.pad(found, (1, 0), value=-1).amax(-1)


def release_generation_config(config: CogViewConfig, **overrides) -> GenerationConfig:
    """The release's sampling: top-k 200 at temperature 1 (text2image.sh), 1.02 for a super-resolution model
    (super_resolution.sh, low_level_super_resolution.sh); one full grid of new tokens. Converted and trained folders
    carry it in generation_config.json; a model built from a config generates greedily, as any transformers model does."""
    temperature = 1.02 if config.super_resolution else 1.0
    values = dict(do_sample=True, top_k=200, temperature=temperature, max_new_tokens=config.num_image_tokens, pad_token_id=config.pad_token_id)
    values.update({key: value for key, value in overrides.items() if value is not None})
    generation_config = GenerationConfig(**values)
    generation_config._from_model_config = False  # deliberate defaults: a saved file's extras must load too
    return generation_config


# transformers versions [low, high) whose generate this module's hooks were tested against (setup.py pins the same)
TESTED_TRANSFORMERS = ("5.24", "5.25")


def runs_tested_transformers() -> bool:
    """Whether the installed transformers lies in `TESTED_TRANSFORMERS`; outside it, generate takes the library's
    public guidance path and keeps the full width of the scores (see `CogViewGuidanceTwins`), and says so once."""
    import transformers
    from packaging.version import Version

    low, high = (Version(v) for v in TESTED_TRANSFORMERS)
    return low <= Version(Version(transformers.__version__).base_version) < high


# generation options that build no logits processor reading scores by id: when a request sets nothing else, steps
# inside an image compute and sample the image columns only (anything unknown keeps the full width, which is safe)
IMAGE_COLUMNS_OPTIONS = frozenset({
    "do_sample", "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h",
    "renormalize_logits", "max_new_tokens", "max_length", "num_return_sequences", "pad_token_id", "bos_token_id",
    "use_cache", "cache_implementation", "max_cache_len", "compile_config", "disable_compile", "prefill_chunk_size",
    "return_dict_in_generate", "output_attentions", "output_hidden_states", "guidance_scale", "rerank_candidates",
    "caption_length", "transformers_version", "_from_model_config",
})  # fmt: skip


RELEASE_CAPTION_LENGTH = 20  # the release samples exactly 20 caption tokens ([MASK]*20), with no stop token


@dataclass(frozen=True)
class DrawingDefaults:
    """What drawing uses when the caller says nothing, read from a generation config in this one place: the model's
    `generate`, the pipelines, the CLIs and the demo's controls all start from these values.

    guidance_scale: classifier-free guidance, 1.0 = off (`guidance_scale` in generation_config.json)
    top_k, temperature: the sampling (None / 1.0 when the config samples without them)
    rerank_candidates: samples drawn per image, of which self-reranking keeps the best (1 = no reranking)
    caption_length: new tokens of a caption (`caption_length`; the release's 20 when absent)"""

    guidance_scale: float = 1.0
    top_k: int | None = None
    temperature: float = 1.0
    rerank_candidates: int = 1
    caption_length: int = RELEASE_CAPTION_LENGTH

    @classmethod
    def from_generation_config(cls, generation_config: GenerationConfig) -> "DrawingDefaults":
        def value(name: str, fallback):
            found = getattr(generation_config, name, None)
            return fallback if found is None else found

        return cls(
            guidance_scale=float(value("guidance_scale", 1.0)),
            top_k=value("top_k", None) or None,
            temperature=float(value("temperature", 1.0)),
            rerank_candidates=int(value("rerank_candidates", 1)),
            caption_length=int(value("caption_length", RELEASE_CAPTION_LENGTH)),
        )


@contextmanager
def sampling_seed(seed: int | None, device: torch.device | str | None = None) -> Iterator[None]:
    """Sampling seeded with `seed` without touching the caller's random state: the CPU generator and the model's
    accelerator generator are forked, seeded, and restored on exit. With `seed=None` the global generators run on."""
    if seed is None:
        yield
        return
    device = torch.device(device) if device is not None else torch.device("cpu")
    accelerator = {} if device.type == "cpu" else {"device_type": device.type}
    with torch.random.fork_rng(devices=[device.index or 0] if accelerator else [], **accelerator):
        torch.manual_seed(seed)
        yield


def restarted_positions(
    input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, restart_id: int, training: bool, max_positions: int
) -> torch.LongTensor:
    """The positions of CogView-SR's sequences [B, L], which restart after the first `[ROI2]` of each row (at plain
    position o; rows without one keep plain positions, counted from their first unpadded column):

    - training (`get_masks_and_position_ids` when fine-tuning): `[ROI2]` gets 0, the token after it 1, ..., and every
      position is clamped to `max_positions - 1`;
    - inference (`filling_sequence`): positions greater than o become p - o, so `[ROI2]` keeps o and the token after
      it gets 1: one token off the training rule, as the release has it."""
    columns = torch.arange(input_ids.shape[1], device=input_ids.device)
    first = attention_mask.long().argmax(-1, keepdim=True) if attention_mask is not None else columns.new_zeros(len(input_ids), 1)
    plain = (columns - first).clamp_min(0)
    restart = torch.where(input_ids == restart_id, columns, input_ids.shape[1]).amin(-1, keepdim=True) - first
    if training:
        return torch.where(plain >= restart, plain - restart, plain).clamp_max(max_positions - 1)
    return torch.where(plain > restart, plain - restart, plain)


class CogViewGivenTokensLogitsProcessor(LogitsProcessor):
    """Tokens given at fixed places among the generated ones (magnify's windows: target codes an earlier window
    filled): at generated step t, a row whose `given[row, t]` is an id keeps only that id, so it is chosen whatever
    the sampling, and the cache holds it as if it had been fed; -1 leaves the step to the model. `given` [B, T] is laid
    out from the first generated token (`prompt_length` ids before it). Works on full-width and image-column scores
    (given ids are image ids, which are their own columns)."""

    def __init__(self, given: torch.LongTensor, prompt_length: int):
        self.given = given
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_length
        if step >= self.given.shape[1]:
            return scores
        forced = self.given[:, step].to(scores.device)
        columns = torch.arange(scores.shape[-1], device=scores.device)
        only_given = torch.where(columns == forced[:, None], 0.0, -float("inf")).to(scores.dtype)
        return torch.where((forced >= 0)[:, None], only_given, scores)


class CogViewLogitsProcessor(LogitsProcessor):
    """The release's masking rules (§6.1), per sequence, from the ids so far:

    - inside an image (after the last `[BOI1]`/`[BOI2]`, until the grid is full): only image ids; once full, the
      matching `[EOI1]`/`[EOI2]`;
    - in a caption (the last `[ROI1]` comes after the last `[EOI1]`): only text ids;
    - otherwise (writing text before an image): no image ids.
    Ids past the command tokens (the embedding's padding rows) are never allowed. Runs before top-k, so top-k
    ranks only allowed ids. Returns scores of the shape it was given.

    Scores of `image_vocab_size` columns come from the model's image-columns head (`image_tokens_only`), which
    `generate` asks for only while every row is inside its image: every column is then an image id (column = id)
    and allowed, so they pass unchanged."""

    # processors that read scores by value (or, for given tokens, by image id, which is its own column): with only
    # these after the rules, steps inside an image may run on the image columns alone
    WIDTH_AGNOSTIC = (
        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, TypicalLogitsWarper,
        EpsilonLogitsWarper, EtaLogitsWarper, TopHLogitsWarper, LogitNormalization, CogViewGivenTokensLogitsProcessor,
    )  # fmt: skip

    def __init__(self, config: CogViewConfig):
        self.image_vocab_size = config.image_vocab_size
        self.grid_tokens = config.num_image_tokens
        token = config.command_token_id
        self.boi_ids = torch.tensor([token("[BOI1]"), token("[BOI2]")], device="cpu")
        self.eoi_ids = torch.tensor([token("[EOI1]"), token("[EOI2]")], device="cpu")
        self.eoi1 = torch.tensor([token("[EOI1]")], device="cpu")
        self.roi1 = torch.tensor([token("[ROI1]")], device="cpu")
        self.boi2, self.eoi2 = token("[BOI2]"), token("[EOI2]")
        vocab = torch.arange(config.vocab_size, device="cpu")
        self.is_image_id = vocab < config.image_vocab_size
        self.is_text_id = (vocab >= config.text_token_offset) & (vocab < config.command_token_offset)
        self.is_real = vocab < config.num_real_tokens

    def layout(self, input_ids: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor, torch.BoolTensor]:
        """Per row, each position searched once: the last [BOI] (or -1), the image tokens since it when it is still
        open (else -1), and whether the row is in a caption (no open image, its last [ROI1] after its last [EOI1])."""
        last_boi = last_position(input_ids, self.boi_ids)
        filled = torch.where(last_boi > last_position(input_ids, self.eoi_ids), input_ids.shape[1] - 1 - last_boi, -1)
        last_eoi1 = last_position(input_ids, self.eoi1)
        in_caption = (filled < 0) & (last_eoi1 >= 0) & (last_position(input_ids, self.roi1) > last_eoi1)
        return last_boi, filled, in_caption

    def image_tokens_so_far(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """Per row: image tokens since the last open [BOI], or -1 when no image is open."""
        return self.layout(input_ids)[1]

    def in_caption(self, input_ids: torch.LongTensor) -> torch.BoolTensor:
        """Per row: no open image and the last [ROI1] comes after the last [EOI1]."""
        return self.layout(input_ids)[2]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[-1] == self.image_vocab_size:
            return scores  # the image-columns head: every row is inside its image, and every column is an image id
        device = scores.device
        is_image_id, is_text_id, is_real = (m.to(device) for m in (self.is_image_id, self.is_text_id, self.is_real))
        last_boi, filled, in_caption = self.layout(input_ids)
        in_image = (filled >= 0) & (filled < self.grid_tokens)
        image_full = filled >= self.grid_tokens
        last_boi = last_boi.clamp_min(0)
        opened_with = input_ids.gather(1, last_boi[:, None]).squeeze(1) if input_ids.shape[1] else last_boi
        closing = torch.where(opened_with == self.boi2, self.eoi2, int(self.eoi1))

        allowed = torch.where(in_image[:, None], is_image_id, is_real & ~is_image_id)
        allowed = torch.where(in_caption[:, None], is_text_id, allowed)
        allowed = torch.where(image_full[:, None], torch.arange(scores.shape[-1], device=device) == closing[:, None], allowed)
        return scores.masked_fill(~allowed, -float("inf"))


class CogViewGuidanceTwins:
    """Classifier-free guidance, the whole protocol (MusicGen/Dia style, in one batch):

    1. `generate` reads the scale (the caller's `guidance_scale`, else generation_config.json's), hands the library
       `guidance_scale=1` (so it builds no guidance of its own) and passes the scale and each prompt row's
       `text_start` (below) as the model inputs `twin_guidance_scale` and `guidance_text_start`.
    2. `prepare_inputs_for_generation` doubles every call's batch with `double`: the rows, then their unconditional
       twins. A twin is its row with the text replaced: `[ROI1] [BASE] [BOI1]` right-aligned before the row's last
       `[BOI1]` (column `text_start`), padding before it, then the same image tokens. The twins are rebuilt from the
       ids at every call (prefill, each chunk of a chunked prefill, decode), so nothing is kept between steps; the
       cache holds both halves.
    3. The model's forward, given `guidance_scale`, returns the rows' guided logits `combine`d from the two halves:
       the logits processors, `output_scores` and `output_logits` see the caller's batch, as without guidance.
    Outside the transformers versions this was tested with, `generate` uses the library's own (unbatched) guidance
    instead, with the twins' prompt as `negative_prompt_ids`: the same distribution, two forwards per step."""

    def __init__(self, config: CogViewConfig):
        self.pad = config.pad_token_id
        self.roi1, self.base = config.command_token_id("[ROI1]"), config.command_token_id("[BASE]")
        self.boi1 = torch.tensor([config.command_token_id("[BOI1]")], device="cpu")

    def text_start(self, prompt_ids: torch.LongTensor) -> torch.LongTensor:
        """Once per generate call, from the whole prompt: per row, the column of the twin's `[ROI1]`. Every row must
        end in an open image with room for the twin's prompt."""
        last_boi = last_position(prompt_ids, self.boi1)
        if bool((last_boi < 0).any()):
            raise ValueError("guidance_scale applies to text-to-image prompts (ending in an open [BOI1] image)")
        if bool((last_boi < 2).any()):
            raise ValueError("a prompt shorter than its unconditional twin ([ROI1] [BASE] [BOI1]) cannot be guided")
        return last_boi - 2

    def double(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        position_ids: torch.LongTensor,
        text_start: torch.LongTensor,
    ) -> tuple[torch.LongTensor, torch.Tensor, torch.LongTensor]:
        """The last `n` ids [B, n] of sequences whose 2D mask [B, L] covers all L columns so far, with their positions
        [B, n] -> the doubled batch's ids [2B, n], mask [2B, L] and positions [2B, n]. Where a super-resolution row's
        positions have restarted after `[ROI2]` (below the count of its columns), its twin's restart the same way."""
        length = attention_mask.shape[1]
        start = text_start[:, None].to(input_ids.device)
        columns = torch.arange(length - input_ids.shape[1], length, device=input_ids.device)
        twin = torch.where(columns == start, self.roi1, torch.where(columns == start + 1, self.base, input_ids))
        twin = torch.where(columns < start, self.pad, twin)
        twin_mask = (torch.arange(length, device=input_ids.device) >= start).to(attention_mask.dtype)
        counted = (attention_mask.long().cumsum(-1) - 1)[:, -input_ids.shape[1] :]
        twin_positions = torch.where(position_ids < counted, position_ids, (columns - start).clamp_min(0))
        return (
            torch.cat([input_ids, twin]),
            torch.cat([attention_mask, twin_mask]),
            torch.cat([position_ids.expand(len(input_ids), -1), twin_positions]),
        )

    @staticmethod
    def combine(logits: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Doubled-batch logits [2B, ...] -> the rows' guided logits [B, ...]: uncond + scale * (cond - uncond), as
        transformers' `ClassifierFreeGuidanceLogitsProcessor` combines them."""
        conditional, unconditional = logits.chunk(2)
        return unconditional + (conditional - unconditional) * guidance_scale

    def negative_prompt(self, prompt_ids: torch.LongTensor, text_start: torch.LongTensor) -> tuple[torch.LongTensor, torch.LongTensor]:
        """The twins of whole prompts [B, L] as `negative_prompt_ids` and their attention mask, for the library's
        unbatched guidance (the fallback above)."""
        mask = torch.ones_like(prompt_ids)
        twins, twin_mask, _ = self.double(prompt_ids, mask, mask.cumsum(-1) - 1, text_start)
        return twins[len(prompt_ids) :], twin_mask[len(prompt_ids) :]


class CogViewProgressStreamer(BaseStreamer):
    """A progress bar over the token loop and, optionally, a streaming preview: every `preview_every_rows` completed
    grid rows, `preview_callback(codes_so_far)` gets the image tokens generated so far ([B, n], row-major). Wraps a
    user's streamer, which still receives every call."""

    def __init__(
        self,
        total_tokens: int | None,
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


__all__ = [
    "RELEASE_CAPTION_LENGTH",
    "CogViewGivenTokensLogitsProcessor",
    "CogViewGuidanceTwins",
    "CogViewLogitsProcessor",
    "CogViewProgressStreamer",
    "DrawingDefaults",
    "IMAGE_COLUMNS_OPTIONS",
    "TESTED_TRANSFORMERS",
    "last_position",
    "release_generation_config",
    "restarted_positions",
    "runs_tested_transformers",
    "sampling_seed",
]

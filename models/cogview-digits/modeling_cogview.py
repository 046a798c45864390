# Generated from the cogview package's modeling_cogview/modeling_cogview.py by modeling_cogview/remote_code.py: do not edit this copy.
"""CogView: a GPT with Sandwich-LN and PB-relax over text tokens followed by VQ-VAE image tokens."""

import copy
from collections.abc import Callable

import torch
from torch import nn
from transformers import PreTrainedModel, StaticCache
from transformers import __version__ as transformers_version
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.distributed.utils import is_dtensor
from transformers.generation import GenerationConfig, GenerationMixin, GenerationMode, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer
from transformers.masking_utils import AttentionMaskInterface, create_causal_mask, eager_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface, slice_logits_to_keep
from transformers.utils import logging
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.import_utils import is_torchdynamo_compiling
from transformers.utils.output_capturing import capture_outputs

from .configuration_cogview import CogViewConfig

from .generation_cogview import (
    IMAGE_COLUMNS_OPTIONS,
    TESTED_TRANSFORMERS,
    CogViewGuidanceTwins,
    CogViewLogitsProcessor,
    CogViewProgressStreamer,
    DrawingDefaults,
    restarted_positions,
    runs_tested_transformers,
)
from .modeling_cogview_vqvae import CogViewVQVAE
from .remote_code import write_remote_code
from .super_resolution_cogview import magnify


logger = logging.get_logger(__name__)


class CogViewLayerNorm(nn.LayerNorm):
    """PB-relax LayerNorm: divide by max|x|/8 before an affine LayerNorm.

    The release takes the max over the whole tensor; we take it per token (over the hidden dimension), which
    reproduces the release's numbers to 2e-6 and keeps every sample and position independent of the others,
    so batching and the KV cache are exact. Algebraically it only rescales eps, which is what protects fp16.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        scale = hidden_states.detach().abs().amax(dim=-1, keepdim=True) / 8
        scale = scale.clamp_min(torch.finfo(hidden_states.dtype).tiny)  # an all-zero token stays zero, not NaN
        return super().forward(hidden_states / scale)


def attend(module: nn.Module, scores: torch.Tensor, value: torch.Tensor, dropout: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked scores -> fp32 softmax -> dropout -> weighted values [B, T, heads, d], and the weights."""
    attn_weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    return torch.matmul(attn_weights, value).transpose(1, 2).contiguous(), attn_weights


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    # Q is scaled before the product, as in the release (the "change the order" half of PB-relax).
    attn_weights = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    return attend(module, attn_weights, value, dropout)


def pb_relax_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's PB-relax attention: softmax((Q/(alpha*sqrt(d)))K^T - max) * alpha), an identity that keeps
    the half-precision product small; the subtraction and the softmax run in fp32. Chosen like any kernel,
    `attn_implementation="pb_relax"`, with `config.pb_relax_alpha` (the paper's 32 when unset)."""
    alpha = module.config.pb_relax_alpha or PB_RELAX_ALPHA
    attn_weights = torch.matmul(query * (scaling / alpha), key.transpose(2, 3)).float()
    attn_weights = (attn_weights - attn_weights.amax(dim=-1, keepdim=True).detach()) * alpha
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    return attend(module, attn_weights, value, dropout)


PB_RELAX_ALPHA = 32
# an attention implementation like sdpa or flash_attention_2: `from_pretrained(..., attn_implementation="pb_relax")`
AttentionInterface.register("pb_relax", pb_relax_attention_forward)
AttentionMaskInterface.register("pb_relax", eager_mask)  # it takes the eager kernel's 4D float mask


def warn_if_pb_relax_is_off(config: CogViewConfig):
    """A config that asks for PB-relax (`pb_relax_alpha`) under a kernel that does not compute it says so, once."""
    if config.pb_relax_alpha is not None and config._attn_implementation != "pb_relax":
        logger.warning_once(
            f"config.pb_relax_alpha is {config.pb_relax_alpha} but the attention runs {config._attn_implementation!r}, "
            "which computes plain attention (the same in exact arithmetic, not fp16's overflow guard): load with "
            'attn_implementation="pb_relax" for the paper\'s PB-relax attention'
        )


class CogViewAttention(nn.Module):
    """Causal self-attention with biased Q/K/V/O projections (the release's fused `query_key_value`, split)."""

    def __init__(self, config: CogViewConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.num_key_value_groups = 1
        self.is_causal = True
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.o_proj.is_output_layer = True  # a residual-branch output: smaller init (§3.6)
        self.output_dropout = nn.Dropout(config.hidden_dropout)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.config.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.output_dropout(self.o_proj(attn_output)), attn_weights


class CogViewMLP(nn.Module):
    def __init__(self, config: CogViewConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.fc2.is_output_layer = True  # a residual-branch output: smaller init (§3.6)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(hidden_states))))


class CogViewDecoderLayer(GradientCheckpointingLayer):
    """Sandwich-LN: x + LN(attn(LN(x))), then x + LN(mlp(LN(x))).

    Release names: input_layernorm = `input_layernorm`, post_attention_layernorm = `third_layernorm`,
    pre_feedforward_layernorm = `post_attention_layernorm`, post_feedforward_layernorm = `fourth_layernorm`.
    """

    def __init__(self, config: CogViewConfig, layer_idx: int):
        super().__init__()
        self.self_attn = CogViewAttention(config, layer_idx)
        self.mlp = CogViewMLP(config)
        self.input_layernorm = CogViewLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_attention_layernorm = CogViewLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pre_feedforward_layernorm = CogViewLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_feedforward_layernorm = CogViewLayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attn_output, _ = self.self_attn(self.input_layernorm(hidden_states), attention_mask, cache, **kwargs)
        hidden_states = hidden_states + self.post_attention_layernorm(attn_output)
        mlp_output = self.mlp(self.pre_feedforward_layernorm(hidden_states))
        return hidden_states + self.post_feedforward_layernorm(mlp_output)


class CogViewPreTrainedModel(PreTrainedModel):
    config: CogViewConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CogViewDecoderLayer", "CogViewVQVAE"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": CogViewDecoderLayer, "attentions": CogViewAttention}

    @staticmethod
    def _finalize_model_loading(model, load_config, loading_info):
        loading_info = PreTrainedModel._finalize_model_loading(model, load_config, loading_info)
        for module in model.modules():  # the loader makes every floating-point parameter trainable
            if isinstance(module, CogViewVQVAE):
                module.requires_grad_(False)
        return loading_info

    def _init_weights(self, module):
        """The release's init (§3.6): N(0, 0.02), output layers N(0, 0.02/sqrt(2*layers)), biases 0, LN (1, 0)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if getattr(module, "is_output_layer", False):
                std = std / (2 * self.config.num_hidden_layers) ** 0.5
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)


class CogViewModel(CogViewPreTrainedModel):
    """The transformer (word + learned position embeddings, Sandwich-LN layers, a final LayerNorm) and, when the
    config has one, its frozen VQ-VAE (as Chameleon keeps its VQ model in the base): `pixel_values` are encoded and
    their codes fill the image placeholders the processor put in `input_ids`."""

    def __init__(self, config: CogViewConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.embed_dropout = nn.Dropout(config.hidden_dropout)
        self.layers = nn.ModuleList(
            [CogViewDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = CogViewLayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.vqvae = CogViewVQVAE._from_config(config.vq_config) if config.vq_config is not None else None
        # half precision (bf16 too) can flip the VQ-VAE's nearest-code choices: it stays fp32 when there is one
        self._keep_in_fp32_modules_strict = ["vqvae"] if self.vqvae is not None else []
        self.gradient_checkpointing = False
        self.post_init()
        if self.vqvae is not None:
            self.vqvae.requires_grad_(False)

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        pixel_values: torch.FloatTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
            Images whose VQ codes replace the image placeholders (`[MASK]`) that `CogViewProcessor` put in
            `input_ids`, one image per sequence.
        """
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if pixel_values is not None:
            input_ids, _ = self.fill_image_placeholders(input_ids, None, pixel_values)
        if not is_torchdynamo_compiling():
            warn_if_pb_relax_is_off(self.config)
        # The value checks read tensors on the host: a request is checked once (here for a user's forward, in
        # generate's planning of a prompt), a training step never (the collator builds valid sequences)
        checked = not self.training and not is_torchdynamo_compiling()
        if input_ids is not None:
            if checked and input_ids.shape[1] > 1:  # decode steps sample from our own logits
                self.check_ids_in_vocabulary(input_ids)
                self.check_no_placeholders(input_ids)
            inputs_embeds = self.lookup(self.embed_tokens, input_ids, self.check_ids_in_vocabulary)
        if use_cache and cache is None and not self.training:  # training never reads a cache (and packs by position)
            cache = DynamicCache(config=self.config)

        packed_positions = position_ids  # a caller's positions may pack sequences: the mask reads them (a host read)
        if position_ids is None:
            past_length = cache.get_seq_length() if cache is not None else 0
            position_ids = self._positions_from_mask(attention_mask, inputs_embeds.shape[1], past_length, inputs_embeds.device)
        if checked and inputs_embeds.shape[1] > 1:  # generate checks lengths before it starts
            self.check_positions(position_ids)  # the largest position counts, so packed sequences fit

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=packed_positions,
        )
        hidden_states = self.embed_dropout(inputs_embeds + self.lookup(self.embed_positions, position_ids, self.check_positions))
        for decoder_layer in self.layers:
            # position_ids reach the attention kernels: flash-attention separates packed sequences by them
            hidden_states = decoder_layer(hidden_states, attention_mask=causal_mask, cache=cache, position_ids=position_ids, **kwargs)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)

    @staticmethod
    def lookup(embedding: nn.Embedding, ids: torch.LongTensor, check: Callable[[torch.Tensor], None]) -> torch.Tensor:
        """An embedding lookup whose out-of-range error (CPU; the unchecked training step) names the problem."""
        try:
            return embedding(ids)
        except IndexError:
            check(ids)
            raise

    def check_positions(self, position_ids: torch.LongTensor):
        if position_ids.numel() and int(position_ids.max()) >= self.config.max_position_embeddings:
            raise ValueError(
                f"position {int(position_ids.max())} exceeds max_position_embeddings ({self.config.max_position_embeddings}); "
                "shorten the prompt or generate fewer tokens"
            )

    def check_ids_in_vocabulary(self, input_ids: torch.Tensor):
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, {self.config.vocab_size}), got values in "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )

    def check_no_placeholders(self, input_ids: torch.LongTensor):
        """A whole image of [MASK] placeholders without pixels would be read as tokens: refuse it."""
        placeholders = (input_ids == self.config.command_token_id("[MASK]")).sum(-1)
        if bool((placeholders >= self.config.num_image_tokens).any()):
            raise ValueError(
                "input_ids hold image placeholders ([MASK]) but no pixel_values were given: pass the processor's "
                "pixel_values too, or image_codes to the processor instead of images"
            )

    def fill_image_placeholders(
        self, input_ids: torch.LongTensor, labels: torch.LongTensor | None, pixel_values: torch.FloatTensor
    ) -> tuple[torch.LongTensor, torch.LongTensor | None]:
        """Ids are codes in CogView, so an encoded image simply takes the placeholder positions of its sequence."""
        if input_ids is None:
            raise ValueError("pixel_values need input_ids holding the image placeholders (build them with CogViewProcessor)")
        placeholders = input_ids == self.config.command_token_id("[MASK]")
        codes = self.get_image_tokens(pixel_values).to(input_ids.device)  # the VQ-VAE may sit on another device
        per_sequence = placeholders.sum(-1)
        if codes.shape[0] != input_ids.shape[0] or not bool((per_sequence == codes.shape[1]).all()):
            raise ValueError(
                f"each sequence needs one image of {codes.shape[1]} codes in its placeholders; got "
                f"{per_sequence.tolist()} placeholders for {codes.shape[0]} images"
            )
        input_ids = input_ids.masked_scatter(placeholders, codes)
        if labels is not None:  # position by position, so a row's labels take that row's codes
            labels = torch.where(labels == self.config.command_token_id("[MASK]"), input_ids, labels)
        return input_ids, labels

    def _require_vqvae(self) -> CogViewVQVAE:
        if self.vqvae is None:
            raise ValueError(
                "this checkpoint has no VQ-VAE (config.vq_config is None); convert it with --vqvae_path to encode "
                "or decode images"
            )
        return self.vqvae

    @torch.no_grad()
    def get_image_tokens(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Normalised pixels [B, C, H, W] -> image token ids [B, (H/f)*(W/f)], row-major (image ids = codes)."""
        return self._require_vqvae().encode(pixel_values).flatten(1)

    @torch.no_grad()
    def decode_image_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """Image token ids [B, h*w] (or codes [B, h, w]) -> normalised pixels [B, C, H, W]."""
        vqvae = self._require_vqvae()
        if image_tokens.ndim == 2:
            side = int(round(image_tokens.shape[1] ** 0.5))
            if side * side != image_tokens.shape[1]:
                raise ValueError(f"{image_tokens.shape[1]} image tokens do not form a square grid; pass [B, h, w]")
            image_tokens = image_tokens.view(-1, side, side)
        return vqvae.decode(image_tokens)

    @staticmethod
    def _positions_from_mask(
        attention_mask: torch.Tensor | None, length: int, past_length: int, device: torch.device
    ) -> torch.LongTensor:
        """Learned absolute positions: with left padding the first real token must get position 0."""
        if attention_mask is None or attention_mask.ndim != 2:
            return (torch.arange(length, device=device) + past_length).unsqueeze(0)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        return positions[:, -length:]


def weighted_causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    input_ids: torch.Tensor,
    text_threshold: int,
    txt_loss_scale: float,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
) -> torch.Tensor:
    """CogView's loss (§3.8): next-token cross-entropy where positions whose input is a text or command token
    weigh `txt_loss_scale`; mean over the weights. Under gradient accumulation each micro-batch's weighted mean
    counts in proportion to its labelled tokens (`num_items_in_batch`)."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    token_loss = nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=ignore_index, reduction="none"
    ).view_as(shift_labels)
    labelled = shift_labels != ignore_index
    weights = torch.where(input_ids[:, :-1].to(shift_logits.device) >= text_threshold, float(txt_loss_scale), 1.0)
    weights = weights * labelled
    loss = (token_loss * weights).sum() / weights.sum().clamp_min(1e-12)
    if num_items_in_batch is not None:
        loss = loss * labelled.sum() / num_items_in_batch
    return loss


def rename_stored_vqvae_weights(module: nn.Module, state_dict: dict, prefix: str, *args):
    """`load_state_dict` pre-hook: the stored name `vqvae.*` becomes the module's `model.vqvae.*` (from_pretrained does
    the same through the registered conversion mapping)."""
    for key in [k for k in state_dict if k.startswith(f"{prefix}vqvae.")]:
        state_dict[f"{prefix}model.{key.removeprefix(prefix)}"] = state_dict.pop(key)


class CogViewForCausalLM(CogViewPreTrainedModel, GenerationMixin):
    """The base model (the transformer and its frozen VQ-VAE, when it has one) with tied output logits."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    output_modalities = ("image", "text")
    # images enter as processor placeholders filled from pixel_values; declaring an image input would make the
    # any-to-any pipeline demand torchvision, which CogView's own image processor does not need
    input_modalities = ("text",)

    def __init__(self, config: CogViewConfig):
        super().__init__(config)
        self.model = CogViewModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._keep_in_fp32_modules_strict = ["vqvae"] if self.model.vqvae is not None else []
        self.post_init()
        # a folder's raw state dict (a Trainer resuming from a checkpoint reads one) names the VQ-VAE `vqvae.*`
        self.register_load_state_dict_pre_hook(rename_stored_vqvae_weights)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Also writes the code bundle (and names its pipelines in config.json), so the folder loads with
        `trust_remote_code=True` where this project is not installed."""
        if type(self) is not CogViewForCausalLM and type(self).__name__ == f"FSDP{CogViewForCausalLM.__name__}":
            # FSDP2 swaps in a generated subclass defined in torch's files: transformers would copy those and name
            # that class in auto_map. The bundle below names the real class.
            type(self)._auto_class = None
        result = super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(save_directory, model_class=f"modeling_cogview.{CogViewForCausalLM.__name__}")
        return result

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: LogitsProcessorList | None = None,
        *args,
        streamer: BaseStreamer | None = None,
        progress_bar: bool = False,
        preview_callback: Callable[[torch.LongTensor], None] | None = None,
        preview_every_rows: int = 4,
        generation_mode: str | None = None,
        rerank_candidates: int | None = None,
        scoring_chunk_size: int = 8,
        **kwargs,
    ):
        """`GenerationMixin.generate` with CogView's rules, default lengths and guidance, decided here from the
        request and passed down as the library's public inputs (`generation_config`, `logits_processor`, model inputs).

        `generation_mode="image"` is the one call that draws (the any-to-any pipeline's route, as Janus): it returns
        only the image tokens [batch * num_return_sequences, grid tokens], each image the best of
        `rerank_candidates` samples by the model's self-reranking (default: the generation config's
        `rerank_candidates`, see `DrawingDefaults`), `scoring_chunk_size` candidates scored at a time. Decode them
        with `decode_image_tokens` and the processor's `postprocess`.

        A keyword given as None takes the model's default (generation_config.json), as a pipeline's does.

        On request, a progress bar (`progress_bar=True`) and a streaming preview (`preview_callback(codes_so_far)`
        every `preview_every_rows` rows, every candidate's rows in `num_return_sequences` order) wrap any streamer
        the caller gives."""
        if generation_mode not in (None, "text", "image"):
            raise ValueError(f"generation_mode must be 'text' or 'image', got {generation_mode!r}")
        # None means "the model's default", as in a pipeline's signature: passed on, it would erase the folder's
        # generation_config value (guidance_scale=None would turn its guidance off). top_k=0 and guidance_scale=1 turn
        # those off.
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        length_given = generation_config is not None or "max_new_tokens" in kwargs or "max_length" in kwargs
        guidance_given = "guidance_scale" in kwargs or (generation_config is not None and generation_config.guidance_scale is not None)
        # the request as GenerationMixin will merge it: the caller's config or keywords over the model's defaults
        requested = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
        requested.update(**self.generation_config.to_dict(), defaults_only=True, allow_custom_entries=True)
        kwargs = requested.update(**kwargs)  # what is left are model inputs
        candidates = self._rerank_candidates(generation_mode, rerank_candidates, requested)
        if candidates > 1:
            requested.num_return_sequences = (requested.num_return_sequences or 1) * candidates

        # an id prompt is planned; embeddings (even beside ids, which they then replace) run as GenerationMixin runs them
        prompt = None if kwargs.get("inputs_embeds") is not None else (inputs if inputs is not None else kwargs.get("input_ids"))
        processors = LogitsProcessorList(logits_processor or [])
        if not any(isinstance(p, CogViewLogitsProcessor) for p in processors):
            processors.insert(0, CogViewLogitsProcessor(self.config))  # before top-k, which then ranks allowed ids only
        if prompt is not None and prompt.ndim == 2 and prompt.shape[1] > 0:
            kwargs = self._plan_prompt(prompt, requested, kwargs, processors, length_given, guidance_given)
        elif requested.guidance_scale not in (None, 1) and guidance_given:
            raise ValueError("guidance_scale needs input_ids (a text-to-image prompt), not inputs_embeds")
        if requested.guidance_scale not in (None, 1) and (requested.num_beams or 1) > 1:
            raise ValueError("guidance_scale does not work with beam search (num_beams > 1): use sampling or greedy")
        if "guidance_text_start" in kwargs or "negative_prompt_ids" not in kwargs:
            requested.guidance_scale = 1.0  # the library guides only on the twins as negative prompts (untested versions)
        self._check_total_length(self._total_length(prompt, requested, kwargs))

        if progress_bar or preview_callback is not None:
            streamer = CogViewProgressStreamer(
                requested.max_new_tokens, self.config.image_grid_size, progress_bar, preview_callback, preview_every_rows, inner=streamer
            )
        output = super().generate(inputs, requested, processors, *args, streamer=streamer, **kwargs)
        if generation_mode != "image":
            return output
        grid = self.config.num_image_tokens
        if isinstance(output, torch.Tensor):
            return self.best_of(output, candidates, chunk_size=scoring_chunk_size)[:, -grid:]
        output.sequences = output.sequences[:, -grid:]
        return output

    def _rerank_candidates(self, generation_mode: str | None, rerank_candidates: int | None, requested: GenerationConfig) -> int:
        """Samples drawn per image in the drawing call (1 outside it)."""
        if generation_mode != "image":
            if rerank_candidates is not None:
                raise ValueError("rerank_candidates applies to generation_mode='image' (self-reranking of drawn images)")
            return 1
        if rerank_candidates is None:
            rerank_candidates = DrawingDefaults.from_generation_config(requested).rerank_candidates
        candidates = int(rerank_candidates)
        if candidates < 1:
            raise ValueError(f"rerank_candidates must be at least 1, got {rerank_candidates}")
        if candidates > 1 and self.config.super_resolution:
            raise ValueError("self-reranking scores text-to-image samples; a super-resolution model draws with rerank_candidates=1")
        if candidates > 1 and requested.return_dict_in_generate:
            raise ValueError("self-reranking returns the chosen image tokens only: pass rerank_candidates=1 to get a dict")
        return candidates

    def _plan_prompt(
        self,
        prompt: torch.LongTensor,
        requested: GenerationConfig,
        kwargs: dict,
        processors: LogitsProcessorList,
        length_given: bool,
        guidance_given: bool,
    ) -> dict:
        """What an id prompt decides, once per call (not per step): the value checks (ids in range, no unfilled image
        placeholders), the default length, guidance (`CogViewGuidanceTwins`), a super-resolution model's positions
        and whether steps inside the image may run on the image columns alone. Returns the model inputs."""
        self.model.check_ids_in_vocabulary(prompt)
        if kwargs.get("pixel_values") is None:
            self.model.check_no_placeholders(prompt)
        _, filled, in_caption = CogViewLogitsProcessor(self.config).layout(prompt)
        in_open_image = bool((filled >= 0).all())
        same_fill = in_open_image and len(set(filled.tolist())) == 1
        if not length_given:
            new_tokens = self._default_new_tokens(filled, in_caption, prompt.shape[1], requested)
            if new_tokens is not None:
                requested.max_new_tokens, requested.max_length = new_tokens, None
        kwargs = dict(kwargs)
        if requested.guidance_scale not in (None, 1):
            if in_open_image:
                twins = CogViewGuidanceTwins(self.config)
                text_start = twins.text_start(prompt)
                if runs_tested_transformers():
                    kwargs["twin_guidance_scale"], kwargs["guidance_text_start"] = float(requested.guidance_scale), text_start
                    if requested.cache_implementation in ("static", "offloaded_static"):  # sized for the doubled batch
                        length = max(self._total_length(prompt, requested, kwargs), requested.max_cache_len or 0)
                        kwargs["cache"] = StaticCache(self.config, length, offloading=requested.cache_implementation != "static")
                        requested.cache_implementation = None
                else:
                    logger.warning_once(
                        f"CogView's batched guidance was tested with transformers {TESTED_TRANSFORMERS[0]}.x, not "
                        f"{transformers_version}: guiding through transformers' own (unbatched) guidance instead"
                    )
                    expand = requested.num_return_sequences or 1
                    negative, negative_mask = twins.negative_prompt(prompt, text_start)
                    kwargs["negative_prompt_ids"] = negative.repeat_interleave(expand, 0)
                    kwargs["negative_prompt_attention_mask"] = negative_mask.repeat_interleave(expand, 0)
            elif guidance_given:  # a folder's default guidance applies to image prompts; captions ignore it
                raise ValueError("guidance_scale applies to text-to-image prompts (ending in an open [BOI1] image)")
            else:
                requested.guidance_scale = 1.0
        if self.config.super_resolution and kwargs.get("position_ids") is None:
            # the release's inference rule for the prompt; generate adds one per new token, which is the rule too
            kwargs["position_ids"] = restarted_positions(
                prompt, kwargs.get("attention_mask"), self.restart_token_id, training=False, max_positions=self.config.max_position_embeddings
            )
        if same_fill and self._image_columns_suffice(requested, processors, kwargs):
            kwargs["image_grid_end"] = prompt.shape[1] + self.config.num_image_tokens - int(filled[0])
        return kwargs

    def _image_columns_suffice(self, requested: GenerationConfig, processors: LogitsProcessorList, kwargs: dict) -> bool:
        """Steps inside an image may compute and sample only the image columns (their id is their column) when nothing
        reads the scores by id or keeps them: sampling or greedy, only options known to add no such processor
        (`IMAGE_COLUMNS_OPTIONS`), only width-agnostic processors of the caller's, no scores or logits returned."""
        return (
            runs_tested_transformers()
            and requested.get_generation_mode(kwargs.get("assistant_model")) in (GenerationMode.SAMPLE, GenerationMode.GREEDY_SEARCH)
            and set(requested.to_diff_dict()) <= IMAGE_COLUMNS_OPTIONS
            and all(isinstance(p, (CogViewLogitsProcessor, *CogViewLogitsProcessor.WIDTH_AGNOSTIC)) for p in processors)
            and not {"prefix_allowed_tokens_fn", "stopping_criteria", "negative_prompt_ids"} & set(kwargs)
        )

    def _default_new_tokens(
        self, filled: torch.LongTensor, in_caption: torch.BoolTensor, prompt_length: int, requested: GenerationConfig
    ) -> int | None:
        """Default length from the prompt's layout: the rest of an open image grid (a completion generates just the
        missing rows), or a caption (`DrawingDefaults.caption_length`). None: the generation config's."""
        if bool((filled >= 0).all()):
            if len(set(filled.tolist())) != 1:
                raise ValueError(f"the prompts have different numbers of image tokens already ({filled.tolist()}); pass max_new_tokens")
            return self.config.num_image_tokens - int(filled[0])
        if bool(in_caption.all()):  # caption prompts, with or without text begun
            caption_length = DrawingDefaults.from_generation_config(requested).caption_length
            return max(1, min(caption_length, self.config.longest_sequence - prompt_length))
        return None

    def _total_length(self, prompt: torch.Tensor | None, requested: GenerationConfig, kwargs: dict) -> int:
        """The length the whole sequence will reach, counted as GenerationMixin counts it: prompt + `max_new_tokens`;
        else `max_length` (the total, also for an embeddings prompt); else its default of 20 new tokens, capped at
        `max_position_embeddings`."""
        embeds = kwargs.get("inputs_embeds")
        prompt_length = embeds.shape[1] if embeds is not None else (prompt.shape[1] if prompt is not None else 0)
        if requested.max_new_tokens is not None:
            return prompt_length + requested.max_new_tokens
        if requested.max_length is not None:
            return requested.max_length
        return min(prompt_length + 20, self.config.max_position_embeddings)

    def _check_total_length(self, total_length: int):
        """The whole sequence must fit the learned positions (or a super-resolution model's longest sequence)."""
        if total_length > self.config.longest_sequence:
            limit = "max_sequence_length" if self.config.max_sequence_length else "max_position_embeddings"
            raise ValueError(
                f"a prompt plus its new tokens reaches {total_length} tokens, more than {limit} "
                f"({self.config.longest_sequence}); shorten the prompt or generate fewer tokens"
            )

    @torch.no_grad()
    def magnify(
        self, image_tokens: torch.LongTensor, text_ids: list[list[int]] | None = None, progress_bar: bool = False, on_window=None, **generate_kwargs
    ) -> torch.LongTensor:
        """A super-resolution model's 2x: S x S code grids [B, S, S] (S = `image_grid_size`), with their captions' text
        ids (default: none), become 2S x 2S grids [B, 2S, 2S] through the release's nine windows (see
        `super_resolution_cogview`; `on_window(index, canvas)` after each); sampling options pass to `generate`, whose
        defaults are the generation config's."""
        if not self.config.super_resolution:
            raise ValueError("magnify needs a super-resolution model (config.super_resolution): convert cogview-sr or train one")
        text_ids = text_ids if text_ids is not None else [[] for _ in range(len(image_tokens))]
        return magnify(self, image_tokens, text_ids, progress_bar=progress_bar, on_window=on_window, **generate_kwargs)

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        twin_guidance_scale: float | None = None,
        guidance_text_start: torch.LongTensor | None = None,
        image_grid_end: int | None = None,
        **kwargs,
    ):
        """Doubles the batch with the unconditional twins under guidance (see `CogViewGuidanceTwins`), and asks for the
        image columns alone while the whole batch is inside an image (a Python comparison of lengths: no tensor is
        read)."""
        length = attention_mask.shape[1] if attention_mask is not None else input_ids.shape[1]  # the sequence so far
        if twin_guidance_scale is not None:
            if next_sequence_length is not None:  # the twins are built for the ids this call runs
                input_ids, next_sequence_length = input_ids[:, -next_sequence_length:], None
            if attention_mask is None:  # generate drops an all-ones mask; the twins are padded
                attention_mask = torch.ones(len(input_ids), length, dtype=torch.long, device=input_ids.device)
            positions = kwargs["position_ids"][..., -input_ids.shape[1] :]
            input_ids, attention_mask, kwargs["position_ids"] = CogViewGuidanceTwins(self.config).double(
                input_ids, attention_mask, positions, guidance_text_start
            )
        model_inputs = super().prepare_inputs_for_generation(
            input_ids,
            next_sequence_length=next_sequence_length,
            cache=cache,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration,
            **kwargs,
        )
        if twin_guidance_scale is not None:
            model_inputs["guidance_scale"] = twin_guidance_scale
        if image_grid_end is not None and length < image_grid_end:
            model_inputs["image_tokens_only"] = True
        return model_inputs

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        pixel_values: torch.FloatTensor | None = None,
        image_tokens_only: bool = False,
        guidance_scale: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`, *optional*):
            Images whose VQ codes replace the image placeholders (`[MASK]`) that `CogViewProcessor` put in
            `input_ids` (and in `labels`), one image per sequence.
        image_tokens_only (`bool`, *optional*, defaults to `False`):
            Logits over the image ids only: `image_vocab_size` columns, the first rows of the tied head, so a column is
            its id. `generate` asks for them while every row is inside an image, where CogView's rules allow nothing
            else and nothing reads the scores by id: 28% of the weights read per step at the release's size, and
            sampling over 8,192 columns instead of 58,240.
        guidance_scale (`float`, *optional*):
            The batch is rows followed by their unconditional twins (`CogViewGuidanceTwins`); the logits returned are
            the rows' guided ones, half the batch. The cache keeps both halves.
        """
        if pixel_values is not None:  # filled here, so that the labels take the codes too
            input_ids, labels = self.fill_image_placeholders(input_ids, labels, pixel_values)
        if position_ids is None and self.config.super_resolution and input_ids is not None:
            if cache is not None and cache.get_seq_length() > 0:
                raise ValueError("a super-resolution model's cached step needs position_ids (generate passes them)")
            # a whole sequence: the release's training rule for training sequences, its inference rule otherwise
            mask = attention_mask if attention_mask is not None and attention_mask.ndim == 2 else None
            position_ids = restarted_positions(
                input_ids, mask, self.restart_token_id, training=labels is not None, max_positions=self.config.max_position_embeddings
            )
            if attention_mask is None:  # restarted positions are one sequence, not packed ones: the mask says so
                attention_mask = torch.ones_like(input_ids)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.image_logits(hidden_states) if image_tokens_only else self.lm_head(hidden_states)
        if guidance_scale is not None:
            if labels is not None:
                raise ValueError("guidance_scale is for generation: a guided forward has no loss")
            logits = CogViewGuidanceTwins.combine(logits, guidance_scale)

        loss = None
        if labels is not None:
            loss = self._loss(logits, labels, input_ids, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @property
    def restart_token_id(self) -> int:
        """`[ROI2]`: where a super-resolution model's positions restart."""
        return self.config.command_token_id("[ROI2]")

    def image_logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Logits over the image ids only [..., image_vocab_size] (column = id), from the head's first rows."""
        # Tensor parallel splits the head over the vocabulary, and a wrapped head (a PEFT LoRA on lm_head) adds more
        # than its weight: both use the head's own output.
        if is_dtensor(self.lm_head.weight) or type(self.lm_head) is not nn.Linear:
            return self.lm_head(hidden_states)[..., : self.config.image_vocab_size]
        return nn.functional.linear(hidden_states, self.lm_head.weight[: self.config.image_vocab_size])

    def _loss(self, logits, labels, input_ids, **kwargs) -> torch.Tensor:
        if self.config.txt_loss_scale == 1:
            return self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        if input_ids is None:
            raise ValueError("txt_loss_scale != 1 weighs positions by their input token: pass input_ids")
        return weighted_causal_lm_loss(
            logits,
            labels,
            input_ids,
            text_threshold=self.config.text_token_offset,
            txt_loss_scale=self.config.txt_loss_scale,
            num_items_in_batch=kwargs.get("num_items_in_batch"),
        )

    def fill_image_placeholders(
        self, input_ids: torch.LongTensor, labels: torch.LongTensor | None, pixel_values: torch.FloatTensor
    ) -> tuple[torch.LongTensor, torch.LongTensor | None]:
        """`CogViewModel.fill_image_placeholders`, for `labels` too."""
        return self.model.fill_image_placeholders(input_ids, labels, pixel_values)

    @torch.no_grad()
    def caption_scores(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        chunk_size: int = 8,
    ) -> torch.FloatTensor:
        """Self-reranking (§6.3): per sequence `[BASE] [BOI1] image [EOI1] [ROI1] text`, the sum of log p(text token)
        over the text after the last [ROI1], with image ids excluded from the softmax. Higher is better.

        Logits are computed only for the caption tail, `chunk_size` sequences at a time: memory does not grow with
        vocabulary x image positions x candidates (a full grid is 1024 of the ~1050 positions)."""
        if pixel_values is not None:
            input_ids, _ = self.fill_image_placeholders(input_ids, None, pixel_values)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        roi = self.config.command_token_id("[ROI1]")
        last_roi = torch.where(input_ids == roi, positions, -1).amax(-1)
        if bool((last_roi < 0).any()):
            raise ValueError("every sequence needs [ROI1] before its caption (build them with processor(images=, text=))")
        tail = input_ids.shape[1] - 1 - int(last_roi.min())  # the targets that may be scored, at the end of every row
        scores = []
        for start in range(0, len(input_ids), chunk_size):
            ids = input_ids[start : start + chunk_size]
            mask = attention_mask[start : start + chunk_size] if attention_mask is not None else None
            logits = self(ids, attention_mask=mask, logits_to_keep=tail + 1, use_cache=False).logits[:, :-1].float()
            logits[..., : self.config.image_vocab_size] = -float("inf")
            token_logprobs = logits.log_softmax(-1).gather(-1, ids[:, -tail:, None]).squeeze(-1)
            scored = positions[-tail:] > last_roi[start : start + chunk_size, None]  # targets after [ROI1]
            if mask is not None:
                scored = scored & mask[:, -tail:].bool()
            scores.append(torch.where(scored, token_logprobs, 0.0).sum(-1))
        return torch.cat(scores)

    @torch.no_grad()
    def self_rerank_scores(self, sequences: torch.LongTensor, chunk_size: int = 8) -> torch.FloatTensor:
        """CogView's self-reranking of its own samples: each generated `[ROI1] text [BASE] [BOI1] image` sequence
        is scored by `caption_scores` of its text given its image (higher is better; keep the best of several)."""
        roi, base, boi, eoi = (self.config.command_token_id(t) for t in ("[ROI1]", "[BASE]", "[BOI1]", "[EOI1]"))
        grid = self.config.num_image_tokens
        captions = []
        for row in sequences.tolist():
            if roi not in row or base not in row[row.index(roi) :]:
                raise ValueError("self-reranking takes text-to-image sequences: [ROI1] text [BASE] [BOI1] image")
            start = row.index(roi) + 1
            captions.append([base, boi, *row[-grid:], eoi, roi, *row[start : row.index(base, start)]])
        longest = max(len(c) for c in captions)
        ids = torch.tensor([[self.config.pad_token_id] * (longest - len(c)) + c for c in captions], device=sequences.device)
        mask = torch.tensor([[0] * (longest - len(c)) + [1] * len(c) for c in captions], device=sequences.device)
        return self.caption_scores(ids, attention_mask=mask, chunk_size=chunk_size)

    def best_of(self, sequences: torch.LongTensor, candidates: int, chunk_size: int = 8) -> torch.LongTensor:
        """Of each consecutive group of `candidates` samples (generate's num_return_sequences order), the one the
        model's self-reranking scores highest (`chunk_size` candidates scored at a time)."""
        if candidates <= 1:
            return sequences
        scores = self.self_rerank_scores(sequences, chunk_size=chunk_size).view(-1, candidates)
        return sequences.view(-1, candidates, sequences.shape[-1])[torch.arange(len(scores)), scores.argmax(-1)]

    @property
    def vqvae(self) -> CogViewVQVAE | None:
        """The base model's VQ-VAE (as Chameleon keeps its VQ model in the base)."""
        return self.model.vqvae

    def get_image_tokens(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """`CogViewModel.get_image_tokens`."""
        return self.model.get_image_tokens(pixel_values)

    def decode_image_tokens(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """`CogViewModel.decode_image_tokens`."""
        return self.model.decode_image_tokens(image_tokens)


# save_pretrained writes auto_map, so a saved folder names its classes for remote code
CogViewForCausalLM.register_for_auto_class("AutoModelForCausalLM")
# The VQ-VAE lives in the base model; folders keep its weights as `vqvae.*` (as every folder saved before the move
# has them): renamed at load, and back at save, for the head and any subclass of it (by model type); the base model
# itself names them `vqvae.*` already
register_checkpoint_conversion_mapping("cogview", [WeightRenaming(r"^vqvae\.", "model.vqvae.")], overwrite=True)
register_checkpoint_conversion_mapping("CogViewModel", [], overwrite=True)

__all__ = ["CogViewForCausalLM", "CogViewLayerNorm", "CogViewModel", "CogViewPreTrainedModel"]

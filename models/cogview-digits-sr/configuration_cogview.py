# Generated from the cogview package's configuration_cogview.py by modeling_cogview/remote_code.py: do not edit this copy.
"""Configuration of CogView: the transformer and the VQ-VAE image tokenizer it holds."""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig, SubConfigSpec


# The 27 command tokens of the release, in id order after the text vocabulary (COGVIEW.md §2.1).
COMMAND_TOKENS = (
    "[PAD]", "[BOI1]", "[BOI2]", "[BOI3]", "[EOI1]", "[EOI2]", "[EOI3]", "[ROI1]", "[ROI2]", "[ROI3]",
    "[SEP]", "[MASK]", "[CLS]", "[ENC]", "[TINY]", "[SMALL]", "[BASE]", "[BIG]",
    "[POS0]", "[POS1]", "[POS2]", "[POS3]", "[POS4]", "[POS5]", "[POS6]", "[POS7]", "[POS8]",
)  # fmt: skip


def drop_locally_registered_pipelines(kwargs: dict):
    """A saved folder names its pipelines for remote code; where this package is imported and has registered a task
    itself, the registered class serves it, so `pipeline("text-to-image", model=folder)` needs no remote code."""
    from transformers.pipelines import PIPELINE_REGISTRY

    custom = kwargs.get("custom_pipelines")
    if not custom:
        return
    local = PIPELINE_REGISTRY.supported_tasks
    kept = {task: info for task, info in custom.items() if not (task in local and local[task]["impl"].__name__ == info["impl"].split(".")[-1])}
    if kept:
        kwargs["custom_pipelines"] = kept
    else:
        kwargs.pop("custom_pipelines")


@strict
class CogViewVQVAEConfig(PreTrainedConfig):
    r"""
    CogView's VQ-VAE (`vqvae/vqvae_zc.py` of the release): ReLU conv encoder, nearest-neighbour codebook,
    transposed-conv decoder. The release is `hidden_channels=512, embed_dim=256, num_embeddings=8192,
    num_downsamples=3` (8x: 256 px -> 32x32 codes).

    in_channels (`int`): image channels.
    hidden_channels (`int`): width of every conv layer.
    embed_dim (`int`): dimension of a codebook vector.
    num_embeddings (`int`): codebook size (= the model's image vocabulary).
    num_downsamples (`int`): stride-2 stages; the grid is `image_size / 2**num_downsamples` (1, 2 or 3).
    """

    model_type = "cogview_vqvae"
    base_config_key = "vq_config"

    in_channels: int = 3
    hidden_channels: int = 512
    embed_dim: int = 256
    num_embeddings: int = 8192
    num_downsamples: int = 3
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.num_downsamples not in (1, 2, 3):
            raise ValueError(f"num_downsamples must be 1, 2 or 3 (2x, 4x or 8x), got {self.num_downsamples}")
        super().__post_init__(**kwargs)

    @property
    def downsample_factor(self) -> int:
        return 2**self.num_downsamples


@strict
class CogViewConfig(PreTrainedConfig):
    r"""
    CogView (Ding et al. 2021): one GPT with Sandwich-LN and PB-relax over a shared vocabulary laid out as
    `[image codes | SentencePiece text ids | 27 command tokens | padding rows]`. The defaults are the released
    4B model (`cogview-base`).

    vocab_size (`int`): embedding rows (58219 real ids padded to 58240 in the release).
    image_vocab_size (`int`): image codes, at ids `[0, image_vocab_size)`.
    text_vocab_size (`int`): SentencePiece pieces, at ids `[image_vocab_size, image_vocab_size + text_vocab_size)`.
    image_grid_size (`int`): side of the generated code grid (32 -> 1024 image tokens, 256 px).
    hidden_dropout (`float`): dropout on embeddings and on both residual branches.
    attention_dropout (`float`): dropout on attention probabilities.
    pb_relax_alpha (`float`, *optional*): alpha of the paper's PB-relax attention, which scores as
        `(Q / (alpha * sqrt(d))) K^T`, subtracts the row max and multiplies by alpha (an identity in exact arithmetic
        that keeps fp16 from overflowing; the release code had it disabled). It runs as the attention implementation
        `"pb_relax"` (`from_pretrained(..., attn_implementation="pb_relax")`, 32 when this is unset); under another
        kernel a config that sets it says so once.
    txt_loss_scale (`float`): loss weight of positions whose input is a text or command token (§3.8).
    super_resolution (`bool`): a super-resolution model (the release's `cogview-sr`): its sequences are
        `[ROI1] text [BASE] [BOI1] low-res codes [EOI1] [ROI2] [POS0] [BASE] [BOI2] high-res codes`, the low-res grid
        half of `image_grid_size`, and positions restart after `[ROI2]` (the model computes them from the ids: the
        release's training rule for sequences with labels, its inference rule otherwise).
    max_sequence_length (`int`, *optional*): the longest sequence, when positions restart and it exceeds
        `max_position_embeddings` (1345 for `cogview-sr`: `--max-position-embeddings-finetune`); default
        `max_position_embeddings`.
    vq_config (`CogViewVQVAEConfig`, *optional*): the image tokenizer; `None` for a transformer without one.
    """

    model_type = "cogview"
    # Megatron's split, as the release trained it: Q/K/V and fc1 by output columns, o_proj and fc2 by input rows
    # (the word embedding and the tied head are sharded on the vocabulary by transformers itself)
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.fc1": "colwise",
        "layers.*.mlp.fc2": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }
    sub_configs_defaults = {"vq_config": SubConfigSpec(CogViewVQVAEConfig, optional=True)}
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 58240
    hidden_size: int = 2560
    intermediate_size: int = 10240
    num_hidden_layers: int = 48
    num_attention_heads: int = 40
    max_position_embeddings: int = 1089
    hidden_act: str = "gelu_pytorch_tanh"
    layer_norm_eps: float = 1e-5
    hidden_dropout: float | int = 0.1
    attention_dropout: float | int = 0.1
    initializer_range: float = 0.02
    pb_relax_alpha: float | int | None = None
    txt_loss_scale: float | int = 1.0
    super_resolution: bool = False
    max_sequence_length: int | None = None
    image_vocab_size: int = 8192
    text_vocab_size: int = 50000
    image_grid_size: int = 32
    use_cache: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    vq_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        if self.pad_token_id is None:
            self.pad_token_id = self.command_token_id("[PAD]")
        drop_locally_registered_pipelines(kwargs)
        super().__post_init__(**kwargs)
        self.validate_layout()

    @classmethod
    def for_new_model(
        cls,
        vq_config: CogViewVQVAEConfig,
        tokenizer,
        image_grid_size: int,
        longest_text: int,
        extra_positions: int = 8,
        **sizes,
    ) -> "CogViewConfig":
        """The config of a model to train from scratch, sized from its image tokenizer (the codebook is the image
        vocabulary), its text tokenizer (`len(tokenizer)`: image codes + text pieces + command tokens) and its data: a
        `image_grid_size`² grid and captions of up to `longest_text` tokens, plus `extra_positions`. `sizes` are the
        transformer's other fields (`hidden_size`, `num_hidden_layers`, ...)."""
        text_vocab_size = tokenizer.vocab_size - vq_config.num_embeddings
        return cls(
            vocab_size=-(-len(tokenizer) // 8) * 8,  # rows padded to a multiple of 8, as the release pads to 128
            image_vocab_size=vq_config.num_embeddings,
            text_vocab_size=text_vocab_size,
            image_grid_size=image_grid_size,
            # [ROI1] text [BASE] [BOI1] image [EOI1], or [BASE] [BOI1] image [EOI1] [ROI1] text: 4 command tokens
            max_position_embeddings=image_grid_size**2 + longest_text + 4 + extra_positions,
            vq_config=vq_config,
            **sizes,
        )

    def validate_layout(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads ({self.num_attention_heads})"
            )
        if self.num_real_tokens > self.vocab_size:
            raise ValueError(
                f"vocab_size ({self.vocab_size}) is smaller than image_vocab_size + text_vocab_size + "
                f"{len(COMMAND_TOKENS)} command tokens = {self.num_real_tokens}"
            )
        if self.super_resolution and self.image_grid_size % 4:
            raise ValueError(f"a super-resolution model's image_grid_size must be a multiple of 4 (magnify's windows), got {self.image_grid_size}")
        if self.vq_config is not None and self.vq_config.num_embeddings != self.image_vocab_size:
            raise ValueError(
                f"the VQ-VAE codebook has {self.vq_config.num_embeddings} codes but image_vocab_size is "
                f"{self.image_vocab_size}"
            )

    def to_dict(self) -> dict:
        """Also what `save_pretrained` writes: without the folder the VQ-VAE config was loaded from
        (`vq_config._name_or_path`, a path of the machine that trained it)."""
        output = super().to_dict()
        if isinstance(output.get("vq_config"), dict):
            output["vq_config"].pop("_name_or_path", None)
        return output

    @property
    def text_token_offset(self) -> int:
        return self.image_vocab_size

    @property
    def command_token_offset(self) -> int:
        return self.image_vocab_size + self.text_vocab_size

    @property
    def num_real_tokens(self) -> int:
        return self.command_token_offset + len(COMMAND_TOKENS)

    @property
    def num_image_tokens(self) -> int:
        return self.image_grid_size**2

    @property
    def source_grid_size(self) -> int:
        """A super-resolution model's low-resolution grid: half the generated one (16 of 32 in the release)."""
        return self.image_grid_size // 2

    @property
    def longest_sequence(self) -> int:
        return self.max_sequence_length or self.max_position_embeddings

    def command_token_id(self, name: str) -> int:
        """Id of a command token such as `"[BOI1]"` in this model's vocabulary."""
        if name not in COMMAND_TOKENS:
            raise KeyError(f"{name!r} is not a CogView command token; known: {', '.join(COMMAND_TOKENS)}")
        return self.command_token_offset + COMMAND_TOKENS.index(name)


# save_pretrained writes auto_map, so a saved config names its class for remote code
CogViewConfig.register_for_auto_class()

__all__ = ["COMMAND_TOKENS", "CogViewConfig", "CogViewVQVAEConfig"]

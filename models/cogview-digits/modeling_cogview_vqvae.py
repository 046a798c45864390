# Generated from the cogview package's modeling_cogview/modeling_cogview_vqvae.py by modeling_cogview/remote_code.py: do not edit this copy.
"""CogView's VQ-VAE image tokenizer: ReLU conv encoder, nearest-neighbour codebook, transposed-conv decoder.

Layer for layer the release's `vqvae/vqvae_zc.py` with `stride=6, simple=True, n_res_block=0` when
`num_downsamples=3`; fewer stages give 2x or 4x downsampling with the same building blocks.
"""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init

from .configuration_cogview import CogViewVQVAEConfig


class CogViewVQVAEEncoder(nn.Sequential):
    """`num_downsamples` x (4x4 stride-2 conv, ReLU), then a 1x1 conv to the codebook dimension."""

    def __init__(self, config: CogViewVQVAEConfig):
        layers = []
        channels = config.in_channels
        for _ in range(config.num_downsamples):
            layers += [nn.Conv2d(channels, config.hidden_channels, 4, stride=2, padding=1), nn.ReLU()]
            channels = config.hidden_channels
        layers.append(nn.Conv2d(channels, config.embed_dim, 1))
        super().__init__(*layers)


class CogViewVQVAEDecoder(nn.Sequential):
    """`num_downsamples` x (4x4 stride-2 transposed conv, ReLU), then a 1x1 conv to pixels."""

    def __init__(self, config: CogViewVQVAEConfig):
        layers = []
        channels = config.embed_dim
        for _ in range(config.num_downsamples):
            layers += [nn.ConvTranspose2d(channels, config.hidden_channels, 4, stride=2, padding=1), nn.ReLU()]
            channels = config.hidden_channels
        layers.append(nn.Conv2d(channels, config.in_channels, 1))
        super().__init__(*layers)


class CogViewVectorQuantizer(nn.Module):
    """Codebook lookup: each latent vector becomes the index of its nearest code (first index on ties)."""

    def __init__(self, config: CogViewVQVAEConfig):
        super().__init__()
        self.embedding = nn.Embedding(config.num_embeddings, config.embed_dim)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B, h, w, D] -> codes [B, h, w]"""
        flat = latents.reshape(-1, latents.shape[-1])
        codebook = self.embedding.weight
        # The release's expansion of the squared distance, in its order, so that near-ties round the same way.
        distances = (
            flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1).unsqueeze(0)
        )
        return distances.argmin(1).view(latents.shape[:-1])


class CogViewVQVAE(PreTrainedModel):
    config: CogViewVQVAEConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["CogViewVectorQuantizer"]
    # no attention inside: whatever implementation the causal LM holding it asks for is fine
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: CogViewVQVAEConfig):
        super().__init__(config)
        self.encoder = CogViewVQVAEEncoder(config)
        self.quantizer = CogViewVectorQuantizer(config)
        self.decoder = CogViewVQVAEDecoder(config)
        self.post_init()

    def _init_weights(self, module):
        # ReLU stacks train from He initialisation; the codebook starts like the release's (xavier, tanh gain).
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.xavier_uniform_(module.weight, gain=5 / 3)

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [B, C, H, W] -> codes [B, H/f, W/f] (f = 2**num_downsamples), row-major."""
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.config.in_channels:
            raise ValueError(
                f"pixel_values must have shape [batch, {self.config.in_channels}, height, width], "
                f"got {tuple(pixel_values.shape)}"
            )
        factor = self.config.downsample_factor
        if pixel_values.shape[-2] % factor or pixel_values.shape[-1] % factor:
            raise ValueError(f"image height and width must be multiples of {factor}, got {tuple(pixel_values.shape[-2:])}")
        latents = self.encoder(pixel_values.to(device=self.device, dtype=self.dtype)).permute(0, 2, 3, 1)
        return self.quantizer(latents)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, h, w] -> quantised latents [B, D, h, w]"""
        if codes.ndim != 3:
            raise ValueError(f"codes must have shape [batch, height, width], got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.num_embeddings):
            raise ValueError(
                f"codes must lie in [0, {self.config.num_embeddings}), got values in "
                f"[{int(codes.min())}, {int(codes.max())}]"
            )
        return self.quantizer.embedding(codes.to(self.device)).permute(0, 3, 1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, h, w] -> pixels [B, C, h*f, w*f] in the normalised space (not clamped)."""
        return self.decoder(self.embed_codes(codes))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Reconstruction through the codebook (no gradient reaches the encoder; train with the training script)."""
        return self.decode(self.encode(pixel_values))


__all__ = ["CogViewVQVAE"]

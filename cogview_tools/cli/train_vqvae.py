"""Train a CogView VQ-VAE (the release's architecture, EMA codebook as in the paper) on an image folder or a
`datasets` dataset. Reports reconstruction error and codebook usage; dead codes are restarted from encoder outputs.
Writes a `CogViewVQVAE` folder (with its image processor) that cogview-tokenize and cogview-train take."""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Image, load_dataset, load_from_disk
from tqdm.auto import tqdm

from configuration_cogview import CogViewVQVAEConfig
from modeling_cogview import CogViewVQVAE
from processing_cogview import CogViewImageProcessor

from ..data import decoded_image, load_image_folder, only_split


class EMACodebook:
    """The release's codebook update: exponential moving averages of code counts and sums (decay 0.99,
    Laplace-smoothed counts), so codes follow the encoder without a gradient."""

    def __init__(self, embedding: torch.Tensor, decay: float = 0.99, eps: float = 1e-5):
        self.embedding = embedding  # [n, d], updated in place
        self.decay, self.eps = decay, eps
        self.cluster_size = torch.zeros(embedding.shape[0])
        self.embed_sum = embedding.detach().clone()

    @torch.no_grad()
    def update(self, latents: torch.Tensor, codes: torch.Tensor):
        onehot = F.one_hot(codes, self.embedding.shape[0]).type(latents.dtype)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ latents, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.embedding.shape[0] * self.eps) * total
        self.embedding.copy_(self.embed_sum / smoothed.unsqueeze(1))

    @torch.no_grad()
    def restart_dead_codes(self, latents: torch.Tensor, threshold: float) -> int:
        dead = (self.cluster_size < threshold).nonzero().squeeze(1)
        if len(dead):
            picks = latents[torch.randint(0, len(latents), (len(dead),))]
            self.embedding[dead] = picks
            self.embed_sum[dead] = picks * threshold
            self.cluster_size[dead] = threshold
        return len(dead)


def load_pixels(args, processor) -> torch.Tensor:
    """Every distinct image of the source once (an image folder lists each image once per caption), as pixels."""
    if args.dataset:
        data = only_split(load_from_disk(args.dataset), args.split) if Path(args.dataset).is_dir() else load_dataset(args.dataset, split=args.split or "train")
    else:
        data = load_image_folder(args.images_dir, split=args.split)
    if isinstance(data.features.get(args.image_column), Image):
        data = data.cast_column(args.image_column, Image(decode=False))
    cells = {cell["path"] or hash(cell["bytes"]) if isinstance(cell, dict) else id(cell): cell for cell in data[args.image_column]}
    images = [decoded_image(cell) for cell in tqdm(cells.values(), desc="reading images")]
    skipped = sum(image is None for image in images)
    images = [image for image in images if image is not None]
    if not images:
        raise SystemExit("error: no readable images")
    pixels = torch.cat([processor(images[i : i + 256], return_tensors="pt")["pixel_values"] for i in range(0, len(images), 256)])
    print(f"{len(pixels)} images of {tuple(pixels.shape[1:])}, {skipped} unreadable skipped")
    return pixels


def evaluate(model: CogViewVQVAE, pixels: torch.Tensor) -> dict:
    model.eval()
    with torch.no_grad():
        codes = torch.cat([model.encode(pixels[i : i + 256]) for i in range(0, len(pixels), 256)])
        recon = torch.cat([model.decode(codes[i : i + 256]) for i in range(0, len(codes), 256)])
    counts = torch.bincount(codes.flatten(), minlength=model.config.num_embeddings).float()
    probs = counts / counts.sum()
    perplexity = torch.exp(-(probs[probs > 0] * probs[probs > 0].log()).sum())
    model.train()
    return {
        "reconstruction_mse": round(F.mse_loss(recon, pixels).item(), 5),
        "codes_used": int((counts > 0).sum()),
        "codebook_size": model.config.num_embeddings,
        "code_perplexity": round(perplexity.item(), 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images_dir", help="an image folder (metadata.jsonl optional)")
    source.add_argument("--dataset", help="a datasets dataset: a save_to_disk folder or a Hub name")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--split", default=None, help="metadata.jsonl split (or datasets split) to train on")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--num_downsamples", type=int, default=3, help="1, 2 or 3: 2x, 4x or 8x")
    parser.add_argument("--hidden_channels", type=int, default=512)
    parser.add_argument("--embed_dim", type=int, default=256)
    parser.add_argument("--num_embeddings", type=int, default=8192)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-3)
    parser.add_argument("--commitment", type=float, default=0.25, help="weight of the commitment loss")
    parser.add_argument("--decay", type=float, default=0.99, help="EMA decay of the codebook")
    parser.add_argument("--restart_every", type=int, default=100, help="restart dead codes every N steps (0: never)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)

    processor = CogViewImageProcessor(size={"shortest_edge": args.image_size}, crop_size={"height": args.image_size, "width": args.image_size})
    pixels = load_pixels(args, processor)
    config = CogViewVQVAEConfig(
        in_channels=3, hidden_channels=args.hidden_channels, embed_dim=args.embed_dim,
        num_embeddings=args.num_embeddings, num_downsamples=args.num_downsamples,
    )  # fmt: skip
    model = CogViewVQVAE(config).train()
    codebook = EMACodebook(model.quantizer.embedding.weight.data, decay=args.decay)
    model.quantizer.embedding.weight.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.learning_rate, total_steps=args.steps, pct_start=0.05)

    initial_mse = evaluate(model, pixels)["reconstruction_mse"]
    start, restarted = time.time(), 0
    progress = tqdm(range(args.steps), desc="VQ-VAE")
    for step in progress:
        batch = pixels[torch.randint(0, len(pixels), (args.batch_size,))]
        latents = model.encoder(batch).permute(0, 2, 3, 1)
        flat = latents.reshape(-1, config.embed_dim)
        codes = model.quantizer(latents).flatten()
        quantized = model.quantizer.embedding(codes)
        codebook.update(flat.detach(), codes)
        straight_through = flat + (quantized - flat).detach()
        recon = model.decoder(straight_through.view_as(latents).permute(0, 3, 1, 2))
        loss = F.mse_loss(recon, batch) + args.commitment * F.mse_loss(flat, quantized.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if args.restart_every and (step + 1) % args.restart_every == 0 and step + 1 < args.steps * 0.9:
            restarted += codebook.restart_dead_codes(flat.detach(), threshold=1e-3 * args.batch_size)
        progress.set_postfix(loss=f"{loss.item():.4f}")

    metrics = {**evaluate(model, pixels), "initial_reconstruction_mse": initial_mse, "steps": args.steps, "dead_codes_restarted": restarted, "train_seconds": round(time.time() - start, 1)}
    output = Path(args.output_dir)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    (output / "vqvae_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())

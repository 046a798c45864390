"""A diffusers `DiffusionPipeline` over CogView: `CogViewPipeline.from_pretrained(folder)(prompt).images`.

It loads the same folder as `CogViewForCausalLM.from_pretrained` (a transformers model with its processor) or a
folder its own `save_pretrained` wrote (diffusers layout: `model_index.json`, `transformer/`, `processor/`). This file
imports nothing from the cogview package, so it also works as a Hub pipeline file with `trust_remote_code=True`."""

import json
import shutil
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from transformers import AutoModelForCausalLM, AutoProcessor


class CogViewPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "transformer"

    def __init__(self, transformer, processor):
        super().__init__()
        self.register_modules(transformer=transformer, processor=processor)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        folder = Path(pretrained_model_name_or_path)
        if (folder / "model_index.json").is_file() or not (folder / "config.json").is_file():
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        trust_remote_code = kwargs.pop("trust_remote_code", None)
        transformer = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=trust_remote_code, **kwargs)
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
        return cls(transformer=transformer.eval(), processor=processor)

    def save_pretrained(self, save_directory, **kwargs):
        """The diffusers layout, made loadable by `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`
        anywhere: this file at the root and every component named by its own (copied) code file."""
        super().save_pretrained(save_directory, **kwargs)
        save_directory = Path(save_directory)
        shutil.copyfile(__file__, save_directory / "pipeline_cogview.py")
        index_file = save_directory / "model_index.json"
        index = json.loads(index_file.read_text())
        index["_class_name"] = ["pipeline_cogview", "CogViewPipeline"]
        for name in ("transformer", "processor"):
            component = getattr(self, name)
            index[name] = [type(component).__module__.split(".")[-1], type(component).__name__]
        index_file.write_text(json.dumps(index, indent=2, sort_keys=True))

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_images_per_prompt: int = 1,
        guidance_scale: float | None = None,
        top_k: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        progress_bar: bool = True,
        preview_callback=None,
        rerank_candidates: int | None = None,
        return_dict: bool = True,
    ):
        """`generator` makes sampling reproducible: its seed seeds the sampling (on a forked RNG).
        `rerank_candidates=N` keeps the best of N samples per image by the model's self-reranking (default: its
        generation_config `rerank_candidates`, else 1)."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        inputs = self.processor(text=prompt).to(self.transformer.device)
        generate_kwargs = {k: v for k, v in (("top_k", top_k), ("temperature", temperature)) if v is not None}
        candidates = rerank_candidates or getattr(self.transformer.generation_config, "rerank_candidates", None) or 1
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
            sequences = self.transformer.generate(
                **inputs,
                num_return_sequences=num_images_per_prompt * candidates,
                guidance_scale=guidance_scale,
                progress_bar=progress_bar,
                preview_callback=preview_callback,
                **generate_kwargs,
            )
        sequences = self.transformer.best_of(sequences, candidates)
        pixels = self.transformer.decode_image_tokens(sequences[:, -self.transformer.config.num_image_tokens :])
        if output_type == "pt":
            images = pixels
        else:
            images = self.processor.postprocess(pixels, output_type=output_type)
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


__all__ = ["CogViewPipeline"]

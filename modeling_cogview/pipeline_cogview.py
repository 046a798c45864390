"""A diffusers `DiffusionPipeline` over CogView: `CogViewPipeline.from_pretrained(folder)(prompt).images`.

It loads the same folder as `CogViewForCausalLM.from_pretrained` (a transformers model with its processor) or a
folder its own `save_pretrained` (or `push_to_hub`) wrote (diffusers layout: `model_index.json`, `transformer/`,
`processor/`), which `DiffusionPipeline.from_pretrained(folder_or_repo_id, trust_remote_code=True)` loads too. This
file imports nothing from the cogview package, so it also works as a Hub pipeline file with `trust_remote_code=True`."""

import json
import shutil
from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from transformers import AutoModelForCausalLM, AutoProcessor, GenerationConfig, PreTrainedModel, ProcessorMixin
from transformers.dynamic_module_utils import get_class_from_dynamic_module


# Where the diffusers layout keeps what diffusers does not download with a model folder (see CogViewTransformerLoader)
CODE_FOLDER = "processor"
MODEL_CLASS = "modeling_cogview.CogViewForCausalLM"


class CogViewTransformerLoader(PreTrainedModel):
    """What `model_index.json` names for the transformer: it loads CogViewForCausalLM, never an instance of itself.

    From a Hub repo, diffusers downloads only a model folder's weights, its config.json and the one code file that
    `model_index.json` names, not the modules that file imports nor generation_config.json. The transformer's code
    bundle therefore comes from the processor folder, which diffusers downloads whole and which carries the same
    bundle (and a copy of the generation config). This file imports nothing relatively, so it is enough on its own."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        folder = Path(pretrained_model_name_or_path)
        code_folder = folder.parent / CODE_FOLDER
        model_class = get_class_from_dynamic_module(MODEL_CLASS, code_folder)
        model = model_class.from_pretrained(folder, *args, **kwargs)
        if not (folder / "generation_config.json").is_file() and (code_folder / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(code_folder)
        return model


class CogViewProcessorLoader(ProcessorMixin):
    """What `model_index.json` names for the processor: it loads the folder's CogViewProcessor by its own code. The
    processor loads its image processor and tokenizer through the Auto classes, which ask again for
    `trust_remote_code`; `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` has already granted it."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        return AutoProcessor.from_pretrained(pretrained_model_name_or_path, trust_remote_code=True)


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
        anywhere, from a folder or a Hub repo (`push_to_hub` saves through here): this file at the root and in each
        component folder, whose `model_index.json` entries name its loaders, and the generation config also in
        `processor/`."""
        super().save_pretrained(save_directory, **kwargs)
        save_directory = Path(save_directory)
        for folder in (save_directory, save_directory / "transformer", save_directory / CODE_FOLDER):
            shutil.copyfile(__file__, folder / "pipeline_cogview.py")
        generation_config = save_directory / "transformer" / "generation_config.json"
        if generation_config.is_file():
            shutil.copyfile(generation_config, save_directory / CODE_FOLDER / "generation_config.json")
        index_file = save_directory / "model_index.json"
        index = json.loads(index_file.read_text())
        index["_class_name"] = ["pipeline_cogview", type(self).__name__]
        index["transformer"] = ["pipeline_cogview", CogViewTransformerLoader.__name__]
        index["processor"] = ["pipeline_cogview", CogViewProcessorLoader.__name__]
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
        scoring_chunk_size: int = 8,
        return_dict: bool = True,
    ):
        """Draws through the model's one drawing call, `generate(generation_mode="image")`: an option left None takes
        the model's generation_config default (guidance, top-k, temperature, `rerank_candidates`: the best of N samples
        per image by self-reranking). `generator` makes sampling reproducible: its seed seeds the sampling on a forked
        random state. Inputs go to `_execution_device`, so `enable_model_cpu_offload()` works."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        device = self._execution_device
        inputs = self.processor(text=prompt).to(device)
        accelerator = {} if device.type == "cpu" else {"device_type": device.type}
        with torch.random.fork_rng(devices=[device.index or 0] if accelerator else [], enabled=generator is not None, **accelerator):
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
            image_tokens = self.transformer.generate(
                **inputs,
                generation_mode="image",
                num_return_sequences=num_images_per_prompt,
                guidance_scale=guidance_scale,
                top_k=top_k,
                temperature=temperature,
                rerank_candidates=rerank_candidates,
                scoring_chunk_size=scoring_chunk_size,
                progress_bar=progress_bar,
                preview_callback=preview_callback,
            )
        pixels = self.transformer.decode_image_tokens(image_tokens)
        images = pixels if output_type == "pt" else self.processor.postprocess(pixels, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


class CogViewSuperResolutionPipeline(CogViewPipeline):
    """Super-resolution with a super-resolution model (cogview-sr), as diffusers' upscale pipelines take it:
    `pipe(prompt=..., image=...).images`, each image at twice the size. `mode="magnify"` (default) reads the image at
    the model's size and doubles its codes through the release's nine windows (`transformer.magnify`);
    `mode="low-level"` reads it at half that size and draws the full-size image in one go. Loads and saves like
    `CogViewPipeline` (a model folder, or diffusers' layout with `DiffusionPipeline.from_pretrained`)."""

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image=None,
        mode: str = "magnify",
        top_k: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        progress_bar: bool = True,
        return_dict: bool = True,
    ):
        """`image`: a PIL image, an array or a tensor, or a list of them; `prompt`: their captions (one for all, or
        one each; default none). Options left None take the model's generation_config (the release's SR sampling)."""
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if mode not in ("magnify", "low-level"):
            raise ValueError(f"mode must be 'magnify' or 'low-level', got {mode!r}")
        if image is None:
            raise ValueError("super-resolution needs image=")
        images = image if isinstance(image, list) else [image]
        prompts = [prompt or ""] * len(images) if prompt is None or isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(images):
            raise ValueError(f"got {len(prompts)} prompts for {len(images)} images")
        device = self._execution_device
        sampling = {"top_k": top_k, "temperature": temperature, "progress_bar": progress_bar}
        accelerator = {} if device.type == "cpu" else {"device_type": device.type}
        with torch.random.fork_rng(devices=[device.index or 0] if accelerator else [], enabled=generator is not None, **accelerator):
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
            if mode == "low-level":
                inputs = self.processor(text=prompts, images=images, task="super-resolution").to(device)
                image_tokens = self.transformer.generate(**inputs, generation_mode="image", **sampling)
            else:
                pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"].to(device)
                text_ids = [self.processor.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"] for text in prompts]
                image_tokens = self.transformer.magnify(self.transformer.get_image_tokens(pixels), text_ids, **sampling)
        pixels = self.transformer.decode_image_tokens(image_tokens)
        result = pixels if output_type == "pt" else self.processor.postprocess(pixels, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return ImagePipelineOutput(images=result)


__all__ = ["CogViewPipeline", "CogViewProcessorLoader", "CogViewSuperResolutionPipeline", "CogViewTransformerLoader"]

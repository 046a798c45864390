"""A diffusers `DiffusionPipeline` over CogView: `CogViewPipeline.from_pretrained(folder)(prompt).images`.

It loads the same folder as `CogViewForCausalLM.from_pretrained` (a transformers model with its processor) or a
folder its own `save_pretrained` (or `push_to_hub`) wrote (diffusers layout: `model_index.json`, `transformer/`,
`processor/`), which `DiffusionPipeline.from_pretrained(folder_or_repo_id, trust_remote_code=True)` loads too. This
file imports nothing from the cogview package, so it also works as a Hub pipeline file with `trust_remote_code=True`."""

import json
import shutil
from contextlib import contextmanager
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
        """A folder or a Hub repo id, in either layout: a transformers model folder (config.json, the processor) or
        diffusers' (model_index.json). A repo id is downloaded first (`revision=` pins a version)."""
        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(pretrained_model_name_or_path), revision=kwargs.pop("revision", None)))
        if (folder / "model_index.json").is_file() or not (folder / "config.json").is_file():
            return super().from_pretrained(folder, **kwargs)
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

    _callback_tensor_inputs = ["latents"]  # the image codes drawn so far [images, rows * side]: CogView's latents
    output_types = ("pil", "np", "pt", "latent")

    def check_call(self, output_type: str, callback_on_step_end_tensor_inputs: list[str]):
        if output_type not in self.output_types:
            raise ValueError(f"output_type must be one of {self.output_types}, got {output_type!r}")
        if unknown := set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs):
            raise ValueError(f"callback_on_step_end_tensor_inputs can hold {self._callback_tensor_inputs}, not {sorted(unknown)}")

    def steps(self, total: int, shown: bool = True):
        """diffusers' `self.progress_bar` (so `set_progress_bar_config` applies), or a silent one for this call."""
        if shown:
            return self.progress_bar(total=total)
        from tqdm.auto import tqdm

        return tqdm(total=total, disable=True)

    @contextmanager
    def seeded(self, generator: torch.Generator | None):
        """Sampling seeded by `generator`'s seed on a forked random state (the caller's stays as it was)."""
        device = self._execution_device
        accelerator = {} if device.type == "cpu" else {"device_type": device.type}
        with torch.random.fork_rng(devices=[device.index or 0] if accelerator else [], enabled=generator is not None, **accelerator):
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
            yield

    def finish(self, image_tokens: torch.LongTensor, output_type: str, return_dict: bool):
        """Codes -> the asked output: "latent" the codes themselves, "pt" float pixels in [0, 1] [B, 3, H, W], "np"
        the same as an array [B, H, W, 3], "pil" PIL images (diffusers' output types)."""
        if output_type == "latent":
            images = image_tokens
        else:
            pixels = self.transformer.decode_image_tokens(image_tokens)
            if output_type == "pil":
                images = self.processor.postprocess(pixels)
            else:
                floats = self.processor.postprocess(pixels, output_type="np").astype("float32") / 255.0
                images = torch.from_numpy(floats).permute(0, 3, 1, 2) if output_type == "pt" else floats
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

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
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        rerank_candidates: int | None = None,
        scoring_chunk_size: int = 8,
        progress_bar: bool = True,
    ):
        """Draws through the model's one drawing call, `generate(generation_mode="image")`: an option left None takes
        the model's generation_config default (guidance, top-k, temperature, `rerank_candidates`: the best of N samples
        per image by self-reranking). `generator` makes sampling reproducible: its seed seeds the sampling on a forked
        random state. A step is an image row: `self.progress_bar` counts rows (`set_progress_bar_config` applies) and
        `callback_on_step_end(pipe, row, row, {"latents": codes so far})` runs after each one (every candidate's rows,
        in `num_return_sequences` order; what it returns is not fed back: the codes are the model's);
        `progress_bar=False` hides the bar for this call. Inputs go to `_execution_device`, so
        `enable_model_cpu_offload()` works."""
        self.check_call(output_type, callback_on_step_end_tensor_inputs)
        inputs = self.processor(text=prompt).to(self._execution_device)
        rows = self.transformer.config.image_grid_size
        with self.steps(rows, progress_bar) as bar, self.seeded(generator):

            def after_row(codes: torch.LongTensor):
                bar.update(1)
                if callback_on_step_end is not None:
                    callback_on_step_end(self, codes.shape[1] // rows - 1, codes.shape[1] // rows - 1, {"latents": codes})

            image_tokens = self.transformer.generate(
                **inputs,
                generation_mode="image",
                num_return_sequences=num_images_per_prompt,
                guidance_scale=guidance_scale,
                top_k=top_k,
                temperature=temperature,
                rerank_candidates=rerank_candidates,
                scoring_chunk_size=scoring_chunk_size,
                preview_callback=after_row,
                preview_every_rows=1,
            )
        return self.finish(image_tokens.view(-1, rows, rows), output_type, return_dict)


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
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        progress_bar: bool = True,
    ):
        """`image`: a PIL image, an array or a tensor, or a list of them; `prompt`: their captions (one for all, or
        one each; default none). Options left None take the model's generation_config (the release's SR sampling).
        A step is a magnify window (low-level: an image row); `self.progress_bar` counts them and
        `callback_on_step_end(pipe, step, step, {"latents": codes so far})` runs after each. Output types as
        `CogViewPipeline`'s ("latent": the 2x codes)."""
        self.check_call(output_type, callback_on_step_end_tensor_inputs)
        if mode not in ("magnify", "low-level"):
            raise ValueError(f"mode must be 'magnify' or 'low-level', got {mode!r}")
        if image is None:
            raise ValueError("super-resolution needs image=")
        images = image if isinstance(image, list) else [image]
        prompts = [prompt or ""] * len(images) if prompt is None or isinstance(prompt, str) else list(prompt)
        if len(prompts) != len(images):
            raise ValueError(f"got {len(prompts)} prompts for {len(images)} images")
        device, side = self._execution_device, self.transformer.config.image_grid_size
        steps = 9 if mode == "magnify" else side
        with self.steps(steps, progress_bar) as bar, self.seeded(generator):

            def after_step(step: int, codes: torch.LongTensor):
                bar.update(1)
                if callback_on_step_end is not None:
                    callback_on_step_end(self, step, step, {"latents": codes})

            if mode == "low-level":
                inputs = self.processor(text=prompts, images=images, task="super-resolution").to(device)
                image_tokens = self.transformer.generate(
                    **inputs, generation_mode="image", top_k=top_k, temperature=temperature, preview_every_rows=1,
                    preview_callback=lambda codes: after_step(codes.shape[1] // side - 1, codes),
                ).view(-1, side, side)  # fmt: skip
            else:
                pixels = self.processor.image_processor(images, return_tensors="pt")["pixel_values"].to(device)
                text_ids = [self.processor.encode_text(text) for text in prompts]
                image_tokens = self.transformer.magnify(
                    self.transformer.get_image_tokens(pixels), text_ids, top_k=top_k, temperature=temperature, on_window=after_step
                )
        return self.finish(image_tokens, output_type, return_dict)


__all__ = ["CogViewPipeline", "CogViewProcessorLoader", "CogViewSuperResolutionPipeline", "CogViewTransformerLoader"]

"""transformers pipelines for CogView: `pipeline("text-to-image", model=...)`, captioning
(`pipeline("image-to-text", model=..., trust_remote_code=True)`) and super-resolution
(`pipeline("image-to-image", model=SR_FOLDER)`).

Saved model folders name both in `config.custom_pipelines`, so they also load as remote code."""

from transformers import Pipeline
from transformers.image_utils import load_image

from .generation_cogview import sampling_seed


class CogViewTextToImagePipeline(Pipeline):
    """prompt(s) -> for each prompt, a list of `{"image": PIL.Image}` (`num_images_per_prompt` of them).

    Drawing is the model's one drawing call, `generate(generation_mode="image")`: every option it takes passes
    through (`guidance_scale`, `top_k`, `temperature`, `rerank_candidates`, `scoring_chunk_size`, `progress_bar`,
    `preview_callback`, ...), each defaulting to the model's generation_config. `seed` (or a `torch.Generator`'s
    seed) makes the sampling reproducible without reseeding the caller's global random state."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, num_images_per_prompt=None, seed=None, generator=None, **generate_kwargs):
        forward = dict(generate_kwargs)  # only what this call gives: the pipeline merges it over its build-time options
        if num_images_per_prompt is not None:
            forward["num_return_sequences"] = num_images_per_prompt
        if generator is not None:
            seed = generator.initial_seed()
        if seed is not None:
            forward["seed"] = int(seed)
        return {}, forward, {}

    def preprocess(self, prompt):
        if not isinstance(prompt, str):
            raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}")
        return self.processor(text=prompt)

    def _forward(self, model_inputs, seed=None, progress_bar=True, **generate_kwargs):
        """A pipeline shows its progress (model.generate only when asked)."""
        with sampling_seed(seed, self.model.device):
            image_tokens = self.model.generate(**model_inputs, generation_mode="image", progress_bar=progress_bar, **generate_kwargs)
        return {"pixels": self.model.decode_image_tokens(image_tokens)}

    def postprocess(self, model_outputs):
        return [{"image": image} for image in self.processor.postprocess(model_outputs["pixels"])]


class CogViewImageToTextPipeline(Pipeline):
    """image(s) (PIL, path or URL) -> `[{"generated_text": caption}]`, sampled with CogView's caption rules."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, max_new_tokens=None, **generate_kwargs):
        forward = dict(generate_kwargs)
        if max_new_tokens is not None:
            forward["max_new_tokens"] = max_new_tokens
        forward.setdefault("progress_bar", False)
        return {}, forward, {}

    def preprocess(self, image):
        return self.processor(images=load_image(image) if isinstance(image, str) else image)

    def _forward(self, model_inputs, **generate_kwargs):
        return {"sequences": self.model.generate(**model_inputs, **generate_kwargs)}

    def postprocess(self, model_outputs):
        return [{"generated_text": self.processor.decode_caption(sequence)} for sequence in model_outputs["sequences"]]


SUPER_RESOLUTION_MODES = ("magnify", "low-level")


class CogViewImageToImagePipeline(Pipeline):
    """image(s) (PIL, path or URL) -> each at twice the size (PIL), by a super-resolution model (cogview-sr):

    - `mode="magnify"` (the default): the image is read at the model's size (256 px in the release) and its codes
      doubled by the nine windows of `model.magnify` (512 px);
    - `mode="low-level"`: the image is read at half that size (128 px) and the model draws the full-size image
      (256 px) in one go, the release's low-level super-resolution.

    `prompt` is the caption the model conditions on (default: none); `seed` (or a `torch.Generator`'s seed) makes
    the sampling reproducible; sampling options (`top_k`, `temperature`, `progress_bar`, ...) pass on to `generate`,
    each defaulting to the model's generation_config."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, prompt=None, mode=None, seed=None, generator=None, **generate_kwargs):
        if mode is not None and mode not in SUPER_RESOLUTION_MODES:
            raise ValueError(f"mode must be one of {SUPER_RESOLUTION_MODES}, got {mode!r}")
        if generator is not None:
            seed = generator.initial_seed()
        # only what this call gives: the pipeline merges it over what was given when it was built
        preprocess = {key: value for key, value in (("prompt", prompt), ("mode", mode)) if value is not None}
        forward = dict(generate_kwargs)
        if mode is not None:
            forward["mode"] = mode
        if seed is not None:
            forward["seed"] = int(seed)
        return preprocess, forward, {}

    def preprocess(self, image, prompt: str = "", mode: str = SUPER_RESOLUTION_MODES[0]):
        if not self.model.config.super_resolution:
            raise ValueError("image-to-image needs a super-resolution model (config.super_resolution): convert cogview-sr or train one")
        image = load_image(image) if isinstance(image, str) else image
        if mode == "low-level":
            return self.processor(text=prompt, images=image, task="super-resolution")
        inputs = self.processor.image_processor(image, return_tensors="pt")
        inputs["text_ids"] = [self.processor.encode_text(prompt)]
        return inputs

    def _forward(self, model_inputs, seed=None, mode=SUPER_RESOLUTION_MODES[0], **generate_kwargs):
        with sampling_seed(seed, self.model.device):
            if mode == "low-level":
                image_tokens = self.model.generate(**model_inputs, generation_mode="image", **generate_kwargs)
            else:
                pixels = model_inputs["pixel_values"].to(self.model.device)
                image_tokens = self.model.magnify(self.model.get_image_tokens(pixels), model_inputs["text_ids"], **generate_kwargs)
        return {"pixels": self.model.decode_image_tokens(image_tokens)}

    def postprocess(self, model_outputs):
        (image,) = self.processor.postprocess(model_outputs["pixels"])
        return image


__all__ = ["CogViewImageToTextPipeline", "CogViewImageToImagePipeline", "CogViewTextToImagePipeline"]

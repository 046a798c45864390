"""transformers pipelines for CogView: `pipeline("text-to-image", model=...)` and captioning,
`pipeline("image-to-text", model=..., trust_remote_code=True)`.

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
        forward = dict(generate_kwargs)
        forward.setdefault("progress_bar", True)  # a pipeline shows its progress; model.generate only when asked
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

    def _forward(self, model_inputs, seed=None, **generate_kwargs):
        with sampling_seed(seed, self.model.device):
            image_tokens = self.model.generate(**model_inputs, generation_mode="image", **generate_kwargs)
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


__all__ = ["CogViewImageToTextPipeline", "CogViewTextToImagePipeline"]

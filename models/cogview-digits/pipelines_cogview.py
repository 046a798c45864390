"""transformers pipelines for CogView: `pipeline("text-to-image", model=...)` and captioning,
`pipeline("image-to-text", model=..., trust_remote_code=True)`.

Saved model folders name both in `config.custom_pipelines`, so they also load as remote code."""

import torch
from transformers import Pipeline
from transformers.image_utils import load_image


class CogViewTextToImagePipeline(Pipeline):
    """prompt(s) -> for each prompt, a list of `{"image": PIL.Image}` (`num_images_per_prompt` of them).

    Generation arguments (`guidance_scale`, `top_k`, `temperature`, `progress_bar`, `preview_callback`, ...) pass
    through to `model.generate`; `generator` (a `torch.Generator`) or `seed` makes the sampling reproducible;
    `rerank_candidates=N` keeps the best of N samples per image by self-reranking (default: the model's
    generation_config `rerank_candidates`, else 1), scoring `scoring_chunk_size` candidates at a time."""

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(
        self, num_images_per_prompt=None, seed=None, generator=None, rerank_candidates=None, scoring_chunk_size=None, **generate_kwargs
    ):
        forward = dict(generate_kwargs)
        forward.setdefault("progress_bar", True)  # a pipeline shows its progress; model.generate only when asked
        if rerank_candidates is not None:
            forward["rerank_candidates"] = rerank_candidates
        if scoring_chunk_size is not None:
            forward["scoring_chunk_size"] = scoring_chunk_size
        if num_images_per_prompt is not None:
            forward["num_return_sequences"] = num_images_per_prompt
        if seed is not None:
            forward["seed"] = seed
        if generator is not None:
            forward["seed"] = int(generator.initial_seed())
        return {}, forward, {}

    def preprocess(self, prompt):
        if not isinstance(prompt, str):
            raise TypeError(f"a prompt must be a string, got {type(prompt).__name__}")
        return self.processor(text=prompt)

    def _forward(self, model_inputs, seed=None, rerank_candidates=None, scoring_chunk_size=8, num_return_sequences=1, **generate_kwargs):
        if seed is not None:
            torch.manual_seed(seed)
        grid = self.model.config.num_image_tokens
        candidates = rerank_candidates or getattr(self.model.generation_config, "rerank_candidates", None) or 1
        sequences = self.model.generate(**model_inputs, num_return_sequences=num_return_sequences * candidates, **generate_kwargs)
        sequences = self.model.best_of(sequences, candidates, chunk_size=scoring_chunk_size)
        return {"pixels": self.model.decode_image_tokens(sequences[:, -grid:])}

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

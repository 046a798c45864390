"""CogView for the Hugging Face stack: the transformer, its VQ-VAE, generation, pipelines and the checkpoint
converter. Importing this package registers the Auto classes and the pipelines (the configuration and the
processors live in the top-level modules `configuration_cogview` and `processing_cogview`)."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultimodalLM,
    AutoProcessor,
    AutoTokenizer,
)
from transformers import pipelines as transformers_pipelines
from transformers.pipelines import PIPELINE_REGISTRY

from configuration_cogview import COMMAND_TOKENS, CogViewConfig, CogViewVQVAEConfig
from processing_cogview import CogViewImageProcessor, CogViewProcessor, CogViewTokenizer, CogViewTokenizerFast

from .modeling_cogview import CogViewForCausalLM, CogViewModel, CogViewPreTrainedModel
from .modeling_cogview_vqvae import CogViewVQVAE
from .pipeline_cogview import CogViewPipeline, CogViewSuperResolutionPipeline
from .pipelines_cogview import CogViewImageToTextPipeline, CogViewImageToImagePipeline, CogViewTextToImagePipeline


AutoConfig.register("cogview", CogViewConfig, exist_ok=True)
AutoConfig.register("cogview_vqvae", CogViewVQVAEConfig, exist_ok=True)
AutoModel.register(CogViewConfig, CogViewModel, exist_ok=True)
AutoModel.register(CogViewVQVAEConfig, CogViewVQVAE, exist_ok=True)
AutoModelForCausalLM.register(CogViewConfig, CogViewForCausalLM, exist_ok=True)
AutoModelForMultimodalLM.register(CogViewConfig, CogViewForCausalLM, exist_ok=True)  # pipeline("any-to-any")
AutoImageProcessor.register(CogViewConfig, image_processor_classes={"pil": CogViewImageProcessor}, exist_ok=True)
AutoTokenizer.register(CogViewConfig, slow_tokenizer_class=CogViewTokenizer, fast_tokenizer_class=CogViewTokenizerFast, exist_ok=True)
AutoProcessor.register(CogViewConfig, CogViewProcessor, exist_ok=True)
PIPELINE_REGISTRY.register_pipeline(
    "text-to-image", pipeline_class=CogViewTextToImagePipeline, pt_model=AutoModelForCausalLM, type="multimodal"
)
# transformers 5 removed its image-to-image task (REMOVED_TASKS sends users to diffusers, before any registry is
# read): super-resolution takes the name back. A saved folder names the task in custom_pipelines, which transformers
# reads before that check, so remote code needs nothing of the kind. tests/test_super_resolution.py pins this.
transformers_pipelines.REMOVED_TASKS.pop("image-to-image", None)
PIPELINE_REGISTRY.register_pipeline(
    "image-to-image", pipeline_class=CogViewImageToImagePipeline, pt_model=AutoModelForCausalLM, type="image"
)

__all__ = [
    "COMMAND_TOKENS",
    "CogViewConfig",
    "CogViewForCausalLM",
    "CogViewImageProcessor",
    "CogViewImageToTextPipeline",
    "CogViewModel",
    "CogViewPipeline",
    "CogViewPreTrainedModel",
    "CogViewProcessor",
    "CogViewSuperResolutionPipeline",
    "CogViewImageToImagePipeline",
    "CogViewTextToImagePipeline",
    "CogViewTokenizer",
    "CogViewTokenizerFast",
    "CogViewVQVAE",
    "CogViewVQVAEConfig",
]

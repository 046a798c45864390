"""CogView for the Hugging Face stack. Importing the package registers the Auto classes."""

from .configuration_cogview import COMMAND_TOKENS, CogViewConfig, CogViewVQVAEConfig
from .modeling_cogview import CogViewForCausalLM, CogViewModel, CogViewPreTrainedModel
from .modeling_cogview_vqvae import CogViewVQVAE
from .image_processing_cogview import CogViewImageProcessor
from .processing_cogview import CogViewProcessor
from .tokenization_cogview import CogViewTokenizer, CogViewTokenizerFast
from .pipeline_cogview import CogViewPipeline
from .pipelines_cogview import CogViewImageToTextPipeline, CogViewTextToImagePipeline

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
    "CogViewTextToImagePipeline",
    "CogViewTokenizer",
    "CogViewTokenizerFast",
    "CogViewVQVAE",
    "CogViewVQVAEConfig",
]

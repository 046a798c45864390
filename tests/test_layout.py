"""The design card's layout: `configuration_cogview`, `processing_cogview` and the `modeling_cogview` package are
importable from any folder once installed, and each class is defined in the module the card names."""

import subprocess
import sys


CHECK_LAYOUT = """
from configuration_cogview import CogViewConfig, CogViewVQVAEConfig
from modeling_cogview import CogViewForCausalLM, CogViewModel, CogViewPipeline, CogViewVQVAE
from processing_cogview import CogViewImageProcessor, CogViewProcessor, CogViewTokenizer, CogViewTokenizerFast
for cls in (CogViewConfig, CogViewVQVAEConfig):
    assert cls.__module__ == "configuration_cogview", cls
for cls in (CogViewProcessor, CogViewImageProcessor, CogViewTokenizer, CogViewTokenizerFast):
    assert cls.__module__ == "processing_cogview", cls
for cls in (CogViewForCausalLM, CogViewModel, CogViewPipeline, CogViewVQVAE):
    assert cls.__module__.startswith("modeling_cogview."), cls
import cogview_tools.cli.generate, cogview_tools.hub, cogview_tools.model_card, cogview_tools.training, cogview_tools.data
assert not hasattr(__import__("modeling_cogview"), "model_card")  # tooling lives outside the model package
from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
assert AutoConfig.for_model("cogview").__class__ is CogViewConfig
assert PROCESSOR_MAPPING[CogViewConfig] is CogViewProcessor
print("ok")
"""


def test_card_modules_import_from_any_folder(tmp_path):
    result = subprocess.run([sys.executable, "-c", CHECK_LAYOUT], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


def test_no_cogview_package_remains():
    result = subprocess.run([sys.executable, "-c", "import cogview"], capture_output=True, text=True, cwd="/")
    assert "No module named 'cogview'" in result.stderr

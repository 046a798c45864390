# Generated from the cogview package's modeling_cogview/remote_code.py by modeling_cogview/remote_code.py: do not edit this copy.
"""The flat code bundle a saved folder carries, so it loads with `trust_remote_code=True` where this project is not
installed (a Hub repo, a colleague's machine).

transformers imports a folder's code as one flat package and copies a class's file with its *relative* imports
only. Our sources are two top-level modules and the `modeling_cogview` package, which import each other by absolute
name; the bundle is generated from them at save time with those imports made relative. Loaded from a bundle, this
file finds its siblings in its own folder, so a remote-code model saves a working bundle too."""

import importlib.util
import json
import re
from pathlib import Path


# file -> where it lives in the project (the bundle puts them all side by side)
BUNDLE_FILES = (
    "configuration_cogview.py",
    "processing_cogview.py",
    "modeling_cogview.py",
    "modeling_cogview_vqvae.py",
    "generation_cogview.py",
    "super_resolution_cogview.py",
    "pipelines_cogview.py",
    "remote_code.py",
)
BUNDLED_MODULES = "|".join(name.removesuffix(".py") for name in BUNDLE_FILES)
# `from configuration_cogview import` / `from modeling_cogview.remote_code import` -> `from .x import`
ABSOLUTE_IMPORT = re.compile(rf"^(\s*)from (?:modeling_cogview\.)?({BUNDLED_MODULES}) import ", re.M)
RUNNING_FROM_BUNDLE = __package__ != "modeling_cogview"
TOP_LEVEL_MODULES = ("configuration_cogview.py", "processing_cogview.py")  # the rest live in modeling_cogview/
GENERATED = "# Generated from the cogview package's {source} by modeling_cogview/remote_code.py: do not edit this copy.\n"

# the pipelines the bundle serves, recorded in config.json for `pipeline(task, model=folder, trust_remote_code=True)`
CUSTOM_PIPELINES = {
    "text-to-image": {"impl": "pipelines_cogview.CogViewTextToImagePipeline", "pt": ["AutoModelForCausalLM"], "type": "multimodal"},
    "image-to-text": {"impl": "pipelines_cogview.CogViewImageToTextPipeline", "pt": ["AutoModelForCausalLM"], "type": "multimodal"},
    "image-to-image": {"impl": "pipelines_cogview.CogViewImageToImagePipeline", "pt": ["AutoModelForCausalLM"], "type": "image"},
}


def source_file(name: str) -> Path | None:
    """A bundle file's source: beside this file (the package, or a loaded bundle), else the top-level module.
    A loaded bundle holds only the files its classes imported: the others are None there."""
    beside = Path(__file__).with_name(name)
    if beside.is_file():
        return beside
    if RUNNING_FROM_BUNDLE:
        return None
    spec = importlib.util.find_spec(name.removesuffix(".py"))
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"cannot find {name} to write the remote-code bundle")
    return Path(spec.origin)


def bundle_text(name: str) -> str:
    """The bundled form of one file: a first line that says where it comes from, imports of the top-level modules
    made relative. (A loaded bundle's own copy already carries that line: it is not repeated.)"""
    text = source_file(name).read_text(encoding="utf-8")
    text = text.split("\n", 1)[1] if text.startswith("# Generated from the cogview package") else text
    source = name if name in TOP_LEVEL_MODULES else f"modeling_cogview/{name}"
    return GENERATED.format(source=source) + ABSOLUTE_IMPORT.sub(r"\1from .\2 import ", text)


def write_remote_code(save_directory: str | Path, model_class: str | None = None):
    """Write (or refresh) every bundle file in a saved folder, and name the bundle's pipelines and Auto classes in
    its config.json (`model_class`, "module.Class" in the bundle, for AutoModelForCausalLM when a model is saved)."""
    save_directory = Path(save_directory)
    for name in BUNDLE_FILES:
        if source_file(name) is not None:
            (save_directory / name).write_text(bundle_text(name), encoding="utf-8")
    config_file = save_directory / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config["custom_pipelines"] = CUSTOM_PIPELINES
        if model_class is not None:
            config.setdefault("auto_map", {})["AutoModelForCausalLM"] = model_class
        if "AutoModelForCausalLM" in config.get("auto_map", {}):  # the any-to-any pipeline's Auto class, same model
            config["auto_map"]["AutoModelForMultimodalLM"] = config["auto_map"]["AutoModelForCausalLM"]
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


__all__ = ["BUNDLE_FILES", "CUSTOM_PIPELINES", "bundle_text", "write_remote_code"]

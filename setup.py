"""`pip install .` (or `-e .`): the two top-level modules, the model package, the tooling package with its console
scripts, and the model card template copied into the tooling package at build time (`model_card.md` at the top stays
the template's source)."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


HERE = Path(__file__).resolve().parent
CARD_TEMPLATE = "model_card.md"


class BuildWithCardTemplate(build_py):
    """Puts the top-level model_card.md into the built cogview_tools package, where `importlib.resources` finds it."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "cogview_tools" / CARD_TEMPLATE
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(HERE / CARD_TEMPLATE), str(target))


CONSOLE_SCRIPTS = {
    "cogview-generate": "generate",
    "cogview-caption": "caption",
    "cogview-rerank": "rerank",
    "cogview-convert": "convert",
    "cogview-prepare-digits": "prepare_digits",
    "cogview-train-vqvae": "train_vqvae",
    "cogview-tokenize": "tokenize_dataset",
    "cogview-train": "train",
    "cogview-push": "push_to_hub",
    "cogview-super-resolve": "super_resolve",
    "cogview-refresh-code": "refresh_code",
    "cogview-demo": "demo",
}
TEST = ["pytest>=8", "scikit-learn>=1.5", "mlxtend>=0.23", "gradio>=6.31,<7", "gradio_client>=2.7,<3", "selenium>=4.51,<5"]
DEMO = ["gradio>=6.31,<7"]

setup(
    name="cogview",
    version="0.2.0",
    description="CogView (THUDM, NeurIPS 2021) text-to-image GPT for transformers, diffusers and PEFT",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # the design card's layout: two top-level modules, the models package and the tooling package
    py_modules=["configuration_cogview", "processing_cogview"],
    packages=find_packages(include=["modeling_cogview", "modeling_cogview.*", "cogview_tools", "cogview_tools.*"]),
    cmdclass={"build_py": BuildWithCardTemplate},
    python_requires=">=3.10",
    install_requires=[
        # a range that the CPU wheel already installed (`pip install torch==2.13.0`) satisfies
        "torch>=2.6,<=2.14.1",
        # the versions tested here; transformers 5.x renames things between minors, so bump these deliberately
        "transformers>=5.24,<5.25",
        "tokenizers>=0.22",
        "accelerate>=1.15,<1.16",
        "datasets>=5.2,<5.3",
        "diffusers>=0.42,<0.43",
        "peft>=0.21,<0.22",
        "safetensors>=0.6",
        "sentencepiece>=0.2",
        "protobuf>=5",  # the fast tokenizer's conversion from SentencePiece reads the model proto
        "huggingface_hub>=2.4,<2.5",
        "pillow>=10",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # the tests drive the web demo through gradio_client and a real browser (Debian's chromium via selenium)
        "test": TEST,
        "demo": DEMO,  # cogview-demo
        "dev": sorted(set(TEST + DEMO)),
    },
    entry_points={"console_scripts": [f"{name}=cogview_tools.cli.{module}:main" for name, module in CONSOLE_SCRIPTS.items()]},
)

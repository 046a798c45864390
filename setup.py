from setuptools import find_packages, setup


setup(
    name="cogview",
    version="0.1.0",
    description="CogView (THUDM, NeurIPS 2021) text-to-image GPT for transformers, diffusers and PEFT",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # the design card's layout: two top-level modules and the models package
    py_modules=["configuration_cogview", "processing_cogview"],
    packages=find_packages(include=["modeling_cogview", "modeling_cogview.*"]),
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
        # the web demo's tests drive gradio through gradio_client and a real browser (Debian's chromium via selenium)
        "dev": ["pytest>=8", "scikit-learn>=1.5", "mlxtend>=0.23", "gradio>=6.31,<7", "gradio_client>=2.7,<3", "selenium>=4.51,<5"],
        "demo": ["gradio>=6.31,<7"],  # scripts/demo.py
    },
    entry_points={
        "console_scripts": [
            "cogview-convert=modeling_cogview.convert_cogview_checkpoint:main",
        ]
    },
)

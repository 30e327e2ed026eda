"""Packaging for diffusers_pixart: PixArt-alpha, Hub-native, on diffusers' base classes."""

from setuptools import find_packages, setup

CORE = [
    "torch>=2.4",
    "diffusers>=0.42.1,<0.43",
    "transformers>=5.0",
    "accelerate>=1.10",
    "huggingface-hub>=1.0",
    "safetensors>=0.4",
    "peft>=0.17",
    "sentencepiece>=0.2",
    "beautifulsoup4>=4.12",
    "ftfy>=6.2",
    "numpy>=1.26",
    "pillow>=10.0",
    "tqdm>=4.66",
    "scipy>=1.11",
]
TRAIN = [
    "datasets>=4.0",
    "tensorboard>=2.16",
    "evaluate>=0.4.3",
    "pyyaml>=6.0",
    "textblob>=0.19",
    "opencv-python-headless>=4.8",
    "came-pytorch>=0.1.3",  # --optimizer came (the optimizer of PixArt-Sigma and Sana)
    "matplotlib>=3.8",  # the toy experiments' curves (ablations, VAE swap)
]
SPACE = ["gradio>=6.0"]
#: The low-memory mode's int8 T5: torchao's weight-only quantization, which runs on CPU and CUDA.
LOWMEM = ["torchao>=0.18"]
#: --optimizer adamw8bit: bitsandbytes' 8-bit AdamW (CPU and CUDA backends); without it torchao's (LOWMEM) serves.
OPTIM = ["bitsandbytes>=0.45"]
BENCH = ["matplotlib>=3.8", "psutil>=5.9"] + LOWMEM
DEV = TRAIN + SPACE + LOWMEM + ["pytest>=8.0", "ruff>=0.6", "playwright>=1.50"]

setup(
    name="diffusers_pixart",
    version="0.1.0",
    description="PixArt-alpha text-to-image diffusion transformer, training recipe and tools, Hub-native on diffusers.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    package_dir={"": "src"},
    packages=find_packages("src"),
    include_package_data=True,
    package_data={"diffusers_pixart": ["model_card.md", "toy_model/**/*"]},
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"train": TRAIN, "space": SPACE, "lowmem": LOWMEM, "optim": OPTIM, "bench": BENCH, "dev": DEV},
    entry_points={"console_scripts": ["pixart=diffusers_pixart.cli:main"]},
)

"""DreamBooth for PixArt-alpha (paper appendix A.9): teach the model a subject from a handful of images.

The paper's recipe: full fine-tune of the transformer, learning rate 5e-6, 300 steps, no prior preservation, every
image captioned with one instance prompt ("a photo of sks dog"). These are this script's defaults.

``--lora_rank R`` trains a LoRA adapter instead (peft; ``--lora_target_modules``, ``--lora_alpha``): the transformer's
own weights stay frozen and the result is ``<output_dir>/lora/pytorch_lora_weights.safetensors``, which
``PixArtAlphaPipeline.load_lora_weights(folder)`` loads (``--push_to_hub`` uploads it with a LoRA model card). LoRA
usually wants a larger learning rate than the full fine-tune's (e.g. ``--learning_rate 1e-4``).

    accelerate launch examples/train_dreambooth.py --pretrained_model_name_or_path PixArt-alpha/PixArt-XL-2-512x512 \
        --instance_data ./my_dog --instance_prompt "a photo of sks dog" --resolution 512 --output_dir runs/dog

``--instance_data`` is a folder of images (or any source ``diffusers_pixart.data.streaming`` reads, e.g. a Hub
dataset id). Every engine option (validation prompts, checkpoints, ``--resume_from_checkpoint latest``,
``--push_to_hub``): ``--help``.
"""

import sys
from dataclasses import dataclass

import torch
from peft import LoraConfig

from diffusers_pixart.data.streaming import ImageTextLoader, load_streaming_dataset
from diffusers_pixart.training.config import option, parse_config
from diffusers_pixart.training.engine import Trainer
from diffusers_pixart.training.stages import Stage2Config, load_pipeline


@dataclass
class DreamBoothConfig(Stage2Config):
    """The engine's and stage 2's options with the paper's DreamBooth defaults, plus the instance data and prompt."""

    instance_data: str = option("", "Folder of the subject's images (or a Hub dataset id / imagefolder source).")
    instance_prompt: str = option("", "The caption of every instance image, with the new token: 'a photo of sks dog'.")
    learning_rate: float = option(5e-6, "AdamW learning rate (the paper's DreamBooth: 5e-6).")
    max_train_steps: int = option(300, "Optimizer steps (the paper's DreamBooth: 300).")
    lr_warmup_steps: int = option(0, "Warm-up steps of the constant learning rate.")
    train_batch_size: int = option(1, "Batch size per device.")
    caption_dropout: float = option(0.0, "Probability of training on the null caption instead of the instance prompt.")
    use_ema: bool = option(False, "Keep an EMA of the weights (off: 300 steps are too few for one).")
    max_grad_norm: float = option(1.0, "Gradient clipping norm; 0 disables it.")
    shuffle_buffer_size: int = option(16, "Shuffle buffer over the instance images.")
    lora_rank: int = option(0, "Rank of a LoRA adapter to train instead of the whole transformer (0: full fine-tune).")
    lora_alpha: float | None = option(None, "LoRA alpha (the adapter is scaled by alpha / rank); default: the rank.")
    lora_target_modules: list[str] = option(
        ["to_q", "to_k", "to_v", "to_out.0"], "Transformer layers (name suffixes) that get a LoRA adapter."
    )


def add_lora_adapter(transformer: torch.nn.Module, config: DreamBoothConfig) -> None:
    """Attach the ``--lora_rank`` adapter (seeded by ``--seed``): the engine then trains only its parameters."""
    if config.lora_rank < 0:
        raise ValueError(f"--lora_rank must be at least 1 for LoRA (0: full fine-tune), got {config.lora_rank}.")
    torch.manual_seed(config.seed)
    transformer.add_adapter(
        LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha if config.lora_alpha is not None else config.lora_rank,
            target_modules=list(config.lora_target_modules),
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, fine-tune on the instance images, save (and push) the pipeline or the LoRA; bad input exits
    with 2."""
    try:
        config = parse_config(DreamBoothConfig, argv, description=__doc__.split("\n\n")[1])
        if not config.instance_data or not config.instance_prompt.strip():
            raise ValueError("--instance_data and --instance_prompt are required.")
        prompt = config.instance_prompt.strip()
        pipeline = load_pipeline(config)
        card_info = {"stage": "DreamBooth", "instance prompt": prompt}
        if config.lora_rank:
            add_lora_adapter(pipeline.transformer, config)
            card_info["LoRA rank"] = config.lora_rank
        trainer = Trainer(config, pipeline, card_info=card_info)
        images = load_streaming_dataset(config.instance_data).map(lambda record: {"text": prompt})
        data = ImageTextLoader(
            images,
            resolution=config.resolution,
            caption_column="text",
            batch_size=config.train_batch_size,
            shuffle_buffer_size=config.shuffle_buffer_size,
            seed=config.seed,
            rank=trainer.accelerator.process_index,
            world_size=trainer.accelerator.num_processes,
        )
        trainer.train(data)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latent consistency distillation (PixArt-delta): a 1-4 step model from a PixArt pipeline, full or as an LCM-LoRA.

    accelerate launch examples/train_lcm_distill.py --pretrained_model_name_or_path PixArt-alpha/PixArt-XL-2-1024-MS \
        --features features/ --resolution 1024 --lora_rank 64 --learning_rate 1e-4 --output_dir runs/lcm-lora

Options: ``--help`` (``diffusers_pixart.training.distillation.DistillConfig``).
"""

import sys

from diffusers_pixart.training.distillation import main

if __name__ == "__main__":
    sys.exit(main())

"""PixArt-alpha stage 2, text-image alignment: train the T2I transformer at 256px on image-caption data.

    accelerate launch --config_file examples/configs/single_gpu.yaml examples/train_stage2_alignment.py \
        --pretrained_model_name_or_path PixArt-alpha/PixArt-XL-2-512x512 --train_data ./data --output_dir runs/stage2

Every option: ``--help``; options can also come from ``--config run.yaml`` (same names).
"""

import sys

from diffusers_pixart.training.stages import main_stage2

if __name__ == "__main__":
    sys.exit(main_stage2())

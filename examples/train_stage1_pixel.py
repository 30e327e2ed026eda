"""PixArt-alpha stage 1, pixel dependency: a class-conditional DiT on labelled images, re-parameterized for stage 2.

    accelerate launch --config_file examples/configs/single_gpu.yaml examples/train_stage1_pixel.py \
        --pretrained_model_name_or_path PixArt-alpha/PixArt-XL-2-512x512 --train_data imagenet-1k --num_classes 1000 \
        --output_dir runs/stage1

``runs/stage1/pipeline`` is the trained DiT (a ``DiTPipeline``); ``runs/stage1/pixart_transformer`` its
re-parameterization, the ``--transformer`` of ``examples/train_stage2_alignment.py``. ``--pretrained_dit
facebook/DiT-XL-2-256`` continues from ImageNet DiT weights; without it the DiT is new (``--dit_layers --dit_hidden
--dit_heads --patch_size`` or ``--dit_config dit.json``). Every option: ``--help``; options can also come from
``--config run.yaml`` (same names).
"""

import sys

from diffusers_pixart.training.stages import main_stage1

if __name__ == "__main__":
    sys.exit(main_stage1())

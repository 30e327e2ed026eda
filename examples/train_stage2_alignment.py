"""PixArt-alpha stage 2, text-image alignment: train the T2I transformer at 256px on image-caption data.

    accelerate launch --config_file examples/configs/single_gpu.yaml examples/train_stage2_alignment.py \
        --pretrained_model_name_or_path PixArt-alpha/PixArt-XL-2-512x512 --train_data ./data --output_dir runs/stage2

PixArt-Sigma's weak-to-strong steps are options: ``--vae`` continues the model on another VAE (the SDXL one),
``--kv_compress_factor 2 --kv_compress_layers ...`` adds KV token compression, ``--max_sequence_length 300`` gives
Sigma's caption length; a Sigma base pipeline trains and saves as ``PixArtSigmaPipeline`` (README, "Training Σ").
Every option: ``--help``; options can also come from ``--config run.yaml`` (same names).
"""

import sys

from diffusers_pixart.training.stages import main_stage2

if __name__ == "__main__":
    sys.exit(main_stage2())

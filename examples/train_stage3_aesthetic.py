"""PixArt-alpha stage 3, high aesthetics: from stage 2, aspect-ratio buckets, micro-conditions, higher resolutions.

    accelerate launch --config_file examples/configs/single_gpu.yaml examples/train_stage3_aesthetic.py \
        --pretrained_model_name_or_path runs/stage2/pipeline --train_data ./hq_data --resolution 512 \
        --output_dir runs/stage3-512

The transformer's grid becomes ``--resolution`` / 8 with the position embeddings interpolated (DiffFit;
``--interpolation_scale`` overrides the default), new micro-condition embedders start at zero (the stage-2 model's
outputs are unchanged at step 0), and every batch holds one aspect-ratio bucket (``--no-multi_scale`` for square
crops). Any image-caption data works (the toy world's ``style="aesthetic"`` set is one). For PixArt-Sigma (README,
"Training Σ"): the default scale gives Sigma's 0.5 / 1 / 2 / 4 at 256 / 512 / 1024 / 2048 px, ``--resolution 2048``
uses the 2048 px bucket table, a Sigma base gets no micro-conditions, and ``--vae``, ``--kv_compress_*`` and
``--max_sequence_length 300`` work as in stage 2. Every option: ``--help``; options can also come from
``--config run.yaml`` (same names).
"""

import sys

from diffusers_pixart.training.stages import main_stage3

if __name__ == "__main__":
    sys.exit(main_stage3())

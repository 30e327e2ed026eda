"""PixArt-alpha ControlNet (paper appendix A.9): train a ControlNet-Half on edge maps of image-caption data.

The base model stays frozen; the first 13 of its blocks are copied into the ControlNet, captions are dropped with
probability 0.5, and the control image of every training image is its edge map: Canny by default, HED with the
annotators' weights (``--edge_detector hed --hed_weights ControlNetHED.pth``), or ready control images from a column
(``--conditioning_image_column``).

    accelerate launch examples/train_controlnet.py --pretrained_model_name_or_path PixArt-alpha/PixArt-XL-2-512x512 \
        --train_data ./data --resolution 512 --output_dir runs/controlnet

The ControlNet is saved to ``<output_dir>/controlnet`` (``PixArtControlNetModel.from_pretrained``). Every option:
``--help``; options can also come from ``--config run.yaml`` (same names).
"""

import sys

from diffusers_pixart.training.controlnet import main_controlnet

if __name__ == "__main__":
    sys.exit(main_controlnet())

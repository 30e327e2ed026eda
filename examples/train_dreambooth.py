"""DreamBooth for PixArt-alpha (paper appendix A.9): teach the model a subject from a handful of images.

The paper's recipe: full fine-tune of the transformer, learning rate 5e-6, 300 steps, no prior preservation, every
image captioned with one instance prompt ("a photo of sks dog"). These are this script's defaults.

``--lora_rank R`` trains a LoRA adapter instead (peft; ``--lora_target_modules``, ``--lora_alpha``): the transformer's
own weights stay frozen and the result is ``<output_dir>/lora/pytorch_lora_weights.safetensors``, which
``PixArtAlphaPipeline.load_lora_weights(folder)`` loads (``--push_to_hub`` uploads it with a LoRA model card). LoRA
usually wants a larger learning rate than the full fine-tune's (e.g. ``--learning_rate 1e-4``).

    accelerate launch examples/train_dreambooth.py --pretrained_model_name_or_path PixArt-alpha/PixArt-XL-2-512x512 \
        --instance_data ./my_dog --instance_prompt "a photo of sks dog" --resolution 512 --output_dir runs/dog

``--add_tokens sks`` makes the identifier a new token of the tokenizer with its own T5 embedding, for tokenizers that
would read it as ``<unk>`` (the toy model's word-level one; ``examples/toy/run_customization.py``). The code is
``diffusers_pixart.training.dreambooth``. ``--instance_data`` is a folder of images (or any source
``diffusers_pixart.data.streaming`` reads, e.g. a Hub dataset id). Every engine option (validation prompts,
checkpoints, ``--resume_from_checkpoint latest``, ``--push_to_hub``): ``--help``.
"""

import sys

from diffusers_pixart.training.dreambooth import DreamBoothConfig, add_lora_adapter, main_dreambooth

__all__ = ["DreamBoothConfig", "add_lora_adapter", "main"]
main = main_dreambooth

if __name__ == "__main__":
    sys.exit(main())

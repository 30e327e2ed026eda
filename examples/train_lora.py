"""Fine-tune a LoRA, DoRA, LoHa or LoKr adapter on your own captioned images, for PixArt-alpha or PixArt-Sigma.

    accelerate launch examples/train_lora.py --pretrained_model_name_or_path PixArt-alpha/PixArt-XL-2-1024-MS \
        --train_data ./my_images --caption_column text --resolution 1024 --multi_scale \
        --mixed_precision bf16 --base_dtype bf16 --gradient_checkpointing --optimizer adamw8bit \
        --adapter lora --rank 16 --target_modules attention --trigger_words "pxl style" --output_dir runs/my-lora

``--train_data`` is an image folder with a ``metadata.jsonl`` (file_name and captions), a Hub dataset id, webdataset
shards or parquet files; ``--features`` a folder written by ``examples/extract_features.py`` instead (then T5 and the
VAE's encoder never run during training). Several caption columns: ``--caption_column dense=0.7,short=0.3``. The
result ``<output_dir>/lora/pytorch_lora_weights.safetensors`` loads with ``pipe.load_lora_weights(folder)``. The
code is ``diffusers_pixart.training.lora``; every option (adapter, memory, validation, checkpoints and
``--resume_from_checkpoint latest``, ``--push_to_hub``): ``--help``. Pivotal tuning: ``--train_text_encoder_embeddings``
also trains the T5 input-embedding rows of the ``--trigger_words`` (at ``--embedding_learning_rate``), saved next to
the adapter as ``text_encoder_embeddings.safetensors``, which ``load_lora_weights`` writes into the pipeline's T5.
"""

import sys

from diffusers_pixart.training.lora import LoraTrainingConfig, add_adapter, main_lora, train_lora

__all__ = ["LoraTrainingConfig", "add_adapter", "main", "train_lora"]
main = main_lora

if __name__ == "__main__":
    sys.exit(main())

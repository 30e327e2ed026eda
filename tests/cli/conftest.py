"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest

from diffusers_pixart.tiny import make_pipeline


@pytest.fixture
def lcm_model(tmp_path) -> str:
    """A tiny pipeline folder that ships an ``lcm_lora/`` (a random LoRA on the attention and feed-forward layers)."""
    from peft import LoraConfig

    from diffusers_pixart.default_model import LCM_LORA_DIR
    from diffusers_pixart.hub import save_lora_weights

    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    targets = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]
    pipe.transformer.add_adapter(LoraConfig(r=4, target_modules=targets, init_lora_weights=False))
    save_lora_weights(pipe.transformer, tmp_path / "model" / LCM_LORA_DIR)
    return str(tmp_path / "model")

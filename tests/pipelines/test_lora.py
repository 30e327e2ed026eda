"""LoRA in PixArtTransformer2DModel and PixArtAlphaPipeline: diffusers' loader API and the official script's files.

Oracles: a peft ``PeftModel`` built exactly as the official ``train_pixart_lora_hf.py`` builds it (on diffusers'
transformer), and the merged weights ``W + sum_i w_i * scale_i * B_i @ A_i`` computed directly.
"""

from __future__ import annotations

import copy
import json

import diffusers
import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import save_file
from tolerances import FORWARD, IMAGES

from diffusers_pixart.loaders import PixArtLoraLoaderMixin
from diffusers_pixart.tiny import make_pipeline

#: The target modules of the official PixArt LoRA script.
OFFICIAL_TARGETS = [
    "to_k", "to_q", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "proj", "linear",
    "linear_1", "linear_2",
]  # fmt: skip
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
PROMPT = "a red circle above a blue square"


def inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(2, 4, 16, 16, generator=g),
        encoder_hidden_states=torch.randn(2, 5, 32, generator=g),
        timestep=torch.tensor([10, 500]),
    )


@torch.no_grad()
def predict(model) -> torch.Tensor:
    return model(**inputs(), added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample


def randomise_lora(model, seed: int) -> None:
    """peft starts lora_B at zero (the LoRA is a no-op); give it values so that the adapter changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.1)


def add_lora(pipe, name: str, rank: int, seed: int, targets=ATTENTION, alpha: float | None = None) -> None:
    config = LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian", target_modules=targets)
    pipe.transformer.add_adapter(config, adapter_name=name)
    randomise_lora(pipe.transformer, seed)


def images(pipe) -> np.ndarray:
    call = dict(num_inference_steps=2, height=64, width=64, use_resolution_binning=False, output_type="np")
    return pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).images


def tiny_pipeline():
    pipe = make_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------- the official script's files
def official_lora(pipe, tmp_path, use_rslora: bool = False):
    """Train-side LoRA as ``train_pixart_lora_hf.py`` makes and saves it; returns the PeftModel and its folder."""
    theirs = diffusers.PixArtTransformer2DModel.from_config(pipe.transformer.config)
    theirs.load_state_dict(pipe.transformer.state_dict())
    config = LoraConfig(r=4, init_lora_weights="gaussian", target_modules=OFFICIAL_TARGETS, use_rslora=use_rslora)
    peft_model = get_peft_model(theirs, config)
    randomise_lora(peft_model, seed=1)
    out = tmp_path / "official"
    peft_model.save_pretrained(out)  # adapter_model.safetensors + adapter_config.json
    diffusers.StableDiffusionPipeline.save_lora_weights(
        out / "transformer_lora", unet_lora_layers=get_peft_model_state_dict(peft_model)
    )
    return peft_model, out


@pytest.mark.parametrize(
    "layout, use_rslora",
    [("peft_folder", False), ("peft_folder", True), ("transformer_lora", False), ("state_dict", False)],
)
def test_official_script_files_give_the_peft_model_outputs(tmp_path, layout, use_rslora):
    pipe = tiny_pipeline()
    peft_model, folder = official_lora(pipe, tmp_path, use_rslora)
    source = {
        "peft_folder": folder,
        "transformer_lora": folder / "transformer_lora",
        "state_dict": get_peft_model_state_dict(peft_model),  # keys base_model.model.<module>..., alpha 8
    }[layout]
    base = predict(pipe.transformer)
    expected = predict(peft_model)
    assert (expected - base).abs().max() > 0.1  # the LoRA matters

    pipe.load_lora_weights(source, adapter_name="official")
    torch.testing.assert_close(predict(pipe.transformer), expected, atol=FORWARD, rtol=FORWARD)
    pipe.unload_lora_weights()
    assert torch.equal(predict(pipe.transformer), base)


@pytest.mark.parametrize("layout", ["peft_folder", "save_lora_weights"])
def test_official_script_files_give_the_peft_model_images(tmp_path, layout):
    """The script's exact targets (``proj`` wraps the patch embedding's Conv2d), on a pipeline that has not run yet.

    The oracle is diffusers' pipeline on the same components with the peft-wrapped diffusers transformer that the
    script trains: the images are those of the model the LoRA was trained in.
    """
    pipe = tiny_pipeline()
    peft_model, folder = official_lora(pipe, tmp_path)
    theirs = diffusers.PixArtAlphaPipeline(**{**pipe.components, "transformer": peft_model.get_base_model()})
    theirs.set_progress_bar_config(disable=True)
    expected = images(theirs)
    assert np.abs(expected - images(tiny_pipeline())).max() > 1e-2  # the LoRA matters

    pipe.load_lora_weights(folder if layout == "peft_folder" else folder / "transformer_lora", adapter_name="official")
    assert type(pipe.transformer.pos_embed.proj).__module__.startswith("peft.")  # the Conv2d carries the adapter
    # Same math in another order (our attention broadcasts the caption mask; diffusers' repeats it per head): float32
    # rounding, ~1e-7 relative per op, grows through 2 steps and the VAE to well under 1e-4 on images in [0, 1].
    assert np.abs(images(pipe) - expected).max() <= IMAGES


def test_an_adapter_on_every_layer_works_as_in_diffusers():
    """LoRA on every Linear and Conv2d of the model, ours and diffusers', with the same weights: the same outputs."""
    from torch import nn

    from diffusers_pixart.tiny import make_transformer

    ours = make_transformer()
    theirs = diffusers.PixArtTransformer2DModel.from_config(ours.config).eval()
    theirs.load_state_dict(ours.state_dict())
    targets = [name for name, module in ours.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    assert "pos_embed.proj" in targets and "proj_out" in targets
    config = LoraConfig(r=2, init_lora_weights="gaussian", target_modules=targets)
    ours.add_adapter(config)
    randomise_lora(ours, seed=1)
    theirs = get_peft_model(theirs, config)  # diffusers' class has no add_adapter: peft's wrapper, as the script does
    lora = {f"base_model.model.{key}": value for key, value in get_peft_model_state_dict(ours).items()}
    assert not set_peft_model_state_dict(theirs, lora).unexpected_keys  # the same LoRA weights
    assert all(hasattr(module, "base_layer") for name, module in ours.named_modules() if name in targets)
    expected = predict(theirs)
    assert (expected - predict(make_transformer())).abs().max() > 0.1  # the LoRA matters
    # Same math, other kernels and order (SDPA with a broadcast mask): float32 rounding on outputs of order 1.
    torch.testing.assert_close(predict(ours), expected, atol=FORWARD, rtol=FORWARD)


def test_official_alpha_is_read_from_adapter_config(tmp_path):
    """The script's alpha is peft's default 8 (scale 8/r = 2 here), not diffusers' default alpha = r (scale 1)."""
    pipe = tiny_pipeline()
    _, folder = official_lora(pipe, tmp_path)
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["lora_alpha"] == 8 and config["r"] == 4
    _, metadata = PixArtLoraLoaderMixin.lora_state_dict(folder, return_lora_metadata=True)
    assert metadata["transformer.lora_alpha"] == 8 and metadata["transformer.r"] == 4

    config["lora_alpha"] = 2
    (folder / "adapter_config.json").write_text(json.dumps(config))
    _, metadata = PixArtLoraLoaderMixin.lora_state_dict(folder, return_lora_metadata=True)
    assert metadata["transformer.lora_alpha"] == 2


def test_model_level_adapter_file_loads(tmp_path):
    """A file of ``get_peft_model_state_dict(transformer)`` (no prefix) loads into the pipeline."""
    pipe = tiny_pipeline()
    add_lora(pipe, "mine", rank=2, seed=3)
    expected = predict(pipe.transformer)
    save_file(get_peft_model_state_dict(pipe.transformer, adapter_name="mine"), tmp_path / "adapter.safetensors")
    fresh = tiny_pipeline()
    fresh.load_lora_weights(tmp_path / "adapter.safetensors", adapter_name="mine")
    torch.testing.assert_close(predict(fresh.transformer), expected, atol=1e-6, rtol=1e-6)


# ------------------------------------------------------------------------------- the pipeline API
def test_save_and_load_round_trip_gives_the_same_images(tmp_path):
    pipe = tiny_pipeline()
    add_lora(pipe, "style", rank=4, seed=5, alpha=2)
    expected = images(pipe)
    pipe.save_lora_weights(
        tmp_path,
        transformer_lora_layers=get_peft_model_state_dict(pipe.transformer, adapter_name="style"),
        transformer_lora_adapter_metadata=pipe.transformer.peft_config["style"].to_dict(),
    )
    fresh = tiny_pipeline()
    base = images(fresh)
    fresh.load_lora_weights(tmp_path, adapter_name="style")
    assert np.abs(images(fresh) - expected).max() < 1e-5
    assert np.abs(base - expected).max() > 1e-3


def test_fused_and_unfused_give_the_same_images_and_unload_restores_the_base():
    pipe = tiny_pipeline()
    base = images(pipe)
    add_lora(pipe, "a", rank=4, seed=1)
    unfused = images(pipe)
    assert np.abs(unfused - base).max() > 1e-3
    pipe.fuse_lora(lora_scale=1.0)
    assert pipe.num_fused_loras == 1
    assert np.abs(images(pipe) - unfused).max() < IMAGES
    pipe.unfuse_lora()
    assert np.abs(images(pipe) - unfused).max() < IMAGES
    pipe.unload_lora_weights()
    assert np.abs(images(pipe) - base).max() < IMAGES


def test_unload_restores_the_base_outputs_exactly():
    pipe = tiny_pipeline()
    base = predict(pipe.transformer)
    add_lora(pipe, "a", rank=4, seed=1)
    assert not torch.equal(predict(pipe.transformer), base)
    pipe.unload_lora_weights()
    assert torch.equal(predict(pipe.transformer), base)
    assert not any("lora" in name for name, _ in pipe.transformer.named_parameters())


def merged(transformer, weights: dict[str, float]):
    """A copy of the base transformer with ``W + sum_a w_a * (alpha_a / r_a) * B_a @ A_a`` merged by hand."""
    base = copy.deepcopy(transformer)
    base.unload_lora()
    params = dict(base.named_parameters())
    with torch.no_grad():
        for adapter, weight in weights.items():
            config = transformer.peft_config[adapter]
            scale = config.lora_alpha / config.r
            state = get_peft_model_state_dict(transformer, adapter_name=adapter)
            for key, down in state.items():
                if ".lora_A." not in key:
                    continue
                up = state[key.replace(".lora_A.", ".lora_B.")]
                params[key.split(".lora_A.")[0] + ".weight"] += weight * scale * up @ down
    return base


def test_two_adapters_blend_by_weights():
    pipe = tiny_pipeline()
    add_lora(pipe, "a", rank=4, seed=1)
    add_lora(pipe, "b", rank=2, seed=2, alpha=4)
    weights = {"a": 0.7, "b": -0.4}
    pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
    assert sorted(pipe.get_active_adapters()) == ["a", "b"]
    torch.testing.assert_close(
        predict(pipe.transformer), predict(merged(pipe.transformer, weights)), atol=FORWARD, rtol=0
    )
    pipe.set_adapters("b")
    torch.testing.assert_close(
        predict(pipe.transformer), predict(merged(pipe.transformer, {"b": 1.0})), atol=FORWARD, rtol=0
    )


def test_model_adapter_api_enable_disable():
    pipe = tiny_pipeline()
    transformer = pipe.transformer
    base = predict(transformer)
    add_lora(pipe, "a", rank=4, seed=1)
    adapted = predict(transformer)
    transformer.disable_adapters()
    assert torch.equal(predict(transformer), base)
    transformer.enable_adapters()
    assert torch.equal(predict(transformer), adapted)
    state = get_peft_model_state_dict(transformer, adapter_name="a")
    assert all(key.startswith("transformer_blocks.") and ".lora_" in key for key in state)


# ------------------------------------------------------------------------------------------ bad input
def lora_file(pipe) -> dict[str, torch.Tensor]:
    add_lora(pipe, "tmp", rank=4, seed=1)
    state = {f"transformer.{k}": v for k, v in get_peft_model_state_dict(pipe.transformer, adapter_name="tmp").items()}
    pipe.unload_lora_weights()
    return state


def test_lora_for_another_architecture_is_refused():
    pipe = tiny_pipeline()
    unet = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 320),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(320, 4),
    }
    with pytest.raises(ValueError, match="another architecture"):
        pipe.load_lora_weights(unet)
    sd3 = {  # a DiT with other module names (SD3 / Flux: `attn`, not `attn1`)
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 24),
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(24, 4),
    }
    with pytest.raises(ValueError, match="does not have.*another architecture"):
        pipe.load_lora_weights(sd3)
    assert not getattr(pipe.transformer, "peft_config", None)


def test_mismatched_ranks_and_sizes_are_refused():
    pipe = tiny_pipeline()
    state = lora_file(pipe)
    key = next(k for k in state if k.endswith("lora_B.weight"))
    bad_rank = {**state, key: torch.zeros(state[key].shape[0], 8)}
    with pytest.raises(ValueError, match="Mismatched LoRA ranks.*rank 4.*rank 8"):
        pipe.load_lora_weights(bad_rank)
    down = key.replace("lora_B", "lora_A")
    bad_size = {**state, down: torch.zeros(4, 48), key: torch.zeros(48, 4)}
    with pytest.raises(ValueError, match="maps 48 -> 48 features but the layer maps 24 -> 24"):
        pipe.load_lora_weights(bad_size)
    with pytest.raises(ValueError, match="both lora_A.weight and lora_B.weight"):
        pipe.load_lora_weights({k: v for k, v in state.items() if k != key})


def test_get_adapter_state_dict_returns_each_adapter_and_refuses_a_bare_model():
    from peft import LoraConfig

    from diffusers_pixart.tiny import make_transformer

    model = make_transformer()
    with pytest.raises(ValueError, match="No adapter"):
        model.get_adapter_state_dict()
    model.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_v"]), adapter_name="a")
    model.add_adapter(LoraConfig(r=4, target_modules=["to_k"]), adapter_name="b")
    first, second = model.get_adapter_state_dict("a"), model.get_adapter_state_dict("b")
    assert first and all(("to_q" in k or "to_v" in k) and "lora" in k for k in first)
    assert second and all("to_k" in k for k in second)
    assert next(v for k, v in second.items() if "lora_A" in k).shape[0] == 4

"""``pixart generate``: PNGs written, the model named, bad input refused with exit code 2, a toy model's unknown
words warned about, LoRAs loaded, scaled and fused (the fused image against the unfused pipeline's)."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from tolerances import IMAGES

from diffusers_pixart.cli import main
from diffusers_pixart.tiny import make_pipeline


def test_generate_with_default_model(tmp_path, capsys):
    out = tmp_path / "image.png"
    assert (
        main(["generate", "a red circle", "--out", str(out), "--steps", "2", "--height", "128", "--width", "192"]) == 0
    )
    image = Image.open(out)
    assert image.size == (192, 128) and image.mode == "RGB"
    assert "model: embedded toy model" in capsys.readouterr().out


def test_generate_warns_once_about_what_the_toy_model_cannot_read(tmp_path, capsys):
    args = ["--out", str(tmp_path / "x.png"), "--steps", "1"]
    assert main(["generate", "a cat above a red circle", *args]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "this model knows only shapes" in err and "unknown words: cat" in err
    assert main(["generate", "a red circle above a blue square and a green star", *args]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["generate", "a red circle above", *args]) == 0  # known words, but above nothing
    assert "may not draw this as written" in capsys.readouterr().err
    make_pipeline(seed=3).save_pretrained(tmp_path / "model")  # not a toy model: its own vocabulary, no warning
    assert main(["generate", "a cat above a red circle", "--model", str(tmp_path / "model"), *args]) == 0
    assert "warning" not in capsys.readouterr().err


def test_generate_from_folder_several_images_and_samplers(tmp_path):
    make_pipeline(seed=3).save_pretrained(tmp_path / "model")
    for sampler in ("sa", "iddpm"):
        out = tmp_path / sampler / "x.png"
        args = ["generate", "a blue star", "--model", str(tmp_path / "model"), "--out", str(out)]
        assert main([*args, "--steps", "2", "--num-images", "2", "--scheduler", sampler, "--seed", "5"]) == 0
        assert sorted(p.name for p in out.parent.iterdir()) == ["x-1.png", "x-2.png"]


def test_generate_bad_input_exits_2_with_message(tmp_path, capsys):
    assert main(["generate", "x", "--scheduler", "euler", "--out", str(tmp_path / "a.png")]) == 2
    assert "Unknown scheduler 'euler'" in capsys.readouterr().err
    assert main(["generate", "x", "--out", str(tmp_path / "a.jpg")]) == 2
    assert "--out must name a .png" in capsys.readouterr().err
    assert main(["generate", "x", "--model", str(tmp_path), "--out", str(tmp_path / "a.png")]) == 2
    assert "no model_index.json" in capsys.readouterr().err
    assert not (tmp_path / "a.png").exists()


def test_generate_with_a_sigma_folder_loads_the_sigma_pipeline(tmp_path):
    from diffusers_pixart import PixArtSigmaPipeline
    from diffusers_pixart.default_model import load_pipeline

    folder = tmp_path / "sigma"
    PixArtSigmaPipeline(**make_pipeline(seed=3).components).save_pretrained(folder)
    pipe, _ = load_pipeline(str(folder))
    assert type(pipe) is PixArtSigmaPipeline  # 300 caption tokens
    out = tmp_path / "x.png"
    assert main(["generate", "a blue star", "--model", str(folder), "--out", str(out), "--steps", "1"]) == 0
    assert Image.open(out).size == (256, 256)


def test_generate_loads_a_lora_and_the_lcm_sampler_finds_the_models_own(tmp_path, capsys):
    """``--lora`` changes the image; ``--scheduler lcm`` loads the folder's ``lcm_lora/`` unless a LoRA is named."""
    from peft import LoraConfig

    from diffusers_pixart.default_model import LCM_LORA_DIR
    from diffusers_pixart.hub import save_lora_weights

    pipe = make_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    transformer = pipe.transformer
    transformer.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_v"], init_lora_weights=False))
    save_lora_weights(transformer, tmp_path / "model" / LCM_LORA_DIR)
    model = str(tmp_path / "model")

    def image(*flags: str) -> np.ndarray:
        out = tmp_path / f"{len(list(tmp_path.glob('*.png')))}.png"
        assert main(["generate", "a red circle", "--model", model, "--out", str(out), "--steps", "2", *flags]) == 0
        return np.asarray(Image.open(out), dtype=np.int16)

    plain = image("--scheduler", "lcm", "--lora", str(tmp_path / "model" / LCM_LORA_DIR))
    assert "+ LoRA" in capsys.readouterr().out
    shipped = image("--scheduler", "lcm")  # fused: the same image up to rounding of the merged weights
    assert f"+ LoRA {tmp_path / 'model' / LCM_LORA_DIR} (fused)" in capsys.readouterr().out
    assert np.abs(plain - shipped).max() <= 1
    without = image("--scheduler", "dpm")
    assert "LoRA" not in capsys.readouterr().out
    assert not np.array_equal(image("--scheduler", "dpm", "--lora", str(tmp_path / "model" / LCM_LORA_DIR)), without)


def unfused_image(model: str, lora_scale: float = 1.0) -> np.ndarray:
    """The float image (0..1) ``pixart generate "a red circle" --scheduler lcm --steps 2`` draws with the model's
    LCM-LoRA kept as a separate adapter (its layers in the transformer)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    from diffusers_pixart.default_model import load_sampling_pipeline

    pipe, description = load_sampling_pipeline(model, "lcm", lora_scale=lora_scale, fuse_lora=False)
    assert "(fused)" not in description
    assert any(isinstance(module, BaseTunerLayer) for module in pipe.transformer.modules())
    generator = torch.Generator().manual_seed(0)
    kwargs = dict(negative_prompt="", num_inference_steps=2, guidance_scale=0.0, generator=generator, output_type="np")
    return pipe("a red circle", **kwargs).images[0]


def test_the_lcm_lora_is_fused_and_draws_the_unfused_image(lcm_model, tmp_path, capsys):
    """The model's own LCM-LoRA is fused by default (no LoRA layers left), a named ``--lora`` only with ``--fuse-lora``;
    the fused PNG is the unfused pipeline's float image rounded to 8 bits, within float32 rounding (IMAGES)."""
    from diffusers_pixart.default_model import LCM_LORA_DIR

    def png(*flags: str) -> tuple[np.ndarray, str]:
        out = tmp_path / f"{len(list(tmp_path.glob('*.png')))}.png"
        args = ["generate", "a red circle", "--model", lcm_model, "--out", str(out), "--steps", "2", *flags]
        assert main([*args, "--scheduler", "lcm"]) == 0
        return np.asarray(Image.open(out), dtype=np.float64) / 255, capsys.readouterr().out

    bound = 0.5 / 255 + IMAGES  # PNG rounding, then the fused weights' float32 rounding
    fused, out = png()
    assert "(fused)" in out
    assert np.abs(fused - unfused_image(lcm_model)).max() <= bound
    half = unfused_image(lcm_model, lora_scale=0.5)
    lora = os.path.join(lcm_model, LCM_LORA_DIR)
    named, out = png("--lora", lora, "--lora-scale", "0.5")
    assert "x 0.5" in out and "(fused)" not in out  # a named LoRA stays a separate adapter
    assert np.abs(named - half).max() <= bound
    fused_half, out = png("--lora", lora, "--lora-scale", "0.5", "--fuse-lora")
    assert "x 0.5 (fused)" in out
    assert np.abs(fused_half - half).max() <= bound
    assert np.abs(fused_half - fused).max() > 10 / 255  # the scale is applied
    assert "(fused)" not in png("--no-fuse-lora")[1]


def test_fusing_or_scaling_without_a_lora_exits_2(tmp_path, capsys):
    make_pipeline().save_pretrained(tmp_path / "model")  # ships no lcm_lora/
    args = ["generate", "x", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "a.png"), "--steps", "1"]
    for flags in (["--fuse-lora"], ["--scheduler", "lcm", "--lora-scale", "0.5"]):
        assert main([*args, *flags]) == 2
        assert "needs a LoRA" in capsys.readouterr().err
    assert main([*args, "--scheduler", "lcm", "--no-fuse-lora"]) == 0  # nothing to fuse, nothing asked
    assert not any("LoRA" in line for line in capsys.readouterr().out.splitlines())

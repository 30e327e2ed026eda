"""The Gradio Space (space/app.py): every API endpoint through gradio_client, and a real browser (Debian's chromium)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status
from huggingface_hub import SpaceCard
from launching import free_port
from peft import LoraConfig
from PIL import Image

from diffusers_pixart import (
    PixArtAlphaControlNetPipeline,
    PixArtAlphaImg2ImgPipeline,
    PixArtAlphaInpaintPipeline,
    PixArtControlNetModel,
)
from diffusers_pixart.data.edges import canny_edges
from diffusers_pixart.default_model import LCM_LORA_DIR, RANDOM_MODEL_LABEL, TOY_MODEL_PATH, load_pipeline
from diffusers_pixart.evaluation import sample_images
from diffusers_pixart.hub import LORA_PREFIX, LORA_WEIGHT_NAME, save_lora_weights
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.schedulers import SCHEDULERS
from diffusers_pixart.tiny import make_pipeline
from diffusers_pixart.toy.compbench import score_image

SPACE = Path(__file__).resolve().parents[2] / "space"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
#: A budget of estimated seconds that no test request reaches, so that a loaded machine does not refuse them.
NO_TIME_LIMIT = 1e6


def _load_app():
    spec = importlib.util.spec_from_file_location("space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = _load_app()
LORA_NAME = Path(LORA_WEIGHT_NAME).stem


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny pipeline folder with a LoRA weights file at its top, as a model repo pushed with LoRA weights, and an
    LCM-LoRA (random, so that it changes the images) in its ``lcm_lora/`` folder for the fast sampler."""
    folder = tmp_path_factory.mktemp("space-model")
    pipe = make_pipeline(seed=11)
    pipe.save_pretrained(folder)
    transformer = pipe.transformer
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param))
    save_lora_weights(transformer, folder)
    lcm = LoraConfig(r=2, target_modules=["to_q", "to_v", "proj_out"], init_lora_weights=False)
    transformer.add_adapter(lcm, adapter_name="lcm")
    save_lora_weights(transformer, folder / LCM_LORA_DIR, adapter_name="lcm")
    return folder


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory) -> Path:
    """A ControlNet (one block copy) for the tiny pipeline, its zero projections perturbed so that it acts."""
    folder = tmp_path_factory.mktemp("space-controlnet")
    torch.manual_seed(0)
    controlnet = PixArtControlNetModel.from_transformer(make_pipeline(seed=11).transformer, num_layers=1)
    with torch.no_grad():
        for param in controlnet.parameters():
            param.add_(0.05 * torch.randn_like(param))
    controlnet.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def served(model_dir, controlnet_dir):
    """The demo of the tiny model with a LoRA and a ControlNet, served on loopback, and a client of it."""
    demo = app.create_demo(str(model_dir), max_seconds=NO_TIME_LIMIT, controlnet=str(controlnet_dir))
    _, url, _ = app.launch(demo, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        yield demo, Client(url, verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(served):
    return served[1]


def _oracle(
    model_dir: Path,
    sampler: str,
    lora: bool,
    prompt: str,
    negative: str,
    seed: int,
    num_images: int,
    steps: int = 2,
    guidance: float = 4.5,
):
    """The same request made directly on the pipeline: a list of PIL images. The ``lcm`` sampler runs with the
    model's LCM-LoRA loaded as ``pixart generate --scheduler lcm`` loads it."""
    pipe = PixArtAlphaPipeline.from_pretrained(model_dir)
    adapters = []
    if lora:
        pipe.transformer.load_lora_adapter(
            model_dir, weight_name=LORA_WEIGHT_NAME, prefix=LORA_PREFIX, adapter_name=LORA_NAME
        )
        adapters.append(LORA_NAME)
    if sampler == "lcm":
        pipe.load_lora_weights(model_dir / LCM_LORA_DIR, adapter_name="lcm")
        adapters.append("lcm")
    if adapters:
        pipe.transformer.set_adapters(adapters)
    pipe.set_scheduler(sampler)
    return pipe(
        prompt,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=256,
        width=256,
        num_images_per_prompt=num_images,
        use_resolution_binning=True,
        generator=torch.Generator().manual_seed(seed),
    ).images


def _request(**overrides) -> dict:
    """The 13 arguments of /generate, with small defaults for the tiny model."""
    args = {
        "prompt": "a red circle",
        "negative_prompt": "",
        "style": "(No style)",
        "sampler": "DPM-Solver",
        "steps": 2,
        "guidance_scale": 4.5,
        "seed": 7,
        "randomize_seed": False,
        "width": 256,
        "height": 256,
        "use_resolution_binning": True,
        "num_images": 1,
        "lora": "None",
    }
    args.update(overrides)
    return args


def _arrays(gallery: list[dict]) -> list[np.ndarray]:
    return [np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery]


def test_every_endpoint_is_listed_and_every_optional_input_has_a_default(client):
    api = client.view_api(return_format="dict", print_info=False)
    text = {"/generate", "/sampler_defaults", "/estimate", "/cancel", "/check_prompt"}
    assert set(api["named_endpoints"]) == text | {"/img2img", "/inpaint", "/controlnet", "/edges"}
    assert not api["unnamed_endpoints"]
    params = api["named_endpoints"]["/generate"]["parameters"]
    assert [p["parameter_name"] for p in params] == list(_request())
    optional = {p["parameter_name"]: p["parameter_default"] for p in params if p["parameter_has_default"]}
    assert set(optional) == set(_request()) - {"prompt"}
    assert optional["negative_prompt"] == "" and optional["lora"] == "None"
    sampling = ["negative_prompt", "sampler", "steps", "guidance_scale", "seed", "randomize_seed", "lora"]
    for endpoint, names in {
        "/img2img": ["prompt", "image", "strength", *sampling],
        "/inpaint": ["prompt", "image", "strength", "mask_blur", *sampling],
        "/controlnet": ["prompt", "image", "detector", "low_threshold", "high_threshold", "conditioning_scale"]
        + sampling,
    }.items():
        params = api["named_endpoints"][endpoint]["parameters"]
        assert [p["parameter_name"] for p in params] == names
        assert [p["parameter_name"] for p in params if not p["parameter_has_default"]] == ["prompt", "image"]
    strengths = {p["parameter_name"]: p["parameter_default"] for p in api["named_endpoints"]["/inpaint"]["parameters"]}
    assert strengths["strength"] == 1.0


def test_a_prompt_alone_is_a_request(client, model_dir):
    """``negative_prompt`` and every other option are optional in the API: their defaults are the page's."""
    gallery, seed = client.predict("a red circle", steps=2, randomize_seed=False, api_name="/generate")
    assert seed == 0
    expected = _oracle(model_dir, "dpm", False, "a red circle", "", seed=0, num_images=1)
    np.testing.assert_array_equal(_arrays(gallery)[0], np.asarray(expected[0]))


def test_generate_gives_the_pipeline_images(client, model_dir):
    gallery, seed = client.predict(*_request().values(), api_name="/generate")
    assert seed == 7
    expected = _oracle(model_dir, "dpm", False, "a red circle", "", seed=7, num_images=1)
    assert [a.shape for a in _arrays(gallery)] == [(256, 256, 3)]
    np.testing.assert_array_equal(_arrays(gallery)[0], np.asarray(expected[0]))


def test_style_sampler_lora_and_random_seed(client, model_dir):
    request = dict(style="Anime", negative_prompt="blurry", sampler="SA-Solver", num_images=2)
    gallery, seed = client.predict(
        *_request(**request, randomize_seed=True, lora=LORA_NAME).values(), api_name="/generate"
    )
    assert 0 <= seed <= app.MAX_SEED
    prompt, negative = app.apply_style("Anime", "a red circle", "blurry")
    assert prompt.startswith("anime artwork of a red circle") and negative.endswith(", blurry")
    expected = _oracle(model_dir, "sa", True, prompt, negative, seed=seed, num_images=2)
    got = _arrays(gallery)
    assert len(got) == 2
    for image, oracle in zip(got, expected):
        np.testing.assert_array_equal(image, np.asarray(oracle))

    # The same request without the LoRA gives other images: the choice switches the adapter off.
    plain, _ = client.predict(*_request(**request, seed=seed).values(), api_name="/generate")
    assert not np.array_equal(_arrays(plain)[0], got[0])
    expected = _oracle(model_dir, "sa", False, prompt, negative, seed=seed, num_images=2)
    for image, oracle in zip(_arrays(plain), expected):
        np.testing.assert_array_equal(image, np.asarray(oracle))


def test_the_fast_sampler_switches_the_lcm_lora_on_and_off(client, model_dir):
    """The fast sampler gives the pipeline's image with the LCM-LoRA and the LCM sampler (4 steps, guidance 0); the
    next DPM-Solver request gives the teacher's image again (the adapter off), and a chosen LoRA joins the LCM-LoRA."""
    assert client.predict(app.FAST_SAMPLER, api_name="/sampler_defaults") == (4, 0.0)
    fast = dict(sampler=app.FAST_SAMPLER, steps=4, guidance_scale=0.0)
    gallery, _ = client.predict(*_request(**fast).values(), api_name="/generate")
    expected = _oracle(model_dir, "lcm", False, "a red circle", "", seed=7, num_images=1, steps=4, guidance=0.0)
    np.testing.assert_array_equal(_arrays(gallery)[0], np.asarray(expected[0]))
    teacher = _oracle(model_dir, "dpm", False, "a red circle", "", seed=7, num_images=1)
    assert not np.array_equal(np.asarray(expected[0]), np.asarray(teacher[0]))  # the LCM-LoRA acts
    gallery, _ = client.predict(*_request().values(), api_name="/generate")
    np.testing.assert_array_equal(_arrays(gallery)[0], np.asarray(teacher[0]))

    gallery, _ = client.predict(*_request(**fast, lora=LORA_NAME).values(), api_name="/generate")
    both = _oracle(model_dir, "lcm", True, "a red circle", "", seed=7, num_images=1, steps=4, guidance=0.0)
    np.testing.assert_array_equal(_arrays(gallery)[0], np.asarray(both[0]))


def test_the_fast_sampler_is_offered_only_with_lcm_weights(tmp_path):
    """A model with no LCM-LoRA has no fast sampler (a request for it is refused, naming what is missing); an LCM
    model (its scheduler LCM, as PixArt-LCM's layout) samples with it by default, with no adapter."""
    from diffusers import LCMScheduler

    def sampler_radio(demo: gr.Blocks) -> gr.Radio:
        return next(b for b in demo.blocks.values() if isinstance(b, gr.Radio) and b.label == "Sampler")

    pipe = make_pipeline(seed=11)
    pipe.save_pretrained(tmp_path / "plain")
    demo = app.create_demo(str(tmp_path / "plain"), max_seconds=NO_TIME_LIMIT)
    radio = sampler_radio(demo)
    assert [choice for choice, _ in radio.choices] == ["DPM-Solver", "SA-Solver"] and radio.value == "DPM-Solver"
    generate = next(fn.fn for fn in demo.fns.values() if fn.api_name == "generate")
    with pytest.raises(gr.Error, match=r"needs an LCM-LoRA in the model's lcm_lora/ folder, or an LCM model"):
        generate("a red circle", sampler=app.FAST_SAMPLER, steps=1)

    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path / "lcm")
    demo = app.create_demo(str(tmp_path / "lcm"), max_seconds=NO_TIME_LIMIT)
    radio = sampler_radio(demo)
    assert [choice for choice, _ in radio.choices] == list(app.SAMPLERS) and radio.value == app.FAST_SAMPLER
    assert next(b.value for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.elem_id == "steps") == 4
    generate = next(fn.fn for fn in demo.fns.values() if fn.api_name == "generate")
    images, _ = generate("a red circle", seed=3, randomize_seed=False)  # the defaults: 4 steps, guidance 0
    pipe = PixArtAlphaPipeline.from_pretrained(tmp_path / "lcm")
    expected = pipe(
        "a red circle", num_inference_steps=4, guidance_scale=0.0, generator=torch.Generator().manual_seed(3)
    )
    np.testing.assert_array_equal(np.asarray(images[0]), np.asarray(expected.images[0]))


def test_sampler_defaults(client):
    for label, name in app.SAMPLERS.items():
        _, _, steps, guidance = SCHEDULERS[name]
        assert tuple(client.predict(label, api_name="/sampler_defaults")) == (steps, guidance)
    assert client.predict("SA-Solver", api_name="/sampler_defaults") == (25, 3.0)
    with pytest.raises(AppError, match="'Euler'.*not in the list of choices"):
        client.predict("Euler", api_name="/sampler_defaults")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": "x" * 501}, "501 characters long; the limit is 500"),
        ({"prompt": "   "}, "prompt is empty"),
        ({"negative_prompt": None}, None),  # the baseline request passes, also with no negative prompt at all
        ({"steps": 51}, "Value 51 is greater than maximum value 50"),
        ({"steps": 0}, "Value 0 is less than minimum value 1"),
        ({"width": 1024}, "Value 1024 is greater than maximum value 512"),  # twice the tiny model's 256 px
        ({"height": 64}, "Value 64 is less than minimum value 128"),
        ({"height": 300}, "Height must be a multiple of 16 pixels, got 300"),
        ({"num_images": 5}, "Value 5 is greater than maximum value 4"),
        ({"lora": "missing"}, "Value: missing is not in the list of choices"),
        ({"style": "Baroque"}, "'Baroque'.*not in the list of choices"),
    ],
)
def test_limits_are_enforced_with_a_clear_message(client, overrides, message):
    if message is None:
        gallery, _ = client.predict(*_request(**overrides).values(), api_name="/generate")
        assert len(gallery) == 1
        return
    with pytest.raises(AppError, match=message):
        client.predict(*_request(**overrides).values(), api_name="/generate")


def test_over_the_time_limit_is_refused_with_the_limit_named(model_dir, tmp_path):
    """A request whose estimated time is over the device's budget is refused before it runs; the page says both."""
    demo = app.create_demo(str(model_dir), max_seconds=0.001)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match=r"would take about [\d.]+ s on the CPU; the limit is 0.001 s per request"):
            client.predict(*_request().values(), api_name="/generate")
        note = client.predict(256, 256, 20, 4.5, 1, True, api_name="/estimate")
        assert note.startswith("Estimated time: about") and "Over the limit of 0.001 s per request" in note
        image = handle_file(_image_file(tmp_path, "start.png"))
        with pytest.raises(AppError, match=r"limit is 0.001 s per request. Use fewer steps, a lower strength or a"):
            client.predict("a red circle", image, 0.5, api_name="/img2img")
        page_text = " ".join(str(block.value) for block in demo.blocks.values() if isinstance(block, gr.Markdown))
        assert "about 0.001 s of estimated compute per request" in page_text
    finally:
        demo.close()


def test_estimate_follows_the_request_and_names_upscaling(client):
    small = client.predict(256, 256, 2, 1.0, 1, True, api_name="/estimate")
    large = client.predict(512, 512, 20, 4.5, 4, True, api_name="/estimate")

    def seconds(note: str) -> float:
        return float(note.split("about ")[1].split(" s")[0])

    assert seconds(large) > seconds(small)
    assert "upscaled" in large and "upscaled" not in small  # with binning, above the model's 256 px
    assert "upscaled" not in client.predict(512, 512, 2, 1.0, 1, False, api_name="/estimate")


def test_a_short_request_passes_a_long_one_and_cancel_stops_it(client):
    """Two requests run at once on the CPU: a short one finishes while a long one runs; cancel stops the long one."""
    long_job = client.submit(*_request(steps=50, width=512, height=512, num_images=4).values(), api_name="/generate")
    deadline = time.monotonic() + 60
    while long_job.status().code not in (Status.PROCESSING, Status.PROGRESS):
        assert time.monotonic() < deadline and not long_job.done(), long_job.status()
        time.sleep(0.05)
    gallery, _ = Client(client.src, verbose=False).predict(*_request(steps=1).values(), api_name="/generate")
    assert len(gallery) == 1 and not long_job.done()
    while client.predict(api_name="/cancel") != "Cancelled.":  # until the long one has reached its first step
        assert not long_job.done() and time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(AppError, match=r"Cancelled after step (\d+) of 50") as cancelled:
        long_job.result(timeout=60)
    assert int(cancelled.value.args[0].split("step ")[1].split(" ")[0]) < 50
    assert client.predict(api_name="/cancel") == "Nothing to cancel."


def test_an_unexpected_failure_shows_its_message(client, monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise RuntimeError("the VAE ran out of memory")

    monkeypatch.setattr(PixArtAlphaPipeline, "__call__", broken)  # the editing pipelines call it too
    with pytest.raises(AppError, match="Generation failed: RuntimeError: the VAE ran out of memory"):
        client.predict(*_request().values(), api_name="/generate")
    image = handle_file(_image_file(tmp_path, "start.png"))
    with pytest.raises(AppError, match="Generation failed: RuntimeError: the VAE ran out of memory"):
        client.predict("a red circle", image, api_name="/img2img")


def test_header_names_the_model_not_the_server_path(served, model_dir):
    demo, _ = served
    header = next(block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown))
    assert f"Model: **{model_dir.name}**" in header and str(model_dir.parent) not in header
    assert app.escape_markdown("my_model*v2") == r"my\_model\*v2"
    assert "English" in header  # what its prompts may say


def test_a_sigma_model_is_served_as_sigma(tmp_path):
    from diffusers_pixart import PixArtSigmaPipeline

    folder = tmp_path / "sigma"
    PixArtSigmaPipeline(**make_pipeline(seed=11).components).save_pretrained(folder)
    demo = app.create_demo(str(folder), max_seconds=NO_TIME_LIMIT)
    header = next(block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown))
    assert header.startswith("# PixArt-Σ text-to-image") and demo.title == "PixArt-Σ"


def test_examples_come_from_the_environment_the_record_or_the_card(tmp_path, monkeypatch, model_dir):
    examples = tmp_path / "examples.txt"
    examples.write_text("a lighthouse at night\n\nan owl in the snow\n")
    monkeypatch.setenv(app.EXAMPLES_ENV, str(examples))
    assert app.load_examples(str(model_dir)) == ["a lighthouse at night", "an owl in the snow"]
    monkeypatch.setenv(app.EXAMPLES_ENV, str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="PIXART_EXAMPLES"):
        app.load_examples(None)
    monkeypatch.delenv(app.EXAMPLES_ENV)
    assert app.load_examples(str(model_dir)) == app.DEFAULT_EXAMPLES  # no record, no card
    card = tmp_path / "card"
    card.mkdir()
    (card / "README.md").write_text("---\nwidget:\n- text: a blue circle\n---\n# Card\n")
    assert app.load_examples(str(card)) == ["a blue circle"]


def test_unknown_words_are_found_with_or_without_the_vocabulary_check(monkeypatch):
    """The toy model's prompt check: the language module's vocabulary warning, or else the grammar's refusal."""
    import diffusers_pixart.toy.language as language

    known = "one object. a large red circle in the center."
    if hasattr(language, "vocabulary_warning"):
        assert "cat" in app.vocabulary_check()("a cat on a red circle") and app.vocabulary_check()(known) is None
    monkeypatch.delattr(language, "vocabulary_warning", raising=False)
    check = app.vocabulary_check()
    assert check("a cat on a red circle").startswith("this model may not understand the prompt: ")
    assert check(known) is None


def test_the_embedded_models_examples_are_drawn_right():
    """Each example the page offers for the embedded toy model scores 1.0 on the toy CompBench (two seeds each)."""
    examples = app.load_examples(None)
    assert examples and app.is_toy_model(None)
    pipe = load_pipeline()[0]
    pipe.set_progress_bar_config(disable=True)
    _, _, steps, guidance = SCHEDULERS["dpm"]  # the page's defaults
    prompts = [prompt for prompt in examples for _ in range(2)]
    images = sample_images(pipe, prompts, seed=0, steps=steps, guidance=guidance)
    scores = [score_image(image, prompt)["overall"] for image, prompt in zip(images, prompts)]
    assert scores == [1.0] * len(prompts), list(zip(prompts, scores))


def test_space_readme_header_and_requirements():
    data = SpaceCard.load(SPACE / "README.md").data
    assert data.sdk == "gradio" and data.sdk_version == gr.__version__
    assert (SPACE / data.app_file).is_file()
    assert data.license == "openrail++"
    assert data.models == ["PixArt-alpha/PixArt-XL-2-1024-MS"]
    assert 0 < len(data.short_description) <= 60  # the Hub's limit
    requirements = (SPACE / "requirements.txt").read_text().splitlines()
    assert f"gradio=={gr.__version__}" in requirements and "diffusers_pixart>=0.1.0" in requirements
    assert "opencv-python-headless" in requirements  # Canny edges of the ControlNet tab


# ----------------------------------------------------------------------------------------------------------------------
# The editing tabs: image-to-image, inpainting and ControlNet


def _image_file(folder: Path, name: str, size: tuple[int, int] = (256, 256), seed: int = 0) -> Path:
    """A PNG of smooth random colours (what the pipelines are asked to edit) of ``size`` (width, height)."""
    coarse = np.random.default_rng(seed).integers(0, 255, (4, 4, 3), dtype=np.uint8)
    path = folder / name
    Image.fromarray(coarse).resize(size, Image.Resampling.BILINEAR).save(path)
    return path


def _scene_file(folder: Path, name: str, seed: int = 0) -> Path:
    """A PNG of a 256 px toy-world scene: flat shapes, whose outlines Canny finds."""
    from diffusers_pixart.toy import render, sample_scene

    path = folder / name
    render(sample_scene(np.random.default_rng(seed), min_objects=2), 256).save(path)
    return path


def _mask_files(folder: Path) -> tuple[Path, Path, np.ndarray]:
    """The same mask as the page's brush paints it (white, opaque where painted, else transparent) and as a
    white-on-black image an API client may upload; and the mask itself (bool)."""
    mask = np.zeros((256, 256), dtype=bool)
    mask[64:160, 96:224] = True
    layer = np.zeros((256, 256, 4), dtype=np.uint8)
    layer[mask] = 255
    Image.fromarray(layer, mode="RGBA").save(folder / "painted.png")
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(folder / "mask.png")
    return folder / "painted.png", folder / "mask.png", mask


def _editor(image: Path | None, *layers: Path) -> dict:
    """The inpainting editor's value as an API client sends it."""
    return {
        "background": None if image is None else handle_file(image),
        "layers": [handle_file(layer) for layer in layers],
        "composite": None,
    }


def _edit_oracle(model_dir: Path, cls, prompt: str, seed: int, controlnet: Path | None = None, **kwargs):
    """The same edit made directly on a pipeline of ``cls``: one PIL image."""
    pipe = PixArtAlphaPipeline.from_pretrained(model_dir)
    if controlnet is not None:
        pipe = cls(**pipe.components, controlnet=PixArtControlNetModel.from_pretrained(controlnet))
    else:
        pipe = cls(**pipe.components)
    pipe.set_scheduler("dpm")
    return pipe(
        prompt, negative_prompt="", guidance_scale=4.5, generator=torch.Generator().manual_seed(seed), **kwargs
    ).images[0]


def _array(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_img2img_gives_the_pipeline_image(client, model_dir, tmp_path):
    path = _image_file(tmp_path, "start.png")
    result, seed = client.predict(
        "a red circle", handle_file(path), 0.5, steps=4, seed=3, randomize_seed=False, api_name="/img2img"
    )
    assert seed == 3
    expected = _edit_oracle(
        model_dir,
        PixArtAlphaImg2ImgPipeline,
        "a red circle",
        3,
        image=Image.open(path),
        strength=0.5,
        num_inference_steps=4,
    )
    np.testing.assert_array_equal(_array(result), np.asarray(expected))
    assert not np.array_equal(_array(result), _array(str(path)))


def test_an_uploaded_image_is_fitted_to_the_limits(client, tmp_path):
    """Sides within the device's limits (128-512 px for the tiny model), multiples of 16, the aspect kept."""
    wide = _image_file(tmp_path, "wide.png", size=(600, 300))
    result, _ = client.predict("a red circle", handle_file(wide), 0.5, steps=2, api_name="/img2img")
    assert Image.open(result).size == (512, 256)
    limits = app.Limits("cpu", 128, 512, 16, 1.0, 1)
    square = Image.new("RGB", (256, 256))
    assert app.fit_image(square, limits) is square
    assert app.fit_image(Image.new("RGB", (300, 210)), limits).size == (304, 208)
    assert app.fit_image(Image.new("RGB", (1000, 100)), limits).size == (512, 128)
    assert app.fit_image(Image.new("RGB", (64, 64)), limits).size == (128, 128)


def test_inpainting_gives_the_pipeline_image_for_a_painted_or_an_uploaded_mask(client, model_dir, tmp_path):
    path = _image_file(tmp_path, "start.png", seed=1)
    painted, uploaded, mask = _mask_files(tmp_path)
    kwargs = dict(steps=4, seed=5, randomize_seed=False, api_name="/inpaint")
    result, seed = client.predict("a red circle", _editor(path, painted), **kwargs)
    again, _ = client.predict("a red circle", _editor(path, uploaded), **kwargs)
    assert seed == 5
    np.testing.assert_array_equal(_array(result), _array(again))
    expected = _edit_oracle(
        model_dir,
        PixArtAlphaInpaintPipeline,
        "a red circle",
        5,
        image=Image.open(path),
        mask_image=Image.open(uploaded),
        strength=1.0,
        num_inference_steps=4,
    )
    np.testing.assert_array_equal(_array(result), np.asarray(expected))
    image, read = app.editor_image_and_mask({"background": Image.open(path), "layers": [Image.open(painted)]})
    assert image.mode == "RGB" and np.array_equal(np.asarray(read) > 0, mask)


def test_controlnet_draws_on_the_edges_it_shows(client, model_dir, controlnet_dir, tmp_path):
    path = _scene_file(tmp_path, "scene.png", seed=2)
    edges = canny_edges(Image.open(path), 50, 150)
    assert np.asarray(edges).any()
    shown = client.predict(handle_file(path), "Canny", 50, 150, api_name="/edges")
    np.testing.assert_array_equal(np.asarray(Image.open(shown).convert("L")), np.asarray(edges))
    edge_map, result, seed = client.predict(
        "a red circle",
        handle_file(path),
        "Canny",
        50,
        150,
        1.0,
        steps=3,
        seed=9,
        randomize_seed=False,
        api_name="/controlnet",
    )
    assert seed == 9
    np.testing.assert_array_equal(np.asarray(Image.open(edge_map).convert("L")), np.asarray(edges))
    expected = _edit_oracle(
        model_dir,
        PixArtAlphaControlNetPipeline,
        "a red circle",
        9,
        controlnet=controlnet_dir,
        image=edges,
        controlnet_conditioning_scale=1.0,
        num_inference_steps=3,
    )
    np.testing.assert_array_equal(_array(result), np.asarray(expected))
    # An uploaded edge map is used as it is; at weight 0 the ControlNet adds nothing.
    as_is = client.predict(handle_file(path), app.NO_DETECTOR, api_name="/edges")
    np.testing.assert_array_equal(np.asarray(Image.open(as_is)), np.asarray(Image.open(path).convert("L")))
    _, unweighted, _ = client.predict(
        "a red circle",
        handle_file(path),
        "Canny",
        50,
        150,
        0.0,
        steps=3,
        seed=9,
        randomize_seed=False,
        api_name="/controlnet",
    )
    base = _edit_oracle(model_dir, PixArtAlphaPipeline, "a red circle", 9, num_inference_steps=3, height=256, width=256)
    np.testing.assert_array_equal(_array(unweighted), np.asarray(base))
    assert not np.array_equal(_array(unweighted), _array(result))


@pytest.mark.parametrize(
    ("endpoint", "args", "kwargs", "message"),
    [
        ("/img2img", ["a red circle", None], {}, "No image: upload the image to start from."),
        ("/img2img", ["a red circle", "image", 0.0], {}, r"Strength must be above 0 and at most 1, got 0: 0 would"),
        ("/img2img", ["a red circle", "image", 1.5], {}, "Value 1.5 is greater than maximum value 1"),
        ("/img2img", ["a red circle", "image", 0.1], {"steps": 4}, r"Strength 0.1 of 4 steps runs no step"),
        ("/img2img", ["  ", "image"], {}, "The prompt is empty"),
        ("/inpaint", ["a red circle", None], {}, "No image: upload the image to edit, then paint over"),
        ("/inpaint", ["a red circle", "editor"], {}, "No mask: paint over the part of the image to repaint"),
        ("/inpaint", ["a red circle", "blank mask"], {}, "No mask: paint over the part of the image to repaint"),
        ("/inpaint", ["a red circle", "mask", 0.0], {}, "Strength must be above 0 and at most 1"),
        ("/controlnet", ["a red circle", None], {}, "No image: upload the image whose edges guide the new one"),
        ("/controlnet", ["a red circle", "image", "Canny", 200, 100], {}, "Canny thresholds must satisfy 0 < low"),
        ("/controlnet", ["a red circle", "image", "HED"], {}, r"'HED'.*not in the list of choices"),
    ],
)
def test_editing_errors_are_stated(client, tmp_path, endpoint, args, kwargs, message):
    path = _image_file(tmp_path, "start.png")
    painted, _, _ = _mask_files(tmp_path)
    blank = tmp_path / "blank.png"
    Image.new("L", (256, 256)).save(blank)
    values = {
        "image": handle_file(path),
        "editor": _editor(path),
        "blank mask": _editor(path, blank),
        "mask": _editor(path, painted),
    }
    args = [values.get(arg, arg) if isinstance(arg, str) and arg in values else arg for arg in args]
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=endpoint, **kwargs)


def test_the_controlnet_comes_from_the_environment_or_the_model_folder(
    tmp_path, monkeypatch, model_dir, controlnet_dir
):
    monkeypatch.delenv(app.CONTROLNET_ENV, raising=False)
    assert app.find_controlnet(str(model_dir)) is None
    assert app.find_controlnet(str(model_dir), str(controlnet_dir)) == (str(controlnet_dir), None)
    monkeypatch.setenv(app.CONTROLNET_ENV, str(controlnet_dir))
    assert app.find_controlnet(str(model_dir)) == (str(controlnet_dir), None)
    monkeypatch.delenv(app.CONTROLNET_ENV)

    # A saved ControlNet pipeline holds its ControlNet in controlnet/: served with the tab.
    pipe = PixArtAlphaPipeline.from_pretrained(model_dir)
    controlnet = PixArtControlNetModel.from_pretrained(controlnet_dir)
    folder = tmp_path / "controlnet-pipeline"
    PixArtAlphaControlNetPipeline(**pipe.components, controlnet=controlnet).save_pretrained(folder)
    assert app.find_controlnet(str(folder)) == (str(folder), "controlnet")
    with_tab = app.create_demo(str(folder), max_seconds=NO_TIME_LIMIT)
    without = app.create_demo(str(model_dir), max_seconds=NO_TIME_LIMIT)
    for demo, present in ((with_tab, True), (without, False)):
        tabs = [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]
        assert tabs == ["Text to image", "Image to image", "Inpainting", *(["ControlNet"] if present else [])]
        assert ("controlnet" in {fn.api_name for fn in demo.fns.values()}) is present

    # The original code's .pth, read with the base it runs on; another base and a Σ model are refused.
    original = tmp_path / "controlnet.pth"
    torch.save({"state_dict": controlnet.to_original(pipe.transformer)}, original)
    loaded = app.load_controlnet(str(original), None, pipe)
    for (key, value), reloaded in zip(controlnet.state_dict().items(), loaded.state_dict().values()):
        torch.testing.assert_close(reloaded, value, msg=key)
    with pytest.raises(ValueError, match="PIXART_CONTROLNET names a ControlNet folder"):
        app.load_controlnet(str(tmp_path / "missing"), None, pipe)
    wider = tmp_path / "wider"
    PixArtControlNetModel(
        num_layers=1, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16
    ).save_pretrained(wider)
    with pytest.raises(ValueError, match="for another base"):
        app.load_controlnet(str(wider), None, pipe)
    from diffusers_pixart import PixArtSigmaPipeline

    with pytest.raises(ValueError, match="PixArt-α models only"):
        app.load_controlnet(str(controlnet_dir), None, PixArtSigmaPipeline(**pipe.components))


def test_the_editing_pipelines_share_the_weights_in_their_dtype(controlnet_dir):
    """``from_pipe`` alone would cast the shared weights to float32: a bfloat16 model stays bfloat16."""
    pipe = make_pipeline(seed=11).to(dtype=torch.bfloat16)
    controlnet = PixArtControlNetModel.from_pretrained(controlnet_dir).to(dtype=torch.bfloat16)
    pipelines = app.mode_pipelines(pipe, controlnet)
    assert set(pipelines) == {"text", "img2img", "inpaint", "controlnet"}
    assert isinstance(pipelines["inpaint"], PixArtAlphaInpaintPipeline)
    for pipeline in pipelines.values():
        assert pipeline.transformer is pipe.transformer and pipeline.vae is pipe.vae
    assert pipe.transformer.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16
    assert set(app.mode_pipelines(pipe, None)) == {"text", "img2img", "inpaint"}


def test_hed_is_offered_only_with_its_weights(tmp_path, monkeypatch, model_dir, controlnet_dir):
    """Without PIXART_HED_WEIGHTS the page says why HED is missing; with a weights file it is a choice."""
    from diffusers_pixart.data.edges import HEDEdgeDetector

    monkeypatch.delenv(app.HED_ENV, raising=False)
    demo = app.create_demo(str(model_dir), max_seconds=NO_TIME_LIMIT, controlnet=str(controlnet_dir))
    text = " ".join(str(block.value) for block in demo.blocks.values() if isinstance(block, gr.Markdown))
    assert "HED, the edge detector the released PixArt ControlNet was trained on, is not available offline" in text
    weights = tmp_path / "ControlNetHED.pth"
    torch.save(HEDEdgeDetector().state_dict(), weights)
    monkeypatch.setenv(app.HED_ENV, str(weights))
    demo = app.create_demo(str(model_dir), max_seconds=NO_TIME_LIMIT, controlnet=str(controlnet_dir))
    _, url, _ = app.launch(demo, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        path = _image_file(tmp_path, "start.png")
        edges = Image.open(Client(url, verbose=False).predict(handle_file(path), "HED", api_name="/edges"))
        expected = HEDEdgeDetector.from_file(weights).edge_map(Image.open(path).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(edges.convert("L")), np.asarray(expected))
    finally:
        demo.close()


def _browser(playwright):
    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def _set_slider(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _assert_shown_whole(page, count: int, natural: tuple[int, int]) -> list[dict]:
    """Every gallery image lies inside the viewport (gallery scrolled to the top), aspect ratio kept, small ones
    enlarged by a whole factor; returns their boxes."""
    page.wait_for_function(
        "([n, w, h]) => { const imgs = [...document.querySelectorAll('#gallery .grid-container img')];"
        " return imgs.length === n && imgs.every(i => i.naturalWidth === w && i.naturalHeight === h"
        " && i.style.width); }",
        arg=[count, *natural],
        timeout=120_000,
    )
    page.evaluate("document.querySelector('#gallery').scrollIntoView()")
    boxes = page.evaluate(
        "() => [...document.querySelectorAll('#gallery .grid-container img')].map(i => {"
        " const r = i.getBoundingClientRect(); return {left: r.left, top: r.top, right: r.right,"
        " bottom: r.bottom, width: r.width, height: r.height, nw: i.naturalWidth, nh: i.naturalHeight,"
        " vw: window.innerWidth, vh: window.innerHeight}; })"
    )
    for box in boxes:
        assert 0 <= box["left"] and box["right"] <= box["vw"] and 0 <= box["top"] and box["bottom"] <= box["vh"], box
        assert box["width"] / box["height"] == pytest.approx(box["nw"] / box["nh"], rel=0.02), box
        factor = box["width"] / box["nw"]
        assert factor >= 1 and factor == int(factor) and box["height"] == factor * box["nh"], box
    return boxes


def _wait_for_image(page, selector: str, natural: tuple[int, int]) -> None:
    """Wait until the image component ``selector`` shows a loaded image of ``natural`` (width, height) pixels."""
    page.wait_for_function(
        "([s, w, h]) => { const i = document.querySelector(s + ' img');"
        " return i !== null && i.naturalWidth === w && i.naturalHeight === h; }",
        arg=[selector, *natural],
        timeout=120_000,
    )


def _click_until_shown(page, button: str, text: str, tries: int = 3) -> None:
    """Click ``button`` until ``text`` shows (30 s each). The image editor shows its canvas before an upload has
    reached the app, so a first click can still find no image (in a full-suite run the inpainting tab's "No mask"
    once did not come within 30 s; alone the test passes)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    for attempt in range(tries):
        page.locator(button).click()
        try:
            page.get_by_text(text).wait_for(timeout=30_000)
            return
        except PlaywrightTimeoutError:
            if attempt == tries - 1:
                raise


def _paint(page, selector: str, stroke: list[tuple[float, float]]) -> None:
    """Paint a stroke with the image editor's brush; points are fractions of the canvas's width and height."""
    page.locator(f"{selector} button[aria-label='Brush']").click()
    box = page.locator(f"{selector} canvas").first.bounding_box()
    points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
    page.mouse.move(*points[0])
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*point, steps=4)
    page.mouse.up()


def test_fresh_start_in_a_real_browser(tmp_path):
    """``python space/app.py`` with no model and no network: the default model's page, as a visitor first sees it."""
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PIXART_MODEL", app.EXAMPLES_ENV, app.CONTROLNET_ENV, app.HED_ENV)
    }
    env.update(HF_HUB_OFFLINE="1", GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    log = open(tmp_path / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(SPACE / "app.py")], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    toy = (TOY_MODEL_PATH / "model_index.json").is_file()
    try:
        deadline = time.monotonic() + 300  # a cold start on a loaded 2-core machine: imports, model, calibration
        while True:
            assert process.poll() is None, (tmp_path / "app.log").read_text()
            assert time.monotonic() < deadline, "the app did not start in 300 s"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)

        with sync_playwright() as playwright:
            browser = _browser(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.get_by_text("embedded toy model" if toy else RANDOM_MODEL_LABEL).wait_for(timeout=60_000)
            page.get_by_text("Limits on this CPU").wait_for()
            page.screenshot(path=str(tmp_path / "default.png"), full_page=True)
            if toy:
                page.get_by_text("This toy model knows only flat shapes").wait_for()
                for example in app.load_examples(None):
                    assert page.get_by_text(example[:30]).count() >= 1, example
                warning = app.vocabulary_check()("a cat on a red circle")  # e.g. "...; unknown words: cat"
                page.get_by_label("Prompt", exact=True).fill("a cat on a red circle")
                page.locator("#controls-note").get_by_text(warning[-24:]).wait_for(timeout=30_000)
            page.get_by_text("Advanced options").click()
            assert page.get_by_text("Image style").is_visible() is not toy  # presets change nothing on the toy model

            # An error: its cause in the page, and every control still there, as it was.
            seed_before = page.locator("#seed input[type=number]").input_value()
            page.get_by_label("Prompt", exact=True).fill("")
            page.get_by_role("button", name="Run").click()
            page.get_by_text("The prompt is empty: describe the image you want.").wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
            assert page.locator("#seed input[type=number]").input_value() == seed_before
            assert page.locator("#seed").get_by_text("Error").count() == 0
            for control in ("steps", "seed", "width", "height", "num-images"):
                assert page.locator(f"#{control} input[type=number]").is_visible(), control
            assert page.get_by_role("button", name="Run").is_enabled()

            # The editing tabs (ControlNet only where the model has one), each run on one of its examples.
            tabs = ["Text to image", "Image to image", "Inpainting"]
            tabs += ["ControlNet"] if toy and app.find_controlnet(None) else []
            assert page.get_by_role("tab").all_inner_texts() == tabs
            if toy:
                config = {
                    part: json.loads((TOY_MODEL_PATH / part / "config.json").read_text())
                    for part in ("transformer", "vae")
                }
                size = config["transformer"]["sample_size"] * 2 ** (len(config["vae"]["block_out_channels"]) - 1)
                for tab, prefix in (("Image to image", "img2img"), ("Inpainting", "inpaint")):
                    page.get_by_role("tab", name=tab).click()
                    page.locator(f"#tab-{prefix} [data-testid=dataset-cell-0-0]").click()
                    expect(page.locator(f"#{prefix}-prompt textarea")).not_to_have_value("", timeout=30_000)
                    page.locator(f"#{prefix}-run").click()
                    _wait_for_image(page, f"#{prefix}-result", (size, size))
                    page.screenshot(path=str(tmp_path / f"{prefix}.png"), full_page=True)
            browser.close()
        assert Image.open(tmp_path / "default.png").size[0] == 1280
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.mark.skipif(not (TOY_MODEL_PATH / "model_index.json").is_file(), reason="the package ships no toy model")
def test_results_are_shown_whole_on_a_laptop_and_a_phone(tmp_path):
    """Four images and a non-square one, on a 1280x800 and a 390x844 viewport: whole, whole-factor, inside the view."""
    from playwright.sync_api import sync_playwright

    demo = app.create_demo(None, max_seconds=NO_TIME_LIMIT)
    _, url, _ = app.launch(demo, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        with sync_playwright() as playwright:
            browser = _browser(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url)
            page.get_by_text("Advanced options").click()
            _set_slider(page, "steps", 4)
            _set_slider(page, "num-images", 4)
            page.get_by_label("Prompt", exact=True).fill(app.load_examples(None)[0])
            page.get_by_role("button", name="Run").click()
            laptop = _assert_shown_whole(page, 4, (64, 64))
            page.screenshot(path=str(tmp_path / "four_laptop.png"))
            page.set_viewport_size({"width": 390, "height": 844})
            phone = _assert_shown_whole(page, 4, (64, 64))
            page.screenshot(path=str(tmp_path / "four_phone.png"))
            assert laptop[0]["width"] >= 4 * 64 and phone[0]["width"] >= 2 * 64  # enlarged, not thumbnails

            page.set_viewport_size({"width": 1280, "height": 800})
            _set_slider(page, "num-images", 1)
            _set_slider(page, "height", 128)
            page.get_by_role("button", name="Run").click()
            tall = _assert_shown_whole(page, 1, (64, 128))
            page.screenshot(path=str(tmp_path / "tall_laptop.png"))
            assert tall[0]["height"] >= 4 * 128
            browser.close()
    finally:
        demo.close()


def test_editing_tabs_in_a_real_browser(served, tmp_path, monkeypatch):
    """Each editing tab of the tiny model with a ControlNet, as a visitor uses it: its error without an image (or a
    mask), then an upload (and a painted mask) and a result."""
    from playwright.sync_api import sync_playwright

    demo, client = served
    painted = []
    read_mask = app.editor_image_and_mask

    def spy(value):
        image, mask = read_mask(value)
        painted.append(np.asarray(mask) > 0)
        return image, mask

    monkeypatch.setattr(app, "editor_image_and_mask", spy)  # create_demo's closure looks it up when called
    image = _scene_file(tmp_path, "scene.png", seed=4)
    with sync_playwright() as playwright:
        browser = _browser(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(client.src)
        page.get_by_text("Limits on this CPU").wait_for(timeout=60_000)
        assert page.get_by_role("tab").all_inner_texts() == [
            "Text to image",
            "Image to image",
            "Inpainting",
            "ControlNet",
        ]

        page.get_by_role("tab", name="Image to image").click()
        page.get_by_label("Prompt (the whole image as you want it)").fill("a red circle")
        page.locator("#img2img-run").click()
        page.get_by_text("No image: upload the image to start from.").wait_for(timeout=30_000)
        page.locator("#img2img-image input[type=file]").set_input_files(str(image))
        _wait_for_image(page, "#img2img-image", (256, 256))
        page.locator("#img2img-run").click()
        _wait_for_image(page, "#img2img-result", (256, 256))
        page.screenshot(path=str(tmp_path / "img2img.png"), full_page=True)

        page.get_by_role("tab", name="Inpainting").click()
        page.get_by_label("Prompt (the whole image after the edit)").fill("a red circle")
        page.locator("#inpaint-image input[type=file]").set_input_files(str(image))
        page.locator("#inpaint-image canvas").first.wait_for()
        _click_until_shown(page, "#inpaint-run", "No mask: paint over the part of the image to repaint")
        _paint(page, "#inpaint-image", [(0.3, 0.5), (0.5, 0.52), (0.7, 0.5)])
        page.locator("#inpaint-run").click()
        _wait_for_image(page, "#inpaint-result", (256, 256))
        page.screenshot(path=str(tmp_path / "inpaint.png"), full_page=True)
        mask = painted[-1]
        assert mask.shape == (256, 256) and 0.01 < mask.mean() < 0.5, mask.mean()
        assert mask[128, 128] and not mask[10, 10]  # the stroke across the middle, nothing in the corner

        page.get_by_role("tab", name="ControlNet").click()
        page.get_by_text("HED, the edge detector the released PixArt ControlNet was trained on").wait_for()
        page.get_by_label("Prompt (the image to draw on the edges)").fill("a red circle")
        page.locator("#controlnet-run").click()
        page.get_by_text("No image: upload the image whose edges guide the new one").wait_for(timeout=30_000)
        page.locator("#controlnet-image input[type=file]").set_input_files(str(image))
        _wait_for_image(page, "#controlnet-edges", (256, 256))  # shown as soon as the image is there
        page.locator("#controlnet-run").click()
        _wait_for_image(page, "#controlnet-result", (256, 256))
        page.screenshot(path=str(tmp_path / "controlnet.png"), full_page=True)
        browser.close()

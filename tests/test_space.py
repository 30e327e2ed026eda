"""The Gradio Space (space/app.py): every API endpoint through gradio_client, and a real browser (Debian's chromium)."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from huggingface_hub import SpaceCard
from peft import LoraConfig
from PIL import Image

from diffusers_pixart.default_model import RANDOM_MODEL_LABEL, TOY_MODEL_PATH, load_pipeline
from diffusers_pixart.hub import LORA_PREFIX, LORA_WEIGHT_NAME, save_lora_weights
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.schedulers import SCHEDULERS
from diffusers_pixart.tiny import make_pipeline

SPACE = Path(__file__).resolve().parents[1] / "space"
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


def _load_app():
    spec = importlib.util.spec_from_file_location("space_app", SPACE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app = _load_app()
LORA_NAME = Path(LORA_WEIGHT_NAME).stem


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny pipeline folder with a LoRA weights file at its top, as a model repo pushed with LoRA weights."""
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
    return folder


@pytest.fixture(scope="module")
def client(model_dir):
    demo = app.create_demo(str(model_dir))
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        yield Client(url, verbose=False)
    finally:
        demo.close()


def _oracle(model_dir: Path, sampler: str, lora: bool, prompt: str, negative: str, seed: int, num_images: int):
    """The same request made directly on the pipeline: a list of PIL images."""
    pipe = PixArtAlphaPipeline.from_pretrained(model_dir)
    if lora:
        pipe.transformer.load_lora_adapter(model_dir, weight_name=LORA_WEIGHT_NAME, prefix=LORA_PREFIX)
    pipe.set_scheduler(sampler)
    return pipe(
        prompt,
        negative_prompt=negative,
        num_inference_steps=2,
        guidance_scale=4.5,
        height=256,
        width=256,
        num_images_per_prompt=num_images,
        use_resolution_binning=True,
        generator=torch.Generator().manual_seed(seed),
    ).images


def _request(**overrides) -> list:
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
    return list(args.values())


def _arrays(gallery: list[dict]) -> list[np.ndarray]:
    return [np.asarray(Image.open(item["image"]).convert("RGB")) for item in gallery]


def test_every_endpoint_is_listed(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert set(api["named_endpoints"]) == {"/generate", "/sampler_defaults"}
    assert not api["unnamed_endpoints"]
    params = [p["parameter_name"] for p in api["named_endpoints"]["/generate"]["parameters"]]
    assert len(params) == len(_request()) and params[0] == "prompt" and params[-1] == "lora"


def test_generate_gives_the_pipeline_images(client, model_dir):
    gallery, seed = client.predict(*_request(), api_name="/generate")
    assert seed == 7
    expected = _oracle(model_dir, "dpm", False, "a red circle", "", seed=7, num_images=1)
    assert [a.shape for a in _arrays(gallery)] == [(256, 256, 3)]
    np.testing.assert_array_equal(_arrays(gallery)[0], np.asarray(expected[0]))


def test_style_sampler_lora_and_random_seed(client, model_dir):
    request = dict(style="Anime", negative_prompt="blurry", sampler="SA-Solver", num_images=2)
    gallery, seed = client.predict(*_request(**request, randomize_seed=True, lora=LORA_NAME), api_name="/generate")
    assert 0 <= seed <= app.MAX_SEED
    prompt, negative = app.apply_style("Anime", "a red circle", "blurry")
    assert prompt.startswith("anime artwork of a red circle") and negative.endswith(", blurry")
    expected = _oracle(model_dir, "sa", True, prompt, negative, seed=seed, num_images=2)
    got = _arrays(gallery)
    assert len(got) == 2
    for image, oracle in zip(got, expected):
        np.testing.assert_array_equal(image, np.asarray(oracle))

    # The same request without the LoRA gives other images: the choice switches the adapter off.
    plain, _ = client.predict(*_request(**request, seed=seed), api_name="/generate")
    assert not np.array_equal(_arrays(plain)[0], got[0])
    expected = _oracle(model_dir, "sa", False, prompt, negative, seed=seed, num_images=2)
    for image, oracle in zip(_arrays(plain), expected):
        np.testing.assert_array_equal(image, np.asarray(oracle))


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
        ({"width": 2048}, "Value 2048 is greater than maximum value 1024"),
        ({"height": 128}, "Value 128 is less than minimum value 256"),
        ({"height": 300}, "Height must be a multiple of 32 pixels, got 300"),
        ({"num_images": 5}, "Value 5 is greater than maximum value 4"),
        ({"lora": "missing"}, "Value: missing is not in the list of choices"),
        ({"style": "Baroque"}, "'Baroque'.*not in the list of choices"),
    ],
)
def test_limits_are_enforced_with_a_clear_message(client, overrides, message):
    if message is None:
        gallery, _ = client.predict(*_request(**overrides), api_name="/generate")
        assert len(gallery) == 1
        return
    with pytest.raises(AppError, match=message):
        client.predict(*_request(**overrides), api_name="/generate")


def test_space_readme_header_and_requirements():
    data = SpaceCard.load(SPACE / "README.md").data
    assert data.sdk == "gradio" and data.sdk_version == gr.__version__
    assert (SPACE / data.app_file).is_file()
    assert data.license == "openrail++"
    assert data.models == ["PixArt-alpha/PixArt-XL-2-1024-MS"]
    assert 0 < len(data.short_description) <= 60  # the Hub's limit
    requirements = (SPACE / "requirements.txt").read_text().splitlines()
    assert f"gradio=={gr.__version__}" in requirements and "diffusers_pixart>=0.1.0" in requirements


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fresh_start_in_a_real_browser(tmp_path):
    """``python space/app.py`` with no model and no network serves the default model; chromium makes an image."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing: apt-get install -y chromium"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PIXART_MODEL"}
    env.update(HF_HUB_OFFLINE="1", GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1")
    log = open(tmp_path / "app.log", "w")
    process = subprocess.Popen([sys.executable, str(SPACE / "app.py")], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "app.log").read_text()
            assert time.monotonic() < deadline, "the app did not start in 180 s"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 1000})
            page.goto(url)
            label = "embedded toy model" if (TOY_MODEL_PATH / "model_index.json").is_file() else RANDOM_MODEL_LABEL
            page.get_by_text(label).wait_for(timeout=60_000)
            page.get_by_label("Prompt", exact=True).fill("a red circle above a blue square")
            page.get_by_role("button", name="Run").click()
            # The gallery shows the image, or its status tracker shows "Error".
            page.wait_for_selector("#gallery img, #gallery .error", timeout=120_000)
            image = page.locator("#gallery img").first
            assert image.is_visible(), (tmp_path / "app.log").read_text()[-3000:]
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            natural = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            screenshot = tmp_path / "space.png"
            page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
        default_pipe = load_pipeline()[0]
        default_size = default_pipe.transformer.config.sample_size * default_pipe.vae_scale_factor
        assert natural == [default_size, default_size]
        assert Image.open(screenshot).size[0] == 1200
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()

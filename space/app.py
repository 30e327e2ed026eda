"""PixArt-α text-to-image demo (Gradio), for a Hugging Face Space or a local machine.

``PIXART_MODEL`` (a Hub id or a pipeline folder) chooses the checkpoint. Without it the package's embedded toy model
serves, or, when the package ships none, a tiny randomly initialised pipeline, labelled as such: ``python app.py``
works on a fresh machine with no network. LoRA weight files at the top of the model repo can be switched on in the UI.
On ZeroGPU the generation runs under ``@spaces.GPU``; elsewhere that decorator is not used.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import gradio as gr
import torch
from PIL import Image

from diffusers_pixart.default_model import load_pipeline
from diffusers_pixart.hub import LORA_PREFIX, find_lora_weights
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.schedulers import SCHEDULERS

try:  # ZeroGPU Spaces lend a GPU to the decorated function for each call
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn):
        return fn


# Limits of one request, checked on the server (the sliders alone do not bind API callers).
MAX_PROMPT_CHARS = 500
MAX_STEPS = 50
MIN_IMAGE_SIZE = 256
MAX_IMAGE_SIZE = 1024
SIZE_STEP = 32
MAX_IMAGES = 4
MAX_SEED = 2**31 - 1
QUEUE_MAX_SIZE = 20

#: Sampler label -> name in :data:`diffusers_pixart.schedulers.SCHEDULERS`, which holds their steps and guidance.
SAMPLERS = {"DPM-Solver": "dpm", "SA-Solver": "sa"}

NO_LORA = "None"

#: Style presets: name -> (prompt template, negative prompt), in the spirit of the official PixArt-α demo.
STYLES = {
    "(No style)": ("{prompt}", ""),
    "Cinematic": (
        "cinematic film still of {prompt}, shallow depth of field, dramatic lighting, film grain",
        "cartoon, drawing, anime, flat colours, low quality",
    ),
    "Photographic": (
        "photograph of {prompt}, 35mm lens, natural light, sharp focus, highly detailed",
        "drawing, painting, illustration, cartoon, low quality",
    ),
    "Anime": ("anime artwork of {prompt}, vibrant colours, clean line art", "photo, realistic, 3d render"),
    "Manga": ("manga panel of {prompt}, ink lines, screentone shading, black and white", "photo, colour, realistic"),
    "Digital Art": ("digital painting of {prompt}, concept art, vivid and detailed", "photo, blurry, low quality"),
    "Pixel art": ("pixel art of {prompt}, 16-bit, limited palette, crisp pixels", "photo, smooth, blurry"),
    "Fantasy art": ("fantasy illustration of {prompt}, magical, epic, intricate detail", "photo, plain, modern"),
    "Neonpunk": ("neonpunk {prompt}, neon lights, cyberpunk city, glowing magenta and cyan", "pastel, daylight"),
    "3D Model": ("3d render of {prompt}, soft studio lighting, clay material", "photo, painting, flat, 2d"),
}
DEFAULT_STYLE = "(No style)"

EXAMPLES = [
    "a red circle above a blue square",
    "a small yellow star next to a large green triangle",
    "a photo of a cat in a house",
]


def apply_style(style: str, prompt: str, negative_prompt: str | None) -> tuple[str, str]:
    """The prompt and negative prompt of ``style``; the user's negative prompt follows the style's."""
    template, style_negative = STYLES[style]
    negative = ", ".join(part for part in (style_negative, (negative_prompt or "").strip()) if part)
    return template.format(prompt=prompt.strip()), negative


def check_request(prompt: str | None, width: int, height: int) -> None:
    """Raise ``gr.Error`` (shown in the UI, raised by API clients) when a request breaks a limit.

    Gradio itself rejects slider values out of their range and choices not in their list, before this runs.
    """
    if not (prompt or "").strip():
        raise gr.Error("The prompt is empty: describe the image you want.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise gr.Error(f"The prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.")
    for name, size in (("Width", width), ("Height", height)):
        if size % SIZE_STEP:
            raise gr.Error(f"{name} must be a multiple of {SIZE_STEP} pixels, got {size}.")


def load_model(model: str | None) -> tuple[PixArtAlphaPipeline, str, list[str]]:
    """The pipeline (on the GPU when there is one), its description, and the LoRA adapters loaded into it."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # T5 breaks in float16
    pipe, description = load_pipeline(model, device=device, dtype=dtype)
    loras = find_lora_weights(model) if model is not None else []
    for weight_name in loras:
        pipe.transformer.load_lora_adapter(
            model, weight_name=weight_name, prefix=LORA_PREFIX, adapter_name=Path(weight_name).stem
        )
    return pipe, description, [Path(name).stem for name in loras]


def create_demo(model: str | None = None) -> gr.Blocks:
    """Build the demo around ``model`` (a Hub id or pipeline folder; the default model when None), queue included."""
    pipe, description, loras = load_model(model)
    default_size = pipe.transformer.config.sample_size * pipe.vae_scale_factor
    min_size = min(MIN_IMAGE_SIZE, default_size)  # the toy model draws at 64px

    @gpu
    def generate(
        prompt: str | None,
        negative_prompt: str | None,
        style: str,
        sampler: str,
        steps: int,
        guidance_scale: float,
        seed: int,
        randomize_seed: bool,
        width: int,
        height: int,
        use_resolution_binning: bool,
        num_images: int,
        lora: str,
        progress=gr.Progress(track_tqdm=True),
    ) -> tuple[list[Image.Image], int]:
        """Generate ``num_images`` images; returns them and the seed used."""
        steps, width, height, num_images, seed = int(steps), int(width), int(height), int(num_images), int(seed)
        check_request(prompt, width, height)
        seed = random.randint(0, MAX_SEED) if randomize_seed else seed
        styled_prompt, styled_negative = apply_style(style, prompt, negative_prompt)
        pipe.set_scheduler(SAMPLERS[sampler])
        if loras:
            if lora == NO_LORA:
                pipe.transformer.disable_adapters()
            else:
                pipe.transformer.enable_adapters()
                pipe.transformer.set_adapters(lora)
        images = pipe(
            styled_prompt,
            negative_prompt=styled_negative,
            num_inference_steps=steps,
            guidance_scale=float(guidance_scale),
            height=height,
            width=width,
            num_images_per_prompt=num_images,
            use_resolution_binning=bool(use_resolution_binning),
            generator=torch.Generator(pipe.device).manual_seed(seed),
        ).images
        return images, seed

    def sampler_defaults(sampler: str) -> tuple[int, float]:
        """The steps and guidance scale the sampler is used with by default."""
        _, _, steps, guidance = SCHEDULERS[SAMPLERS[sampler]]
        return steps, guidance

    _, _, dpm_steps, dpm_guidance = SCHEDULERS["dpm"]
    with gr.Blocks(title="PixArt-α") as demo:
        gr.Markdown(
            "# PixArt-α text-to-image\n"
            f"Model: **{description}**. Up to {MAX_IMAGES} images of at most {MAX_IMAGE_SIZE}px per run; "
            f"prompts up to {MAX_PROMPT_CHARS} characters."
        )
        with gr.Row():
            prompt = gr.Textbox(
                label="Prompt", placeholder="Enter your prompt", max_lines=3, max_length=MAX_PROMPT_CHARS, scale=4
            )
            run = gr.Button("Run", variant="primary", scale=1)
        gallery = gr.Gallery(label="Result", format="png", columns=2, height=512, elem_id="gallery")
        with gr.Accordion("Advanced options", open=False):
            negative_prompt = gr.Textbox(label="Negative prompt (optional)", max_lines=2, max_length=MAX_PROMPT_CHARS)
            style = gr.Radio(list(STYLES), value=DEFAULT_STYLE, label="Image style")
            sampler = gr.Radio(list(SAMPLERS), value="DPM-Solver", label="Sampler")
            with gr.Row():
                steps = gr.Slider(1, MAX_STEPS, value=dpm_steps, step=1, label="Steps")
                guidance_scale = gr.Slider(1.0, 10.0, value=dpm_guidance, step=0.1, label="Guidance scale")
            with gr.Row():
                seed = gr.Slider(0, MAX_SEED, value=0, step=1, label="Seed")
                randomize_seed = gr.Checkbox(value=True, label="Randomize seed")
            with gr.Row():
                width = gr.Slider(min_size, MAX_IMAGE_SIZE, value=default_size, step=SIZE_STEP, label="Width")
                height = gr.Slider(min_size, MAX_IMAGE_SIZE, value=default_size, step=SIZE_STEP, label="Height")
            use_resolution_binning = gr.Checkbox(value=True, label="Resolution binning (nearest trained size)")
            num_images = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images per run")
            lora = gr.Dropdown([NO_LORA, *loras], value=NO_LORA, label="LoRA", visible=bool(loras))
        gr.Examples(EXAMPLES, inputs=prompt)

        sampler.change(sampler_defaults, inputs=sampler, outputs=[steps, guidance_scale], api_name="sampler_defaults")
        inputs = [prompt, negative_prompt, style, sampler, steps, guidance_scale, seed, randomize_seed]
        inputs += [width, height, use_resolution_binning, num_images, lora]
        gr.on([prompt.submit, run.click], generate, inputs=inputs, outputs=[gallery, seed], api_name="generate")
    return demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=1)


if __name__ == "__main__":
    create_demo(os.environ.get("PIXART_MODEL")).launch()

"""PixArt-α / PixArt-Σ text-to-image demo (Gradio), for a Hugging Face Space or a local machine.

``PIXART_MODEL`` (a Hub id or a pipeline folder) chooses the checkpoint, α or Σ (the pipeline class its
``model_index.json`` names). Without it the package's embedded toy model serves, or, when the package ships none, a
tiny randomly initialised pipeline, labelled as such: ``python app.py`` works on a fresh machine with no network.
LoRA weight files at the top of the model repo can be switched on in the UI. A model that ships an LCM-LoRA in its
``lcm_lora/`` folder (as the embedded toy model does), or an LCM model, gets a fast sampler (LCM, 4 steps, no
guidance): the LCM-LoRA is switched on for it and off for the other samplers. ``PIXART_EXAMPLES`` names a text file
of example prompts (one a line) to show instead of the model's own. On ZeroGPU the generation runs under
``@spaces.GPU``; elsewhere that decorator is not used.

Besides text-to-image, three tabs edit an uploaded image with the same weights (``from_pipe``): image-to-image
(prompt and strength), inpainting (a brush paints the part to repaint) and, when there is a ControlNet, ControlNet
(the image's edge map, Canny, guides a new image). The ControlNet is ``PIXART_CONTROLNET`` (a ControlNet folder or
Hub id, or the original code's ``.pth``), else the model folder's or repo's ``controlnet/`` subfolder (a saved
``PixArtAlphaControlNetPipeline`` has one); without one the tab is not shown. ``PIXART_HED_WEIGHTS`` (the annotators'
``ControlNetHED.pth``) adds the HED edge detector, which cannot be downloaded offline.

What a visitor gets: the model's name and what its prompts may say, examples it draws well, limits that follow the
device (checked against an estimate of each request's time, made before it runs), a cancel button, a queue that runs
several requests at once per device, and every error stated in the page with the controls left as they were.
"""

from __future__ import annotations

import os
import queue
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
import torch
from huggingface_hub import ModelCard, hf_hub_download
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

from diffusers_pixart.data.edges import HEDEdgeDetector, canny_edges, check_canny_thresholds
from diffusers_pixart.default_model import LCM_LORA_DIR, TOY_MODEL_PATH, load_pipeline, sampler_lora
from diffusers_pixart.hub import (
    LORA_PREFIX,
    LORA_WEIGHT_NAME,
    TRAINING_RECORD_NAME,
    find_lora_weights,
    load_training_record,
)
from diffusers_pixart.models.controlnet import PixArtControlNetModel
from diffusers_pixart.pipelines.auto import FAMILY_NAMES, family_of
from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline
from diffusers_pixart.pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline
from diffusers_pixart.pipelines.pixart_img2img import (
    PixArtAlphaImg2ImgPipeline,
    PixArtAlphaInpaintPipeline,
    PixArtSigmaImg2ImgPipeline,
    PixArtSigmaInpaintPipeline,
)
from diffusers_pixart.schedulers import SCHEDULERS
from diffusers_pixart.toy.world import TOY_CANNY_THRESHOLDS

try:  # ZeroGPU Spaces lend a GPU to the decorated function for each call
    import spaces

    gpu = spaces.GPU
except ImportError:

    def gpu(fn):
        return fn


MAX_PROMPT_CHARS = 500
MAX_STEPS = 50
MAX_IMAGES = 4
MAX_SEED = 2**31 - 1
QUEUE_MAX_SIZE = 20
#: Steps of the timed request at start-up that sets the first time estimates.
CALIBRATION_STEPS = 4
#: The largest side: this many times the model's native size, and never more than MAX_SIDE pixels.
SIZE_FACTOR = 2
MAX_SIDE = 2048

#: Per device type: the most seconds of estimated compute a request may take, and how many requests run at once.
DEVICE_BUDGETS = {"cpu": (20.0, 2), "cuda": (120.0, 2)}

#: The few-step sampler's label: LCM, with the model's LCM-LoRA (``lcm_lora/``) switched on, or an LCM model's own.
FAST_SAMPLER = f"LCM ({SCHEDULERS['lcm'][2]} steps, fast)"
#: Sampler label -> name in :data:`diffusers_pixart.schedulers.SCHEDULERS`, which holds their steps and guidance.
#: The fast sampler is offered only for a model that can use it (:func:`fast_sampler_available`).
SAMPLERS = {"DPM-Solver": "dpm", "SA-Solver": "sa", FAST_SAMPLER: "lcm"}
#: The adapter name of the LCM-LoRA in the transformer: active while the fast sampler runs, off for the others.
LCM_ADAPTER = "lcm"

NO_LORA = "None"

#: The ControlNet of the ControlNet tab: a ControlNet folder or Hub id (``PixArtControlNetModel.save_pretrained``), or
#: the original code's ``.pth``; without it, the ``controlnet/`` subfolder of the model's folder or repo.
CONTROLNET_ENV = "PIXART_CONTROLNET"
CONTROLNET_SUBFOLDER = "controlnet"
#: The annotators' HED weights (``ControlNetHED.pth`` of ``lllyasviel/Annotators``): offers HED edges when set.
HED_ENV = "PIXART_HED_WEIGHTS"
#: Edge detectors of the ControlNet tab.
CANNY, HED, NO_DETECTOR = "Canny", "HED", "None: the image is an edge map"
#: Canny thresholds (low, high) of the original ControlNet; the toy world's (``TOY_CANNY_THRESHOLDS``) are lower: its
#: colours are close to the background's grey.
CANNY_THRESHOLDS = (100, 200)
HED_OFFLINE_NOTE = (
    "HED, the edge detector the released PixArt ControlNet was trained on, is not available offline: its weights "
    "(ControlNetHED.pth of lllyasviel/Annotators) are a separate download, which this demo does not make. Canny "
    f"needs no weights. To offer HED, set {HED_ENV} to that file."
)
#: The editing tabs' pipelines, per model family: the text-to-image pipeline's weights through ``from_pipe``.
EDIT_PIPELINES = {
    "alpha": {"img2img": PixArtAlphaImg2ImgPipeline, "inpaint": PixArtAlphaInpaintPipeline},
    "sigma": {"img2img": PixArtSigmaImg2ImgPipeline, "inpaint": PixArtSigmaInpaintPipeline},
}
#: The strength each editing tab starts with.
DEFAULT_STRENGTH = {"img2img": 0.6, "inpaint": 1.0}
MAX_MASK_BLUR = 16

#: Style presets of full-size models: name -> (prompt template, negative prompt), after the official PixArt-α demo.
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

#: Examples for a full-size model whose card, record and environment name none.
DEFAULT_EXAMPLES = [
    "an astronaut riding a horse on the moon, detailed, cinematic",
    "a small cactus with a happy face in the Sahara desert",
    "a red vintage car parked on a cobblestone street at dusk",
]
EXAMPLES_ENV = "PIXART_EXAMPLES"

#: The gallery shows every image whole, all of them within 70% of the viewport's height and the page's width: small
#: images enlarged by the largest whole factor that fits, with crisp pixels, in the number of columns that shows them
#: largest (GALLERY_JS); larger ones scaled down to fit. Gradio's own grid would crop them to square thumbnails.
GALLERY_CSS = """
#gallery .grid-wrap { height: auto !important; max-height: none !important; overflow: visible !important; }
#gallery .thumbnail-item { width: auto !important; height: auto !important; aspect-ratio: auto !important; }
#gallery .thumbnail-item img { object-fit: contain !important; image-rendering: pixelated; }
"""
#: Editing tabs: their images shown large enough to see and paint on, small ones with crisp pixels.
EDIT_CSS = """
.edit-image img, .edit-image canvas { image-rendering: pixelated; }
"""
GALLERY_JS = """
() => {
  const GAP = 8;
  const fit = () => {
    const grid = document.querySelector('#gallery .grid-container');
    if (!grid) return;
    const images = [...grid.querySelectorAll('img')];
    const loading = images.filter((img) => !img.naturalWidth);
    if (!images.length || loading.length) {
      loading.forEach((img) => img.addEventListener('load', fit, { once: true }));
      return;
    }
    const w = Math.max(...images.map((img) => img.naturalWidth));
    const h = Math.max(...images.map((img) => img.naturalHeight));
    const width = grid.clientWidth - 2 * GAP, height = window.innerHeight * 0.7;
    let best = { columns: 1, scale: 0 };
    for (let columns = 1; columns <= images.length; columns++) {
      const rows = Math.ceil(images.length / columns);
      const scale = Math.min((width - GAP * (columns - 1)) / columns / w, (height - GAP * (rows - 1)) / rows / h);
      if (scale > best.scale) best = { columns, scale };
    }
    const factor = best.scale >= 1 ? Math.floor(best.scale) : best.scale;
    grid.style.gridTemplateColumns = `repeat(${best.columns}, max-content)`;
    grid.style.justifyContent = 'center';
    grid.style.gap = `${GAP}px`;
    for (const img of images) {
      img.style.width = `${Math.floor(img.naturalWidth * factor)}px`;
      img.style.height = `${Math.floor(img.naturalHeight * factor)}px`;
    }
  };
  new MutationObserver(fit).observe(document.body, { childList: true, subtree: true });
  window.addEventListener('resize', fit);
}
"""


class RequestError(gr.Error):
    """A request the demo refuses or could not serve: shown in the page until closed, the controls unchanged."""

    def __init__(self, message: str):
        super().__init__(message, duration=None)


class Limits(NamedTuple):
    """What one request may ask on this device and model."""

    device: str
    min_size: int
    max_size: int
    size_step: int
    max_seconds: float
    concurrency: int

    def describe(self) -> str:
        """One line for the page."""
        return (
            f"Limits on this {self.device.upper()}: sizes {self.min_size}-{self.max_size} px, up to {MAX_STEPS} steps "
            f"and {MAX_IMAGES} images, and about {self.max_seconds:g} s of estimated compute per request; "
            f"{self.concurrency} requests run at once, the others wait in the queue."
        )


class TimeEstimator:
    """Seconds a request takes: a rate per unit of work, measured at start and updated by every finished request.

    A unit is one transformer pass (two with guidance) or one decode of the native number of pixels; the cost grows
    with the pixels linearly (attention's quadratic share is small at these sizes).
    """

    def __init__(self, native_pixels: int):
        self.native_pixels = native_pixels
        self.seconds_per_unit = 0.0
        self._lock = threading.Lock()

    def units(self, width: int, height: int, steps: int, guidance: float, images: int) -> float:
        """The work of a request, in units."""
        passes = steps * (2 if guidance > 1 else 1) + 1
        return images * passes * width * height / self.native_pixels

    def estimate(self, width: int, height: int, steps: int, guidance: float, images: int) -> float:
        """The expected seconds of a request."""
        return self.seconds_per_unit * self.units(width, height, steps, guidance, images)

    def observe(self, units: float, seconds: float) -> None:
        """Fold a measured run into the rate (half weight to the newest, so that a change of load shows soon)."""
        rate = seconds / units
        with self._lock:
            self.seconds_per_unit = rate if not self.seconds_per_unit else (self.seconds_per_unit + rate) / 2


class Cancelled(Exception):
    """Raised inside the pipeline's step callback when the visitor cancelled the request."""


class Sessions:
    """The running request of each browser session (or API client), so that its cancel button can stop it."""

    def __init__(self) -> None:
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @contextmanager
    def run(self, session: str) -> Iterator[threading.Event]:
        """Register the session's request while it runs; the event is set when it is cancelled."""
        event = threading.Event()
        with self._lock:
            self._running[session] = event
        try:
            yield event
        finally:
            with self._lock:
                if self._running.get(session) is event:
                    del self._running[session]

    def cancel(self, session: str) -> bool:
        """Ask the session's running request to stop at its next step; False when it has none."""
        with self._lock:
            event = self._running.get(session)
        if event is not None:
            event.set()
        return event is not None


class AdapterGate:
    """Lets requests that want the same LoRA setting run together; one that wants another waits until they end."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._active, self._setting = 0, None  # the first request applies its setting

    @contextmanager
    def use(self, setting: Hashable, apply: Callable[[Any], None]) -> Iterator[None]:
        """Hold ``setting`` (applied with ``apply`` when it changes) for the duration of the block."""
        with self._condition:
            self._condition.wait_for(lambda: self._active == 0 or self._setting == setting)
            if self._setting != setting:
                apply(setting)
                self._setting = setting
            self._active += 1
        try:
            yield
        finally:
            with self._condition:
                self._active -= 1
                self._condition.notify_all()


def apply_style(style: str, prompt: str, negative_prompt: str | None) -> tuple[str, str]:
    """The prompt and negative prompt of ``style``; the user's negative prompt follows the style's."""
    template, style_negative = STYLES[style]
    negative = ", ".join(part for part in (style_negative, (negative_prompt or "").strip()) if part)
    return template.format(prompt=prompt.strip()), negative


def model_name(model: str | None, description: str) -> str:
    """What the page calls the model: a Hub id, a folder's name (never its path on the server), or the default's."""
    if model is None:
        return description
    return Path(model).name if Path(model).exists() else model


def escape_markdown(text: str) -> str:
    """``text`` with Markdown's formatting characters escaped, so that a name shows as written."""
    return re.sub(r"([\\`*_{}\[\]<>#|~])", r"\\\1", text)


def model_files(model: str | None) -> Callable[[str], Path | None]:
    """A function giving the local path of a file of the model's repo or folder, or None where it has none."""
    folder = TOY_MODEL_PATH if model is None else Path(model)

    def find(name: str) -> Path | None:
        if model is None or folder.is_dir():  # the default model, or a local folder
            return folder / name if (folder / name).is_file() else None
        try:
            return Path(hf_hub_download(str(model), name))
        except (OSError, HfHubHTTPError):  # not in the repo, or no network
            return None

    return find


def is_toy_model(model: str | None) -> bool:
    """Whether the model is the package's embedded toy-world model."""
    folder = TOY_MODEL_PATH if model is None else Path(model)
    return folder.is_dir() and folder.resolve() == TOY_MODEL_PATH.resolve() and (folder / "model_index.json").is_file()


def load_examples(model: str | None) -> list[str]:
    """Example prompts: ``PIXART_EXAMPLES``'s file, else the model's training record, card widget, or defaults."""
    path = os.environ.get(EXAMPLES_ENV)
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{EXAMPLES_ENV}={path} is not a file of example prompts (one a line).")
        examples = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not examples:
            raise ValueError(f"{EXAMPLES_ENV}={path} holds no prompt.")
        return examples
    find = model_files(model)
    record = find(TRAINING_RECORD_NAME)
    examples = load_training_record(record).get("example_prompts") if record is not None else None
    if examples:
        return examples
    card = find("README.md")
    widget = (ModelCard.load(card).data.widget or []) if card is not None else []
    return [entry["text"] for entry in widget if isinstance(entry, dict) and entry.get("text")] or DEFAULT_EXAMPLES


def prompt_guide(model: str | None) -> str:
    """One line telling what the model's prompts may say."""
    if is_toy_model(model):
        from diffusers_pixart.toy.world import COLORS, SHAPES

        return (
            f"This toy model knows only flat shapes ({', '.join(SHAPES)}) in eight colours ({', '.join(COLORS)}), "
            "small or large, at nine places (top left ... bottom right), left of / right of / above / below each "
            "other, one to three at a time. Write prompts like the examples; it draws 64 px images."
        )
    record = model_files(model)(TRAINING_RECORD_NAME)
    language = load_training_record(record).get("prompt_language") if record is not None else None
    if language:
        return f"Prompts: {language}"
    return "Prompts: English descriptions of the image, as T5 reads them; other languages work poorly."


def vocabulary_check() -> Callable[[str], str | None]:
    """The toy model's check of a prompt's words: a warning, or None when the model knows them all.

    ``diffusers_pixart.toy.language.vocabulary_warning`` when the package has it; else the toy grammar's parser,
    whose refusal is the warning.
    """
    try:
        from diffusers_pixart.toy.language import vocabulary_warning

        return vocabulary_warning
    except ImportError:
        from diffusers_pixart.toy.world import parse_prompt

        def grammar_warning(text: str) -> str | None:
            try:
                parse_prompt(text)
            except ValueError as err:
                return f"this model may not understand the prompt: {err}"
            return None

        return grammar_warning


def lcm_lora_source(model: str | None) -> str | None:
    """The LCM-LoRA the model ships in its ``lcm_lora/`` folder (as ``pixart generate --scheduler lcm`` finds it,
    :func:`~diffusers_pixart.default_model.sampler_lora`; for a Hub id, the repo's ``lcm_lora/``), or None."""
    local = sampler_lora(model, "lcm", None)
    if local is not None or model is None or Path(model).exists():
        return local
    found = model_files(model)(f"{LCM_LORA_DIR}/{LORA_WEIGHT_NAME}")
    return None if found is None else str(found.parent)


def load_model(model: str | None) -> tuple[PixArtAlphaPipeline, str, list[str], bool]:
    """The pipeline (on the GPU when there is one), its description, the LoRA adapters loaded into it (the visitor's
    choices), and whether its LCM-LoRA is loaded too (adapter :data:`LCM_ADAPTER`, for the fast sampler)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # T5 breaks in float16
    pipe, description = load_pipeline(model, device=device, dtype=dtype)
    loras = find_lora_weights(model) if model is not None else []
    for weight_name in loras:
        pipe.transformer.load_lora_adapter(
            model, weight_name=weight_name, prefix=LORA_PREFIX, adapter_name=Path(weight_name).stem
        )
    lcm_lora = lcm_lora_source(model)
    if lcm_lora is not None:
        pipe.load_lora_weights(lcm_lora, adapter_name=LCM_ADAPTER)
    return pipe, description, [Path(name).stem for name in loras], lcm_lora is not None


def fast_sampler_available(pipe: PixArtAlphaPipeline, lcm_lora: bool) -> bool:
    """Whether the fast sampler can serve: the model's LCM-LoRA is loaded, or the model is an LCM model (its own
    scheduler is LCM, as in PixArt-LCM's layout)."""
    return lcm_lora or isinstance(pipe.scheduler, SCHEDULERS["lcm"][0])


def active_adapters(lora: str, sampler: str, lcm_lora: bool) -> tuple[str, ...]:
    """The adapters a request runs with: the chosen LoRA, and the LCM-LoRA while the fast sampler runs."""
    chosen = () if lora == NO_LORA else (lora,)
    return chosen + ((LCM_ADAPTER,) if lcm_lora and SAMPLERS[sampler] == "lcm" else ())


def device_limits(pipe: PixArtAlphaPipeline, max_seconds: float | None = None) -> Limits:
    """The limits for the pipeline's device and native size (``max_seconds`` overrides the device's budget)."""
    device = pipe.device.type if pipe.device.type in DEVICE_BUDGETS else "cpu"
    budget, concurrency = DEVICE_BUDGETS[device]
    native = pipe.transformer.config.sample_size * pipe.vae_scale_factor
    step = pipe.vae_scale_factor * pipe.transformer.config.patch_size
    return Limits(
        device=device,
        min_size=max(step, native // 2 // step * step),
        max_size=min(SIZE_FACTOR * native, MAX_SIDE),
        size_step=step,
        max_seconds=budget if max_seconds is None else max_seconds,
        concurrency=concurrency,
    )


def fit_image(image: Image.Image, limits: Limits, resample: int = Image.Resampling.LANCZOS) -> Image.Image:
    """The image at a size the model serves: the aspect ratio kept as far as the limits allow, the longer side at
    most ``limits.max_size``, the shorter at least ``limits.min_size``, both multiples of ``limits.size_step``
    (unchanged when it already is)."""
    width, height = image.size
    scale = min(1.0, limits.max_size / max(width, height))
    scale = max(scale, limits.min_size / min(width, height))

    def side(length: int) -> int:
        stepped = round(length * scale / limits.size_step) * limits.size_step
        return int(min(max(stepped, limits.min_size), limits.max_size))

    size = (side(width), side(height))
    return image if size == image.size else image.resize(size, resample)


def editor_image_and_mask(value: dict[str, Any] | None) -> tuple[Image.Image, Image.Image]:
    """The image (RGB) and the mask ("L", white = repaint) of the inpainting tab's image editor.

    The mask is every layer's paint: where a layer is transparent somewhere (the page's brush), its opaque pixels;
    a layer opaque everywhere (a mask image an API client uploads) is read by its brightness, white = repaint.

    Raises:
        RequestError: no image, or nothing painted.
    """
    background = (value or {}).get("background")
    if background is None:
        raise RequestError("No image: upload the image to edit, then paint over the part to repaint.")
    painted = np.zeros((background.height, background.width), dtype=bool)
    for layer in (value or {}).get("layers") or []:
        if layer is None:
            continue
        if layer.size != background.size:
            layer = layer.resize(background.size, Image.Resampling.NEAREST)
        rgba = np.asarray(layer.convert("RGBA"))
        alpha = rgba[..., 3]
        painted |= alpha > 0 if (alpha < 255).any() else rgba[..., :3].mean(axis=-1) >= 128
    if not painted.any():
        raise RequestError(
            "No mask: paint over the part of the image to repaint with the brush (API: a layer, opaque or white "
            "where to repaint)."
        )
    return background.convert("RGB"), Image.fromarray(painted.astype(np.uint8) * 255, mode="L")


def find_controlnet(model: str | None, source: str | None = None) -> tuple[str, str | None] | None:
    """Where the ControlNet tab's ControlNet is, as (path or Hub id, subfolder), or None when there is none:
    ``source``, else ``PIXART_CONTROLNET``, else the model folder's or repo's ``controlnet/`` subfolder."""
    source = source or os.environ.get(CONTROLNET_ENV)
    if source:
        return source, None
    if model_files(model)(f"{CONTROLNET_SUBFOLDER}/config.json") is not None:
        return str(TOY_MODEL_PATH if model is None else model), CONTROLNET_SUBFOLDER
    return None


def load_controlnet(source: str, subfolder: str | None, pipe: PixArtAlphaPipeline) -> PixArtControlNetModel:
    """The ControlNet at ``source`` (a file: the original code's ``.pth``; else a folder or Hub id), checked against
    the pipeline's transformer, on its device and dtype.

    Raises:
        ValueError: it cannot be read, it is for another base, or the model is PixArt-Σ (whose ControlNet pipeline
            this package does not have).
    """
    if family_of(pipe) != "alpha":
        raise ValueError(f"A ControlNet ({source}) is served with PixArt-α models only; this model is PixArt-Σ.")
    try:
        if Path(source).is_file():
            controlnet = PixArtControlNetModel.from_original(source, transformer=pipe.transformer)
        else:
            controlnet = PixArtControlNetModel.from_pretrained(source, subfolder=subfolder)
    except (OSError, HfHubHTTPError) as err:
        raise ValueError(
            f"No ControlNet at {source}{f' ({subfolder})' if subfolder else ''}: {CONTROLNET_ENV} names a ControlNet "
            f"folder or Hub id, or an original .pth file ({type(err).__name__}: {err})."
        ) from err
    controlnet.check_transformer(pipe.transformer)
    return controlnet.to(pipe.device, pipe.transformer.dtype)


def mode_pipelines(
    pipe: PixArtAlphaPipeline, controlnet: PixArtControlNetModel | None
) -> dict[str, PixArtAlphaPipeline]:
    """One request slot's pipelines on the weights of ``pipe`` (``from_pipe``, in its dtype): ``text`` (``pipe``),
    ``img2img``, ``inpaint`` and, with a ControlNet, ``controlnet``."""
    dtype = pipe.transformer.dtype  # from_pipe casts to float32 otherwise, and the weights are shared
    pipelines = {"text": pipe}
    for mode, cls in EDIT_PIPELINES[family_of(pipe)].items():
        pipelines[mode] = cls.from_pipe(pipe, dtype=dtype)
    if controlnet is not None:
        pipelines["controlnet"] = PixArtAlphaControlNetPipeline.from_pipe(pipe, controlnet=controlnet, dtype=dtype)
    for pipeline in pipelines.values():
        pipeline.set_progress_bar_config(disable=False)
    return pipelines


def toy_edit_examples(examples: list[str], size: int, folder: Path) -> dict[str, list[list[Any]]]:
    """Examples of the editing tabs for the toy model, from its example prompts' scenes rendered into ``folder``:
    img2img recolours every object red, inpainting replaces the first object (its grid cell painted), ControlNet
    draws the scene again from its edges."""
    from diffusers_pixart.toy import dense_caption, parse_prompt, render
    from diffusers_pixart.toy.editing import cell_mask, recolour, sample_replacement
    from diffusers_pixart.toy.world import Scene

    edits: dict[str, list[list[Any]]] = {"img2img": [], "inpaint": [], "controlnet": []}
    for index, prompt in enumerate(examples):
        try:
            meaning = parse_prompt(prompt)
            image = render(meaning, size)
        except ValueError:  # not a fully placed toy scene
            continue
        path = folder / f"scene-{index}.png"
        image.save(path)
        if any(obj.color != "red" for obj in meaning.objects):  # else recolouring changes nothing
            edits["img2img"].append([dense_caption(recolour(meaning)), str(path), DEFAULT_STRENGTH["img2img"]])
        edit = sample_replacement(np.random.default_rng(index), Scene(meaning))
        mask_path = folder / f"mask-{index}.png"
        mask = cell_mask(edit.old.region, size, size)
        Image.merge("RGBA", (mask, mask, mask, mask)).save(mask_path)  # white paint where the mask is
        value = {"background": str(path), "layers": [str(mask_path)], "composite": None}
        edits["inpaint"].append([edit.caption, value, DEFAULT_STRENGTH["inpaint"]])
        edits["controlnet"].append([prompt, str(path)])
    return edits


def calibrate(pipe: PixArtAlphaPipeline, estimator: TimeEstimator) -> None:
    """Time a request at the native size to start the estimator's rate, after a one-step warm-up of the same shapes
    (the first call of a shape pays for one-off set-up that later requests do not)."""
    native = pipe.transformer.config.sample_size * pipe.vae_scale_factor
    _, _, _, guidance = SCHEDULERS["dpm"]
    pipe("calibration", num_inference_steps=1, guidance_scale=guidance, height=native, width=native)
    start = time.perf_counter()
    pipe("calibration", num_inference_steps=CALIBRATION_STEPS, guidance_scale=guidance, height=native, width=native)
    units = estimator.units(native, native, CALIBRATION_STEPS, guidance, 1)
    estimator.observe(units, time.perf_counter() - start)


def create_demo(model: str | None = None, max_seconds: float | None = None, controlnet: str | None = None) -> gr.Blocks:
    """Build the demo around ``model`` (a Hub id or pipeline folder; the default model when None), queue included.

    ``max_seconds`` replaces the device's budget of estimated seconds per request. ``controlnet`` (else
    ``PIXART_CONTROLNET``, else the model's ``controlnet/`` subfolder) adds the ControlNet tab.
    """
    pipe, description, loras, lcm_lora = load_model(model)
    fast = fast_sampler_available(pipe, lcm_lora)
    samplers = [label for label, name in SAMPLERS.items() if fast or name != "lcm"]
    # An LCM model samples with LCM by default; any other with DPM-Solver (the fast sampler a choice).
    default_sampler = FAST_SAMPLER if fast and not lcm_lora else "DPM-Solver"
    _, _, default_steps, default_guidance = SCHEDULERS[SAMPLERS[default_sampler]]
    native = pipe.transformer.config.sample_size * pipe.vae_scale_factor
    limits = device_limits(pipe, max_seconds)
    toy = is_toy_model(model)
    check_words = vocabulary_check() if toy else None
    examples = load_examples(model)
    found = find_controlnet(model, controlnet)
    control_model = load_controlnet(*found, pipe) if found is not None else None
    hed_weights = os.environ.get(HED_ENV)
    hed = HEDEdgeDetector.from_file(hed_weights, device=pipe.device) if hed_weights else None
    detectors = [CANNY, *([HED] if hed is not None else []), NO_DETECTOR]
    canny_low, canny_high = TOY_CANNY_THRESHOLDS if toy else CANNY_THRESHOLDS
    estimator = TimeEstimator(native * native)
    pipe.set_progress_bar_config(disable=True)
    calibrate(pipe, estimator)
    sessions, gate = Sessions(), AdapterGate()
    # One set of pipelines per concurrent request: the weights are shared (the editing pipelines through
    # ``from_pipe``), each has its own scheduler and caption cache.
    workers: queue.Queue[dict[str, PixArtAlphaPipeline]] = queue.Queue()
    for _ in range(limits.concurrency):
        workers.put(mode_pipelines(type(pipe)(**pipe.components), control_model))  # α or Σ, as loaded

    def switch_adapters(names: tuple[str, ...]) -> None:
        """Run the shared transformer with the adapters ``names`` (none: every adapter off)."""
        if not (loras or lcm_lora):
            return
        if not names:
            pipe.transformer.disable_adapters()
        else:
            pipe.transformer.enable_adapters()
            pipe.transformer.set_adapters(list(names))

    def plan(width: int, height: int, steps: int, guidance_scale: float, num_images: int, binning: bool) -> str:
        """The page's note on a request: its estimated time, whether it is refused, and whether it is upscaled."""
        seconds = estimator.estimate(width, height, steps, guidance_scale, num_images)
        note = f"Estimated time: about {seconds:.1f} s on the {limits.device.upper()}."
        if seconds > limits.max_seconds:
            note += f" Over the limit of {limits.max_seconds:g} s per request: use fewer steps, images or pixels."
        if binning and max(width, height) > native:
            note += f" With resolution binning it is drawn at about {native} px (the model's size) and upscaled."
        return note

    def check_prompt(prompt: str | None) -> None:
        """Raise ``RequestError`` for an empty or too long prompt."""
        if not (prompt or "").strip():
            raise RequestError("The prompt is empty: describe the image you want.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise RequestError(f"The prompt is {len(prompt)} characters long; the limit is {MAX_PROMPT_CHARS}.")

    def check_time(units: float, advice: str) -> None:
        """Raise ``RequestError`` when a request of ``units`` of work is estimated over the device's budget."""
        seconds = estimator.seconds_per_unit * units
        if seconds > limits.max_seconds:
            raise RequestError(
                f"This request would take about {seconds:.1f} s on the {limits.device.upper()}; the limit is "
                f"{limits.max_seconds:g} s per request. {advice}"
            )

    def check_request(
        prompt: str | None, width: int, height: int, steps: int, guidance: float, num_images: int
    ) -> None:
        """Raise ``RequestError`` naming the limit a request breaks (Gradio checks the sliders' ranges itself)."""
        check_prompt(prompt)
        for name, size in (("Width", width), ("Height", height)):
            if size % limits.size_step:
                raise RequestError(f"{name} must be a multiple of {limits.size_step} pixels, got {size}.")
        units = estimator.units(width, height, steps, guidance, num_images)
        check_time(units, "Use fewer steps, images or pixels.")

    def check_strength(strength: float, steps: int) -> int:
        """The number of steps an edit runs; ``RequestError`` for a strength outside (0, 1] or one that runs none."""
        if not 0 < strength <= 1:
            raise RequestError(
                f"Strength must be above 0 and at most 1, got {strength:g}: 0 would give back the image unchanged, "
                "1 redraws it from noise."
            )
        run = int(steps * strength)
        if run < 1:
            raise RequestError(
                f"Strength {strength:g} of {steps} steps runs no step (int({steps} x {strength:g}) = 0): raise the "
                "strength or the steps."
            )
        return run

    def sampling(sampler: str, steps: int | None, guidance_scale: float | None) -> tuple[int, float]:
        """The steps and guidance of a request: the given ones, else the sampler's defaults; ``RequestError`` for a
        sampler this model is not served with (the fast one without LCM weights)."""
        if sampler not in samplers:
            raise RequestError(
                f"The {sampler!r} sampler is not offered for this model"
                + (
                    f": it needs an LCM-LoRA in the model's {LCM_LORA_DIR}/ folder, or an LCM model, and this model "
                    "has neither."
                    if SAMPLERS.get(sampler) == "lcm"
                    else f"; choose one of {samplers}."
                )
            )
        _, _, sampler_steps, sampler_guidance = SCHEDULERS[SAMPLERS[sampler]]
        steps = int(sampler_steps if steps is None else steps)
        return steps, float(sampler_guidance if guidance_scale is None else guidance_scale)

    def edit_units(image: Image.Image, steps: float, guidance: float) -> float:
        """The work of an edit of one image: its steps, and the encoding of the image (about one decode)."""
        return estimator.units(image.width, image.height, steps, guidance, 1) + image.width * image.height / native**2

    def run(
        mode: str,
        arguments: dict[str, Any],
        *,
        sampler: str,
        steps: int,
        units: float,
        seed: int,
        lora: str,
        request: gr.Request | None,
    ) -> list[Image.Image]:
        """Run a request on a free set of pipelines (``mode``'s), cancellable, its time folded into the estimate."""
        session = request.session_hash if request is not None else "local"

        def stop_when_cancelled(pipeline, step: int, timestep, tensors: dict[str, Any]) -> dict[str, Any]:
            if cancelled.is_set():
                raise Cancelled(f"Cancelled after step {step + 1} of {steps}.")
            return tensors

        pipelines = workers.get()
        try:
            adapters = active_adapters(lora, sampler, lcm_lora)
            with sessions.run(session) as cancelled, gate.use(adapters, switch_adapters):
                pipeline = pipelines[mode]
                pipeline.set_scheduler(SAMPLERS[sampler])
                start = time.perf_counter()
                images = pipeline(
                    **arguments,
                    generator=torch.Generator(pipe.device).manual_seed(seed),
                    callback_on_step_end=stop_when_cancelled,
                ).images
                estimator.observe(units, time.perf_counter() - start)
        except Cancelled as err:
            raise RequestError(str(err)) from err
        except gr.Error:
            raise
        except Exception as err:  # an unexpected failure: its message in the page, not a bare "Error"
            raise RequestError(f"Generation failed: {type(err).__name__}: {err}") from err
        finally:
            workers.put(pipelines)
        return images

    @gpu
    def generate(
        prompt: str,
        negative_prompt: str | None = None,
        style: str = DEFAULT_STYLE,
        sampler: str = default_sampler,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        randomize_seed: bool = True,
        width: int = native,
        height: int = native,
        use_resolution_binning: bool = True,
        num_images: int = 1,
        lora: str = NO_LORA,
        request: gr.Request | None = None,
        progress=gr.Progress(track_tqdm=True),
    ) -> tuple[list[Image.Image], int]:
        """Generate ``num_images`` images; returns them and the seed used."""
        steps, guidance_scale = sampling(sampler, steps, guidance_scale)
        width, height, num_images, seed = int(width), int(height), int(num_images), int(seed)
        check_request(prompt, width, height, steps, guidance_scale, num_images)
        seed = random.randint(0, MAX_SEED) if randomize_seed else seed
        styled_prompt, styled_negative = apply_style(style, prompt, negative_prompt)
        arguments = dict(
            prompt=styled_prompt,
            negative_prompt=styled_negative,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            num_images_per_prompt=num_images,
            use_resolution_binning=bool(use_resolution_binning),
        )
        units = estimator.units(width, height, steps, guidance_scale, num_images)
        images = run(
            "text", arguments, sampler=sampler, steps=steps, units=units, seed=seed, lora=lora, request=request
        )
        return images, seed

    def edit(
        mode: str,
        prompt: str,
        image: Image.Image,
        strength: float,
        negative_prompt: str | None,
        sampler: str,
        steps: int | None,
        guidance_scale: float | None,
        seed: int,
        randomize_seed: bool,
        lora: str,
        request: gr.Request | None,
        **arguments: Any,
    ) -> tuple[Image.Image, int]:
        """An img2img or inpainting request on ``image`` (already checked to be there; fitted to the limits here)."""
        steps, guidance_scale = sampling(sampler, steps, guidance_scale)
        check_prompt(prompt)
        run_steps = check_strength(float(strength), steps)
        check_time(
            edit_units(image, run_steps, guidance_scale), "Use fewer steps, a lower strength or a smaller image."
        )
        seed = random.randint(0, MAX_SEED) if randomize_seed else int(seed)
        arguments.update(
            prompt=prompt.strip(),
            image=image,
            strength=float(strength),
            negative_prompt=(negative_prompt or "").strip(),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
        )
        units = edit_units(image, run_steps, guidance_scale)
        images = run(
            mode, arguments, sampler=sampler, steps=run_steps, units=units, seed=seed, lora=lora, request=request
        )
        return images[0], seed

    @gpu
    def img2img(
        prompt: str,
        image: Image.Image | None,
        strength: float = DEFAULT_STRENGTH["img2img"],
        negative_prompt: str | None = None,
        sampler: str = default_sampler,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        randomize_seed: bool = True,
        lora: str = NO_LORA,
        request: gr.Request | None = None,
        progress=gr.Progress(track_tqdm=True),
    ) -> tuple[Image.Image, int]:
        """Image-to-image: ``image`` redrawn towards ``prompt``, ``strength`` of the way; returns it and the seed."""
        if image is None:
            raise RequestError("No image: upload the image to start from.")
        image = fit_image(image.convert("RGB"), limits)
        return edit(
            "img2img",
            prompt,
            image,
            strength,
            negative_prompt,
            sampler,
            steps,
            guidance_scale,
            seed,
            randomize_seed,
            lora,
            request,
        )

    @gpu
    def inpaint(
        prompt: str,
        image: dict[str, Any] | None,
        strength: float = DEFAULT_STRENGTH["inpaint"],
        mask_blur: float = 0,
        negative_prompt: str | None = None,
        sampler: str = default_sampler,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        randomize_seed: bool = True,
        lora: str = NO_LORA,
        request: gr.Request | None = None,
        progress=gr.Progress(track_tqdm=True),
    ) -> tuple[Image.Image, int]:
        """Inpainting: the painted part of the editor's image repainted as ``prompt`` says; returns it and the seed."""
        background, mask = editor_image_and_mask(image)
        background = fit_image(background, limits)
        mask = mask.resize(background.size, Image.Resampling.NEAREST)
        return edit(
            "inpaint",
            prompt,
            background,
            strength,
            negative_prompt,
            sampler,
            steps,
            guidance_scale,
            seed,
            randomize_seed,
            lora,
            request,
            mask_image=mask,
            mask_blur=float(mask_blur),
        )

    def edges(
        image: Image.Image | None,
        detector: str = CANNY,
        low_threshold: int = canny_low,
        high_threshold: int = canny_high,
    ) -> Image.Image | None:
        """The edge map ("L", 255 on edges) that controls the ControlNet tab's image (None without an image)."""
        if image is None:
            return None
        image = fit_image(image.convert("RGB"), limits)
        if detector == NO_DETECTOR:
            return image.convert("L")
        if detector == HED:
            return hed.edge_map(image)
        try:
            check_canny_thresholds(int(low_threshold), int(high_threshold))
        except ValueError as err:
            raise RequestError(f"{err} Move the low threshold below the high one.") from err
        return canny_edges(image, int(low_threshold), int(high_threshold))

    @gpu
    def control(
        prompt: str,
        image: Image.Image | None,
        detector: str = CANNY,
        low_threshold: int = canny_low,
        high_threshold: int = canny_high,
        conditioning_scale: float = 1.0,
        negative_prompt: str | None = None,
        sampler: str = default_sampler,
        steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        randomize_seed: bool = True,
        lora: str = NO_LORA,
        request: gr.Request | None = None,
        progress=gr.Progress(track_tqdm=True),
    ) -> tuple[Image.Image, Image.Image, int]:
        """ControlNet: an image drawn on the uploaded image's edge map; returns the edge map, the image and the seed."""
        if image is None:
            raise RequestError("No image: upload the image whose edges guide the new one (or an edge map).")
        steps, guidance_scale = sampling(sampler, steps, guidance_scale)
        check_prompt(prompt)
        edge_map = edges(image, detector, low_threshold, high_threshold)
        if not np.asarray(edge_map).any():
            gr.Warning("The edge map is empty: nothing guides the image. Lower the Canny thresholds.")
        # The ControlNet's block copies add their share of a transformer pass to every step.
        share = control_model.config.num_layers / len(pipe.transformer.transformer_blocks)
        units = edit_units(edge_map, steps * (1 + share), guidance_scale)
        check_time(units, "Use fewer steps or a smaller image.")
        seed = random.randint(0, MAX_SEED) if randomize_seed else int(seed)
        arguments = dict(
            prompt=prompt.strip(),
            image=edge_map,
            controlnet_conditioning_scale=float(conditioning_scale),
            negative_prompt=(negative_prompt or "").strip(),
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
        )
        images = run(
            "controlnet", arguments, sampler=sampler, steps=steps, units=units, seed=seed, lora=lora, request=request
        )
        return edge_map, images[0], seed

    def cancel(request: gr.Request) -> str:
        """Stop this session's running request at its next step."""
        stopped = sessions.cancel(request.session_hash)
        return "Cancelled." if stopped else "Nothing to cancel."

    def sampler_defaults(sampler: str) -> tuple[int, float]:
        """The steps and guidance scale the sampler is used with by default."""
        _, _, steps, guidance = SCHEDULERS[SAMPLERS[sampler]]
        return steps, guidance

    def prompt_note(prompt: str | None) -> str:
        """A warning about words the toy model does not know (empty when it knows them all, and for other models)."""
        if check_words is None or not (prompt or "").strip():
            return ""
        warning = check_words(prompt)
        return f"⚠️ {warning[0].upper()}{warning[1:]}" if warning else ""

    private = dict(api_visibility="private")

    def sampling_options(prefix: str) -> list[gr.components.Component]:
        """An editing tab's negative prompt, sampler, steps, guidance, seed, randomize and LoRA controls."""
        negative = gr.Textbox(value="", label="Negative prompt (optional)", max_lines=2, max_length=MAX_PROMPT_CHARS)
        sampler = gr.Radio(samplers, value=default_sampler, label="Sampler")
        with gr.Row():
            steps = gr.Slider(1, MAX_STEPS, value=default_steps, step=1, label="Steps", elem_id=f"{prefix}-steps")
            guidance = gr.Slider(0.0, 10.0, value=default_guidance, step=0.1, label="Guidance scale")
        with gr.Row():
            seed = gr.Slider(0, MAX_SEED, value=0, step=1, label="Seed", elem_id=f"{prefix}-seed")
            randomize = gr.Checkbox(value=True, label="Randomize seed")
        lora_choice = gr.Dropdown([NO_LORA, *loras], value=NO_LORA, label="LoRA", visible=bool(loras))
        sampler.change(
            sampler_defaults,
            inputs=sampler,
            outputs=[steps, guidance],
            api_name=f"{prefix}_sampler_defaults",
            **private,
        )
        return [negative, sampler, steps, guidance, seed, randomize, lora_choice]

    def prompt_row(prefix: str, label: str) -> tuple[gr.Textbox, gr.Button, gr.Button, gr.Markdown]:
        """An editing tab's prompt, Run and Cancel buttons, and the note under them."""
        with gr.Row():
            text = gr.Textbox(
                label=label,
                placeholder="Describe the image you want",
                max_lines=3,
                max_length=MAX_PROMPT_CHARS,
                scale=4,
                elem_id=f"{prefix}-prompt",
            )
            with gr.Column(scale=1, min_width=120):
                button = gr.Button("Run", variant="primary", elem_id=f"{prefix}-run")
                stop_button = gr.Button("Cancel", variant="stop", elem_id=f"{prefix}-cancel")
        tab_note = gr.Markdown(elem_id=f"{prefix}-note")
        text.change(
            prompt_note,
            text,
            tab_note,
            api_name=f"{prefix}_check_prompt",
            queue=False,
            show_progress="hidden",
            **private,
        )
        return text, button, stop_button, tab_note

    def queued(triggers, fn, inputs, outputs, api_name: str, show_on):
        """A request event in the shared queue: as many at once as the device runs, across every tab."""
        return gr.on(
            triggers,
            fn,
            inputs=inputs,
            outputs=outputs,
            api_name=api_name,
            concurrency_limit=limits.concurrency,
            concurrency_id="generate",
            show_progress_on=show_on,
        )

    strength_info = "The share of the steps that run: low keeps the image, 1 redraws it from noise."

    def picture(label: str, elem_id: str, upload: bool = False, height: int = 320) -> gr.Image:
        """An image of an editing tab, an upload (RGB) or a result, shown large with crisp pixels."""
        kind = dict(image_mode="RGB", sources=["upload", "clipboard"]) if upload else dict(interactive=False)
        return gr.Image(
            label=label, type="pil", format="png", height=height, elem_id=elem_id, elem_classes="edit-image", **kind
        )

    def strength_slider(mode: str) -> gr.Slider:
        """An editing tab's strength, at the tab's default."""
        value = DEFAULT_STRENGTH[mode]
        return gr.Slider(
            0.0, 1.0, value=value, step=0.05, label="Strength", info=strength_info, elem_id=f"{mode}-strength"
        )

    edit_examples: dict[str, list[list[Any]]] = {}
    if toy:
        edit_examples = toy_edit_examples(examples, native, Path(tempfile.mkdtemp(prefix="pixart-space-")))
    name = escape_markdown(model_name(model, description))
    family = FAMILY_NAMES[family_of(pipe)]
    with gr.Blocks(title=family) as demo:
        gr.Markdown(f"# {family} text-to-image\nModel: **{name}**. {prompt_guide(model)}")
        with gr.Tabs():
            with gr.Tab("Text to image", id="text", elem_id="tab-text"):
                with gr.Row():
                    prompt = gr.Textbox(
                        label="Prompt",
                        placeholder="Enter your prompt",
                        max_lines=3,
                        max_length=MAX_PROMPT_CHARS,
                        scale=4,
                    )
                    with gr.Column(scale=1, min_width=120):
                        run_button = gr.Button("Run", variant="primary", elem_id="text-run")
                        stop = gr.Button("Cancel", variant="stop", elem_id="text-cancel")
                note = gr.Markdown(elem_id="controls-note")
                estimate = gr.Markdown(
                    plan(native, native, default_steps, default_guidance, 1, True), elem_id="estimate"
                )
                gallery = gr.Gallery(label="Result", format="png", columns=2, object_fit="contain", elem_id="gallery")
                gr.Examples(examples, inputs=prompt, label="Examples this model draws" if toy else "Examples")
                with gr.Accordion("Advanced options", open=False):
                    negative_prompt = gr.Textbox(
                        value="", label="Negative prompt (optional)", max_lines=2, max_length=MAX_PROMPT_CHARS
                    )
                    # The toy world's captions never name a style, so presets would change nothing there: none, hidden.
                    styles = [DEFAULT_STYLE] if toy else list(STYLES)
                    style = gr.Radio(styles, value=DEFAULT_STYLE, label="Image style", visible=not toy)
                    sampler = gr.Radio(samplers, value=default_sampler, label="Sampler")
                    with gr.Row():
                        steps = gr.Slider(1, MAX_STEPS, value=default_steps, step=1, label="Steps", elem_id="steps")
                        guidance_scale = gr.Slider(0.0, 10.0, value=default_guidance, step=0.1, label="Guidance scale")
                    with gr.Row():
                        seed = gr.Slider(0, MAX_SEED, value=0, step=1, label="Seed", elem_id="seed")
                        randomize_seed = gr.Checkbox(value=True, label="Randomize seed")
                    with gr.Row():
                        size = dict(
                            minimum=limits.min_size, maximum=limits.max_size, value=native, step=limits.size_step
                        )
                        width = gr.Slider(**size, label="Width", elem_id="width")
                        height = gr.Slider(**size, label="Height", elem_id="height")
                    use_resolution_binning = gr.Checkbox(
                        value=True,
                        label=f"Resolution binning (draw at the nearest size of the model's {native} px table)",
                    )
                    num_images = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images per run", elem_id="num-images")
                    lora = gr.Dropdown([NO_LORA, *loras], value=NO_LORA, label="LoRA", visible=bool(loras))

            with gr.Tab("Image to image", id="img2img", elem_id="tab-img2img"):
                gr.Markdown(
                    "Upload an image and describe the whole image as you want it: the image is noised and redrawn "
                    f"towards the prompt. {strength_info}"
                )
                i2i_prompt, i2i_run, i2i_stop, i2i_note = prompt_row(
                    "img2img", "Prompt (the whole image as you want it)"
                )
                with gr.Row():
                    i2i_image = picture("Image", "img2img-image", upload=True)
                    i2i_result = picture("Result", "img2img-result")
                i2i_strength = strength_slider("img2img")
                if edit_examples.get("img2img"):
                    gr.Examples(
                        edit_examples["img2img"],
                        inputs=[i2i_prompt, i2i_image, i2i_strength],
                        label="Examples: the same scene, all objects red",
                    )
                with gr.Accordion("Advanced options", open=False):
                    i2i_options = sampling_options("img2img")

            with gr.Tab("Inpainting", id="inpaint", elem_id="tab-inpaint"):
                gr.Markdown(
                    "Upload an image, paint over the part to repaint with the brush, and describe the whole image "
                    "after the edit: only the painted part changes. Strength 1 repaints it from noise; lower keeps "
                    "more of what was there."
                )
                inp_prompt, inp_run, inp_stop, inp_note = prompt_row(
                    "inpaint", "Prompt (the whole image after the edit)"
                )
                with gr.Row():
                    inp_image = gr.ImageMask(
                        label="Image and mask (paint the part to repaint)",
                        type="pil",
                        image_mode="RGBA",
                        format="png",
                        sources=["upload", "clipboard"],
                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"),
                        layers=False,
                        transforms=[],
                        height=420,
                        elem_id="inpaint-image",
                        elem_classes="edit-image",
                    )
                    inp_result = picture("Result", "inpaint-result", height=420)
                inp_strength = strength_slider("inpaint")
                if edit_examples.get("inpaint"):
                    gr.Examples(
                        edit_examples["inpaint"],
                        inputs=[inp_prompt, inp_image, inp_strength],
                        label="Examples: one object replaced (its cell painted)",
                    )
                with gr.Accordion("Advanced options", open=False):
                    mask_blur = gr.Slider(
                        0,
                        MAX_MASK_BLUR,
                        value=0,
                        step=1,
                        label="Mask blur (pixels)",
                        info="Softens the mask's edge; 0 is a hard edge.",
                    )
                    inp_options = sampling_options("inpaint")

            if control_model is not None:
                with gr.Tab("ControlNet", id="controlnet", elem_id="tab-controlnet"):
                    gr.Markdown(
                        "Upload an image: its edge map guides a new image drawn as the prompt says (or upload an "
                        "edge map, white edges on black, with the detector 'None'). "
                        + (f"HED runs with {escape_markdown(Path(hed_weights).name)}." if hed else HED_OFFLINE_NOTE)
                    )
                    cn_prompt, cn_run, cn_stop, cn_note = prompt_row(
                        "controlnet", "Prompt (the image to draw on the edges)"
                    )
                    with gr.Row():
                        cn_image = picture("Image", "controlnet-image", upload=True)
                        cn_edges = picture("Edge map", "controlnet-edges")
                        cn_result = picture("Result", "controlnet-result")
                    with gr.Row():
                        detector = gr.Radio(
                            detectors, value=CANNY, label="Edge detector", elem_id="controlnet-detector"
                        )
                        low = gr.Slider(1, 255, value=canny_low, step=1, label="Canny low threshold")
                        high = gr.Slider(1, 255, value=canny_high, step=1, label="Canny high threshold")
                    scale = gr.Slider(
                        0.0,
                        2.0,
                        value=1.0,
                        step=0.05,
                        label="ControlNet weight",
                        info="0 ignores the edges; 1 is the weight the ControlNet was trained with.",
                    )
                    if edit_examples.get("controlnet"):
                        gr.Examples(
                            edit_examples["controlnet"],
                            inputs=[cn_prompt, cn_image],
                            label="Examples: a scene drawn again from its edges",
                        )
                    with gr.Accordion("Advanced options", open=False):
                        cn_options = sampling_options("controlnet")
        gr.Markdown(limits.describe())

        sampler.change(sampler_defaults, inputs=sampler, outputs=[steps, guidance_scale], api_name="sampler_defaults")
        prompt.change(prompt_note, prompt, note, api_name="check_prompt", queue=False, show_progress="hidden")
        plan_inputs = [width, height, steps, guidance_scale, num_images, use_resolution_binning]
        gr.on(
            [component.change for component in plan_inputs],
            plan,
            inputs=plan_inputs,
            outputs=estimate,
            api_name="estimate",
            queue=False,
            show_progress="hidden",
        )
        inputs = [prompt, negative_prompt, style, sampler, steps, guidance_scale, seed, randomize_seed]
        inputs += [width, height, use_resolution_binning, num_images, lora]
        event = queued([prompt.submit, run_button.click], generate, inputs, [gallery, seed], "generate", gallery)
        stop.click(cancel, outputs=note, api_name="cancel", cancels=[event], queue=False)

        i2i_inputs = [i2i_prompt, i2i_image, i2i_strength, *i2i_options]
        i2i_event = queued(
            [i2i_prompt.submit, i2i_run.click], img2img, i2i_inputs, [i2i_result, i2i_options[4]], "img2img", i2i_result
        )
        i2i_stop.click(cancel, outputs=i2i_note, api_name="img2img_cancel", cancels=[i2i_event], queue=False, **private)

        inp_inputs = [inp_prompt, inp_image, inp_strength, mask_blur, *inp_options]
        inp_event = queued(
            [inp_prompt.submit, inp_run.click], inpaint, inp_inputs, [inp_result, inp_options[4]], "inpaint", inp_result
        )
        inp_stop.click(cancel, outputs=inp_note, api_name="inpaint_cancel", cancels=[inp_event], queue=False, **private)

        if control_model is not None:
            edge_inputs = [cn_image, detector, low, high]
            gr.on(
                [cn_image.change, detector.change, low.release, high.release],
                edges,
                inputs=edge_inputs,
                outputs=cn_edges,
                api_name="edges",
                queue=False,
                show_progress="hidden",
            )
            cn_inputs = [cn_prompt, *edge_inputs, scale, *cn_options]
            cn_event = queued(
                [cn_prompt.submit, cn_run.click],
                control,
                cn_inputs,
                [cn_edges, cn_result, cn_options[4]],
                "controlnet",
                cn_result,
            )
            cn_stop.click(
                cancel, outputs=cn_note, api_name="controlnet_cancel", cancels=[cn_event], queue=False, **private
            )
    return demo.queue(max_size=QUEUE_MAX_SIZE)


def launch(demo: gr.Blocks, **kwargs: Any) -> tuple:
    """Start the demo with its gallery styling (``kwargs`` go to ``Blocks.launch``)."""
    return demo.launch(css=GALLERY_CSS + EDIT_CSS, js=GALLERY_JS, **kwargs)


if __name__ == "__main__":
    launch(create_demo(os.environ.get("PIXART_MODEL")))

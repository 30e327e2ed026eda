"""Pushing PixArt models, pipelines and LoRA weights to the Hugging Face Hub, with a model card.

A thin layer over ``huggingface_hub``: the object is saved with its own ``save_pretrained`` (or the LoRA weights in
diffusers' ``pytorch_lora_weights.safetensors`` convention) into a temporary folder, the model card rendered from
``model_card.md`` and the sample images are added, and the folder goes up as one commit with ``HfApi.create_commit``.
A Hub commit is atomic, so a push that fails leaves the repository as it was. Pulling needs nothing from here:
``PixArtAlphaPipeline.from_pretrained(repo_id)``, ``PixArtTransformer2DModel.from_pretrained(repo_id)`` and
``transformer.load_lora_adapter(repo_id, weight_name=LORA_WEIGHT_NAME, prefix="transformer")``.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import diffusers
from diffusers import DiffusionPipeline, ModelMixin
from diffusers.loaders.lora_base import LORA_WEIGHT_NAME_SAFE, LoraBaseMixin
from huggingface_hub import CommitInfo, CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError
from peft.utils import get_peft_model_state_dict
from PIL import Image

#: The Jinja template of every model card, at the root of the repository.
MODEL_CARD_TEMPLATE = Path(__file__).parent / "model_card.md"  # a link to the repository's model_card.md

#: The LoRA weights file of a repo, in diffusers' convention (keys prefixed ``transformer.``).
LORA_WEIGHT_NAME = LORA_WEIGHT_NAME_SAFE

#: The prefix of the transformer's LoRA keys in :data:`LORA_WEIGHT_NAME`.
LORA_PREFIX = "transformer"

#: The official checkpoint the how-to-use code of transformer and LoRA cards loads when no base model is given.
DEFAULT_BASE_MODEL = "PixArt-alpha/PixArt-XL-2-1024-MS"

CARD_KINDS = ("pipeline", "transformer", "lora", "controlnet")


class PushError(RuntimeError):
    """A push to the Hub failed; the Hub's commits are atomic, so the repository was left as it was."""


def render_model_card(
    repo_id: str,
    kind: str = "pipeline",
    *,
    model_name: str | None = None,
    description: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] = (),
    tags: Sequence[str] = (),
    samples: Sequence[tuple[str, str]] = (),
    prompt: str = "a red circle above a blue square",
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, float] | None = None,
    eval_dataset: str | None = None,
    template_path: str | os.PathLike = MODEL_CARD_TEMPLATE,
) -> ModelCard:
    """Render the model card of a pushed model from ``model_card.md``.

    Args:
        repo_id: the Hub repo the card describes (used in the how-to-use code).
        kind: ``"pipeline"``, ``"transformer"``, ``"lora"`` or ``"controlnet"``: what the repo holds, which sets the
            how-to-use code.
        model_name: the card's title; defaults to the repo name.
        description: a paragraph about this model; a generic one by default.
        base_model: the Hub id the model was trained from; transformer and LoRA cards need one to load the rest of
            the pipeline, and default to :data:`DEFAULT_BASE_MODEL`.
        datasets: Hub ids or names of the training data.
        tags: extra tags; ``pixart-alpha``, ``text-to-image`` and ``diffusers`` are always there (and ``lora``).
        samples: ``(prompt, path in repo)`` of sample images, shown in the card and in the Hub widget.
        prompt: the prompt of the how-to-use code when there are no samples.
        training: settings of the training run (steps, learning rate, batch size, ...), shown as a table.
        evaluation: metric name -> value, shown as a table and recorded as ``model-index`` results.
        eval_dataset: what ``evaluation`` was measured on; required with ``evaluation``.
        template_path: the Jinja template.

    Returns:
        The ``ModelCard``; ``card.save(path)`` writes it, ``card.data`` is its YAML metadata.
    """
    if kind not in CARD_KINDS:
        raise ValueError(f"Unknown model card kind {kind!r}: choose one of {CARD_KINDS}.")
    if evaluation and not eval_dataset:
        raise ValueError("`evaluation` results need `eval_dataset`: the data they were measured on.")
    if not Path(template_path).is_file():
        raise FileNotFoundError(f"The model card template {template_path} does not exist.")
    model_name = model_name or repo_id.split("/")[-1]
    if kind != "pipeline":
        base_model = base_model or DEFAULT_BASE_MODEL
    default_tags = ["pixart-alpha", "text-to-image", "diffusers"] + ([kind] if kind in ("lora", "controlnet") else [])
    eval_results = [
        EvalResult(
            task_type="text-to-image",
            dataset_type=eval_dataset,
            dataset_name=eval_dataset,
            metric_type=name,
            metric_value=value,
        )
        for name, value in (evaluation or {}).items()
    ]
    card_data = ModelCardData(
        model_name=model_name,
        license="openrail++",
        library_name="diffusers",
        pipeline_tag="text-to-image",
        base_model=base_model,
        tags=list(dict.fromkeys([*default_tags, *tags])),
        datasets=list(datasets) or None,
        eval_results=eval_results or None,
        widget=[{"text": text, "output": {"url": path}} for text, path in samples] or None,
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path),
        model_name=model_name,
        repo_id=repo_id,
        kind=kind,
        base_model=base_model,
        description=description or "A PixArt-α text-to-image model, trained with `diffusers_pixart`.",
        datasets=list(datasets),
        samples=list(samples),
        prompt=samples[0][0] if samples else prompt,
        training=dict(training or {}),
        evaluation=dict(evaluation or {}),
        eval_dataset=eval_dataset,
    )


def save_lora_weights(model: ModelMixin, save_directory: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write the LoRA adapter ``adapter_name`` of ``model`` to ``save_directory/pytorch_lora_weights.safetensors``.

    The keys are prefixed ``transformer.`` and the adapter's ``LoraConfig`` goes into the safetensors metadata, as
    diffusers' pipelines save LoRA weights, so ``model.load_lora_adapter(folder_or_repo, prefix="transformer")``
    rebuilds the same adapter. Returns the path of the file.
    """
    peft_config = getattr(model, "peft_config", None) or {}
    if adapter_name not in peft_config:
        raise ValueError(f"The model has no LoRA adapter named {adapter_name!r} (it has: {sorted(peft_config)}).")
    LoraBaseMixin.write_lora_layers(
        state_dict=LoraBaseMixin.pack_weights(get_peft_model_state_dict(model, adapter_name=adapter_name), LORA_PREFIX),
        save_directory=str(save_directory),
        is_main_process=True,
        weight_name=LORA_WEIGHT_NAME,
        save_function=None,
        safe_serialization=True,
        lora_adapter_metadata=LoraBaseMixin.pack_weights(peft_config[adapter_name].to_dict(), LORA_PREFIX),
    )
    return Path(save_directory) / LORA_WEIGHT_NAME


def find_lora_weights(
    repo_id_or_path: str | os.PathLike, token: str | None = None, revision: str | None = None
) -> list[str]:
    """The LoRA weight files at the top of a model folder or Hub repo: ``*.safetensors`` with ``lora`` in the name.

    Each loads with ``transformer.load_lora_adapter(repo_id_or_path, weight_name=name, prefix="transformer")``.
    """
    if Path(repo_id_or_path).is_dir():
        names = [path.name for path in Path(repo_id_or_path).iterdir() if path.is_file()]
    else:
        names = HfApi(token=token).list_repo_files(str(repo_id_or_path), revision=revision)
    return sorted(name for name in names if "/" not in name and name.endswith(".safetensors") and "lora" in name)


def make_hub_loadable(pipeline_folder: str | os.PathLike) -> None:
    """Record our models in ``model_index.json`` as the diffusers classes of the same name, in place.

    A locally saved pipeline records ``["diffusers_pixart", ...]``, which only loads where this package is installed.
    Our :class:`PixArtTransformer2DModel` has the config and weights of diffusers' class of the same name, and
    ``PixArtAlphaPipeline.from_pretrained`` loads ours whatever the index says (as for the official repos), so a pushed
    index names diffusers' class: the repo then loads with our pipeline, and with plain diffusers too.
    """
    path = Path(pipeline_folder) / "model_index.json"
    index = json.loads(path.read_text())
    for name, entry in index.items():
        if isinstance(entry, list) and entry[0] and entry[0].split(".")[0] == __package__:
            if not hasattr(diffusers, entry[1]):
                raise ValueError(f"Component {name!r} ({entry[1]}) has no diffusers class of the same name.")
            index[name] = ["diffusers", entry[1]]
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def push_to_hub(
    obj: DiffusionPipeline | ModelMixin,
    repo_id: str,
    *,
    lora_adapter: str | None = None,
    samples: Sequence[tuple[str, Image.Image]] = (),
    card_info: Mapping[str, Any] | None = None,
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Push a pipeline, a transformer, or (with ``lora_adapter``) a transformer's LoRA weights, with a model card.

    Args:
        obj: a ``PixArtAlphaPipeline`` or a ``PixArtTransformer2DModel`` (any diffusers pipeline or model saves).
        repo_id: ``"name"`` (in the token's namespace) or ``"namespace/name"``; the repo is created if needed.
        lora_adapter: push only this LoRA adapter of the transformer (``obj`` or ``obj.transformer``), as
            :data:`LORA_WEIGHT_NAME`.
        samples: ``(prompt, image)`` pairs, uploaded as ``images/sample_<i>.png`` and shown in the card.
        card_info: keyword arguments of :func:`render_model_card` (training settings, evaluation, base model, ...).
        private: create the repo private (ignored when it exists).
        token: the Hub token; defaults to the stored one.
        revision: the branch to commit to, created from ``main`` when missing; ``main`` by default.
        commit_message: defaults to "Upload <what>".
        create_pr: open a pull request instead of committing to the branch.

    Returns:
        The ``CommitInfo`` of the commit (``.oid``, ``.commit_url``, ``.repo_url.repo_id``).

    Raises:
        PushError: the Hub refused or failed the commit; nothing was committed.
    """
    if lora_adapter is not None:
        kind = "lora"
        model = obj.transformer if isinstance(obj, DiffusionPipeline) else obj
    elif isinstance(obj, DiffusionPipeline):
        kind = "pipeline"
    elif isinstance(obj, ModelMixin):
        kind = "controlnet" if type(obj).__name__ == "PixArtControlNetModel" else "transformer"
    else:
        raise TypeError(f"Cannot push a {type(obj).__name__}: expected a diffusers pipeline or model.")

    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision not in (None, "main") and not create_pr:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
    except HfHubHTTPError as err:
        raise PushError(f"Could not create the repo {repo_id!r} (branch {revision or 'main'}): {err}") from err

    with tempfile.TemporaryDirectory(prefix="pixart-push-") as staging:
        if kind == "lora":
            save_lora_weights(model, staging, adapter_name=lora_adapter)
        else:
            obj.save_pretrained(staging, safe_serialization=True)
            if kind == "pipeline":
                make_hub_loadable(staging)
        sample_paths = []
        for index, (prompt, image) in enumerate(samples):
            path = f"images/sample_{index}.png"
            os.makedirs(os.path.join(staging, "images"), exist_ok=True)
            image.save(os.path.join(staging, path))
            sample_paths.append((prompt, path))
        card = render_model_card(repo_id, kind, samples=sample_paths, **(card_info or {}))
        card.save(os.path.join(staging, "README.md"))
        # One commit for the whole folder: `upload_folder` may split a large folder into several commits, and a
        # failure between them would leave a half-pushed repo.
        operations = [
            CommitOperationAdd(path_in_repo=path.relative_to(staging).as_posix(), path_or_fileobj=str(path))
            for path in sorted(Path(staging).rglob("*"))
            if path.is_file()
        ]
        try:
            return api.create_commit(
                repo_id=repo_id,
                operations=operations,
                revision=revision,
                commit_message=commit_message or f"Upload {kind}",
                create_pr=create_pr,
            )
        except HfHubHTTPError as err:
            raise PushError(
                f"Pushing the {kind} to {repo_id!r} (branch {revision or 'main'}) failed, nothing was committed: {err}"
            ) from err

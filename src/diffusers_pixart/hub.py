"""Pushing PixArt models, pipelines and LoRA weights to the Hugging Face Hub, with a model card.

A thin layer over ``huggingface_hub``: the object is saved with its own ``save_pretrained`` (or the LoRA weights in
diffusers' ``pytorch_lora_weights.safetensors`` convention) into a temporary folder, the model card rendered from
``model_card.md`` and the sample images are added, and the folder goes up as one commit with ``HfApi.create_commit``.
A Hub commit is atomic, so a push that fails leaves the repository as it was. Pulling needs nothing from here:
``PixArtAlphaPipeline.from_pretrained(repo_id)`` (``PixArtSigmaPipeline`` for a PixArt-Σ repo),
``PixArtTransformer2DModel.from_pretrained(repo_id)`` and
``transformer.load_lora_adapter(repo_id, weight_name=LORA_WEIGHT_NAME, prefix="transformer")``.

The card says which family the model is (PixArt-α or PixArt-Σ): a pipeline's from its class, a transformer's or a
LoRA's from ``card_info={"family": "sigma"}`` (or a training record's ``family``); α by default.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import DiffusionPipeline, ModelMixin
from huggingface_hub import CommitInfo, CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError
from peft.utils import get_peft_model_state_dict
from PIL import Image

from .diffusers_compat import LORA_WEIGHT_NAME_SAFE, write_lora_file
from .pipelines.auto import family_of

#: The Jinja template of every model card, at the root of the repository.
MODEL_CARD_TEMPLATE = Path(__file__).parent / "model_card.md"  # a link to the repository's model_card.md

#: The LoRA weights file of a repo, in diffusers' convention (keys prefixed ``transformer.``).
LORA_WEIGHT_NAME = LORA_WEIGHT_NAME_SAFE

#: The prefix of the transformer's LoRA keys in :data:`LORA_WEIGHT_NAME`.
LORA_PREFIX = "transformer"

#: The official checkpoint the how-to-use code of transformer and LoRA cards loads when no base model is given.
DEFAULT_BASE_MODEL = "PixArt-alpha/PixArt-XL-2-1024-MS"
#: The same for each family (``"alpha"``, ``"sigma"``).
DEFAULT_BASE_MODELS = {"alpha": DEFAULT_BASE_MODEL, "sigma": "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"}

#: What a card says of each family: its name, our pipeline class, and its caption tokens.
FAMILIES = {
    "alpha": {"family_name": "PixArt-α", "pipeline_class": "PixArtAlphaPipeline", "caption_tokens": 120},
    "sigma": {"family_name": "PixArt-Σ", "pipeline_class": "PixArtSigmaPipeline", "caption_tokens": 300},
}

CARD_KINDS = ("pipeline", "transformer", "lora", "controlnet")

#: The file of a pipeline folder that records how its model was made (see :func:`load_training_record`); a push
#: takes it from the pipeline's folder into the card, and uploads it with the weights.
TRAINING_RECORD_NAME = "training_record.json"

#: The keys of a training record, each optional, and the type of their values.
RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "model_name": str,
    "family": str,
    "description": str,
    "base_model": (str, type(None)),
    "datasets": list,
    "language": list,
    "prompt_language": str,
    "example_prompts": list,
    "training_data": str,
    "training_procedure": str,
    "training": dict,
    "compute": str,
    "training_time": str,
    "intended_uses": list,
    "out_of_scope_uses": list,
    "evaluation": dict,
    "limitations": list,
}

#: The sample sizes for which diffusers' ``PixArtAlphaPipeline`` has resolution-binning tables.
DIFFUSERS_BINNING_SAMPLE_SIZES = (32, 64, 128)
#: The same for each family: diffusers' ``PixArtSigmaPipeline`` also has the 2048 px table (sample size 256).
DIFFUSERS_BINNING_BY_FAMILY = {"alpha": DIFFUSERS_BINNING_SAMPLE_SIZES, "sigma": (32, 64, 128, 256)}

#: What the card says of the prompts of a model whose record does not say it.
DEFAULT_PROMPT_LANGUAGE = "English (T5 text encoder; other languages work poorly)"

logger = logging.getLogger(__name__)


class PushError(RuntimeError):
    """A push to the Hub failed; the Hub's commits are atomic, so the repository was left as it was."""


def render_model_card(
    repo_id: str,
    kind: str = "pipeline",
    *,
    model_name: str | None = None,
    family: str | None = None,
    description: str | None = None,
    base_model: str | None = None,
    datasets: Sequence[str] | None = None,
    tags: Sequence[str] = (),
    samples: Sequence[tuple[str, str]] = (),
    trigger_words: Sequence[str] = (),
    prompt: str = "a red circle above a blue square",
    training: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, float] | None = None,
    eval_dataset: str | None = None,
    record: Mapping[str, Any] | str | os.PathLike | None = None,
    facts: Mapping[str, Any] | None = None,
    template_path: str | os.PathLike = MODEL_CARD_TEMPLATE,
) -> ModelCard:
    """Render the model card of a pushed model from ``model_card.md``.

    Args:
        repo_id: the Hub repo the card describes (used in the how-to-use code).
        kind: ``"pipeline"``, ``"transformer"``, ``"lora"`` or ``"controlnet"``: what the repo holds, which sets the
            how-to-use code.
        model_name: the card's title; defaults to the record's, then to the repo name.
        family: ``"alpha"`` (PixArt-α) or ``"sigma"`` (PixArt-Σ): the name, tag, pipeline class and default base
            model of the card; default: ``facts``' (a pipeline's class), then the record's, then ``"alpha"``.
        description: a paragraph about this model; the record's, or a generic one by default.
        base_model: the Hub id the model was trained from (default: the record's); transformer and LoRA cards need
            one to load the rest of the pipeline, and default to the family's official 1024 px model
            (:data:`DEFAULT_BASE_MODELS`).
        datasets: Hub ids of the training data (default: the record's).
        tags: extra tags; ``pixart-alpha`` (or ``pixart-sigma``), ``text-to-image`` and ``diffusers`` are always
            there (and ``lora``).
        samples: ``(prompt, path in repo)`` of sample images, shown in the card and in the Hub widget.
        trigger_words: words the training captions used for what a LoRA learned (shown on the card; also in the
            ``instance_prompt`` metadata the Hub shows for LoRAs).
        prompt: the prompt of the how-to-use code when there are no samples.
        training: settings of the training run (steps, learning rate, batch size, ...), shown as a table; default:
            the record's.
        evaluation: metric name -> value, shown as a table and recorded as ``model-index`` results; default: the
            record's evaluation.
        eval_dataset: what ``evaluation`` was measured on; required with ``evaluation``.
        record: a training record (see :func:`load_training_record`), or the path of one: language, training data,
            procedure, compute and time, uses, evaluation protocol and limitations of the model.
        facts: what :func:`pipeline_facts` and :func:`plain_diffusers_blockers` found in the pushed object
            (resolution, parameters, ``plain_diffusers_blockers``, ...).
        template_path: the Jinja template.

    Returns:
        The ``ModelCard``; ``card.save(path)`` writes it, ``card.data`` is its YAML metadata.
    """
    if kind not in CARD_KINDS:
        raise ValueError(f"Unknown model card kind {kind!r}: choose one of {CARD_KINDS}.")
    if not Path(template_path).is_file():
        raise FileNotFoundError(f"The model card template {template_path} does not exist.")
    if record is not None and not isinstance(record, Mapping):
        record = load_training_record(record)
    record = dict(record or {})
    family = family or (facts or {}).get("family") or record.get("family") or "alpha"
    if family not in FAMILIES:
        raise ValueError(f"Unknown PixArt family {family!r}: choose one of {sorted(FAMILIES)}.")
    protocol: dict[str, Any] = {}
    if evaluation is None and "evaluation" in record:
        evaluation, eval_dataset, protocol = evaluation_from_scores(record["evaluation"])
    if evaluation and not eval_dataset:
        raise ValueError("`evaluation` results need `eval_dataset`: the data they were measured on.")
    model_name = model_name or record.get("model_name") or repo_id.split("/")[-1]
    base_model = base_model or record.get("base_model")
    if base_model:
        base_model_text = f"`{base_model}`"
    elif kind != "pipeline":
        base_model = DEFAULT_BASE_MODELS[family]
        base_model_text = f"`{base_model}`"
    else:
        base_model_text = "none: trained from scratch" if "base_model" in record else "not recorded"
    datasets = list(record.get("datasets", []) if datasets is None else datasets)
    language = list(record.get("language", ["en"]))
    default_tags = [f"pixart-{family}", "text-to-image", "diffusers"] + (
        [kind] if kind in ("lora", "controlnet") else []
    )
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
        language=language,
        library_name="diffusers",
        pipeline_tag="text-to-image",
        base_model=base_model,
        tags=list(dict.fromkeys([*default_tags, *tags])),
        datasets=datasets or None,
        eval_results=eval_results or None,
        instance_prompt=", ".join(trigger_words) or None,
        widget=[{"text": text, "output": {"url": path}} for text, path in samples]
        or [{"text": text} for text in record.get("example_prompts", [])]
        or None,
    )
    context = {key: record.get(key) for key in RECORD_FIELDS}
    context.update(facts or {})
    context.update(FAMILIES[family])
    context.update(
        family=family,
        model_name=model_name,
        repo_id=repo_id,
        kind=kind,
        base_model=base_model,
        base_model_text=base_model_text,
        description=description
        or record.get("description")
        or f"A {FAMILIES[family]['family_name']} text-to-image model, trained with `diffusers_pixart`.",
        prompt_language=record.get("prompt_language", DEFAULT_PROMPT_LANGUAGE),
        datasets=datasets,
        samples=list(samples),
        trigger_words=list(trigger_words),
        prompt=samples[0][0] if samples else record.get("example_prompts", [prompt])[0],
        training=dict(training or record.get("training") or {}),
        evaluation=dict(evaluation or {}),
        eval_dataset=eval_dataset,
        eval_protocol=protocol,
    )
    return ModelCard.from_template(card_data, template_path=str(template_path), **context)


def load_training_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training record: a JSON object saying how a model was made, which fills its model card.

    Every key is optional (:data:`RECORD_FIELDS`): ``model_name``, ``description``, ``prompt_language``,
    ``training_data``, ``training_procedure``, ``compute`` and ``training_time`` are sentences; ``base_model`` is the
    Hub id the model was trained from, or ``null`` for a model trained from scratch; ``datasets`` (Hub ids),
    ``language`` (ISO 639-1 codes), ``example_prompts`` (prompts it draws well: the Hub widget's and the
    how-to-use code's), ``intended_uses``, ``out_of_scope_uses`` and ``limitations`` are lists of
    strings; ``training`` maps settings to values (a table); ``evaluation`` is what ``pixart eval`` writes to
    ``scores.json`` (``benchmark``, ``scheduler``, ``steps``, ``guidance``, ``resolution``, ``seed``, ``scores``, and
    ``per_image`` or ``num_prompts``).

    Args:
        path: the JSON file, or a folder holding :data:`TRAINING_RECORD_NAME`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a JSON object, an unknown key, or a value of the wrong type (the key is named).
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRAINING_RECORD_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"The training record {path} is not valid JSON: {err}") from err
    if not isinstance(record, dict):
        raise ValueError(f"The training record {path} must hold a JSON object, not a {type(record).__name__}.")
    for key, value in record.items():
        if key not in RECORD_FIELDS:
            raise ValueError(
                f"Unknown key {key!r} in the training record {path}; expected some of {list(RECORD_FIELDS)}."
            )
        if not isinstance(value, RECORD_FIELDS[key]):
            raise ValueError(f"{key!r} in the training record {path} must be a {RECORD_FIELDS[key]}, got {value!r}.")
    return record


def evaluation_from_scores(scores: Mapping[str, Any]) -> tuple[dict[str, float], str, dict[str, Any]]:
    """The metrics, the benchmark and the protocol of a ``pixart eval`` ``scores.json`` (or a record's evaluation).

    Returns ``({metric: value}, benchmark, {"prompts": n, "sampler": ..., "steps": ..., "guidance": ..., ...})``;
    the protocol lists only what ``scores`` holds.

    Raises:
        ValueError: ``scores`` has no ``scores`` mapping or no ``benchmark``.
    """
    if not isinstance(scores.get("scores"), Mapping) or not scores.get("benchmark"):
        raise ValueError("An evaluation needs `benchmark` and a `scores` mapping (as `pixart eval` writes them).")
    metrics = {name: round(float(value), 4) for name, value in scores["scores"].items() if value is not None}
    num_prompts = len(scores["per_image"]) if "per_image" in scores else scores.get("num_prompts")
    protocol = {
        "prompts": num_prompts,
        "sampler": scores.get("scheduler"),
        "steps": scores.get("steps"),
        "guidance": scores.get("guidance"),
        "resolution": f"{scores['resolution']} px" if scores.get("resolution") else None,
        "seed": scores.get("seed"),
    }
    return metrics, str(scores["benchmark"]), {key: value for key, value in protocol.items() if value is not None}


def plain_diffusers_blockers(pipeline_folder: str | os.PathLike) -> list[str]:
    """Why a saved pipeline cannot generate with diffusers' own classes; empty when it can.

    Reasons: a pipeline or component class that diffusers does not have, a transformer with micro-conditions that
    diffusers' pipeline does not pass (``PixArtAlphaPipeline`` passes them only at sample size 128,
    ``PixArtSigmaPipeline`` never; its transformer fails at the first step without them), and a transformer with KV
    token compression or a guidance-scale embedding, which diffusers' transformer does not have.
    """
    folder = Path(pipeline_folder)
    index = json.loads((folder / "model_index.json").read_text())
    reasons = []
    if not hasattr(diffusers, index["_class_name"]):
        reasons.append(f"diffusers has no pipeline class `{index['_class_name']}`.")
    for name, entry in index.items():
        if isinstance(entry, list) and entry[0] and entry[0].split(".")[0] == __package__:
            if not hasattr(diffusers, entry[1]):
                reasons.append(f"diffusers has no class `{entry[1]}` for the component `{name}`.")
    config_path = folder / "transformer" / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        sigma = family_of(str(index["_class_name"])) == "sigma"
        if _uses_micro_conditions(config) and (sigma or config.get("sample_size") != 128):
            passes = "never passes them" if sigma else "passes them only to models of sample size 128"
            reasons.append(
                f"its transformer uses size and aspect-ratio micro-conditions at sample size {config['sample_size']}, "
                f"and diffusers' `{index['_class_name']}` {passes} (its transformer then fails at the first step)."
            )
        if (config.get("kv_compress_factor") or 1) > 1:
            reasons.append(
                "its transformer compresses the keys and values of self-attention (PixArt-Σ's KV token compression), "
                "which diffusers' `PixArtTransformer2DModel` does not have."
            )
        if config.get("guidance_embedding"):
            reasons.append(
                "its transformer embeds the guidance scale (a consistency student's guidance embedding), which "
                "diffusers' `PixArtTransformer2DModel` does not have."
            )
    return reasons


def _uses_micro_conditions(config: Mapping[str, Any]) -> bool:
    """Whether a transformer config uses micro-conditions, resolved as diffusers does (unset: sample size 128)."""
    value = config.get("use_additional_conditions")
    return config.get("sample_size") == 128 if value is None else bool(value)


#: The micro-condition embedders of a transformer's timestep embedding, dropped by :func:`fold_micro_conditions`.
MICRO_CONDITION_PREFIXES = ("adaln_single.emb.resolution_embedder.", "adaln_single.emb.aspect_ratio_embedder.")


def fold_micro_conditions(pipeline_folder: str | os.PathLike, transformer: ModelMixin, size: int) -> None:
    """Rewrite a saved pipeline's transformer without micro-conditions, the ``size`` x ``size`` ones built in.

    The embedding of that size and aspect ratio 1 is a constant added to the timestep embedding, so it goes into the
    bias of the timestep embedder's last layer and the size and ratio embedders are dropped: at that size the model
    computes what it computed with micro-conditions, and it no longer needs them, so diffusers (which passes them
    only at sample size 128) runs it. Every other size is then conditioned as that one.

    Raises:
        FileNotFoundError: the transformer's weights are not one ``diffusion_pytorch_model.safetensors`` file.
    """
    from safetensors.torch import load_file, save_file

    folder = Path(pipeline_folder) / "transformer"
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: folding micro-conditions needs the weights in one file.")
    emb = transformer.adaln_single.emb
    param = next(emb.parameters())
    with torch.no_grad():
        resolution = torch.tensor([float(size), float(size)], dtype=param.dtype, device=param.device)
        ratio = torch.tensor([1.0], dtype=param.dtype, device=param.device)
        size_emb = emb.resolution_embedder(emb.additional_condition_proj(resolution).to(param.dtype)).reshape(1, -1)
        ratio_emb = emb.aspect_ratio_embedder(emb.additional_condition_proj(ratio).to(param.dtype)).reshape(1, -1)
        constant = torch.cat([size_emb, ratio_emb], dim=1)[0].cpu()
    state = load_file(weights)
    bias = "adaln_single.emb.timestep_embedder.linear_2.bias"
    state[bias] = state[bias] + constant.to(state[bias].dtype)
    save_file({k: v for k, v in state.items() if not k.startswith(MICRO_CONDITION_PREFIXES)}, weights, {"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["use_additional_conditions"] = False
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def pipeline_facts(obj: DiffusionPipeline | ModelMixin) -> dict[str, Any]:
    """What a model card states of a pipeline or model from its config: resolution, micro-conditions, parameters."""
    modules = obj.components if isinstance(obj, DiffusionPipeline) else {"model": obj}
    parameters = {
        name.replace("_", " "): sum(p.numel() for p in module.parameters())
        for name, module in modules.items()
        if isinstance(module, torch.nn.Module)
    }
    if len(parameters) > 1:
        parameters["in all"] = sum(parameters.values())
    transformer = getattr(obj, "transformer", obj)
    facts: dict[str, Any] = {"parameters": parameters}
    if isinstance(obj, DiffusionPipeline):
        facts["family"] = family_of(obj)
    sample_size = getattr(transformer.config, "sample_size", None)
    if isinstance(obj, DiffusionPipeline) and sample_size and hasattr(obj, "vae_scale_factor"):
        facts.update(
            resolution=sample_size * obj.vae_scale_factor,
            sample_size=sample_size,
            vae_scale_factor=obj.vae_scale_factor,
            micro_conditions=bool(getattr(transformer, "use_additional_conditions", False)),
            diffusers_binning=sample_size in DIFFUSERS_BINNING_BY_FAMILY[facts["family"]],
        )
    kv_factor = getattr(transformer.config, "kv_compress_factor", 1) or 1
    if kv_factor > 1:
        facts["kv_compression"] = kv_factor
    return facts


def _pipeline_record(obj: DiffusionPipeline | ModelMixin) -> Path | None:
    """The training record in the folder a pipeline or model was loaded from, if there is one."""
    source = getattr(obj, "name_or_path", None) or getattr(obj.config, "_name_or_path", None)
    if source and (Path(source) / TRAINING_RECORD_NAME).is_file():
        return Path(source) / TRAINING_RECORD_NAME
    return None


def save_lora_weights(model: ModelMixin, save_directory: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write the LoRA adapter ``adapter_name`` of ``model`` to ``save_directory/pytorch_lora_weights.safetensors``.

    The keys are prefixed ``transformer.`` and the adapter's ``LoraConfig`` goes into the safetensors metadata, as
    diffusers' pipelines save LoRA weights, so ``model.load_lora_adapter(folder_or_repo, prefix="transformer")``
    rebuilds the same adapter. Returns the path of the file.
    """
    peft_config = getattr(model, "peft_config", None) or {}
    if adapter_name not in peft_config:
        raise ValueError(f"The model has no LoRA adapter named {adapter_name!r} (it has: {sorted(peft_config)}).")
    state_dict = get_peft_model_state_dict(model, adapter_name=adapter_name)
    config = peft_config[adapter_name].to_dict()
    write_lora_file(str(save_directory), state_dict, config, LORA_WEIGHT_NAME, LORA_PREFIX)
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


def make_hub_loadable(pipeline_folder: str | os.PathLike) -> list[str]:
    """Record our models in ``model_index.json`` as the diffusers classes of the same name, in place, where they work.

    A locally saved pipeline records ``["diffusers_pixart", ...]``, which only loads where this package is installed.
    Our :class:`PixArtTransformer2DModel` has the config and weights of diffusers' class of the same name, and
    ``PixArtAlphaPipeline.from_pretrained`` loads ours whatever the index says (as for the official repos), so a pushed
    index names diffusers' class: the repo then loads and generates with our pipeline, and with plain diffusers too.
    A pipeline that plain diffusers could load but not run (see :func:`plain_diffusers_blockers`) keeps our names,
    so that it fails at loading, naming this package, not at the first step.

    Returns:
        The reasons why plain diffusers cannot run the pipeline (the index was left as it was); empty when rewritten.
    """
    blockers = plain_diffusers_blockers(pipeline_folder)
    if blockers:
        return blockers
    path = Path(pipeline_folder) / "model_index.json"
    index = json.loads(path.read_text())
    for name, entry in index.items():
        if isinstance(entry, list) and entry[0] and entry[0].split(".")[0] == __package__:
            index[name] = ["diffusers", entry[1]]
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return []


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
    plain_diffusers: bool = False,
    extra_files: Mapping[str, str | os.PathLike] | None = None,
) -> CommitInfo:
    """Push a pipeline, a transformer, or (with ``lora_adapter``) a transformer's LoRA weights, with a model card.

    Args:
        obj: a ``PixArtAlphaPipeline``, ``PixArtSigmaPipeline`` or ``PixArtTransformer2DModel`` (any diffusers
            pipeline or model saves).
        repo_id: ``"name"`` (in the token's namespace) or ``"namespace/name"``; the repo is created if needed.
        lora_adapter: push only this LoRA adapter of the transformer (``obj`` or ``obj.transformer``), as
            :data:`LORA_WEIGHT_NAME`.
        samples: ``(prompt, image)`` pairs, uploaded as ``images/sample_<i>.png`` and shown in the card.
        card_info: keyword arguments of :func:`render_model_card` (training settings, evaluation, base model, a
            ``record``, ...). A pipeline or model loaded from a folder with a :data:`TRAINING_RECORD_NAME` uses that
            record by default, and the record goes up with the weights; not when ``card_info`` has ``training``,
            the settings of a new run (a fine-tune of that folder's model is not what its record describes).
        private: create the repo private (ignored when it exists).
        token: the Hub token; defaults to the stored one.
        revision: the branch to commit to, created from ``main`` when missing; ``main`` by default.
        commit_message: defaults to "Upload <what>".
        create_pr: open a pull request instead of committing to the branch.
        plain_diffusers: for a pipeline whose transformer uses micro-conditions that diffusers' pipeline does not
            pass (an α one at a sample size other than 128, any Σ one), which diffusers cannot run, push it with the
            native size's micro-conditions built in (:func:`fold_micro_conditions`), so that plain diffusers
            generates with it; the card says so. Without it such a pipeline is pushed as it is, and the card and the
            log say that plain diffusers cannot run it.
        extra_files: more files to upload with it, by their path in the repo (e.g. the T5 embedding rows of a
            pivotal-tuning LoRA, ``loaders.TEXT_ENCODER_EMBEDDINGS_NAME``).

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
        card_info = dict(card_info or {})
        facts: dict[str, Any] = {}
        if kind == "lora":
            save_lora_weights(model, staging, adapter_name=lora_adapter)
        else:
            obj.save_pretrained(staging, safe_serialization=True)
            facts = pipeline_facts(obj)
            if "training" not in card_info:
                card_info.setdefault("record", _pipeline_record(obj))
            if card_info.get("record") is not None and not isinstance(card_info["record"], Mapping):
                shutil.copyfile(card_info["record"], os.path.join(staging, TRAINING_RECORD_NAME))
        if kind == "pipeline" and plain_diffusers and obj.transformer.use_additional_conditions:
            if obj.transformer.config.sample_size != 128 or facts["family"] == "sigma":
                facts["folded_size"] = facts["resolution"]
                fold_micro_conditions(staging, obj.transformer, facts["folded_size"])
        if kind == "pipeline":
            facts["plain_diffusers_blockers"] = make_hub_loadable(staging)
            for reason in facts["plain_diffusers_blockers"]:
                logger.warning(
                    "%s will not generate with plain diffusers (only with diffusers_pixart): %s%s",
                    repo_id,
                    reason,
                    " Push with plain_diffusers=True to build in the native size's micro-conditions."
                    if "micro-conditions" in reason
                    else "",
                )
        for name, path in (extra_files or {}).items():
            shutil.copyfile(path, os.path.join(staging, name))
        sample_paths = []
        for index, (prompt, image) in enumerate(samples):
            path = f"images/sample_{index}.png"
            os.makedirs(os.path.join(staging, "images"), exist_ok=True)
            image.save(os.path.join(staging, path))
            sample_paths.append((prompt, path))
        card = render_model_card(repo_id, kind, samples=sample_paths, facts=facts, **card_info)
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

"""Push and pull through the real huggingface_hub client, against the loopback Hub server of tests/hub_server.py."""

from __future__ import annotations

import json
import logging
import re
import tempfile
import uuid
from pathlib import Path

import diffusers
import numpy as np
import pytest
import safetensors
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError
from peft import LoraConfig
from PIL import Image
from tolerances import IMAGES

from diffusers_pixart import TOY_MODEL_PATH, PixArtAlphaPipeline, PixArtTransformer2DModel
from diffusers_pixart.hub import (
    LORA_WEIGHT_NAME,
    TRAINING_RECORD_NAME,
    PushError,
    load_training_record,
    push_to_hub,
    render_model_card,
    save_lora_weights,
)
from diffusers_pixart.tiny import make_pipeline, make_transformer

TOKEN = "hf_alice_write"  # alice's token on the loopback Hub (tests/conftest.py)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _forward(model: PixArtTransformer2DModel) -> torch.Tensor:
    """The model's output on fixed inputs: (2, 8, 8, 8)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    caption = torch.randn(2, 5, model.config.caption_channels, generator=g)
    with torch.no_grad():
        return model(x, caption, timestep=torch.tensor([10, 500]), added_cond_kwargs={}).sample


def _public(config) -> dict:
    """A config without its bookkeeping entries (``_name_or_path``, ``_use_default_values``, ...)."""
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def _images(pipe: PixArtAlphaPipeline) -> np.ndarray:
    """Two DPM-Solver steps at 64x64 with a fixed seed: (1, 64, 64, 3)."""
    return pipe(
        "a red circle",
        num_inference_steps=2,
        height=64,
        width=64,
        use_resolution_binning=False,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images


def test_transformer_round_trip_gives_our_class_and_the_same_weights(hub):
    model = make_transformer(seed=3)
    info = push_to_hub(model, _name("transformer"), token=TOKEN, card_info={"training": {"steps": 10}})
    repo_id = info.repo_url.repo_id
    assert repo_id.startswith("alice/")  # the namespace comes from the token
    files = set(HfApi().list_repo_files(repo_id))
    assert files == {"README.md", "config.json", "diffusion_pytorch_model.safetensors"}

    pulled = PixArtTransformer2DModel.from_pretrained(repo_id)
    assert type(pulled) is PixArtTransformer2DModel
    assert _public(pulled.config) == _public(model.config)
    _assert_same_weights(pulled, model)
    torch.testing.assert_close(_forward(pulled), _forward(model), rtol=0, atol=0)

    # diffusers' own ModelMixin.push_to_hub goes through the same client and comes back as our class too.
    other = make_transformer(seed=4)
    other.push_to_hub(f"alice/{_name('mixin')}", token=TOKEN)
    mixin_repo = [r for r in hub.store.root.joinpath("models", "alice").iterdir() if r.name.startswith("mixin-")][0]
    pulled = PixArtTransformer2DModel.from_pretrained(f"alice/{mixin_repo.name}")
    _assert_same_weights(pulled, other)


def test_pipeline_round_trip_gives_the_same_images(hub):
    pipe = make_pipeline(seed=1)
    sample = Image.fromarray((_images(pipe)[0] * 255).round().astype(np.uint8))
    info = push_to_hub(pipe, _name("pipeline"), samples=[("a red circle", sample)], token=TOKEN)
    repo_id = info.repo_url.repo_id

    pulled = PixArtAlphaPipeline.from_pretrained(repo_id)
    assert type(pulled) is PixArtAlphaPipeline
    assert type(pulled.transformer) is PixArtTransformer2DModel
    assert {name: type(c) for name, c in pulled.components.items()} == {
        name: type(c) for name, c in pipe.components.items()
    }
    for name in ("transformer", "text_encoder", "vae"):
        _assert_same_weights(getattr(pulled, name), getattr(pipe, name))
    assert pulled.tokenizer("a red circle").input_ids == pipe.tokenizer("a red circle").input_ids
    np.testing.assert_array_equal(_images(pulled), _images(pipe))

    # The pushed index names diffusers' classes, so plain diffusers loads the repo too, with the same images.
    plain = diffusers.PixArtAlphaPipeline.from_pretrained(repo_id)
    assert type(plain.transformer) is diffusers.PixArtTransformer2DModel
    np.testing.assert_allclose(_images(plain), _images(pipe), atol=IMAGES)  # diffusers' modules

    # The sample image went up next to the weights, unchanged.
    pushed_sample = Image.open(hf_hub_download(repo_id, "images/sample_0.png"))
    np.testing.assert_array_equal(np.asarray(pushed_sample), np.asarray(sample))


def test_inherited_pipeline_push_to_hub_records_our_package_and_pulls_back(hub):
    """``DiffusionPipeline.push_to_hub`` (no card, no rewrite): the index names ``diffusers_pixart``, which loads."""
    pipe = make_pipeline(seed=2)
    repo_id = f"alice/{_name('inherited')}"
    pipe.push_to_hub(repo_id, token=TOKEN)
    index = HfApi().hf_hub_download(repo_id, "model_index.json")
    assert '"diffusers_pixart"' in Path(index).read_text()
    pulled = diffusers.DiffusionPipeline.from_pretrained(repo_id)
    assert type(pulled.transformer) is PixArtTransformer2DModel  # diffusers builds its pipeline class, with ours inside
    np.testing.assert_array_equal(_images(PixArtAlphaPipeline.from_pretrained(repo_id)), _images(pipe))


def test_controlnet_round_trip_gives_our_class_the_same_weights_and_a_controlnet_card(hub):
    from diffusers_pixart import PixArtControlNetModel

    controlnet = PixArtControlNetModel.from_transformer(make_transformer(seed=5), num_layers=1)
    with torch.no_grad():
        for param in controlnet.parameters():
            param.add_(0.01)  # non-zero projections, so that a lost weight would show
    repo_id = push_to_hub(controlnet, _name("controlnet"), token=TOKEN).repo_url.repo_id
    pulled = PixArtControlNetModel.from_pretrained(repo_id)
    assert type(pulled) is PixArtControlNetModel
    _assert_same_weights(pulled, controlnet)
    card = ModelCard.load(repo_id)
    assert "controlnet" in card.data.tags and "PixArtAlphaControlNetPipeline" in card.text


def test_lora_round_trip_in_diffusers_convention(hub, tmp_path):
    model = make_transformer(seed=5)
    base_output = _forward(model)
    model.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():  # lora_B starts at zero: give it values so that the adapter changes the output
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.1)
    lora_output = _forward(model)
    assert not torch.allclose(lora_output, base_output)

    info = push_to_hub(model, _name("lora"), lora_adapter="default", token=TOKEN, card_info={"base_model": "alice/x"})
    repo_id = info.repo_url.repo_id
    assert set(HfApi().list_repo_files(repo_id)) == {"README.md", LORA_WEIGHT_NAME}
    with safetensors.safe_open(hf_hub_download(repo_id, LORA_WEIGHT_NAME), "pt") as f:
        keys = list(f.keys())
        assert f.metadata()["format"] == "pt"
    assert len(keys) == 2 * 4 * 2 * 2  # (A, B) x 4 projections x 2 attentions x 2 blocks
    assert all(k.startswith("transformer.transformer_blocks.") and ".lora_" in k for k in keys)

    fresh = make_transformer(seed=5)
    fresh.load_lora_adapter(repo_id, weight_name=LORA_WEIGHT_NAME, prefix="transformer", adapter_name="default")
    assert fresh.peft_config["default"].r == 4 and fresh.peft_config["default"].lora_alpha == 8
    torch.testing.assert_close(_forward(fresh), lora_output, rtol=0, atol=0)

    # The local writer is the same code: its file has the same tensors.
    local = save_lora_weights(model, tmp_path)
    with safetensors.safe_open(local, "pt") as f:
        assert sorted(f.keys()) == sorted(keys)


def test_private_repo_branch_and_token_pass_through(hub):
    v1, v2 = make_transformer(seed=6), make_transformer(seed=7)
    repo_id = push_to_hub(v1, _name("private"), private=True, token=TOKEN).repo_url.repo_id
    push_to_hub(v2, repo_id, revision="dev", token=TOKEN)

    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(repo_id)  # anonymous: the private repo is hidden
    with pytest.raises(OSError, match=repo_id):
        PixArtTransformer2DModel.from_pretrained(repo_id)
    assert HfApi(token=TOKEN).model_info(repo_id).private is True

    _assert_same_weights(PixArtTransformer2DModel.from_pretrained(repo_id, token=TOKEN), v1)
    _assert_same_weights(PixArtTransformer2DModel.from_pretrained(repo_id, token=TOKEN, revision="dev"), v2)
    main_sha = HfApi(token=TOKEN).model_info(repo_id).sha
    dev_sha = HfApi(token=TOKEN).model_info(repo_id, revision="dev").sha
    assert main_sha != dev_sha

    with pytest.raises(PushError, match="rights"):  # bob cannot write to alice's repo
        push_to_hub(v2, repo_id, token="hf_bob_write")


def test_model_card_metadata_read_back(hub):
    pipe = make_pipeline(seed=2)
    images = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    card_info = {
        "base_model": "PixArt-alpha/PixArt-XL-2-256x256",
        "datasets": ["alice/toy-shapes"],
        "tags": ["toy"],
        "training": {"steps": 1200, "learning_rate": 2e-5, "batch_size": 64, "resolution": 256},
        "evaluation": {"clip_score": 0.31, "fid": 42.5},
        "eval_dataset": "alice/toy-shapes-eval",
    }
    prompts = ["a red square", "a blue circle"]
    info = push_to_hub(pipe, _name("card"), samples=list(zip(prompts, images)), card_info=card_info, token=TOKEN)
    repo_id = info.repo_url.repo_id

    card = ModelCard.load(repo_id)
    data = card.data
    assert data.license == "openrail++"
    assert data.library_name == "diffusers"
    assert data.pipeline_tag == "text-to-image"
    assert data.base_model == "PixArt-alpha/PixArt-XL-2-256x256"
    assert data.datasets == ["alice/toy-shapes"]
    assert {"pixart-alpha", "text-to-image", "diffusers", "toy"} <= set(data.tags)
    assert data.widget == [
        {"text": "a red square", "output": {"url": "images/sample_0.png"}},
        {"text": "a blue circle", "output": {"url": "images/sample_1.png"}},
    ]
    assert {(r.metric_type, r.metric_value, r.dataset_name) for r in data.eval_results} == {
        ("clip_score", 0.31, "alice/toy-shapes-eval"),
        ("fid", 42.5, "alice/toy-shapes-eval"),
    }
    for index, image in enumerate(images):
        pulled = Image.open(hf_hub_download(repo_id, f"images/sample_{index}.png"))
        np.testing.assert_array_equal(np.asarray(pulled), np.asarray(image))
    # The Hub's own view of the metadata (model info) agrees.
    assert HfApi().model_info(repo_id).card_data.license == "openrail++"
    assert "| steps | 1200 |" in card.text and "| fid | 42.5 |" in card.text
    assert f'PixArtAlphaPipeline.from_pretrained("{repo_id}"' in card.text


@pytest.mark.parametrize("kind", ["pipeline", "transformer", "lora", "controlnet"])
def test_model_card_renders_without_placeholders(kind):
    card = render_model_card("alice/model", kind)
    text = str(card)
    for leftover in ("{{", "}}", "{%", "%}", "None", "[More Information Needed]"):
        assert leftover not in text, leftover
    headings = re.findall(r"^## (.+)$", card.text, re.M)
    assert headings[:6] == [
        "Model details",
        "How to use it",
        "Uses",
        "Training details",
        "Evaluation",
        "Limitations and bias",
    ]
    assert card.data.language == ["en"]
    assert card.data.license == "openrail++" and "pixart-alpha" in card.data.tags
    assert ("lora" in card.data.tags) == (kind == "lora")
    assert ("controlnet" in card.data.tags) == (kind == "controlnet")
    assert card.data.base_model == (None if kind == "pipeline" else "PixArt-alpha/PixArt-XL-2-1024-MS")


def test_model_card_usage_code_runs_against_the_hub(hub, tmp_path, monkeypatch):
    """The how-to-use code of a pushed pipeline's card runs as written and makes an image."""
    repo_id = push_to_hub(make_pipeline(seed=8), _name("usage"), token=TOKEN).repo_url.repo_id
    card = ModelCard.load(repo_id)
    code = re.search(r"```python\n(.*?)```", card.text, re.S).group(1)
    code = code.replace("num_inference_steps=20", "num_inference_steps=2")  # the same call, faster
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "model_card_usage", "exec"), {})
    assert Image.open(tmp_path / "image.png").size == (256, 256)


def test_failed_commit_leaves_repo_and_client_unchanged(hub, tmp_path, monkeypatch):
    v1 = make_transformer(seed=9)
    repo_id = push_to_hub(v1, _name("fail"), token=TOKEN).repo_url.repo_id
    api = HfApi(token=TOKEN)
    sha_before, files_before = api.model_info(repo_id).sha, api.list_repo_files(repo_id)
    PixArtTransformer2DModel.from_pretrained(repo_id)  # fill the local cache with v1

    staging_root = tmp_path / "tmp"
    staging_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging_root))
    hub.fail_next_commit(500, "Internal Error: storage backend failed")
    v2 = make_transformer(seed=10, num_layers=1)
    with pytest.raises(PushError, match=r"(?s)nothing was committed.*500.*storage backend failed"):
        push_to_hub(v2, repo_id, token=TOKEN, card_info={"training": {"steps": 5}})

    assert list(staging_root.iterdir()) == []  # the staging folder of the push is gone
    assert api.model_info(repo_id).sha == sha_before
    assert api.list_repo_files(repo_id) == files_before
    repo_dir = hub.store.repo_dir("model", repo_id)
    assert not [p for p in (repo_dir / "commits").iterdir() if p.name.startswith(".staging")]
    _assert_same_weights(PixArtTransformer2DModel.from_pretrained(repo_id), v1)
    cache = Path(hub_cache_dir())
    assert not list(cache.rglob("*.incomplete")) and not list(cache.rglob("*.lock.tmp"))

    # The next push goes through.
    push_to_hub(v2, repo_id, token=TOKEN)
    _assert_same_weights(PixArtTransformer2DModel.from_pretrained(repo_id), v2)


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def test_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        render_model_card("alice/model", "unet")
    with pytest.raises(ValueError, match="eval_dataset"):
        render_model_card("alice/model", evaluation={"fid": 1.0})
    with pytest.raises(FileNotFoundError, match="template"):
        render_model_card("alice/model", template_path=tmp_path / "missing.md")
    with pytest.raises(ValueError, match="no LoRA adapter named 'default'"):
        save_lora_weights(make_transformer(), tmp_path)
    with pytest.raises(TypeError, match="dict"):
        push_to_hub({"weights": 1}, "alice/model", token=TOKEN)


@pytest.mark.skipif(not (TOY_MODEL_PATH / "model_index.json").is_file(), reason="the package ships no toy model")
def test_embedded_model_push_has_a_complete_card_and_says_plain_diffusers_cannot_run_it(hub, caplog):
    """The embedded toy model pushed as it is: its record fills every field of the card; plain diffusers is refused."""
    pipe = PixArtAlphaPipeline.from_pretrained(TOY_MODEL_PATH)
    with caplog.at_level(logging.WARNING, logger="diffusers_pixart.hub"):
        repo_id = push_to_hub(pipe, _name("toy"), token=TOKEN).repo_url.repo_id
    assert "will not generate with plain diffusers" in caplog.text and "sample size 16" in caplog.text

    card = ModelCard.load(repo_id)
    card.validate()  # the Hub's own check of the metadata (the loopback server's /api/validate-yaml)
    data = card.data
    record = load_training_record(TOY_MODEL_PATH)
    assert data.language == ["en"] and data.license == "openrail++" and data.pipeline_tag == "text-to-image"
    assert data.base_model is None and data.datasets is None  # trained from scratch on generated data, said in text
    assert data.model_name == record["model_name"]
    assert [entry["text"] for entry in data.widget] == record["example_prompts"]
    scores = {r.metric_type: r.metric_value for r in data.eval_results}
    assert {r.dataset_name for r in data.eval_results} == {"toy_compbench"}
    assert scores == {name: round(v, 4) for name, v in record["evaluation"]["scores"].items()}
    text = card.text
    parameters = sum(p.numel() for p in pipe.transformer.parameters())
    for expected in (
        "Base model: none: trained from scratch",  # base_model
        "Resolution: 64 px",
        f"transformer {parameters:,}",  # parameter count
        f"Prompt language: {record['prompt_language']}",
        f"Training data: {record['training_data']}",  # datasets: generated, described
        f"Procedure: {record['training_procedure']}",
        f"Compute: {record['compute']}",
        f"Time: {record['training_time']}",
        "Protocol: prompts 200, sampler dpm, steps 20, guidance 4.5, resolution 64 px, seed 0.",
        "**This pipeline does not generate with plain diffusers**",
        *record["intended_uses"],
        *record["out_of_scope_uses"],
        *record["limitations"],
    ):
        assert expected in text, expected
    assert "No training run is recorded" not in text and "No evaluation results" not in text
    assert "hands, faces" not in text  # the limitations are the toy model's, not a photographic model's
    assert json.loads(Path(hf_hub_download(repo_id, TRAINING_RECORD_NAME)).read_text()) == record

    # The index names our transformer, so loading fails early where the package is missing; what plain diffusers
    # would do with diffusers' class, as the card says, is fail at the first step.
    index = json.loads(Path(hf_hub_download(repo_id, "model_index.json")).read_text())
    assert index["transformer"] == ["diffusers_pixart", "PixArtTransformer2DModel"]
    plain = diffusers.PixArtAlphaPipeline.from_pretrained(
        repo_id, transformer=diffusers.PixArtTransformer2DModel.from_pretrained(repo_id, subfolder="transformer")
    )
    with pytest.raises(AttributeError, match="flatten"):
        plain("one object. a red circle.", num_inference_steps=1, use_resolution_binning=False)
    np.testing.assert_array_equal(  # with this package it pulls back and generates as before the push
        _images(PixArtAlphaPipeline.from_pretrained(repo_id)), _images(pipe)
    )

    # A fine-tune of it pushed by a training run (which passes its own settings) is not described by its record.
    tuned = push_to_hub(pipe, _name("tuned"), token=TOKEN, card_info={"training": {"steps": 5}}).repo_url.repo_id
    text = ModelCard.load(tuned).text
    assert "| steps | 5 |" in text and record["training_time"] not in text and record["limitations"][0] not in text
    assert TRAINING_RECORD_NAME not in HfApi().list_repo_files(tuned)


def test_pushed_pipeline_generates_with_diffusers_classes_only(hub):
    """A pipeline diffusers can run: the card shows the plain-diffusers code, and diffusers alone generates with it."""
    pipe = make_pipeline(seed=12)
    repo_id = push_to_hub(pipe, _name("plain"), token=TOKEN).repo_url.repo_id
    card = ModelCard.load(repo_id)
    assert "from diffusers import PixArtAlphaPipeline" in card.text and "does not generate" not in card.text
    index = json.loads(Path(hf_hub_download(repo_id, "model_index.json")).read_text())
    assert all(entry[0] in ("diffusers", "transformers") for entry in index.values() if isinstance(entry, list))
    plain = diffusers.DiffusionPipeline.from_pretrained(repo_id)
    assert type(plain) is diffusers.PixArtAlphaPipeline
    assert all(type(c).__module__.split(".")[0] in ("diffusers", "transformers") for c in plain.components.values())
    image = plain("a red circle", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (256, 256)  # with diffusers' own resolution binning (sample size 32: its 256 table)


def test_training_record_errors_name_the_key(tmp_path):
    path = tmp_path / TRAINING_RECORD_NAME
    path.write_text(json.dumps({"compute": "a CPU", "epochs": 3}))
    with pytest.raises(ValueError, match="Unknown key 'epochs'"):
        load_training_record(tmp_path)
    path.write_text(json.dumps({"limitations": "none"}))
    with pytest.raises(ValueError, match="'limitations'.*must be a <class 'list'>"):
        load_training_record(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_training_record(path)
    with pytest.raises(ValueError, match="`benchmark` and a `scores` mapping"):
        render_model_card("alice/model", record={"evaluation": {"steps": 20}})


@pytest.mark.skipif(not (TOY_MODEL_PATH / "model_index.json").is_file(), reason="the package ships no toy model")
def test_embedded_model_pushed_for_plain_diffusers_generates_there_as_here(hub):
    """``plain_diffusers=True`` builds the native size's micro-conditions in: diffusers' classes alone generate the
    images this package's pipeline makes at that size."""
    pipe = PixArtAlphaPipeline.from_pretrained(TOY_MODEL_PATH)
    repo_id = push_to_hub(pipe, _name("toy-plain"), token=TOKEN, plain_diffusers=True).repo_url.repo_id
    card = ModelCard.load(repo_id)
    assert "those of 64 x 64 px are built into the transformer" in card.text and "does not generate" not in card.text
    plain = diffusers.DiffusionPipeline.from_pretrained(repo_id)
    assert type(plain) is diffusers.PixArtAlphaPipeline
    assert type(plain.transformer) is diffusers.PixArtTransformer2DModel
    assert not plain.transformer.config.use_additional_conditions
    prompt = "one object. a large red circle in the center."
    kwargs = dict(num_inference_steps=4, height=64, width=64, use_resolution_binning=False, output_type="np")
    ours = pipe(prompt, generator=torch.Generator().manual_seed(0), **kwargs).images
    theirs = plain(prompt, generator=torch.Generator().manual_seed(0), **kwargs).images
    # Float32 sums in another order (the constant added into the bias, diffusers' attention): 1.1e-6 measured.
    np.testing.assert_allclose(theirs, ours, atol=1e-4)


# ------------------------------------------------------------------------------------------ PixArt-Σ
def test_sigma_pipeline_push_says_sigma_pulls_as_sigma_and_runs_in_plain_diffusers(hub):
    from diffusers_pixart import PixArtSigmaPipeline

    pipe = PixArtSigmaPipeline(**make_pipeline(seed=12).components)
    repo_id = push_to_hub(pipe, _name("sigma"), token=TOKEN).repo_url.repo_id
    card = ModelCard.load(repo_id)
    assert "pixart-sigma" in card.data.tags and "pixart-alpha" not in card.data.tags
    assert "PixArt-Σ text-to-image pipeline (`PixArtSigmaPipeline`)" in card.text
    assert f'PixArtSigmaPipeline.from_pretrained("{repo_id}"' in card.text and "Caption tokens: 300" in card.text
    assert "from diffusers import PixArtSigmaPipeline" in card.text and "chen2024pixartsigma" in card.text
    pulled = PixArtSigmaPipeline.from_pretrained(repo_id)
    assert type(pulled.transformer) is PixArtTransformer2DModel
    np.testing.assert_array_equal(_images(pulled), _images(pipe))
    plain = diffusers.DiffusionPipeline.from_pretrained(repo_id)
    assert type(plain) is diffusers.PixArtSigmaPipeline
    assert np.abs(_images(plain) - _images(pipe)).max() <= IMAGES


def test_sigma_cards_of_transformers_and_micro_condition_blockers(tmp_path):
    from diffusers_pixart import PixArtSigmaPipeline
    from diffusers_pixart.hub import plain_diffusers_blockers

    card = render_model_card("alice/sigma-lora", "lora", family="sigma")
    assert card.data.base_model == "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS" and "pixart-sigma" in card.data.tags
    assert 'PixArtSigmaPipeline.from_pretrained("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"' in card.text
    with pytest.raises(ValueError, match="family 'gamma'"):
        render_model_card("alice/x", "pipeline", family="gamma")
    # diffusers' Σ pipeline never passes micro-conditions, even at sample size 128 where the α one does
    for cls, blocked in ((PixArtAlphaPipeline, False), (PixArtSigmaPipeline, True)):
        folder = tmp_path / cls.__name__
        cls(**make_pipeline(sample_size=128, use_additional_conditions=True).components).save_pretrained(folder)
        reasons = plain_diffusers_blockers(folder)
        assert bool([r for r in reasons if "micro-conditions" in r]) == blocked, reasons

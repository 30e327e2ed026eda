"""examples/train_lora.py on a tiny pipeline: LoRA, DoRA, LoHa and LoKr runs, exact resume, the saved adapter reloaded
with ``load_lora_weights`` (the trained model's images within 1e-5), weighted caption columns, precomputed features
without T5, PixArt-Σ, the memory options, pivotal tuning (T5 embedding rows trained with the adapter: exact resume,
reload from a folder and the Hub, every other row bit-identical), and every bad input refused before the first step
with nothing written."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import ModelCard, hf_hub_download
from safetensors.torch import load_file

from diffusers_pixart import tiny
from diffusers_pixart.data.streaming import ImageTextLoader, caption_column_weights, load_streaming_dataset
from diffusers_pixart.loaders import TEXT_ENCODER_EMBEDDINGS_NAME, load_text_encoder_embeddings
from diffusers_pixart.pipelines.auto import pipeline_class
from diffusers_pixart.pipelines.pixart_sigma import PixArtSigmaPipeline
from diffusers_pixart.training.diffusion import IDDPMDiffusion
from diffusers_pixart.training.embeddings import TokenEmbeddings, embedding_token_ids
from diffusers_pixart.training.lora import LoraTrainingConfig, add_adapter, train_lora
from diffusers_pixart.training.optimizers import make_optimizer

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "train_lora.py"
TRIGGER = "painting"  # a word of the tiny tokenizer


def load_script():
    spec = importlib.util.spec_from_file_location("train_lora", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A tiny α pipeline and a tiny Σ one, and 8 captioned 32 px images with two caption columns."""
    from diffusers_pixart.toy.world import make_dataset

    root = tmp_path_factory.mktemp("lora")
    tiny.make_pipeline().save_pretrained(root / "base")
    PixArtSigmaPipeline(**tiny.make_components()).save_pretrained(root / "sigma")
    make_dataset(root / "toy", n=8, seed=0, resolution=32)
    return root


def args(assets, out, *extra, base="base"):
    return [
        "--pretrained_model_name_or_path", str(assets / base), "--train_data", str(assets / "toy"),
        "--output_dir", str(out), "--resolution", "32", "--train_batch_size", "2", "--learning_rate", "1e-2",
        "--rank", "4", "--lr_warmup_steps", "0", "--validation_steps", "0", "--report_to", "none",
        "--checkpointing_steps", "2",
        "--caption_column", "text=0.5,sparse_text=0.5", *extra,
    ]  # fmt: skip


def images(pipe, prompts=("a red circle", "a blue square on the left")) -> np.ndarray:
    """Two 32 px images (float arrays) of fixed prompts and seed."""
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        list(prompts),
        num_inference_steps=3,
        height=32,
        width=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        use_resolution_binning=False,
    ).images


def trained_pipeline(assets, out, *extra, base="base", prefix=""):
    """The base pipeline with the run's adapter built by the trainer's own code and its last checkpoint loaded:
    the model the run trained (without EMA the result file holds these weights). ``prefix``: of the transformer's
    keys in the checkpoint (others are left out)."""
    config = load_script().LoraTrainingConfig(output_dir="x", rank=4, **dict(zip(extra[::2], extra[1::2])))
    pipe = pipeline_class(assets / base).from_pretrained(assets / base)
    add_adapter(pipe.transformer, config)
    checkpoint = load_file(sorted((out / "checkpoints").iterdir())[-1] / "model.safetensors")
    state = {key.removeprefix(prefix): value for key, value in checkpoint.items() if key.startswith(prefix)}
    assert not pipe.transformer.load_state_dict(state, strict=False).unexpected_keys
    return pipe


@pytest.mark.parametrize("adapter", ["lora", "dora"])
def test_lora_and_dora_resume_exactly_and_reload_with_load_lora_weights(assets, tmp_path, adapter):
    script = load_script()
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert script.main(args(assets, straight, "--adapter", adapter, "--max_train_steps", "3")) == 0
    assert script.main(args(assets, resumed, "--adapter", adapter, "--max_train_steps", "2")) == 0
    again = ["--adapter", adapter, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"]
    assert script.main(args(assets, resumed, *again)) == 0
    weights = load_file(straight / "lora" / "pytorch_lora_weights.safetensors")
    assert weights.keys() == load_file(resumed / "lora" / "pytorch_lora_weights.safetensors").keys()
    for key, value in load_file(resumed / "lora" / "pytorch_lora_weights.safetensors").items():
        assert torch.equal(value, weights[key]), key
    # The checkpoints hold the adapter only; DoRA's magnitudes are part of it.
    checkpoint = load_file(straight / "checkpoints" / "checkpoint-3" / "model.safetensors")
    assert checkpoint and all(("lora_" in key) for key in checkpoint)
    assert any("magnitude" in key for key in checkpoint) == (adapter == "dora")

    reference = trained_pipeline(assets, straight, "adapter", adapter, "target_modules", ["attention"])
    reloaded = pipeline_class(assets / "base").from_pretrained(assets / "base")
    reloaded.load_lora_weights(straight / "lora")
    np.testing.assert_allclose(images(reloaded), images(reference), rtol=0, atol=1e-5)
    base = pipeline_class(assets / "base").from_pretrained(assets / "base")
    assert np.abs(images(base) - images(reloaded)).max() > 1e-4  # the adapter changed the model


@pytest.mark.parametrize("adapter", ["loha", "lokr"])
def test_loha_and_lokr_save_reload_and_refuse_another_base(assets, tmp_path, adapter):
    script = load_script()
    out = tmp_path / "run"
    extra = ["--adapter", adapter, "--max_train_steps", "2", "--target_modules", "attention+ffn", "--use_ema"]
    assert script.main(args(assets, out, *extra, "--ema_decay", "0.5")) == 0
    metadata = json.loads(
        __import__("safetensors")
        .safe_open(out / "lora" / "pytorch_lora_weights.safetensors", "pt")
        .metadata()["lora_adapter_metadata"]
    )
    assert metadata["transformer.peft_type"] == adapter.upper()
    reloaded = pipeline_class(assets / "base").from_pretrained(assets / "base")
    reloaded.load_lora_weights(out / "lora")
    assert reloaded.transformer.active_adapters() == ["default_0"]
    # With --use_ema the file holds the EMA weights: a model with them reproduces the reloaded pipeline's images.
    reference = trained_pipeline(assets, out, "adapter", adapter, "target_modules", ["attention+ffn"])
    saved = load_file(out / "lora" / "pytorch_lora_weights.safetensors")
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(reference.transformer, {k.removeprefix("transformer."): v for k, v in saved.items()})
    np.testing.assert_allclose(images(reloaded), images(reference), rtol=0, atol=1e-5)

    wider = pipeline_class(assets / "base").from_pretrained(assets / "base", transformer=tiny.make_transformer(
        num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32))  # fmt: skip
    with pytest.raises(ValueError, match="another size"):
        wider.load_lora_weights(out / "lora")
    assert not getattr(wider.transformer, "peft_config", None)


def test_lora_from_another_base_shape_is_refused_at_load(assets, tmp_path):
    out = tmp_path / "run"
    assert load_script().main(args(assets, out, "--max_train_steps", "1", "--checkpointing_steps", "1")) == 0
    wider = pipeline_class(assets / "base").from_pretrained(assets / "base", transformer=tiny.make_transformer(
        num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32))  # fmt: skip
    with pytest.raises(ValueError, match="another size"):
        wider.load_lora_weights(out / "lora")


def test_memory_options_push_and_sigma(assets, tmp_path, monkeypatch, hub, bf16_cpu_attention):
    """bf16 base + gradient checkpointing + CAME + noise offset + buckets + min-SNR + v-prediction on Σ, pushed."""
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("HF_TOKEN", "hf_alice_write")
    AcceleratorState._reset_state()  # this process's earlier runs set accelerate's state without mixed precision
    out = tmp_path / "run"
    extra = [
        "--mixed_precision", "bf16", "--base_dtype", "bf16", "--gradient_checkpointing", "--optimizer", "came",
        "--noise_offset", "0.1", "--multi_scale", "--snr_gamma", "5", "--prediction_type", "v_prediction",
        "--max_train_steps", "2", "--trigger_words", TRIGGER, "--validation_steps", "2", "--validation_prompts",
        f"a {TRIGGER} of a cat", "--validation_inference_steps", "2", "--push_to_hub", "--hub_model_id", "alice/lora",
        "--train_text_encoder_embeddings", "--train_embedding_tokens", "\u2581red", "--embedding_learning_rate", "0.1",
    ]  # fmt: skip
    try:
        assert load_script().main(args(assets, out, *extra, base="sigma")) == 0
    finally:
        AcceleratorState._reset_state()
    assert (out / "validation" / "step-0000002.png").is_file()
    saved = load_file(out / "lora" / "pytorch_lora_weights.safetensors")
    assert all(value.dtype == torch.float32 for value in saved.values())  # the adapter trained in float32
    pipe = PixArtSigmaPipeline.from_pretrained(assets / "sigma")
    before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    pipe.load_lora_weights("alice/lora")  # the Hub repo: the adapter and the T5 rows of the trained tokens
    rows = load_file(hf_hub_download("alice/lora", TEXT_ENCODER_EMBEDDINGS_NAME))
    ids = {pipe.tokenizer.convert_tokens_to_ids(token): row for token, row in rows.items()}
    weight = pipe.text_encoder.get_input_embeddings().weight
    assert set(ids) == set(pipe.tokenizer(f"{TRIGGER} red", add_special_tokens=False).input_ids)
    assert all(torch.equal(weight[index], row) for index, row in ids.items())
    assert set((weight != before).any(dim=1).nonzero().flatten().tolist()) <= set(ids)
    card = ModelCard.load("alice/lora")
    assert (
        "PixArt-Σ" in card.text and f"Trigger words: `{TRIGGER}`" in card.text and "| optimizer | came |" in card.text
    )
    assert "T5 embeddings trained (pivotal tuning)" in card.text
    assert "pixart-sigma" in card.data.tags and "lora" in card.data.tags


def test_precomputed_features_train_without_the_text_encoder(assets, tmp_path, monkeypatch):
    from diffusers_pixart.data.features import extract_features
    from diffusers_pixart.pipelines.pixart_alpha import PixArtAlphaPipeline

    base = PixArtAlphaPipeline.from_pretrained(assets / "base")
    loader = ImageTextLoader(
        load_streaming_dataset(str(assets / "toy")), resolution=32, batch_size=4, shuffle_buffer_size=0, max_epochs=1
    )
    extract_features(
        loader, tmp_path / "features", vae=base.vae, tokenizer=base.tokenizer, text_encoder=base.text_encoder
    )
    loaded = []
    original = PixArtAlphaPipeline.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        pipe = original(cls, path, **kwargs)
        loaded.append(pipe.text_encoder)
        return pipe

    monkeypatch.setattr(PixArtAlphaPipeline, "from_pretrained", classmethod(spy))
    config = LoraTrainingConfig(
        output_dir=str(tmp_path / "run"), pretrained_model_name_or_path=str(assets / "base"),
        features=str(tmp_path / "features"), resolution=32, train_batch_size=2, max_train_steps=2, rank=4,
        validation_steps=2, validation_prompts=["a red circle"], validation_inference_steps=2, report_to="none",
    )  # fmt: skip
    assert train_lora(config) == tmp_path / "run" / "lora"
    assert loaded == [None]  # the training pipeline was loaded without T5
    assert (tmp_path / "run" / "validation" / "step-0000002.png").is_file()


def test_the_base_loads_as_the_stage_scripts_load_it(assets, tmp_path, monkeypatch):
    """The stage scripts' loader: the Σ class with --transformer swapped in; --features checked against the run."""
    from diffusers_pixart.data.features import extract_features

    loaded = []
    original = PixArtSigmaPipeline.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        loaded.append(original(cls, path, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(PixArtSigmaPipeline, "from_pretrained", classmethod(spy))
    tiny.make_transformer(seed=5).save_pretrained(tmp_path / "transformer")
    config = LoraTrainingConfig(
        output_dir=str(tmp_path / "run"), pretrained_model_name_or_path=str(assets / "sigma"),
        transformer=str(tmp_path / "transformer"), train_data=str(assets / "toy"), resolution=32, train_batch_size=2,
        max_train_steps=1, rank=4, validation_steps=0, report_to="none",
    )  # fmt: skip
    train_lora(config)
    swapped = load_file(str(tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"))["proj_out.weight"]
    assert [type(pipe) for pipe in loaded] == [PixArtSigmaPipeline]
    torch.testing.assert_close(loaded[0].transformer.proj_out.weight, swapped)  # frozen: not an adapted layer

    loader = ImageTextLoader(
        load_streaming_dataset(str(assets / "toy")), resolution=32, batch_size=4, shuffle_buffer_size=0, max_epochs=1
    )
    base = loaded[0]
    extract_features(
        loader, tmp_path / "features", vae=base.vae, tokenizer=base.tokenizer, text_encoder=base.text_encoder
    )
    features = LoraTrainingConfig(
        output_dir=str(tmp_path / "features-run"), pretrained_model_name_or_path=str(assets / "sigma"),
        features=str(tmp_path / "features"), resolution=32, validation_steps=0, report_to="none",
    )  # fmt: skip
    with pytest.raises(ValueError, match="hold captions of 120 T5 tokens, but this run uses 300"):
        train_lora(features)  # extracted at α's 120 tokens; a Σ base trains with 300


def test_weighted_caption_columns_are_drawn_per_sample_and_epoch_and_resume(assets):
    dataset = load_streaming_dataset(str(assets / "toy"))

    def loader(**kwargs):
        return ImageTextLoader(
            dataset, resolution=32, batch_size=2, shuffle_buffer_size=4, seed=3,
            caption_column="text=0.5,sparse_text=0.5", **kwargs,
        )  # fmt: skip

    first = loader(max_epochs=2)
    texts = [text for batch in first for text in batch["text"]]
    records = [json.loads(line) for line in (assets / "toy" / "metadata.jsonl").read_text().splitlines()]
    dense, sparse = {r["text"] for r in records}, {r["sparse_text"] for r in records}
    assert all(t in dense or t in sparse for t in texts)
    assert any(t in dense for t in texts) and any(t in sparse for t in texts)
    assert texts == [text for batch in loader(max_epochs=2) for text in batch["text"]]  # deterministic
    assert texts[:8] != texts[8:]  # another epoch draws anew
    partial = loader(max_epochs=2)
    iterator = iter(partial)
    head = [text for _, batch in zip(range(3), iterator) for text in batch["text"]]
    state = partial.state_dict()
    resumed = loader(max_epochs=2)
    resumed.load_state_dict(state)
    assert head + [text for batch in resumed for text in batch["text"]] == texts

    assert caption_column_weights("dense=0.7,short=0.3") == {"dense": 0.7, "short": 0.3}
    assert caption_column_weights("text") == {"text": 1.0}
    for bad in ("dense=0,short=1", "dense=x", "a=1,a=2", "=1"):
        with pytest.raises(ValueError, match="Caption column"):
            caption_column_weights(bad)


def test_noise_offset_and_optimizers():
    latents = torch.randn(3, 4, 8, 8)

    def noised(offset: float):
        objective = IDDPMDiffusion(prediction_type="epsilon", learn_sigma=False, noise_offset=offset)
        return objective, objective.noise(latents, {}, torch.Generator().manual_seed(0))

    _, base = noised(0.0)
    generator = torch.Generator().manual_seed(0)
    timesteps = torch.randint(0, 1000, (3,), generator=generator)
    assert torch.equal(base.timesteps, timesteps)
    assert torch.equal(base.noise, torch.randn(latents.shape, generator=generator))  # offset 0: the plain noise
    objective, offset = noised(0.5)
    shift = offset.noise - base.noise
    assert torch.equal(offset.timesteps, base.timesteps) and shift.abs().min() > 0
    torch.testing.assert_close(shift, shift[..., :1, :1].expand_as(shift))  # one constant per sample and channel
    torch.testing.assert_close(offset.noisy, objective.add_noise(latents, offset.noise, offset.timesteps))
    with pytest.raises(ValueError, match="`noise_offset` must be >= 0"):
        IDDPMDiffusion(noise_offset=-0.1)

    param = torch.nn.Parameter(torch.ones(64, 64))
    for name, cls in (("adamw", "AdamW"), ("came", "CAME"), ("adamw8bit", "AdamW8bit")):
        config = LoraTrainingConfig(output_dir="x", optimizer=name)
        optimizer = make_optimizer(config, [param])
        assert type(optimizer).__name__ == cls
        if name != "adamw8bit":  # torchao's compiles its first step (slow); bitsandbytes' is not a CI dependency
            param.grad = torch.ones_like(param)
            optimizer.step()
    assert not torch.equal(param, torch.ones(64, 64))


def _no_captions(root: Path) -> Path:
    folder = root / "no-captions"
    folder.mkdir()
    for i in range(2):
        PIL.Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / f"{i}.png")
    return folder


def _empty_captions(root: Path) -> Path:
    folder = root / "empty-captions"
    folder.mkdir()
    lines = []
    for i in range(2):
        PIL.Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": " "}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--caption_column", "caption"], "no caption column"),
        (["--caption_column", "text=1,nope=1"], "Column 'nope' is not in the dataset"),
        (["--train_data", "NO_CAPTIONS"], "no caption column"),
        (["--train_data", "EMPTY_CAPTIONS"], "images without captions"),
        (["--target_modules", "to_nothing"], "matches no layer"),
        (["--target_modules", "attn1"], "adapters go on linear"),
        (["--rank", "0"], "--rank must be at least 1"),
        (["--rank", "-2"], "--rank must be at least 1"),
        (["--alpha", "0"], "--alpha must be positive"),
        (["--base_dtype", "bf16"], "needs --mixed_precision bf16"),
        (["--trigger_words", "sks"], "reads the trigger words ['sks'] as <unk>"),
        (["--noise_offset", "-1"], "--noise_offset must be >= 0"),
        (["--train_text_encoder_embeddings"], "needs tokens to train"),
        (["--train_embedding_tokens", "\u2581red"], "--train_embedding_tokens needs --train_text_encoder_embeddings"),
        (
            ["--train_text_encoder_embeddings", "--train_embedding_tokens", "red"],
            "no such token ('red': try ['\u2581red']",
        ),
        (["--train_text_encoder_embeddings", "--train_embedding_tokens", "</s>"], "special tokens"),
        (
            ["--train_text_encoder_embeddings", "--trigger_words", TRIGGER, "--embedding_learning_rate", "0"],
            "must be positive",
        ),
    ],
)
def test_bad_input_exits_with_2_before_the_first_step_and_writes_nothing(assets, tmp_path, capsys, extra, message):
    extra = [
        str(_no_captions(tmp_path)) if value == "NO_CAPTIONS" else
        str(_empty_captions(tmp_path)) if value == "EMPTY_CAPTIONS" else value
        for value in extra
    ]  # fmt: skip
    out = tmp_path / "run"
    assert load_script().main(args(assets, out, "--max_train_steps", "1", *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_an_adapter_type_peft_lacks_is_refused(assets, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:  # the command line's choices
        load_script().main(args(assets, out, "--adapter", "ia3"))
    assert exit_info.value.code == 2 and "invalid choice: 'ia3'" in capsys.readouterr().err
    config = LoraTrainingConfig(
        output_dir=str(out), pretrained_model_name_or_path=str(assets / "base"), train_data=str(assets / "toy"),
        adapter="ia3",
    )  # fmt: skip
    with pytest.raises(ValueError, match="--adapter 'ia3' is not one of lora, dora, loha, lokr"):
        train_lora(config)
    assert not out.exists()


#: The pivotal-tuning tests' trigger word: one every dense toy caption uses (its row gets gradients).
CAPTION_WORD = "a"


def _embedding_run(assets, out, *extra):
    """args() of a pivotal-tuning run on the dense captions: the LoRA and the row of CAPTION_WORD, the row at 10x
    the learning rate."""
    pivotal = ["--train_text_encoder_embeddings", "--trigger_words", CAPTION_WORD, "--embedding_learning_rate", "0.1"]
    return args(assets, out, "--caption_column", "text", *pivotal, *extra)


def test_pivotal_tuning_resumes_exactly_and_reloads_with_load_lora_weights(assets, tmp_path):
    script = load_script()
    ema = ["--use_ema", "--ema_decay", "0.5"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert script.main(_embedding_run(assets, straight, *ema, "--max_train_steps", "3")) == 0
    assert script.main(_embedding_run(assets, resumed, *ema, "--max_train_steps", "2")) == 0
    again = [*ema, "--max_train_steps", "3", "--resume_from_checkpoint", "latest"]
    assert script.main(_embedding_run(assets, resumed, *again)) == 0
    for name in ("pytorch_lora_weights.safetensors", TEXT_ENCODER_EMBEDDINGS_NAME):
        expected, got = load_file(straight / "lora" / name), load_file(resumed / "lora" / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(got[key], value) for key, value in expected.items()), name
    checkpoint = load_file(straight / "checkpoints" / "checkpoint-3" / "model.safetensors")
    assert "embeddings.delta" in checkpoint and all("lora_" in k for k in checkpoint if k != "embeddings.delta")
    base = pipeline_class(assets / "base").from_pretrained(assets / "base")
    (index,) = base.tokenizer(CAPTION_WORD, add_special_tokens=False).input_ids
    assert list(load_file(straight / "lora" / TEXT_ENCODER_EMBEDDINGS_NAME)) == [
        base.tokenizer.convert_ids_to_tokens(index)
    ]

    # Without EMA the result is the last step's model: the base with the checkpoint's adapter and rows.
    out = tmp_path / "plain"
    assert script.main(_embedding_run(assets, out, "--max_train_steps", "2")) == 0
    reference = trained_pipeline(assets, out, "target_modules", ["attention"], prefix="transformer.")
    state = load_file(sorted((out / "checkpoints").iterdir())[-1] / "model.safetensors")
    rows = TokenEmbeddings(reference.text_encoder, {CAPTION_WORD: index}, scale=10.0)
    rows.load_state_dict({"delta": state["embeddings.delta"]})
    prompts = ("a red circle", "a blue square left of a red triangle")
    untouched = images(reference, prompts)  # the trained rows are not in T5 yet: another model
    with rows.written_into(reference.text_encoder):
        reference_images = images(reference, prompts)
    reloaded = pipeline_class(assets / "base").from_pretrained(assets / "base")
    reloaded.load_lora_weights(out / "lora")
    np.testing.assert_allclose(images(reloaded, prompts), reference_images, rtol=0, atol=1e-5)
    assert np.abs(untouched - reference_images).max() > 1e-4  # the rows changed the model
    # Every other T5 weight, every other row included, is bit-identical; unloading puts the trigger row back.
    weight, original = (
        reloaded.text_encoder.get_input_embeddings().weight,
        base.text_encoder.get_input_embeddings().weight,
    )
    assert (weight != original).any(dim=1).nonzero().flatten().tolist() == [index]
    original_state = base.text_encoder.state_dict()
    assert all(
        torch.equal(v, original_state[k])
        for k, v in reloaded.text_encoder.state_dict().items()
        if "shared" not in k and "embed_tokens" not in k
    )
    reloaded.unload_lora_weights()
    assert torch.equal(weight, original)


def test_text_encoder_embeddings_that_do_not_fit_are_refused_at_load(assets, tmp_path):
    from safetensors.torch import save_file

    pipe = pipeline_class(assets / "base").from_pretrained(assets / "base")
    before = pipe.text_encoder.get_input_embeddings().weight.detach().clone()
    width = before.shape[1]
    save_file({"\u2581nothing_like_it": torch.zeros(width)}, tmp_path / "unknown.safetensors")
    with pytest.raises(ValueError, match="tokenizer and text encoder lack"):
        load_text_encoder_embeddings(pipe, tmp_path / "unknown.safetensors")
    token = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer(TRIGGER, add_special_tokens=False).input_ids)[0]
    save_file({token: torch.zeros(width + 1)}, tmp_path / "wide.safetensors")
    with pytest.raises(ValueError, match="another text encoder"):
        load_text_encoder_embeddings(pipe, tmp_path / "wide.safetensors")
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, before)
    with pytest.raises(ValueError, match="no such token"):
        embedding_token_ids(pipe.tokenizer, [], ["nothing_like_it"])


def test_text_encoder_embeddings_refuse_precomputed_features(assets, tmp_path):
    (tmp_path / "features").mkdir()
    config = LoraTrainingConfig(
        output_dir=str(tmp_path / "run"), pretrained_model_name_or_path=str(assets / "base"),
        features=str(tmp_path / "features"), train_text_encoder_embeddings=True, trigger_words=[TRIGGER],
    )  # fmt: skip
    with pytest.raises(ValueError, match="--features holds precomputed T5 embeddings"):
        train_lora(config)
    assert not (tmp_path / "run").exists()

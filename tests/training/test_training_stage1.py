"""Stage 1 (pixel dependency): a tiny class-conditional DiT on the toy world's labels, re-parameterized for stage 2."""

import datasets
import pytest
import torch
import yaml
from diffusers import AutoencoderKL, DiTPipeline, DiTTransformer2DModel

from diffusers_pixart.models.pixart_transformer import PixArtTransformer2DModel
from diffusers_pixart.toy.world import class_names
from diffusers_pixart.training.conditioning import ClassConditioning
from diffusers_pixart.training.config import build_parser, parse_config
from diffusers_pixart.training.diffusion import IDDPMDiffusion
from diffusers_pixart.training.stages import PIXART_TRANSFORMER_DIR, Stage1Config, build_dit, main_stage1

NUM_CLASSES = len(class_names())  # 40


def write_config(path, training_assets, out, **overrides):
    values = {
        "pretrained_model_name_or_path": str(training_assets / "base"),
        "train_data": str(training_assets / "toy"),
        "output_dir": str(out),
        "resolution": 32,
        "num_classes": NUM_CLASSES,
        "dit_layers": 2,
        "dit_hidden": 24,
        "dit_heads": 2,
        "train_batch_size": 8,
        "max_train_steps": 3,
        "learning_rate": 1e-3,
        "lr_warmup_steps": 0,
        "validation_steps": 0,
        "report_to": "none",
        "shuffle_buffer_size": 16,
    }
    values.update(overrides)
    path.write_text(yaml.safe_dump(values))
    return path


def record_labels(monkeypatch):
    """Record each step's loss, batch labels and the class indices the DiT's label tables look up in that step."""
    seen = {"losses": [], "labels": [], "lookups": []}
    encode, loss = ClassConditioning.encode, IDDPMDiffusion.loss
    lookups = []

    def recording_encode(self, batch, device):
        if not seen["labels"]:  # first step: hook the label tables of the model being trained
            for module in self.pipeline.transformer.modules():
                if isinstance(module, torch.nn.Embedding):
                    module.register_forward_pre_hook(lambda m, args: lookups.append(args[0].clone()))
        seen["labels"].append(batch["label"].clone())
        lookups.clear()
        return encode(self, batch, device)

    def recording_loss(self, output, noised):  # after the model's forward
        losses = loss(self, output, noised)
        seen["lookups"].append(list(lookups))
        seen["losses"].append(losses["loss"].mean().item())
        return losses

    monkeypatch.setattr(ClassConditioning, "encode", recording_encode)
    monkeypatch.setattr(IDDPMDiffusion, "loss", recording_loss)
    return seen


def test_stage1_trains_the_dit_and_saves_a_reparameterized_transformer(training_assets, tmp_path, monkeypatch):
    seen = record_labels(monkeypatch)
    out = tmp_path / "out"
    config = write_config(tmp_path / "run.yaml", training_assets, out, caption_dropout=0.0, validation_steps=3)
    assert main_stage1(["--config", str(config), "--validation_inference_steps", "2"]) == 0

    assert len(seen["losses"]) == 3 and all(torch.isfinite(torch.tensor(seen["losses"])))
    # The engine's class dropout is off and the DiT's own label dropout is switched off: every label table looks up
    # exactly the batch's labels (2 blocks + the output layer's, 3 steps, 8 labels: random dropout would show).
    for labels, lookups in zip(seen["labels"], seen["lookups"], strict=True):
        assert 0 <= labels.min() and labels.max() < NUM_CLASSES
        assert len(lookups) == 3 and all(torch.equal(lookup, labels) for lookup in lookups)

    # The DiT trained: its weights moved away from the initial (seeded) ones.
    dit = DiTTransformer2DModel.from_pretrained(out / "pipeline" / "transformer")
    assert dit.config.num_embeds_ada_norm == NUM_CLASSES and dit.config.sample_size == 4
    trained = dit.state_dict()
    initial = build_dit(parse_config(Stage1Config, ["--config", str(config)]), AutoencoderKL.from_pretrained(
        training_assets / "base", subfolder="vae")).state_dict()  # fmt: skip
    changed = [k for k in initial if not torch.equal(initial[k], trained[k])]
    assert "proj_out_2.weight" in changed and "transformer_blocks.0.norm1.linear.weight" in changed
    assert not initial["proj_out_2.weight"].any()  # adaLN-Zero: the output layer starts at zero
    assert (out / "validation/step-0000003.png").is_file()
    pipe = DiTPipeline.from_pretrained(out / "pipeline")
    image = pipe(class_labels=[3], num_inference_steps=2, guidance_scale=1.0, output_type="np").images
    assert image.shape == (1, 32, 32, 3)

    # The re-parameterized PixArt transformer: text-conditioned with the base pipeline's caption width, built from the
    # saved DiT (its patch embedding and feed-forward weights are the DiT's), usable as stage 2's --transformer.
    pixart = PixArtTransformer2DModel.from_pretrained(out / PIXART_TRANSFORMER_DIR)
    assert pixart.config.caption_channels == 32 and pixart.config.num_layers == 2 and pixart.out_channels == 8
    pixart_state = pixart.state_dict()
    for key in ("pos_embed.proj.weight", "transformer_blocks.1.ff.net.2.weight"):
        torch.testing.assert_close(pixart_state[key], trained[key], rtol=0, atol=0)
    caption = torch.randn(1, 5, 32)
    sample = pixart(torch.randn(1, 4, 4, 4), encoder_hidden_states=caption, timestep=torch.tensor([500])).sample
    assert sample.shape == (1, 8, 4, 4) and torch.isfinite(sample).all()


def test_class_dropout_gives_the_null_class(training_assets, tmp_path, monkeypatch):
    seen = record_labels(monkeypatch)
    config = write_config(
        tmp_path / "run.yaml", training_assets, tmp_path / "out", caption_dropout=1.0, max_train_steps=1
    )
    assert main_stage1(["--config", str(config), "--no-reparameterize"]) == 0
    (lookups,) = seen["lookups"]
    assert len(lookups) == 3 and all(torch.equal(lookup, torch.full_like(lookup, NUM_CLASSES)) for lookup in lookups)
    assert not (tmp_path / "out" / PIXART_TRANSFORMER_DIR).exists()


def test_every_option_has_help_and_the_config_file_mirrors_the_flags(tmp_path, capsys):
    parser = build_parser(Stage1Config, "stage 1")
    assert all(action.help for action in parser._actions)
    with pytest.raises(SystemExit) as exit_info:
        main_stage1(["--help"])
    assert exit_info.value.code == 0
    assert "--num_classes" in capsys.readouterr().out


def test_stage1_rejects_bad_input_before_training(training_assets, tmp_path, capsys):
    parquet = tmp_path / "named.parquet"
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list("abcdef"))})
    datasets.Dataset.from_dict({"image": [], "label": []}, features=features).to_parquet(str(parquet))
    dit_json = tmp_path / "dit.json"
    dit_json.write_text('{"num_attention_heads": 2, "attention_head_dim": 12, "no_such_argument": 1}')
    small_dit = tmp_path / "small_dit"
    DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8, num_layers=1, sample_size=4,
        num_embeds_ada_norm=10,
    ).save_pretrained(small_dit)  # fmt: skip
    cases = [
        ({"label_column": "class"}, "Column 'class' is not in the dataset"),
        ({"num_classes": 5}, "do not fit the DiT's 5 classes"),
        ({"train_data": str(parquet), "num_classes": 5}, "has 6 classes but --num_classes is 5"),
        ({"validation_steps": 1, "validation_guidance_scale": 4.0}, "null class 1000"),
        ({"validation_class_labels": [40]}, "outside [0, 40)"),
        ({"pretrained_dit": str(small_dit)}, "--num_classes: DiT 10 vs 40"),
        ({"dit_hidden": 25}, "multiple of --dit_heads"),
        ({"dit_config": str(dit_json)}, "no_such_argument"),
        ({"resolution": 36}, "multiple of the VAE factor"),
        ({"features": str(tmp_path)}, "exactly one of --train_data"),
    ]
    for overrides, message in cases:
        config = write_config(tmp_path / "bad.yaml", training_assets, tmp_path / "out", **overrides)
        assert main_stage1(["--config", str(config)]) == 2, overrides
        assert message in capsys.readouterr().err, overrides
        assert not (tmp_path / "out/checkpoints").exists()

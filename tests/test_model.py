"""Q-Face behaviour: shapes and label order per task, task subsets, attention maps, gradients, save/load."""

from __future__ import annotations

import pytest
import safetensors.torch
import torch
from conftest import TINY_CONFIG

from qface import tasks
from qface.model.qface import QFace, QFaceConfig


def images(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_every_task_has_its_shape_and_label_order(tiny_model):
    out = tiny_model(images())
    assert out.raw["expression"].shape == (2, 8, 1)
    assert out.raw["action_units"].shape == (2, len(tasks.ACTION_UNITS), 1)
    assert out.raw["attributes"].shape == (2, 40, 1)
    assert out.raw["age"].shape == (2, 1, 101)
    assert out.raw["pose"].shape == (2, 3, 1)
    assert out.raw["landmarks"].shape == (2, 68, 2)
    assert out.embedding.shape == (2, tiny_model.backbone.embedding_dim)
    assert tasks.TASKS["expression"].labels == (
        "neutral",
        "happy",
        "sad",
        "surprise",
        "fear",
        "disgust",
        "anger",
        "contempt",
    )
    assert tasks.TASKS["action_units"].labels[:4] == ("AU01", "AU02", "AU04", "AU05")
    assert tasks.TASKS["attributes"].labels[0] == "5_o_Clock_Shadow"
    assert tasks.TASKS["attributes"].labels[20] == "Male"
    assert tasks.TASKS["attributes"].labels[39] == "Young"
    assert tasks.TASKS["pose"].labels == ("pitch", "yaw", "roll")
    assert len(tasks.TASKS["landmarks"].labels) == 68


def test_decoded_outputs_are_in_their_units(tiny_model):
    decoded = tiny_model.predict(images())
    assert torch.allclose(decoded["expression"]["probs"].sum(-1), torch.ones(2))
    assert ((decoded["attributes"]["probs"] > 0) & (decoded["attributes"]["probs"] < 1)).all()
    age = decoded["age"]
    assert ((age["years"] >= 0) & (age["years"] <= 100)).all()
    assert torch.allclose(age["distribution"].sum(-1), torch.ones(2))
    assert decoded["landmarks"]["points"].shape == (2, 68, 2)
    assert torch.allclose(decoded["identity"]["embedding"].norm(dim=-1), torch.ones(2))


def test_a_task_subset_runs_only_its_queries_and_matches_the_full_run(tiny_model):
    x = images()
    full = tiny_model(x)
    subset = tiny_model(x, tasks=["pose", "expression"])
    assert set(subset.raw) == {"expression", "pose"}
    assert subset.attention[0].shape[1] == 8 + 3  # only 11 queries ran
    for name in subset.raw:
        torch.testing.assert_close(subset.raw[name], full.raw[name], rtol=0, atol=1e-6)


def test_unknown_tasks_are_refused(tiny_model):
    try:
        tiny_model(images(), tasks=["expresion"])
    except ValueError as error:
        assert "expresion" in str(error)
    else:
        raise AssertionError("a misspelt task must not run silently")


def test_attention_maps_are_distributions_over_the_fused_tokens(tiny_model):
    out = tiny_model(images())
    assert len(out.attention) == TINY_CONFIG["decoder_layers"]
    total_queries = sum(t.num_queries for t in tasks.TASKS.values())
    for layer in out.attention:
        assert layer.shape == (2, total_queries, TINY_CONFIG["grid"] ** 2)
        assert (layer >= 0).all()
        torch.testing.assert_close(layer.sum(-1), torch.ones(2, total_queries))
    rows = out.query_slices["attributes"]
    assert rows.stop - rows.start == 40


def test_gradients_reach_queries_fusion_and_an_unfrozen_backbone(tiny_model):
    tiny_model.train()
    out = tiny_model(images())
    loss = sum(raw.square().mean() for raw in out.raw.values())
    loss.backward()
    assert tiny_model.decoder.queries.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.fusion.projections.parameters())
    assert tiny_model.backbone.patch_embed.weight.grad.abs().sum() > 0


def test_a_frozen_backbone_gets_no_gradient(tiny_model):
    tiny_model.backbone.requires_grad_(False)
    out = tiny_model(images())
    sum(raw.square().mean() for raw in out.raw.values()).backward()
    assert all(p.grad is None for p in tiny_model.backbone.parameters())
    assert tiny_model.decoder.queries.grad is not None


def test_masked_losses_train_only_labelled_entries():
    raw = torch.randn(2, 8, 1, requires_grad=True)
    mask = torch.tensor([[True] * 7 + [False], [False] * 8])  # sample 0: 7 classes (no contempt), 1: unlabelled
    loss = tasks.expression_loss(raw, torch.tensor([1, 0]), mask)
    loss.backward()
    assert raw.grad[1].abs().sum() == 0 and raw.grad[0, 7].abs().sum() == 0
    expected = torch.nn.functional.cross_entropy(raw[0, :7, 0].detach()[None], torch.tensor([1]))
    torch.testing.assert_close(loss.detach(), expected)


def test_the_same_seed_gives_the_same_model_and_outputs():
    def build() -> QFace:
        torch.manual_seed(7)
        return QFace(QFaceConfig(**TINY_CONFIG)).eval()

    a, b = build(), build()
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert torch.equal(a(images()).raw["age"], b(images()).raw["age"])


def test_save_then_load_is_bit_exact(tiny_model, tmp_path):
    tiny_model.save(tmp_path / "m")
    loaded = QFace.load(tmp_path / "m")
    assert loaded.config == tiny_model.config
    for (name, p), q in zip(tiny_model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name
    x = images()
    for name, raw in tiny_model(x).raw.items():
        assert torch.equal(raw, loaded(x).raw[name]), name


def test_the_one_shared_query_ablation_keeps_the_output_contract():
    torch.manual_seed(0)
    model = QFace(QFaceConfig(**{**TINY_CONFIG, "shared_query": True})).eval()
    out = model(images())
    assert out.raw["attributes"].shape == (2, 40, 1)
    assert out.attention[0].shape[1] == 6  # one query for each of the six query-driven tasks


def test_the_last_stage_only_ablation_fuses_one_stage():
    model = QFace(QFaceConfig(**{**TINY_CONFIG, "last_stage_only": True}))
    assert len(model.fusion.projections) == 1
    assert model(images()).raw["pose"].shape == (2, 3, 1)


def test_a_model_on_an_mae_style_vit_saves_and_loads_with_its_style(tmp_path):
    from qface.model.backbones.vit import ViT, ViTConfig

    torch.manual_seed(0)
    backbone = ViT(ViTConfig(size="vit_ti16", style="mae", input_size=32, taps=(1, 3), proj_dim=0))
    model = QFace(QFaceConfig(**{**TINY_CONFIG, "backbone": {}}), backbone=backbone).eval()
    assert model.config.backbone["style"] == "mae"
    model.save(tmp_path / "mae")
    loaded = QFace.load(tmp_path / "mae")
    assert torch.equal(loaded(images()).raw["age"], model(images()).raw["age"])


def test_only_the_backbone_tensors_that_training_changed_are_stored_beside_the_heads(tmp_path):
    torch.manual_seed(0)
    model = QFace(QFaceConfig(dim=32, grid=3, decoder_layers=1, heads=4, ffn_dim=64)).eval()  # dlib backbone
    model.save(tmp_path / "small", pretrained_backbone=True)
    assert (tmp_path / "small" / "model.safetensors").stat().st_size < 2 * 2**20  # dlib's 22 MB stay in its package
    loaded = QFace.load(tmp_path / "small")
    x = torch.rand(1, 3, 150, 150)
    assert torch.equal(loaded(x).raw["age"], model(x).raw["age"])
    with torch.no_grad():
        model.backbone.levels[4][0].conv2.weight.mul_(1.01)  # as if fine-tuned
    model.save(tmp_path / "tuned", pretrained_backbone=True)
    stored = safetensors.torch.load_file(tmp_path / "tuned" / "model.safetensors")
    assert [k for k in stored if k.startswith("backbone.")] == ["backbone.levels.4.0.conv2.weight"]
    assert torch.equal(QFace.load(tmp_path / "tuned")(x).raw["age"], model(x).raw["age"])


def test_a_tuned_backbone_keeps_dlibs_identity_descriptor_in_an_untouched_copy():
    from qface.model.backbones import build_backbone

    plain, tuned = build_backbone("dlib_resnet"), build_backbone("dlib_resnet", tuned_from=3)
    with torch.no_grad():
        for parameter in tuned.levels[3:].parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    x = torch.rand(2, 3, 150, 150)
    assert torch.equal(tuned(x).embedding, plain(x).embedding)
    assert not torch.equal(tuned(x).stages[-1], plain(x).stages[-1])


def test_self_attention_task_by_task_equals_one_masked_attention_over_all_queries(tiny_model):
    """The decoder runs self-attention per task block (cheaper); it must be the block-diagonal masked attention."""
    layer = tiny_model.decoder.layers[0]
    sizes = list(tiny_model.queries_per_task.values())
    queries = torch.randn(3, sum(sizes), 32, generator=torch.Generator().manual_seed(1))
    task = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    x = layer.norms[0](queries)
    masked = queries + layer.self_attn(x, x, x, attn_mask=task[:, None] != task[None, :], need_weights=False)[0]
    torch.testing.assert_close(layer.attend_within_tasks(queries, sizes), masked, rtol=0, atol=1e-5)


def test_the_folded_inference_form_of_dlibs_network_computes_the_same_outputs_and_refuses_to_save(tmp_path):
    torch.manual_seed(0)
    config = QFaceConfig(backbone={"name": "dlib_resnet", "tuned_from": 3}, dim=32, grid=3, decoder_layers=1, heads=4)
    model = QFace(config).eval()
    with torch.no_grad():  # affines away from dlib's values, as after fine-tuning
        for name, parameter in model.backbone.named_parameters():
            if "affine" in name:
                parameter.mul_(1 + 0.1 * torch.rand_like(parameter))
    x = torch.rand(2, 3, 150, 150)
    with torch.inference_mode():
        plain = model(x)
        folded = model.fold_for_inference()(x)
    assert not any("affine" in name for name, _ in model.named_parameters())
    for name in plain.raw:
        torch.testing.assert_close(folded.raw[name], plain.raw[name], rtol=0, atol=1e-4)
    torch.testing.assert_close(folded.embedding, plain.embedding, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="folded"):
        model.save(tmp_path / "folded")

"""The bundled default model: present, small, loadable without pickle, and its identity path is still dlib's."""

from __future__ import annotations

import json

import torch

from qface.analyzer import DEFAULT_WEIGHTS, load_model
from qface.model.backbones.dlib_resnet import DlibResNet


def test_the_default_weights_are_bundled_small_and_described():
    assert (DEFAULT_WEIGHTS / "model.safetensors").stat().st_size < 50 * 2**20
    config = json.loads((DEFAULT_WEIGHTS / "config.json").read_text())
    assert config["version"] != "untrained" and config["backbone"]["name"] == "dlib_resnet"
    card = (DEFAULT_WEIGHTS / "MODEL_CARD.md").read_text()
    for section in ("Training data", "Licence", "Validation", "Bias", "Ablation", "Known failure"):
        assert section in card, section


def test_the_default_identity_path_is_dlibs_network_bit_for_bit_so_verification_is_dlibs():
    """The tuned levels changed; everything the identity descriptor passes through did not."""
    model = load_model()
    backbone = model.backbone
    reference = DlibResNet.from_dlib().state_dict()
    tuned = [f"levels.{i}." for i in range(backbone.tuned_from, len(backbone.levels))]
    for name, value in backbone.state_dict().items():
        if name.startswith("identity_levels."):
            position, rest = name.removeprefix("identity_levels.").split(".", 1)
            name = f"levels.{int(position) + backbone.tuned_from}.{rest}"
        elif name.startswith(tuple(tuned)):
            continue
        assert torch.equal(value, reference[name]), name
    x = torch.rand(2, 3, 150, 150)
    assert torch.equal(backbone(x).embedding, DlibResNet.from_dlib()(x).embedding)

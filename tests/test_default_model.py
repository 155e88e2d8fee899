"""The bundled default model: present, small, loadable without pickle, and its backbone is still dlib's."""

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


def test_the_default_backbone_is_dlibs_network_bit_for_bit_so_identity_verification_is_dlibs():
    model = load_model()
    reference = DlibResNet.from_dlib().state_dict()
    for name, value in model.backbone.state_dict().items():
        assert torch.equal(value, reference[name]), name

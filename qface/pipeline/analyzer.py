"""FaceAnalyzer: image → faces → aligned chips → one batched Q-Face pass → Face results."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from qface.model.qface import QFace, QFaceConfig
from qface.pipeline.align import CHIP_SIZE, AlignedFace, align
from qface.pipeline.detect import Detection, DlibHogDetector
from qface.pipeline.results import Face, rounded
from qface.tasks import TASKS

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
ImageInput = str | Path | bytes | Image.Image | np.ndarray


def load_model(weights: str | Path | None = None, device: str = "cpu") -> QFace:
    """The given weights folder, else the bundled default; with neither, an untrained model on the
    pretrained dlib backbone (its outputs are then labelled `@untrained`)."""
    folder = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if (folder / "config.json").exists():
        return QFace.load(folder, device)
    if weights is not None:
        raise FileNotFoundError(f"no config.json in {folder}")
    torch.manual_seed(0)
    return QFace(QFaceConfig()).to(device).eval()


def load_rgb(image: ImageInput) -> np.ndarray:
    """Any supported input as an RGB uint8 array; EXIF orientation honoured for encoded images."""
    if isinstance(image, np.ndarray):
        return np.ascontiguousarray(image[..., :3] if image.ndim == 3 else np.stack([image] * 3, -1))
    if isinstance(image, bytes):
        image = Image.open(io.BytesIO(image))
    elif isinstance(image, str | Path):
        image = Image.open(image)
    return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def chips_to_tensor(chips: list[np.ndarray], size: int) -> torch.Tensor:
    batch = torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).float() / 255.0
    if size != batch.shape[-1]:
        batch = torch.nn.functional.interpolate(batch, size=(size, size), mode="bilinear", antialias=True)
    return batch


class FaceAnalyzer:
    def __init__(
        self,
        weights: str | Path | None = None,
        tasks: list[str] | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ):
        self.model = load_model(weights, device)
        self.tasks = tasks
        self.device, self.batch_size = device, batch_size
        self.detector = DlibHogDetector()

    def analyze(self, image: ImageInput) -> list[Face]:
        rgb = load_rgb(image)
        detections = self.detector(rgb)
        aligned = [align(rgb, d.shape) for d in detections]
        faces = []
        for start in range(0, len(aligned), self.batch_size):
            part = aligned[start : start + self.batch_size]
            batch = chips_to_tensor([a.chip for a in part], self.model.input_size).to(self.device)
            outputs = self.model.predict(batch, self.tasks)
            faces += [
                self._face(detections[start + i], a, {k: {n: v[i] for n, v in o.items()} for k, o in outputs.items()})
                for i, a in enumerate(part)
            ]
        return faces

    def _face(self, detection: Detection, aligned: AlignedFace, out: dict[str, dict[str, torch.Tensor]]) -> Face:
        face = Face(rounded(detection.box, 2), round(detection.score, 4), self.model.model_id)
        if "expression" in out:
            probs = out["expression"]["probs"].tolist()
            face.expression = dict(zip(TASKS["expression"].labels, rounded(probs)))
            face.top_expression = TASKS["expression"].labels[int(np.argmax(probs))]
        for name in ("action_units", "attributes"):
            if name in out:
                setattr(face, name, dict(zip(TASKS[name].labels, rounded(out[name]["probs"].numpy()))))
        if "age" in out:
            face.age = round(float(out["age"]["years"]), 2)
        if "pose" in out:
            face.pose = dict(zip(TASKS["pose"].labels, rounded(out["pose"]["degrees"].numpy(), 2)))
        if "landmarks" in out:
            chip_points = out["landmarks"]["points"].numpy() * CHIP_SIZE
            face.landmarks = rounded(aligned.to_image(chip_points), 2)
        if "identity" in out:
            face.embedding = rounded(out["identity"]["embedding"].numpy(), 6)
        return face

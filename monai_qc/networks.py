"""QC regression networks (QC ResNet / QC U-Net, 2D and 3D) built from MONAI blocks.

A QC network reads an image channel plus the one-hot segmentation (1 + K channels) and
predicts how good the segmentation is:

- 2D (one slice, input (B, 1+K, 128, 128)): (B, 2K) with ``[:, :K]`` the DSC per class in
  [0, 1] (sigmoid) and ``[:, K:]`` the MVSF per class in [-2, 2] (2 * tanh).
- 3D-direct (whole stack, input (B, 1+K, 128, 128, 8)): (B, K) DSC per class in [0, 1].
- 2D with context (``context_resnet2d``): as 2D, but the input also holds the neighbouring
  slices (images first, then one-hot segmentations, slice -c..+c; a slice beyond the stack is
  all zeros; see :func:`monai_qc.transforms.with_context_slices`). ``QCNet.context_slices`` is c.
- 2D with an expert-label map (``expert_map_resnet2d``): as 2D, but a decoder also predicts the
  expert labels, trained on them, and their overlap with the segmentation feeds the scores.

Every network is a backbone producing raw values wrapped by :class:`QCNet`, which applies the
bounded output activations. Select one by name with :func:`build_qc_network`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import DynUNet, ResNet
from torch import nn

__all__ = [
    "QC_NETWORKS",
    "ExpertMapResNet",
    "PooledRegressionHead",
    "QCNet",
    "UNetRegressor",
    "build_qc_network",
    "count_parameters",
    "qc_context_resnet2d",
    "qc_expert_map_resnet2d",
    "qc_resnet2d",
    "qc_resnet3d",
    "qc_unet2d",
    "qc_unet3d",
    "soft_overlap",
    "symmetric_views",
]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


TEST_TIME_VIEWS = (1, 2, 4, 8)
"""Numbers of mirrored / turned copies a 2D QC network can average over."""


def _check_views(n: int) -> None:
    if n not in TEST_TIME_VIEWS:
        raise ValueError(f"test-time views must be 1, 2, 4 or 8, got {n}")


def symmetric_views(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The first ``n`` (1, 2, 4 or 8) of a (B, C, H, W) batch's mirrored / quarter-turned copies.

    Order: identity, left-right mirror, quarter turn, three-quarter turn, half turn, and the
    mirror turned by a quarter, a half and three quarters.
    """
    _check_views(n)
    mirror = x.flip(-1)
    views = [
        x,
        mirror,
        torch.rot90(x, 1, (-2, -1)),
        torch.rot90(x, 3, (-2, -1)),
        torch.rot90(x, 2, (-2, -1)),
        *(torch.rot90(mirror, q, (-2, -1)) for q in (1, 2, 3)),
    ]
    return views[:n]


class QCNet(nn.Module):
    """Bound the raw outputs of a backbone to DSC / MVSF ranges.

    Args:
        backbone: module mapping the input to (B, 2K) raw values (``predict_mvsf``) or (B, K).
        n_classes: K, number of classes including background.
        predict_mvsf: True for the 2D networks (DSC and MVSF), False for 3D-direct (DSC only).
        test_time_views: in eval mode, average the outputs over this many mirrored / turned
            copies of a 2D input (1, 2, 4 or 8; see :func:`symmetric_views`): a mirrored or
            turned slice has the same true scores.
        context_slices: neighbouring slices on each side held by a 2D input (0: the slice only).
    """

    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int,
        predict_mvsf: bool = True,
        test_time_views: int = 1,
        context_slices: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.n_classes = n_classes
        self.predict_mvsf = predict_mvsf
        self.test_time_views = test_time_views
        self.context_slices = context_slices

    @property
    def n_outputs(self) -> int:
        """Number of output values per sample (2K or K)."""
        return 2 * self.n_classes if self.predict_mvsf else self.n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.test_time_views > 1 and not self.training:
            views = symmetric_views(x, self.test_time_views)
            return self._bounded(torch.cat(views)).unflatten(0, (len(views), len(x))).mean(0)
        return self._bounded(x)

    @property
    def maps_expert_labels(self) -> bool:
        """Whether the backbone also maps the expert labels (:class:`ExpertMapResNet`)."""
        return hasattr(self.backbone, "forward_with_map")

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounded scores and the expert-label logits (B, K, H, W) of one view (training)."""
        if not self.maps_expert_labels:
            raise TypeError(f"{type(self.backbone).__name__} does not map expert labels")
        raw, logits = self.backbone.forward_with_map(x)
        return self._bound(raw), logits

    def _bounded(self, x: torch.Tensor) -> torch.Tensor:
        return self._bound(self.backbone(x))

    def _bound(self, raw: torch.Tensor) -> torch.Tensor:
        if raw.ndim != 2 or raw.shape[1] != self.n_outputs:
            raise ValueError(
                f"backbone output shape {tuple(raw.shape)} != (batch, {self.n_outputs})"
            )
        k = self.n_classes
        dsc = torch.sigmoid(raw[:, :k])
        if not self.predict_mvsf:
            return dsc
        return torch.cat([dsc, 2.0 * torch.tanh(raw[:, k:])], dim=1)


class PooledRegressionHead(nn.Module):
    """Global average + max pooling of a feature map, then two linear layers.

    Args:
        spatial_dims: 2 or 3.
        in_features: channels of the feature map.
        out_features: number of regressed values.
        hidden: width of the hidden layer.
    """

    def __init__(self, spatial_dims: int, in_features: int, out_features: int, hidden: int = 128):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.fc = nn.Sequential(
            nn.Linear(2 * in_features, hidden),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, 2 + self.spatial_dims))
        pooled = torch.cat([x.mean(dim=dims), x.amax(dim=dims)], dim=1)
        return self.fc(pooled)


class UNetRegressor(nn.Module):
    """U-Net encoder-decoder (MONAI DynUNet) whose output maps feed a pooled regression head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1 + K).
        out_features: number of regressed values.
        filters: feature maps per resolution level.
        strides: stride per level (first is 1); per-axis sequences allowed in 3D.
        map_channels: channels of the U-Net's full-resolution output.
        hidden: width of the head's hidden layer.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_features: int,
        filters: Sequence[int],
        strides: Sequence[int | Sequence[int]],
        map_channels: int = 32,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        if len(filters) != len(strides):
            raise ValueError(f"filters ({len(filters)}) and strides ({len(strides)}) differ")
        self.unet = DynUNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=map_channels,
            kernel_size=[3] * len(filters),
            strides=list(strides),
            upsample_kernel_size=list(strides[1:]),
            filters=list(filters),
            norm_name="instance",
        )
        self.head = PooledRegressionHead(spatial_dims, map_channels, out_features, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.unet(x))


def soft_overlap(probabilities: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Per class, soft DSC and MVSF of a probability map against a one-hot map, and both areas.

    Args:
        probabilities: (B, K, H, W), e.g. a softmax.
        onehot: (B, K, H, W) one-hot segmentation.

    Returns:
        (B, 4K): soft DSC, soft MVSF (map minus segmentation), then both areas as fractions of
        the slice times 10 (a scale near the other features). The +1 keeps empty classes finite.
    """
    inter = (probabilities * onehot).sum((2, 3))
    mapped, segmented = probabilities.sum((2, 3)), onehot.sum((2, 3))
    total = mapped + segmented + 1
    pixels = onehot.shape[-2] * onehot.shape[-1]
    return torch.cat(
        [2 * inter / total, 2 * (mapped - segmented) / total,
         10 * mapped / pixels, 10 * segmented / pixels],
        dim=1,
    )  # fmt: skip


class ExpertMapResNet(nn.Module):
    """QC ResNet 2D that also maps where an expert would draw each class.

    A feature pyramid on the four ResNet stages predicts the expert labels (K logits at input
    size). Their :func:`soft_overlap` with the input segmentation joins the pooled last-stage
    features in the regression head, and training fits the map to the expert labels too (see
    :func:`monai_qc.training.fit`): the encoder learns the boundaries the scores depend on.

    Args:
        n_classes: K, classes including background; the input is (B, 1+K, H, W).
        widths, layers: of the ResNet stages (as :func:`qc_resnet2d`).
        pyramid: channels of the feature pyramid.
        hidden: width of the regression head's hidden layer.
    """

    def __init__(
        self,
        n_classes: int,
        widths: Sequence[int] = (32, 64, 128, 192),
        layers: Sequence[int] = (2, 2, 2, 2),
        pyramid: int = 64,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.resnet = _resnet(2, 1 + n_classes, None, widths, layers)
        self.lateral = nn.ModuleList(nn.Conv2d(w, pyramid, 1) for w in widths)
        self.smooth = nn.Sequential(
            nn.Conv2d(pyramid, pyramid, 3, padding=1),
            nn.BatchNorm2d(pyramid),
            nn.ReLU(inplace=True),
        )
        self.map_out = nn.Conv2d(pyramid, n_classes, 1)
        self.head = nn.Sequential(
            nn.Linear(2 * widths[-1] + 4 * n_classes, hidden),
            nn.LeakyReLU(0.01, inplace=True),
            nn.Linear(hidden, 2 * n_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x)[0]

    def forward_with_map(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw scores (B, 2K) and expert-label logits (B, K, H, W)."""
        r = self.resnet
        h = r.maxpool(r.act(r.bn1(r.conv1(x))))
        stages = []
        for stage in (r.layer1, r.layer2, r.layer3, r.layer4):
            h = stage(h)
            stages.append(h)
        top = self.lateral[-1](stages[-1])
        for lateral, stage in zip(self.lateral[-2::-1], stages[-2::-1], strict=True):
            top = F.interpolate(top, size=stage.shape[-2:], mode="nearest") + lateral(stage)
        logits = F.interpolate(
            self.map_out(self.smooth(top)), size=x.shape[-2:], mode="bilinear", align_corners=False
        )
        overlap = soft_overlap(logits.softmax(1), x[:, 1 : 1 + self.n_classes])
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3)), overlap], dim=1)
        return self.head(pooled), logits


def _check(n_classes: int, in_channels: int | None) -> int:
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2 (background included), got {n_classes}")
    channels = 1 + n_classes if in_channels is None else in_channels
    if channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {channels}")
    return channels


def _resnet(
    spatial_dims: int,
    in_channels: int,
    n_out: int | None,
    widths: Sequence[int],
    layers: Sequence[int],
) -> ResNet:
    # stride-2 stem + max pool: 128x128 -> 32x32 before the residual stages (low compute);
    # n_out None: no final linear layer (a caller reads the stages itself)
    return ResNet(
        block="basic",
        layers=list(layers),
        block_inplanes=list(widths),
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=7,
        conv1_t_stride=2,
        num_classes=n_out or 1,
        feed_forward=n_out is not None,
    )


def qc_resnet2d(
    n_classes: int,
    in_channels: int | None = None,
    widths: Sequence[int] = (32, 64, 128, 192),
    layers: Sequence[int] = (2, 2, 2, 2),
) -> QCNet:
    """QC ResNet 2D (about 2 M parameters): (B, 1+K, H, W) -> (B, 2K) DSC + MVSF."""
    channels = _check(n_classes, in_channels)
    return QCNet(_resnet(2, channels, 2 * n_classes, widths, layers), n_classes, True)


def qc_context_resnet2d(
    n_classes: int,
    context_slices: int = 1,
    widths: Sequence[int] = (32, 64, 128, 192),
    layers: Sequence[int] = (2, 2, 2, 2),
) -> QCNet:
    """QC ResNet 2D reading the slice and ``context_slices`` neighbours on each side.

    Input (B, (2c+1)(1+K), H, W) -> (B, 2K) DSC + MVSF of the centre slice; the neighbours
    tell where the slice lies in the heart (a structure ending at the apex or base, or missed).
    """
    if context_slices < 1:
        raise ValueError(f"context_slices must be >= 1, got {context_slices}")
    channels = (2 * context_slices + 1) * _check(n_classes, None)
    backbone = _resnet(2, channels, 2 * n_classes, widths, layers)
    return QCNet(backbone, n_classes, True, context_slices=context_slices)


def qc_expert_map_resnet2d(n_classes: int, **kwargs: Any) -> QCNet:
    """QC ResNet 2D with an expert-label map (about 2.1 M parameters): :class:`ExpertMapResNet`.

    Input (B, 1+K, H, W) -> (B, 2K) DSC + MVSF, as :func:`qc_resnet2d`.
    """
    _check(n_classes, None)
    return QCNet(ExpertMapResNet(n_classes, **kwargs), n_classes, True)


def qc_resnet3d(
    n_classes: int,
    in_channels: int | None = None,
    widths: Sequence[int] = (20, 40, 80, 160),
    layers: Sequence[int] = (2, 2, 2, 2),
) -> QCNet:
    """QC ResNet 3D (about 3 M parameters): (B, 1+K, H, W, D) -> (B, K) DSC."""
    channels = _check(n_classes, in_channels)
    return QCNet(_resnet(3, channels, n_classes, widths, layers), n_classes, False)


def qc_unet2d(
    n_classes: int,
    in_channels: int | None = None,
    filters: Sequence[int] = (32, 64, 128, 256, 480, 480),
    map_channels: int = 32,
) -> QCNet:
    """QC U-Net 2D (about 19 M parameters): (B, 1+K, 128, 128) -> (B, 2K) DSC + MVSF."""
    channels = _check(n_classes, in_channels)
    strides = [1] + [2] * (len(filters) - 1)
    net = UNetRegressor(2, channels, 2 * n_classes, filters, strides, map_channels)
    return QCNet(net, n_classes, True)


def qc_unet3d(
    n_classes: int,
    in_channels: int | None = None,
    filters: Sequence[int] = (16, 32, 64, 128, 288, 384),
    strides: Sequence[Sequence[int]] = (
        (1, 1, 1),
        (2, 2, 1),
        (2, 2, 2),
        (2, 2, 2),
        (2, 2, 2),
        (2, 2, 1),
    ),
    map_channels: int = 16,
) -> QCNet:
    """QC U-Net 3D (about 21 M parameters): (B, 1+K, 128, 128, 8) -> (B, K) DSC.

    Default strides halve the 8 slices only three times (8 -> 1), in-plane five times.
    """
    channels = _check(n_classes, in_channels)
    net = UNetRegressor(3, channels, n_classes, filters, list(strides), map_channels)
    return QCNet(net, n_classes, False)


QC_NETWORKS: dict[str, Callable[..., QCNet]] = {
    "resnet2d": qc_resnet2d,
    "context_resnet2d": qc_context_resnet2d,
    "expert_map_resnet2d": qc_expert_map_resnet2d,
    "unet2d": qc_unet2d,
    "resnet3d": qc_resnet3d,
    "unet3d": qc_unet3d,
}


def build_qc_network(name: str, n_classes: int, test_time_views: int = 1, **kwargs: Any) -> QCNet:
    """Build the QC network registered as ``name`` (see ``QC_NETWORKS``).

    ``test_time_views`` > 1 averages 2D predictions over mirrored / turned copies of the input
    (:class:`QCNet`); the weights are the same either way.

    Raises:
        ValueError: unknown ``name`` (the message lists the known names).
    """
    try:
        factory = QC_NETWORKS[name.lower()]
    except KeyError:
        known = ", ".join(sorted(QC_NETWORKS))
        raise ValueError(f"unknown QC network {name!r}; known names: {known}") from None
    network = factory(n_classes, **kwargs)
    _check_views(test_time_views)
    if test_time_views > 1 and not network.predict_mvsf:
        raise ValueError("test-time views are for 2D QC networks")
    network.test_time_views = test_time_views
    return network

"""Network factory: every network a recipe or checkpoint may name, rebuilt from (name, args).

    unet2d / unet3d  MONAI UNet (the seed papers' U-Nets: channels 32->512 on 256x256 slices, or the compact
                     3-level 64-filter U-Net with batch norm)
    segnet2d         SegNet encoder-decoder: 4 + 4 stages, 2x2 max pooling whose indices drive the unpooling
    resunet2d        U-Net decoder on a ResNet-50 encoder (MONAI FlexibleUNet, trained from scratch)

All take (N, in_channels, *spatial) and return logits (N, out_channels, *spatial).
"""
from __future__ import annotations

import torch
from torch import nn

from lungct.errors import LungctError

DIMS = {"unet2d": 2, "unet3d": 3, "segnet2d": 2, "resunet2d": 2}


def build_network(name: str, **args) -> nn.Module:
    """The network `name` with its recipe arguments (in_channels and out_channels among them)."""
    if name not in DIMS:
        raise LungctError(None, f"unknown network '{name}' (known: {', '.join(DIMS)})")
    args = dict(args)
    if name in ("unet2d", "unet3d"):
        from monai.networks.nets import UNet

        channels = list(args.pop("channels", (16, 32, 64, 128, 256)))
        strides = list(args.pop("strides", [2] * (len(channels) - 1)))
        return UNet(spatial_dims=DIMS[name], channels=channels, strides=strides, **args)
    if name == "segnet2d":
        return SegNet2d(**args)
    from monai.networks.nets import FlexibleUNet

    return FlexibleUNet(spatial_dims=2, backbone=args.pop("backbone", "resnet50"), pretrained=False, **args)


def parameter_count(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


class SegNet2d(nn.Module):
    """SegNet (Badrinarayanan et al.) as the radiograph paper uses it: `stages` encoder stages of
    `filters` 3x3 conv-BN-ReLU pairs each followed by 2x2 max pooling that remembers its indices, and a
    mirrored decoder that unpools with those indices. Input sides must be divisible by 2**stages."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, filters: int = 64, stages: int = 4,
                 convs_per_stage: int = 2):
        super().__init__()

        def block(c_in: int, c_out: int) -> nn.Sequential:
            layers = []
            for i in range(convs_per_stage):
                layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                           nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.encoders = nn.ModuleList(block(in_channels if i == 0 else filters, filters) for i in range(stages))
        self.decoders = nn.ModuleList(block(filters, filters) for _ in range(stages))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)
        self.head = nn.Conv2d(filters, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        remembered = []
        for encoder in self.encoders:
            x = encoder(x)
            size = x.shape
            x, indices = self.pool(x)
            remembered.append((indices, size))
        for decoder, (indices, size) in zip(self.decoders, reversed(remembered)):
            x = decoder(self.unpool(x, indices, output_size=size))
        return self.head(x)

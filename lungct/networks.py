"""Network factory: every network a recipe or checkpoint may name, rebuilt from (name, args).

    unet2d / unet3d  MONAI UNet (the seed papers' U-Nets: channels 32->512 on 256x256 slices, or the compact
                     3-level 64-filter U-Net with batch norm)
    segnet2d         SegNet encoder-decoder: 4 + 4 stages, 2x2 max pooling whose indices drive the unpooling
    resunet2d        U-Net decoder on a ResNet-50 encoder (MONAI FlexibleUNet, trained from scratch)

All take (N, in_channels, *spatial) and return logits (N, out_channels, *spatial).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from lungct.errors import LungctError

DIMS = {"unet2d": 2, "unet3d": 3, "segnet2d": 2, "resunet2d": 2}


def build_network(name: str, for_inference: bool = False, **args) -> nn.Module:
    """The network `name` with its recipe arguments (in_channels and out_channels among them).

    `for_inference`: a MONAI UNet whose layers `TorchUNet` reproduces is built as a TorchUNet (same
    state dict, same outputs; tests compare them), so inference does not pay MONAI's import."""
    if name not in DIMS:
        raise LungctError(None, f"unknown network '{name}' (known: {', '.join(DIMS)})")
    args = dict(args)
    if name in ("unet2d", "unet3d") and for_inference and TorchUNet.reproduces(args):
        return TorchUNet(DIMS[name], **args)
    if name in ("unet2d", "unet3d"):
        from monai.networks.nets import UNet

        channels = list(args.pop("channels", (16, 32, 64, 128, 256)))
        strides = list(args.pop("strides", [2] * (len(channels) - 1)))
        return UNet(spatial_dims=DIMS[name], channels=channels, strides=strides, **args)
    if name == "segnet2d":
        return SegNet2d(**args)
    from monai.networks.nets import FlexibleUNet

    return FlexibleUNet(spatial_dims=2, backbone=args.pop("backbone", "resnet50"), pretrained=False, **args)


class TorchUNet(nn.Module):
    """MONAI's UNet (monai.networks.nets.UNet) rebuilt from torch.nn alone, module for module under the
    same names, for the settings lungct's recipes use: 3x3 kernels, PReLU, batch or instance norm, NDA
    order. MONAI stays the network that trains; this is how a checkpoint runs without importing MONAI."""

    ARGS = {"in_channels", "out_channels", "channels", "strides", "num_res_units", "norm", "dropout", "bias",
            "act", "kernel_size", "up_kernel_size", "adn_ordering"}

    @classmethod
    def reproduces(cls, args: dict) -> bool:
        norm = str(args.get("norm", "instance")).lower()
        return (set(args) <= cls.ARGS and norm in ("batch", "instance")
                and str(args.get("act", "prelu")).lower() == "prelu"
                and args.get("kernel_size", 3) == 3 and args.get("up_kernel_size", 3) == 3
                and str(args.get("adn_ordering", "NDA")).upper() == "NDA"
                and isinstance(args.get("dropout", 0.0), (int, float)))

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels=(16, 32, 64, 128, 256),
                 strides=None, num_res_units: int = 0, norm: str = "instance", dropout: float = 0.0,
                 bias: bool = True, **_same_as_monai):
        super().__init__()
        dims = spatial_dims
        conv, up_conv = (nn.Conv2d, nn.ConvTranspose2d) if dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        norm_type = {("batch", 2): nn.BatchNorm2d, ("batch", 3): nn.BatchNorm3d, ("instance", 2): nn.InstanceNorm2d,
                     ("instance", 3): nn.InstanceNorm3d}[(str(norm).lower(), dims)]
        strides = list(strides or [2] * (len(channels) - 1))

        def convolution(c_in, c_out, stride, transposed=False, conv_only=False) -> nn.Sequential:
            """MONAI's Convolution: "conv", then "adn" (norm N, dropout D, PReLU A)."""
            layer = nn.Sequential()
            layer.add_module("conv", up_conv(c_in, c_out, 3, stride, 1, output_padding=stride - 1, bias=bias)
                             if transposed else conv(c_in, c_out, 3, stride, 1, bias=bias))
            if not conv_only:
                layer.add_module("adn", nn.Sequential(OrderedDict(N=norm_type(c_out), D=nn.Dropout(dropout), A=nn.PReLU())))
            return layer

        def residual_unit(c_in, c_out, stride, subunits, last_conv_only=False) -> nn.Module:
            units = nn.Sequential()
            for i in range(max(1, subunits)):
                units.add_module(f"unit{i}", convolution(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1,
                                                         conv_only=last_conv_only and i == max(1, subunits) - 1))
            shortcut = nn.Identity()
            if stride != 1 or c_in != c_out:
                shortcut = conv(c_in, c_out, 3, stride, 1, bias=bias) if stride != 1 else conv(c_in, c_out, 1, 1, 0, bias=bias)
            return _Residual(units, shortcut)

        def down(c_in, c_out, stride):
            return residual_unit(c_in, c_out, stride, num_res_units) if num_res_units > 0 else convolution(c_in, c_out, stride)

        def up(c_in, c_out, stride, is_top):
            layer = convolution(c_in, c_out, stride, transposed=True, conv_only=is_top and num_res_units == 0)
            if num_res_units > 0:
                layer = nn.Sequential(layer, residual_unit(c_out, c_out, 1, 1, last_conv_only=is_top))
            return layer

        def block(c_in, c_out, chans, strides, is_top):
            if len(chans) > 2:
                inner, up_in = block(chans[0], chans[0], chans[1:], strides[1:], False), chans[0] * 2
            else:
                inner, up_in = down(chans[0], chans[1], 1), chans[0] + chans[1]
            return nn.Sequential(down(c_in, chans[0], strides[0]), _Skip(inner), up(up_in, c_out, strides[0], is_top))

        self.model = block(in_channels, out_channels, list(channels), strides, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _Residual(nn.Module):
    """MONAI's ResidualUnit: the units' output plus the (projected) input."""

    def __init__(self, conv: nn.Module, residual: nn.Module):
        super().__init__()
        self.conv, self.residual = conv, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.residual(x)
        return self.conv(x) + res


class _Skip(nn.Module):
    """MONAI's SkipConnection (concatenation): input and the inner block's output, channel-wise."""

    def __init__(self, submodule: nn.Module):
        super().__init__()
        self.submodule = submodule

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.submodule(x)], dim=1)


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

"""The plain-torch UNet inference builds reproduces MONAI's UNet exactly, and CT inference imports no MONAI."""
from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import torch

from lungct.networks import TorchUNet, build_network


def _randomised_monai_unet(dims, **args):
    from monai.networks.nets import UNet

    network = UNet(spatial_dims=dims, **args).eval()
    for module in network.modules():  # untrained norms are the identity: give them statistics to test
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
        if isinstance(module, torch.nn.PReLU):
            module.weight.data.uniform_(0.0, 0.5)
    return network


@pytest.mark.parametrize("dims,res_units,norm,channels", list(itertools.product(
    (2, 3), (0, 1, 2), ("batch", "instance"), ((8, 16, 32), (4, 8, 16, 32)))))
def test_torch_unet_has_monais_state_dict_and_gives_identical_outputs(dims, res_units, norm, channels):
    torch.manual_seed(dims * 10 + res_units)
    args = dict(in_channels=1, out_channels=3, channels=channels, strides=[2] * (len(channels) - 1),
                num_res_units=res_units, norm=norm)
    reference = _randomised_monai_unet(dims, **args)
    ours = TorchUNet(dims, **args).eval()
    assert list(ours.state_dict()) == list(reference.state_dict())
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(2, 1, *([24] * (dims - 1)), 32)
    with torch.no_grad():
        assert torch.equal(ours(x), reference(x))


def test_inference_builds_the_torch_unet_only_where_it_reproduces_monais():
    shipped = dict(in_channels=1, out_channels=3, channels=[8, 16, 32], strides=[2, 2], num_res_units=1, norm="batch")
    assert isinstance(build_network("unet2d", for_inference=True, **shipped), TorchUNet)
    assert not isinstance(build_network("unet2d", **shipped), TorchUNet)  # training trains MONAI's
    for other in ({"act": ("leakyrelu", {"negative_slope": 0.1})}, {"norm": "group"}, {"kernel_size": 5},
                  {"adn_ordering": "AND"}):
        assert not TorchUNet.reproduces({**shipped, **other})


@pytest.mark.parametrize("kind", ["ct", "cxr"])
def test_inference_imports_no_monai(tmp_path, kind):
    """MONAI's import costs ~1.7 s of every run: the chains, networks and post-processing must not need it."""
    if kind == "ct":
        from phantoms import make_phantom, write_nifti

        scan, mask = write_nifti(make_phantom(), tmp_path / "scan.nii.gz"), tmp_path / "out" / "scan.nii.gz"
    else:
        from cxr_phantoms import make_cxr, write_png8

        scan, mask = write_png8(tmp_path / "film.png", make_cxr().image), tmp_path / "out" / "film.png"
    code = ("import sys; from lungct.engine import infer; "
            f"infer([{str(scan)!r}], {str(tmp_path / 'out')!r}, progress=False, log=lambda *a: None); "
            "loaded = sorted(m for m in sys.modules if m == 'monai' or m.startswith('monai.')); "
            "print(len(loaded), loaded[:5])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "0", out.stdout
    assert mask.exists()

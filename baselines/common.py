"""What the baselines share: the suite's model-facing library and the blocks of several networks.

A baseline module imports the suite only through this file. DVC gives all baselines' stages one
dependency list (a matrix stage cannot vary it per model), so every baseline must reach the same
library files for that list to be exact: registration, official-checkpoint reading (PyTorch and
TensorFlow), the differentiable losses of the models' own recipes and the stage-output rule.

``ConvGRUCell`` is shared by RESCAN (Li et al., ECCV 2018) and DCSFN (Wang et al., ACM MM 2020):
DCSFN's code base grew out of RESCAN's, and both use the same convolutional GRU gating. They
differ in what follows the gates (RESCAN: squeeze-excitation then LeakyReLU; DCSFN: LeakyReLU
only), so only the gate arithmetic lives here; each model adds its own tail.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from benchmark.core.contract import stage_outputs
from benchmark.core.official import (check_names, load_mapped, read_state, read_tf_variables, rename_by_rules,
                                     source_label)
from benchmark.core.registry import register_model, register_official
from benchmark.training.losses import charbonnier, ssim

__all__ = ["ConvGRUCell", "charbonnier", "check_names", "check_rgb_batch", "load_mapped", "read_state",
           "read_tf_variables", "register_model", "register_official", "rename_by_rules", "source_label", "ssim",
           "stage_outputs"]


class ConvGRUCell(nn.Module):
    """Convolutional GRU gates, returning the new hidden state before any output activation.

    With a previous state h:
        z = sigmoid(Wxz*x + Whz*h),  r = sigmoid(Wxr*x + Whr*h),
        n = tanh(Wxn*x + Whn*(r.h)),  h' = (1 - z).h + z.n
    Without one (first step), both official codes use h' = sigmoid(Wxz*x) . tanh(Wxn*x), which
    is the formula above with h = 0 except that the state-to-state biases are left out.

    Input-to-state convolutions may be dilated (RESCAN grows the receptive field this way);
    state-to-state convolutions never are. All six convolutions carry a bias, as in both
    official codes, so the cell has 3*(k*k*cin*cout + cout) + 3*(k*k*cout*cout + cout) weights.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__()
        pad_x = dilation * (kernel_size - 1) // 2
        pad_h = (kernel_size - 1) // 2

        def conv_x() -> nn.Conv2d:
            return nn.Conv2d(in_channels, hidden_channels, kernel_size, padding=pad_x, dilation=dilation)

        def conv_h() -> nn.Conv2d:
            return nn.Conv2d(hidden_channels, hidden_channels, kernel_size, padding=pad_h)

        self.conv_xz, self.conv_xr, self.conv_xn = conv_x(), conv_x(), conv_x()
        self.conv_hz, self.conv_hr, self.conv_hn = conv_h(), conv_h(), conv_h()

    @staticmethod
    def _joint(x: torch.Tensor, convs: tuple[nn.Conv2d, ...]) -> tuple[torch.Tensor, ...]:
        # Convolutions sharing input, kernel and dilation are one convolution with stacked output
        # channels: one kernel call and one larger GEMM instead of several thin ones. The
        # parameters stay separate modules, so state_dicts and official names are unchanged.
        first = convs[0]
        weight = torch.cat([c.weight for c in convs])
        bias = torch.cat([c.bias for c in convs])
        out = nn.functional.conv2d(x, weight, bias, padding=first.padding, dilation=first.dilation)
        return out.split(first.out_channels, dim=1)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is None:
            xz, xn = self._joint(x, (self.conv_xz, self.conv_xn))  # the reset gate is unused here
            return torch.sigmoid(xz) * torch.tanh(xn)
        xz, xr, xn = self._joint(x, (self.conv_xz, self.conv_xr, self.conv_xn))
        hz, hr = self._joint(h, (self.conv_hz, self.conv_hr))
        z = torch.sigmoid(xz + hz)
        r = torch.sigmoid(xr + hr)
        n = torch.tanh(xn + self.conv_hn(r * h))
        return torch.lerp(h, n, z)  # (1 - z)*h + z*n in one kernel


def check_rgb_batch(x: torch.Tensor, model: str, min_size: int = 1) -> None:
    """Fail early, naming the problem, on input the model cannot take (instead of a deep traceback)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{model} expects a [B,3,H,W] tensor, got {shape}")
    if x.shape[1] != 3:
        raise ValueError(f"{model} expects 3 (RGB) channels, got {x.shape[1]} in shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if min(h, w) < min_size:
        raise ValueError(f"{model} needs H and W >= {min_size}, got {h}x{w}")

"""RCDNet: Rain Convolutional Dictionary Network.

Wang, Xie, Zhao, Meng, "A Model-Driven Deep Neural Network for Single Image Rain Removal",
CVPR 2020. Official code: github.com/hongwang01/RCDNet, RCDNet_code/for_syn (read for facts
only).

The rainy image is modelled as O = B + sum_m C_m * M_m (background B, rain kernels C_m, sparse
rain maps M_m). The network unrolls S stages of proximal gradient descent: each stage takes a
gradient step on M through the (learned, shared) rain kernels, cleans it with a small residual
"proximal" net, then does the same for B, which travels with Z auxiliary channels. It works on
[0,255] RGB internally; forward converts from and to the suite's [0,1] contract.
Default = official (S=17 stages, M=32 rain maps, Z=32): 3,166,355 parameters as the official
``sum(p.numel())`` counts them; ``official_unused=False`` leaves out what the official code
allocates but never reads (2,975,186, the count of the authors' RCDNet_simple re-write), with
identical outputs.

Tied parameters (``tied=True``, default). The official ``Mainnet`` makes several parameters
``nn.Parameter``s of *expanded views* of one small tensor, so they share memory and stay equal
through training: the first-stage kernel ``weight0`` and all 16 slices of ``conv`` are views of the
one ``init_kernel.mat`` tensor (C0 = C); ``eta1`` and the 16 rows of ``eta11`` are one η_M, ``eta2``
and ``eta12`` one η_B; each M-net's ``tau`` is one scalar expanded to 32 channels; ``w_z_f`` is one
3x3 filter expanded to 32x3. ``sum(p.numel())`` counts every view, which is where 3,166,355 comes
from, but only 3,040,494 numbers are distinct and 2,965,997 of them receive a gradient
(``--effective``). We store each tied parameter once, expand it in forward, and count it at its
official size (``official_numel``, read by ``benchmark.core.contract.count_params``). ``tied=False``
unties them (every view its own tensor): same total,
same outputs for equal weights, 2,975,186 gradient-receiving parameters. The official optimiser
step on aliased views cannot be reproduced: the authors ran PyTorch 0.4.1, whose in-place updates
did not yet refuse overlapping memory, so every view wrote its own update into the shared elements
(the result depends on the write order); current PyTorch raises "more than one element of the
written-to tensor refers to a single memory location" (checked). Here a tied tensor gets the sum of
the gradients of all its uses, the ordinary meaning of weight sharing and the code's stated intent
("rain kernel is inter-stage sharing").

Rain-kernel initialisation. The official code loads ``init_kernel.mat`` (3x32x9x9, three
identical colour rows). Checked once against that file (from a mirror of the official repo;
it is not shipped here): every one of its 32 kernels equals, to 1e-15 relative error,
``scale * k / sum(k)`` with k the streak kernel of the authors' MATLAB script MyRainK.m
(9x9 Gaussian, vertical axis stretched by ``long``, a flat core of ``plateau`` pixels), where
``long`` = 2.5 + i/4 for i = 1..16 and 2 + i/4 for i = 17..32 exactly, while the width ``std``,
the plateau and the scale vary from kernel to kernel like random draws (file: std 0.126-0.353
for kernels 1-16 and 0.258-0.728 for 17-32, i.e. base*(0.5..1.5) with base 0.25 / 0.5;
plateau 0/1/2 px in 16/14/2 kernels; scale 0.139-0.997, so the kernels are not sum-1).
``rain_kernels`` regenerates that: the same formula and elongation grid, with std, plateau
and scale drawn from those ranges by a fixed-seed generator. Structure and value ranges match
the file (mean tap 0.00553 here vs 0.00558 in the file); the individual random values cannot be
recovered, so kernel by kernel the two differ: relative L2 distance 0.94 over the 32 kernels
(the sum-1 output of the MATLAB script itself, init_rain_kernel.m, is at 1.34).
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from .common import check_rgb_batch, load_mapped, read_state, register_model, register_official


RGB_RANGE = 255.0  # official pixel scale


def streak_kernel(size: int, long: float, plateau: int, std: float) -> torch.Tensor:
    """One sum-1 rain-streak kernel (float64): a Gaussian of width ``std`` whose vertical axis is
    stretched by ``long``, flat over the central ``plateau`` pixels in each direction."""
    r = (size - 1) // 2
    g = torch.arange(-r, r + 1, dtype=torch.float64)
    y, x = torch.meshgrid(g, g, indexing="ij")

    def core(t: torch.Tensor) -> torch.Tensor:
        return torch.sign(t) * (t.abs() - plateau).clamp_min(0)

    h = torch.exp(-(core(x) ** 2 + (core(y) / long) ** 2) / (2 * std * std))
    h[h < torch.finfo(torch.float64).eps * h.max()] = 0  # as the MATLAB script does
    return h / h.sum()


def rain_kernels(num_maps: int = 32, size: int = 9, seed: int = 0) -> torch.Tensor:
    """Initial rain kernels [3, num_maps, size, size] (see the module docstring for the match
    with the official init_kernel.mat). Deterministic: a private generator, fixed seed."""
    # on the CPU whatever the default device (torch.set_default_device, ``with torch.device(...)``):
    # the generator is a CPU one, and the same seed must give the same kernels everywhere
    with torch.device("cpu"):
        g = torch.Generator().manual_seed(seed)
        half = num_maps // 2
        kernels = []
        for i in range(1, num_maps + 1):
            first = i <= half
            long = (2.5 if first else 2.0) + i / 4
            std = (0.25 if first else 0.5) * (0.5 + torch.rand((), generator=g, dtype=torch.float64).item())
            plateau = int(torch.multinomial(torch.tensor([16.0, 14.0, 2.0]), 1, generator=g).item())
            scale = torch.rand((), generator=g, dtype=torch.float64).item()
            kernels.append(scale * streak_kernel(size, long, plateau, std))
        return torch.stack(kernels).float().unsqueeze(0).repeat(3, 1, 1, 1)


class ProxNet(nn.Module):
    """Proximal net: 4 residual blocks (conv-BN-ReLU-conv-BN, add, ReLU); the M-net variant
    ends with a learned soft threshold relu(m - tau) that keeps rain maps sparse (``tau``: one
    scalar broadcast over the channels when ``tied``, like the official expanded view; else one
    per channel)."""

    def __init__(self, channels: int, threshold: bool = False, tied: bool = True) -> None:
        super().__init__()

        def block() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
                nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
            )

        self.blocks = nn.ModuleList(block() for _ in range(4))
        self.tau = nn.Parameter(torch.full((1, 1 if tied else channels, 1, 1), 0.5)) if threshold else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = F.relu(x + block(x))
        return F.relu(x - self.tau) if self.tau is not None else x


# Official key -> ours. Untied (tied=False): weight0 -> kernel0, conv[1] -> kernel, conv[0] and
# conv[2:] -> unused_kernel_copies, eta1 -> unused_eta_m0, eta2 -> eta_b0, eta11 -> eta_m,
# eta12 -> eta_b, w_z_f -> z_filter, tau -> tau, mnet -> unused_m_net, m_stage.i -> m_nets.i,
# x_stage.i -> x_nets.i, xnet -> x_init, fxnet -> x_final (resx<j>/resm<j> -> blocks.<j-1>).
# Tied (default): weight0 and every conv slice -> kernel; eta1 and eta11 -> eta_m; eta2 and eta12
# -> eta_b; w_z_f -> z_filter [1,1,3,3]; <M-net>.tau -> <M-net>.tau [1,1,1,1]; the rest as untied.
# A tied model also loads the untied layout (``_tie_state``) when the views it collapses hold equal
# values, as in an official checkpoint, where they share memory.


class RCDNet(nn.Module):
    """Unrolled rain convolutional dictionary network (RGB [0,1] in and out, any H x W).

    eval(): final background. train(): {"out": [B_1..B_S, B_final] (S+1 estimates, final last),
    "b0": initial background B_0, "rain": [C*M_1 .. C*M_S] rain layers}, all on the [0,1] scale.
    """

    def __init__(self, stages: int = 17, num_maps: int = 32, num_z: int = 32, kernel_size: int = 9,
                 official_unused: bool = True, kernel_seed: int = 0, tied: bool = True) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError(f"RCDNet needs at least one stage, got stages={stages}")
        self.stages, self.pad, self.tied, self.num_z = stages, kernel_size // 2, tied, num_z
        kernels = rain_kernels(num_maps, kernel_size, kernel_seed)
        unused = official_unused
        # Z0 = 3x3 "mean filter" of O into every auxiliary channel (init 1/9).
        self.z_filter = nn.Parameter(torch.full((1, 1, 3, 3) if tied else (num_z, 3, 3, 3), 1 / 9))
        if not tied:
            self.kernel0 = nn.Parameter(kernels.clone())  # first M-step only
        self.kernel = nn.Parameter(kernels.clone())  # rain kernels C of every stage (tied: C0 too)
        self.tau = nn.Parameter(torch.ones(1))  # threshold of the initial rain estimate
        # Step sizes, used /10 like the kernels to slow their updates. Untied: stage 1, then 2..S.
        if not tied:
            self.eta_b0 = nn.Parameter(torch.full((1,), 5.0))
        self.eta_m = nn.Parameter(torch.full((1,) if tied else (stages - 1, 1), 1.0))
        self.eta_b = nn.Parameter(torch.full((1,) if tied else (stages - 1, 1), 5.0))
        self.x_init = ProxNet(num_z + 3)
        self.m_nets = nn.ModuleList(ProxNet(num_maps, threshold=True, tied=tied) for _ in range(stages))
        self.x_nets = nn.ModuleList(ProxNet(num_z + 3) for _ in range(stages))
        self.x_final = ProxNet(num_z + 3)  # "fine-tune" net after the last stage
        copies = max(stages - 2, 0) if unused else 0  # official conv slices besides conv[1]
        if unused:
            # Allocated but never read by the official forward; kept so the parameter count
            # (and an official state_dict) match. No gradient ever reaches them.
            self.unused_m_net = ProxNet(num_maps, threshold=True, tied=tied)
            if not tied:  # tied, these are views of ``kernel`` / ``eta_m``
                self.unused_kernel_copies = nn.Parameter(kernels.unsqueeze(0).repeat(copies, 1, 1, 1, 1))
                self.unused_eta_m0 = nn.Parameter(torch.ones(1))
        # The size at which the official sum(p.numel()) counts each tied tensor (all its views),
        # read by benchmark.evaluation.contract.count_params; and which untied keys each one collapses.
        self.official_numel: dict[str, int] = {}
        self._tied_groups: dict[str, tuple[str, ...]] = {}
        if tied:
            self.official_numel = {"kernel": (2 + copies) * kernels.numel(), "eta_m": stages - 1 + unused,
                                   "eta_b": stages, "z_filter": num_z * 3 * 9}
            self._tied_groups = {"kernel": ("kernel0", "kernel", "unused_kernel_copies"),
                                 "eta_m": ("eta_m", "unused_eta_m0"), "eta_b": ("eta_b0", "eta_b"),
                                 "z_filter": ("z_filter",)}
            for net in [f"m_nets.{i}" for i in range(stages)] + (["unused_m_net"] if unused else []):
                self.official_numel[f"{net}.tau"] = num_maps
                self._tied_groups[f"{net}.tau"] = (f"{net}.tau",)
            self._register_load_state_dict_pre_hook(self._tie_state)

    def _tie_state(self, state: dict, prefix: str, *args) -> None:
        """load_state_dict pre-hook of the tied model: collapse untied-layout entries (an official
        state mapped as untied, or a tied=False checkpoint) to the one tensor each group shares.
        Elements that the official views would hold equal must be equal; else one clear error."""
        params = dict(self.named_parameters())
        for target, keys in self._tied_groups.items():
            present = [prefix + k for k in keys if prefix + k in state]
            if not present:
                continue  # strict loading reports the missing key
            shape = params[target].shape
            views = [state[k].reshape(-1, *shape) for k in present]
            if sum(v.shape[0] for v in views) == 0:
                continue
            first = next(v[0] for v in views if v.shape[0])
            for k, v in zip(present, views):
                if not torch.equal(v, first.expand_as(v)):
                    raise ValueError(f"RCDNet(tied=True) cannot load {k!r}: the official model ties its values "
                                     f"into one {target!r} but they differ here (use tied=False for untied weights)")
                del state[k]
            state[prefix + target] = first.clone()

    def _synth(self, m: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Rain layer C*M from rain maps (kernels /10 as in the official code)."""
        return F.conv2d(m, kernel / 10, padding=self.pad)

    def _adjoint(self, r: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """C^T r: transposed convolution back to rain-map space."""
        return F.conv_transpose2d(r, kernel / 10, padding=self.pad)

    def _b_step(self, b: torch.Tensor, z: torch.Tensor, o: torch.Tensor, cm: torch.Tensor,
                eta: torch.Tensor, net: ProxNet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Gradient step on ||O - B - CM||^2 w.r.t. B, then the proximal net on [B, Z].
        joint = net(torch.cat((b - eta / 10 * (b - (o - cm)), z), 1))
        return joint[:, :3], joint[:, 3:], joint

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict:
        check_rgb_batch(x, "RCDNet")
        o = x * RGB_RANGE
        if self.tied:
            z_filter, kernel0, eta_b0 = self.z_filter.expand(self.num_z, 3, 3, 3), self.kernel, self.eta_b
            eta_m, eta_b = self.eta_m.expand(self.stages - 1, 1), self.eta_b.expand(self.stages - 1, 1)
        else:
            z_filter, kernel0, eta_b0, eta_m, eta_b = self.z_filter, self.kernel0, self.eta_b0, self.eta_m, self.eta_b
        joint = self.x_init(torch.cat((o, F.conv2d(o, z_filter, padding=1)), 1))
        b0, z = joint[:, :3], joint[:, 3:]
        # Stage 1: rain maps from the thresholded residual O - B0 (M0 = 0).
        m = self.m_nets[0](self._adjoint(F.relu(o - b0 - self.tau), kernel0))
        cm = self._synth(m, self.kernel)
        b, z, joint = self._b_step(b0, z, o, cm, eta_b0, self.x_nets[0])
        backgrounds, rains = [b], [cm]
        for i in range(self.stages - 1):
            # Gradient step on ||O - B - CM||^2 w.r.t. M, then the proximal M-net.
            m = self.m_nets[i + 1](m - eta_m[i] / 10 * self._adjoint(cm - (o - b), self.kernel))
            cm = self._synth(m, self.kernel)
            b, z, joint = self._b_step(b, z, o, cm, eta_b[i], self.x_nets[i + 1])
            backgrounds.append(b)
            rains.append(cm)
        backgrounds.append(self.x_final(joint)[:, :3])
        if not self.training:
            return backgrounds[-1] / RGB_RANGE
        return {"out": [t / RGB_RANGE for t in backgrounds], "b0": b0 / RGB_RANGE,
                "rain": [t / RGB_RANGE for t in rains]}

    def own_loss(self, outputs: dict, rainy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """Official trainer loss, on the official 0-255 scale:
        0.1 MSE(B0, B) + sum_{s=1..S} 0.1 [MSE(B_s, B) + MSE(CM_s, O - B)]
        + MSE(B_final, B) + 0.9 MSE(CM_S, O - B).
        Tensors arrive on [0,1]; MSE on 0-255 is 255^2 times MSE on [0,1], applied at the end.
        """
        if not isinstance(outputs, dict) or not {"out", "b0", "rain"} <= outputs.keys():
            raise ValueError("RCDNet.own_loss needs the train-mode output dict {'out', 'b0', 'rain'}")
        bs, rains = outputs["out"], outputs["rain"]
        rain_gt = rainy - clean
        loss = 0.1 * F.mse_loss(outputs["b0"], clean)
        for b, r in zip(bs[:-1], rains):
            loss = loss + 0.1 * (F.mse_loss(b, clean) + F.mse_loss(r, rain_gt))
        loss = loss + F.mse_loss(bs[-1], clean) + 0.9 * F.mse_loss(rains[-1], rain_gt)
        return loss * RGB_RANGE**2


@register_model("rcdnet")
def rcdnet(stages: int = 17, num_maps: int = 32, num_z: int = 32, kernel_size: int = 9,
           official_unused: bool = True, kernel_seed: int = 0, tied: bool = True) -> RCDNet:
    """RCDNet as in the official code (S=17, M=Z=32): 3,166,355 parameters as the official code
    counts them (its tied views included), 2,965,997 of them free (``tied=False``: 2,975,186)."""
    return RCDNet(stages, num_maps, num_z, kernel_size, official_unused, kernel_seed, tied)


# ---- official weights (hongwang01/RCDNet, RCDNet_code/for_syn/src/model/rcdnet.py) ----------------
_RCD_FIXED = {"eta2": "eta_b0", "eta11": "eta_m", "eta12": "eta_b", "eta1": "unused_eta_m0", "tau": "tau",
              "weight0": "kernel0", "w_z_f": "z_filter", "conv[1]": "kernel", "conv[rest]": "unused_kernel_copies"}
_RCD_NETS = {"xnet": "x_init", "fxnet": "x_final", "mnet": "unused_m_net", "x_stage": "x_nets", "m_stage": "m_nets"}
# What the official forward never reads: dropped when our model does not build a place for it
# (``official_unused=False`` or a model that ties these parameters).
_RCD_UNUSED = re.compile(r"eta1|conv\[rest\]|mnet\..+")


def official_name_to_ours(name: str) -> str | None:
    """Official RCDNet key (with ``conv`` split into ``conv[1]``/``conv[rest]``) -> ours."""
    if name in _RCD_FIXED:
        return _RCD_FIXED[name]
    m = re.fullmatch(r"(xnet|fxnet|mnet|x_stage\.\d+|m_stage\.\d+)\.(?:res[xm]([1-4])\.(\d+)\.(\w+)|(tau))", name)
    if not m:
        return None
    net, _, idx = m[1].partition(".")
    prefix = _RCD_NETS[net] + (f".{idx}" if idx else "")
    return f"{prefix}.tau" if m[5] else f"{prefix}.blocks.{int(m[2]) - 1}.{m[3]}.{m[4]}"


@register_official("rcdnet")
def from_official(source, **kwargs) -> RCDNet:
    """RCDNet holding official weights (path or mapping; RGB, the official 0-255 scale inside).

    The official ``conv`` holds S-1 copies of the rain kernel of which the forward reads only
    index 1: that one becomes ``kernel``, the others ``unused_kernel_copies``. Entries the official
    forward never reads (``eta1``, ``mnet``, the other kernel copies) are dropped when the model
    has no place for them; everything else is strict.
    """
    state = dict(read_state(source, "RCDNet"))
    if "conv" in state:
        conv = state.pop("conv")
        if conv.dim() == 5 and conv.shape[0] >= 2:
            state["conv[1]"] = conv[1]
            state["conv[rest]"] = torch.cat([conv[:1], conv[2:]])
        else:
            state["conv[1]"] = conv  # wrong shape: reported by the strict loader
    model = rcdnet(**kwargs)
    own = model.state_dict()
    state = {k: v for k, v in state.items()
             if not (_RCD_UNUSED.fullmatch(k) and official_name_to_ours(k) not in own)}
    return load_mapped(model, state, official_name_to_ours, source, "RCDNet")

"""Image generators shared by the generator-based methods (Fast, NAYER, MUSE).

Two decoder families, both fully convolutional so one decoder can serve several resolutions:

- `ConvStack` (Fast's and NAYER's CIFAR generator): a (2*ngf, r/4, r/4) map, two x2 upsamplings
  (DataFree's `LargeGenerator` for DAFL, DFQ, ZSKT and DFAD starts at 4*ngf: `stem=4`).
- `DeepDecoder` (the ImageNet generators of Fast-Datafree's `DeepGenerator` and NAYER's
  `NLDeepGenerator`): a (C, r/16, r/16) map, four x2 upsamplings; at 224 px it starts at 14x14.

`LatentGenerator` (flat latent, CIFAR) and `SpatialLatentGenerator` (spatial latent, ImageNet) are
Fast's two generators; NAYER's label-conditioned generator (methods/nayer.py) puts its own input
layers in front of either decoder. `DEEP_MIN_RESOLUTION` is where the `generator="auto"` switch of
those methods picks the deep family.
"""

from __future__ import annotations

import torch
import torch.nn as nn

DEEP_MIN_RESOLUTION = 112
GENERATOR_KINDS = ("auto", "cifar", "deep")


def generator_kind(choice: str, resolution: int) -> str:
    """Resolve a `generator` switch: "auto" is "deep" at `resolution` >= 112 px, else "cifar"."""
    if choice == "auto":
        return "deep" if resolution >= DEEP_MIN_RESOLUTION else "cifar"
    if choice not in GENERATOR_KINDS[1:]:
        raise ValueError(f"generator kind {choice!r}; choose from: {', '.join(GENERATOR_KINDS)}")
    return choice


def redraw_first_layers(linear: nn.Module, norm: nn.Module, rng: torch.Generator) -> None:
    """Fast's reset_l0: weights of `linear` and `norm` re-drawn from N(0, 0.02) with `rng`, biases zeroed.

    In place and under no_grad, so optimiser state keyed by these parameters stays attached (the
    reference re-initialises the modules in place and keeps its meta-optimiser).
    """
    with torch.no_grad():
        for module in (linear, norm):
            weight = module.weight
            draw = torch.randn(weight.shape, generator=rng, device=rng.device, dtype=weight.dtype)
            weight.copy_(draw.to(weight.device) * 0.02)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()


class ConvStack(nn.Module):
    """Fast's decoder: a (stem*ngf, s, s) map -> BN, x2, conv to 2*ngf, BN, LReLU, x2, conv to ngf, BN,
    LReLU, conv, Sigmoid. Output is 4s x 4s in [0,1].

    `stem` 2 is Fast's `Generator` (and DataFree's `Generator`); 4 is DataFree's `LargeGenerator`.
    """

    upscale = 4

    def __init__(self, ngf: int, out_chans: int, stem: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm2d(stem * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(stem * ngf, 2 * ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, out_chans, 3, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DeepDecoder(nn.Module):
    """The ImageNet decoder: a (in_chans, s, s) map -> 16s x 16s image in [0,1].

    A 3x3 conv (no bias) + BN + LeakyReLU(0.2) at s, then four stages of nearest x2 upsampling and the
    same conv/BN/LeakyReLU triple (output widths 2*ngf, 2*ngf, ngf, ngf, ngf from s to 16s); a last
    3x3 conv (with bias) to `out_chans` and a Sigmoid. Fully convolutional: any s works, and an s x s
    input costs work proportional to s^2 in every layer. Widths, kernels and the places of BN and
    activations follow the references' deep generators (Fast-Datafree `DeepGenerator`, NAYER
    `NLDeepGenerator`, `datafree/models/generator.py`).
    """

    upscale = 16

    def __init__(self, in_chans: int, ngf: int, out_chans: int) -> None:
        super().__init__()
        outs = (2 * ngf, 2 * ngf, ngf, ngf, ngf)  # at s, 2s, 4s, 8s, 16s
        layers: list[nn.Module] = []
        for stage, (c_in, c_out) in enumerate(zip((in_chans, *outs[:-1]), outs)):
            if stage > 0:
                layers.append(nn.Upsample(scale_factor=2))
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(outs[-1], out_chans, 3, 1, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def first_layers(self) -> tuple[nn.Module, nn.Module]:
        """The first conv and its BatchNorm (what Fast's reset_l0 re-draws on this decoder)."""
        return self.net[0], self.net[1]


class LatentGenerator(nn.Module):
    """Fast's CIFAR generator: z (nz) -> Linear -> (stem*ngf, r/4, r/4) -> ConvStack -> r x r image.

    `stem` 2: Fast's `Generator`; 4: DataFree's `LargeGenerator` (8.78M parameters at nz 512, ngf 64, 32 px)."""

    def __init__(self, nz: int, ngf: int, resolution: int, out_chans: int = 3, stem: int = 2) -> None:
        super().__init__()
        if resolution % 4:
            raise ValueError(f"generator resolution must be a multiple of 4, got {resolution}")
        self.init_size = resolution // 4
        self.channels = stem * ngf
        self.project = nn.Linear(nz, self.channels * self.init_size ** 2)
        self.decode = ConvStack(ngf, out_chans, stem)
        self.latent_shape: tuple[int, ...] = (nz,)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.channels, self.init_size, self.init_size)
        return self.decode(x)

    def reset_first_layers(self, rng: torch.Generator) -> None:
        """reset_l0: the input Linear and the decoder's first BatchNorm (the reference's l1.0, conv_blocks.0)."""
        redraw_first_layers(self.project, self.decode.net[0], rng)


class SpatialLatentGenerator(nn.Module):
    """Fast's ImageNet generator: a spatial latent z (nz, r/16, r/16) -> DeepDecoder -> r x r image.

    There is no input Linear: the latent is the decoder's input map (Fast-Datafree's `DeepGenerator`
    also registers a Linear `l1` that its forward never uses; it is left out here).
    """

    def __init__(self, nz: int, ngf: int, resolution: int, out_chans: int = 3) -> None:
        super().__init__()
        if resolution % DeepDecoder.upscale:
            raise ValueError(f"deep generator resolution must be a multiple of 16, got {resolution}")
        side = resolution // DeepDecoder.upscale
        self.decode = DeepDecoder(nz, ngf, out_chans)
        self.latent_shape = (nz, side, side)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decode(z)

    def reset_first_layers(self, rng: torch.Generator) -> None:
        """reset_l0 on the deep generator: its first conv (it has no Linear) and first BatchNorm."""
        redraw_first_layers(*self.decode.first_layers(), rng)

"""Shared fixtures: tiny diffusers denoisers built from configs (random weights, CPU)."""

from __future__ import annotations

import pytest
import torch
from diffusers import DiTTransformer2DModel, UNet2DConditionModel

torch.set_num_threads(1)


def tiny_unet(first_level_attention: bool = True) -> UNet2DConditionModel:
    """A two-level SD-style U-Net whose full-resolution level has transformer blocks
    (diffusers' own tiny test config has attention only at the downsampled level)."""
    down = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    if not first_level_attention:  # SDXL-shaped: no attention at the highest resolution
        down, up = ("DownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "UpBlock2D")
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    ).eval()


def tiny_dit(num_layers: int = 6) -> DiTTransformer2DModel:
    torch.manual_seed(0)
    return DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=num_layers,
        sample_size=16,
        patch_size=2,
        norm_num_groups=32,
    ).eval()


@pytest.fixture
def unet() -> UNet2DConditionModel:
    return tiny_unet()


@pytest.fixture
def dit() -> DiTTransformer2DModel:
    return tiny_dit()


@pytest.fixture
def unet_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor(500), torch.randn(2, 7, 32, generator=g)


@pytest.fixture
def dit_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor([500, 500]), torch.tensor([1, 2])

"""Every registered video field: shapes, gradients, and that it actually learns a small clip."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import moving_gradient

from nvp_nerfstudio.data.sampler import FramePixelSampler
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.methods import METHODS
from nvp_nerfstudio.metrics import psnr
from nvp_nerfstudio.rendering import render_frame

SHAPE = VideoShape(num_frames=8, height=24, width=32)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_field_shapes_and_gradients(name: str) -> None:
    torch.manual_seed(0)
    field = METHODS[name].field.setup(shape=SHAPE)
    rgb = field(torch.rand(100, 3))
    assert rgb.shape == (100, 3) and torch.isfinite(rgb).all()
    rgb.square().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters())
    edges = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert torch.isfinite(field(edges)).all()
    assert field(torch.empty(0, 3)).shape == (0, 3)  # a viewer chunk may hold no point of the frame


@pytest.mark.parametrize("name", sorted(METHODS))
def test_field_learns_a_small_clip(name: str) -> None:
    torch.manual_seed(0)
    frames = torch.from_numpy(moving_gradient(SHAPE.num_frames, SHAPE.height, SHAPE.width))
    field = METHODS[name].field.setup(shape=SHAPE)
    sampler = FramePixelSampler(frames, range(SHAPE.num_frames), seed=0, whole_frames=field.trains_on_whole_frames)
    optimizer = torch.optim.AdamW(field.parameters(), lr=METHODS[name].lr, weight_decay=1e-3)

    def mean_psnr() -> float:
        return sum(psnr(render_frame(field, i / 7, 24, 32), frames[i].float() / 255) for i in range(8)) / 8

    before = mean_psnr()
    for _ in range(150):
        indices, rgb = sampler.sample(1024)
        loss = torch.nn.functional.mse_loss(field(sampler.coordinates(indices)), rgb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert mean_psnr() > before + 3.0


def test_nerv_reads_its_generated_frames_exactly_at_pixel_centres() -> None:
    torch.manual_seed(0)
    field = METHODS["nerv-video"].field.setup(shape=SHAPE)
    with torch.no_grad():
        frame = field.frames(torch.tensor([3 / 7]))[0].permute(1, 2, 0)
        torch.testing.assert_close(render_frame(field, 3 / 7, SHAPE.height, SHAPE.width), frame.clamp(0, 1))
        # Between two pixel centres: their mean.
        between = field(torch.tensor([[1.0 / SHAPE.width, 0.5 / SHAPE.height, 3 / 7]]))[0]
        torch.testing.assert_close(between, (frame[0, 0] + frame[0, 1]) / 2)


def test_bfloat16_mlp_stays_close_to_float32_and_keeps_float32_weights() -> None:
    torch.manual_seed(0)
    config = METHODS["nvp"].field
    field, low = (replace(config, mlp=replace(config.mlp, precision=p)).setup(shape=SHAPE) for p in ("float32", "bfloat16"))
    low.load_state_dict(field.state_dict())
    xyt = torch.rand(500, 3)
    exact, approx = field(xyt), low(xyt)
    assert approx.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: a few 1e-3 on RGB in [0, 1], not more.
    assert 0 < (approx - exact).abs().max() < 2e-2
    approx.square().mean().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32 for p in low.mlp.parameters())
    # The first sine layer (w0 = 30) stays float32: its gradient matches the float32 field's closely.
    exact.square().mean().backward()
    first, first_exact = low.mlp.synthesis.layers[0].weight.grad, field.mlp.synthesis.layers[0].weight.grad
    assert torch.allclose(first, first_exact, rtol=0.1, atol=1e-3 * first_exact.abs().max())

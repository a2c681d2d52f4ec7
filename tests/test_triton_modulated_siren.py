"""The fused Triton modulated SIREN against the torch path: outputs, the latent's gradient and every
parameter's gradient, on fresh and on trained weights, at sample counts that are not multiples of the
kernels' block. Compiled on CUDA; on a CPU through Triton's interpreter, which must be switched on before
Triton is first imported: in a fresh interpreter, since other tests may have imported it."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch
from conftest import run_triton_check

from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fields.modulated_mlp import ModulatedSirenConfig

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.float() - reference.float()).norm() / reference.float().norm().clamp_min(1e-30)).item()


def outputs_and_gradients(module: torch.nn.Module, t: torch.Tensor, latent: torch.Tensor, upstream_seed: int = 1):
    latent = latent.clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = module(t, latent)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(upstream_seed)).to(out.device)
    (out * upstream).sum().backward()
    return out.detach(), latent.grad, {name: p.grad for name, p in module.named_parameters()}


def train_briefly(module: torch.nn.Module, t: torch.Tensor, latent: torch.Tensor, steps: int = 40) -> None:
    """Some Adam steps toward a random target: weights no longer at their initialisation."""
    target = torch.rand(len(t), 3, generator=torch.Generator().manual_seed(2)).to(t.device)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(module(t, latent), target).backward()
        optimizer.step()


def check_fused_matches_torch(width: int, latent_dim: int, layers: int, n: int, trained: bool, device: str) -> None:
    torch.manual_seed(0)
    config = ModulatedSirenConfig(hidden_dim=width, num_layers=layers, precision="float32", backend="torch")
    reference = config.setup(latent_dim=latent_dim).to(device)
    t = torch.rand(n, 1, device=device) * 2 - 1
    latent = torch.randn(n, latent_dim, device=device)
    if trained:
        train_briefly(reference, t, latent)
    fused = replace(config, precision="bfloat16", backend="triton").setup(latent_dim=latent_dim).to(device)
    fused.load_state_dict(reference.state_dict())
    out, latent_grad, grads = outputs_and_gradients(fused, t, latent)
    expected_out, expected_latent_grad, expected_grads = outputs_and_gradients(reference, t, latent)
    # Against float32: bfloat16 operands (8 bits of mantissa) in every hidden layer. The torch path in
    # bfloat16 is off by about half these bounds on the same inputs.
    assert relative_error(out, expected_out) < 2.5e-2
    assert relative_error(latent_grad, expected_latent_grad) < 8e-2
    for name, grad in grads.items():
        assert grad is not None and grad.shape == expected_grads[name].shape, name
        assert relative_error(grad, expected_grads[name]) < 1.2e-1, name


SIREN_CASES = [(32, 20, 3, 200, False), (32, 20, 3, 130, True), (128, 112, 3, 70, True), (16, 40, 1, 5, False), (32, 9, 2, 1, False)]


@pytest.mark.parametrize("width,latent_dim,layers,n,trained", SIREN_CASES)
def test_fused_modulated_siren_matches_torch(width: int, latent_dim: int, layers: int, n: int, trained: bool) -> None:
    run_triton_check(__name__, "check_fused_matches_torch", width, latent_dim, layers, n, trained)


def check_nvp_field_gradients(device: str) -> None:
    """A whole NVP field, the fused MLP against the torch one (grids on the torch path in both): every
    parameter's gradient, the grids' included, agrees."""
    from nvp_nerfstudio.encodings.grid import GridEncodingConfig
    from nvp_nerfstudio.fields.nvp import NVPFieldConfig

    def field(backend: str):
        torch.manual_seed(0)
        grid = GridEncodingConfig(num_levels=3, features_per_level=2, base_resolution=4, init_scale=0.5, backend="torch")
        config = NVPFieldConfig(
            keyframes=replace(grid, grid_type="dense"),
            positional=replace(grid, log2_hashmap_size=8),
            mlp=ModulatedSirenConfig(hidden_dim=32, precision="float32" if backend == "torch" else "bfloat16", backend=backend),
        )
        return config.setup(shape=VideoShape(num_frames=6, height=12, width=20)).to(device)

    reference, fused = field("torch"), field("triton")
    xyt = torch.rand(150, 3, device=device)
    grads = []
    for module in (reference, fused):
        (module(xyt) * torch.linspace(-1, 1, 3, device=device)).sum().backward()
        grads.append({name: p.grad for name, p in module.named_parameters()})
    assert any(name.startswith("keyframes") for name in grads[0]) and any(name.startswith("positional") for name in grads[0])
    for name, expected in grads[0].items():
        assert relative_error(grads[1][name], expected) < 1.2e-1, name


def test_nvp_field_with_fused_mlp_trains_every_parameter() -> None:
    run_triton_check(__name__, "check_nvp_field_gradients")


def test_triton_backend_on_cpu_says_what_to_do() -> None:
    pytest.importorskip("triton")
    module = ModulatedSirenConfig(hidden_dim=16, backend="triton").setup(latent_dim=8)
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("the interpreter runs the kernels on a CPU")
    with pytest.raises(RuntimeError, match="needs CUDA tensors"):
        module(torch.zeros(4, 1), torch.zeros(4, 8))


@pytest.mark.parametrize("changes,message", [({"hidden_dim": 48}, "power of two"), ({"precision": "float32"}, "bfloat16")])
def test_triton_backend_refuses_what_it_cannot_run(changes: dict, message: str) -> None:
    pytest.importorskip("triton")
    with pytest.raises(ValueError, match=message):
        ModulatedSirenConfig(backend="triton", **changes).setup(latent_dim=8)


def check_decoding_matches_torch(device: str) -> None:
    """Whole frames (nvp-render, nvp-decompress and the viewer query the field's forward) through the fused
    kernels and through the torch path."""
    from nvp_nerfstudio.methods import METHODS
    from nvp_nerfstudio.rendering import render_frame

    torch.manual_seed(0)
    field = METHODS["nvp"].field.setup(shape=VideoShape(num_frames=4, height=10, width=14)).to(device)
    with torch.no_grad():
        for plane in field.keyframes.values():
            plane.params.uniform_(-1, 1)  # features far from zero, so the frame has detail to get wrong
    field.mlp.config = replace(field.mlp.config, backend="triton")  # a copy: the method table stays as it is
    fused_frame = render_frame(field, 0.5, 10, 14)
    field.mlp.config = replace(field.mlp.config, backend="torch", precision="float32")
    torch_frame = render_frame(field, 0.5, 10, 14)
    assert fused_frame.std() > 1e-3 and (fused_frame - torch_frame).abs().max() < 2e-2


def test_decoding_through_the_fused_kernels_matches_torch() -> None:
    run_triton_check(__name__, "check_decoding_matches_torch")


def test_fused_kernels_compile_for_hopper() -> None:
    """Triton's compiler for an H100/H200 (sm_90) takes both kernels at NVP-S's and nvp-fast's widths and
    their launch shapes: it rejects code the interpreter runs (a loop-carried value changing type, say).
    Needs no GPU: the compiler and ptxas come with Triton."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from nvp_nerfstudio.fields import triton_modulated_siren as kernels

    bfloat16_buffers = {"wm0_ptr", "wmm_ptr", "wmz_ptr", "ws_ptr", "wh_hi_ptr", "wh_lo_ptr", "zb_ptr", "m_ptr", "h_ptr", "p_ptr", "dq_ptr", "dp_ptr"}
    for kernel, launch in ((kernels._forward_kernel, kernels.FORWARD_LAUNCH), (kernels._backward_kernel, kernels.BACKWARD_LAUNCH)):
        for width in (128, 32):
            constants = {"WIDTH": width, "LATENT": 128, "LAYERS": 3, "OUT": 3, "OUT_COLS": kernels.OUT_PAD, "BLOCK_ROWS": launch["BLOCK_ROWS"], "INTERPRETED": False}
            signature = {
                name: "constexpr" if name in constants else ("*bf16" if name in bfloat16_buffers else "*fp32") if name.endswith("_ptr") else "i32" if name in ("n", "latent_dim") else "fp32"
                for name in kernel.arg_names
            }
            compiled = triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", 90, 32), options={"num_warps": launch["num_warps"]})
            assert len(compiled.asm["cubin"]) > 1000

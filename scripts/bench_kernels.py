"""Kernel timings on CUDA: NVP's modulated SIREN through the torch path (bfloat16 autocast) and through the
fused Triton kernels at several launch configurations, forward alone and forward + backward, each checked
against the float32 torch path; and NVP's grids (keyframe planes in one launch or one each, with and
without the coarse levels' pre-reduction; the 3D hash grid). Prints a markdown table and
writes kernels.json into OUTPUT_DIR.

    python scripts/bench_kernels.py [OUTPUT_DIR] [--samples N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from nvp_nerfstudio.encodings import triton_grid
from nvp_nerfstudio.fields import triton_modulated_siren as fused_kernels
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fields.nvp import KEYFRAME_PLANES
from nvp_nerfstudio.methods import METHODS

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # a CPU only under TRITON_INTERPRET=1, to try the script
LAUNCHES = [(64, 8), (64, 16), (128, 16), (32, 4), (32, 8)]  # (samples, warps) per program


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def milliseconds(run, repeats: int = 20) -> float:
    """Median time of run() in ms, after two warm-ups."""
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        run()
        synchronize()
        times.append(1e3 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return ((value.float() - reference.float()).norm() / reference.float().norm()).item()


def time_mlp(module: torch.nn.Module, t: torch.Tensor, latent: torch.Tensor) -> dict:
    latent = latent.detach().requires_grad_()

    def forward() -> None:
        with torch.no_grad():
            module(t, latent)

    def step() -> None:
        module(t, latent).square().mean().backward()

    return {"forward_ms": milliseconds(forward), "forward_backward_ms": milliseconds(step)}


def errors(module: torch.nn.Module, reference: torch.nn.Module, t: torch.Tensor, latent: torch.Tensor) -> dict:
    """Relative errors of the output, the latent's gradient and the worst parameter gradient against `reference`."""
    results = []
    for net in (module, reference):
        z = latent.detach().requires_grad_()
        net.zero_grad(set_to_none=True)
        out = net(t, z)
        (out * torch.linspace(-1, 1, 3, device=out.device)).sum().backward()
        results.append((out.detach(), z.grad, [p.grad for p in net.parameters()]))
    (out, dz, grads), (ref_out, ref_dz, ref_grads) = results
    return {
        "output": relative_error(out, ref_out),
        "latent_grad": relative_error(dz, ref_dz),
        "worst_parameter_grad": max(relative_error(g, r) for g, r in zip(grads, ref_grads)),
    }


def mlp_rows(method: str, samples: int) -> list[dict]:
    mlp = METHODS[method].field.mlp
    latent_dim = 112  # NVP-S's latent: 3 planes x 16 levels x 2 + 8 levels x 2
    torch.manual_seed(0)
    reference = replace(mlp, precision="float32", backend="torch").setup(latent_dim=latent_dim).to(DEVICE)
    t = torch.rand(samples, 1, device=DEVICE) * 2 - 1
    latent = torch.randn(samples, latent_dim, device=DEVICE) * 0.1

    def variant(**changes) -> torch.nn.Module:
        module = replace(mlp, **changes).setup(latent_dim=latent_dim).to(DEVICE)
        module.load_state_dict(reference.state_dict())
        return module

    torch_bf16 = variant(precision="bfloat16", backend="torch")
    rows = [{"method": method, "kernels": "torch, bfloat16", **time_mlp(torch_bf16, t, latent), **errors(torch_bf16, reference, t, latent)}]
    fused = variant(precision="bfloat16", backend="triton")
    defaults = dict(fused_kernels.FORWARD_LAUNCH), dict(fused_kernels.BACKWARD_LAUNCH)
    for block, warps in LAUNCHES:
        launch = {"BLOCK_ROWS": block, "num_warps": warps}
        fused_kernels.FORWARD_LAUNCH.update(launch)
        fused_kernels.BACKWARD_LAUNCH.update(launch)
        try:
            row = {**time_mlp(fused, t, latent), **errors(fused, reference, t, latent)}
        except Exception as err:  # a launch that does not fit (registers, shared memory) is reported, not fatal
            row = {"error": str(err).splitlines()[0][:200]}
        rows.append({"method": method, "kernels": f"fused, {block} samples x {warps} warps", **row})
    fused_kernels.FORWARD_LAUNCH.update(defaults[0])
    fused_kernels.BACKWARD_LAUNCH.update(defaults[1])
    return rows


def grid_rows(samples: int) -> list[dict]:
    """NVP-S's grids for a 1280x720, 132-frame clip: the three keyframe planes in one launch (with and without
    the coarse levels' pre-reduction) and one plane at a time, and the 3D hash grid."""
    field = METHODS["nvp"].field.setup(shape=VideoShape(132, 720, 1280)).to(DEVICE)
    xyt = torch.rand(samples, 3, device=DEVICE)
    planes = [field.keyframes[name] for _, name in KEYFRAME_PLANES]
    axes = [list(axes) for axes, _ in KEYFRAME_PLANES]

    def fused_planes() -> torch.Tensor:
        return triton_grid.grids_forward(planes, xyt, axes)

    def plane_by_plane() -> torch.Tensor:
        return torch.cat([plane(xyt[:, a]) for plane, a in zip(planes, axes)], dim=-1)

    def timings(features) -> dict:
        def forward() -> None:
            with torch.no_grad():
                features()

        def step() -> None:
            features().square().sum().backward()

        return {"forward_ms": milliseconds(forward), "forward_backward_ms": milliseconds(step)}

    rows = [{"method": "nvp", "kernels": "3 planes, one launch, coarse levels pre-reduced", **timings(fused_planes)}]
    reduce_values, triton_grid.REDUCE_VALUES = triton_grid.REDUCE_VALUES, 0
    rows.append({"method": "nvp", "kernels": "3 planes, one launch, plain scatter", **timings(fused_planes)})
    triton_grid.REDUCE_VALUES = reduce_values
    rows.append({"method": "nvp", "kernels": "3 planes, a launch each", **timings(plane_by_plane)})
    rows.append({"method": "nvp", "kernels": "3D hash grid", **timings(lambda: field.positional(xyt))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", nargs="?", default="bench-results/kernels", type=Path)
    parser.add_argument("--samples", type=int, default=1 << 20)
    args = parser.parse_args()
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("error: the kernel benchmark needs a CUDA GPU (or TRITON_INTERPRET=1 and a few --samples to try it)")
    rows = [*mlp_rows("nvp", args.samples), *mlp_rows("nvp-fast", args.samples), *grid_rows(args.samples)]
    device_name = torch.cuda.get_device_name() if DEVICE == "cuda" else "CPU (Triton's interpreter)"
    print(f"{device_name}, {args.samples} samples:")
    print("| method | kernels | forward (ms) | forward + backward (ms) | M samples/s (fwd+bwd) | rel. error out / dz / worst param grad |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['method']} | {row['kernels']} | failed: {row['error']} | | | |")
            continue
        accuracy = f"{row['output']:.1e} / {row['latent_grad']:.1e} / {row['worst_parameter_grad']:.1e}" if "output" in row else "-"
        rate = args.samples / row["forward_backward_ms"] / 1e3
        print(f"| {row['method']} | {row['kernels']} | {row['forward_ms']:.2f} | {row['forward_backward_ms']:.2f} | {rate:.0f} | {accuracy} |")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "kernels.json").write_text(json.dumps({"device": device_name, "samples": args.samples, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from unittest import mock

import numba
import numpy as np
import pytest
import torch
from conftest import run_triton_check

from nvp_nerfstudio.encodings.grid import GridEncodingConfig
from nvp_nerfstudio.encodings.layout import HASH_PRIMES
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fields.nvp import NVPFieldConfig
from nvp_nerfstudio.kernels import tcnn_module


def reference_features(encoding, point: list[float]) -> np.ndarray:
    """tiny-cuda-nn's grid lookup for one point, written out with Python integers and float32 scalars."""
    config, layout = encoding.config, encoding.layout
    table = encoding.table.detach().numpy()
    dims = len(point)
    out = []
    for level in range(config.num_levels):
        scale = np.float32(np.exp2(np.float32(level) * np.float32(np.log2(np.float32(layout.per_level_scale)))))
        scale = np.float32(scale * np.float32(config.base_resolution) - np.float32(1.0))
        resolution = math.ceil(float(scale)) + 1
        positions = [np.float32(np.float32(p) * scale + np.float32(0.5)) for p in point]
        cells = [math.floor(p) for p in positions]
        fracs = [float(p) - c for p, c in zip(positions, cells)]
        size = min(-(-(resolution**dims) // 8) * 8, 1 << config.log2_hashmap_size if config.grid_type == "hash" else 2**62)
        hashed = config.grid_type == "hash" and size < resolution**dims
        feature = np.zeros(config.features_per_level)
        for corner in range(2**dims):
            bits = [(corner >> d) & 1 for d in range(dims)]
            vertex = [c + b for c, b in zip(cells, bits)]
            if hashed:
                index = 0
                for d in range(dims):
                    index ^= (vertex[d] * HASH_PRIMES[d]) & 0xFFFFFFFF
            else:
                index = sum(v * resolution**d for d, v in enumerate(vertex))
            weight = math.prod(f if b else 1.0 - f for f, b in zip(fracs, bits))
            feature += weight * table[layout.offsets[level] + index % size]
        out.append(feature)
    return np.concatenate(out)


def test_hand_computed_dense_lookup() -> None:
    # One 2D level of 2x2 vertices: scale = 2 - 1 = 1, so (0.25, 0.5) sits at (0.75, 1.0) in vertex units.
    encoding = GridEncodingConfig(grid_type="dense", num_levels=1, features_per_level=1, base_resolution=2, backend="torch").setup(
        finest_resolution=(2, 2)
    )
    assert encoding.layout.level_sizes == (8,)  # 4 vertices, padded to 8 as tiny-cuda-nn does
    with torch.no_grad():
        encoding.params.copy_(torch.arange(8.0))
    value = encoding(torch.tensor([[0.25, 0.5]]))
    # Corners (0,1) and (1,1) are dense entries 2 and 3 with weights 0.25 and 0.75.
    assert value.item() == pytest.approx(0.25 * 2 + 0.75 * 3)


def test_hand_computed_hash_index() -> None:
    encoding = GridEncodingConfig(num_levels=1, features_per_level=1, base_resolution=64, log2_hashmap_size=4, backend="torch").setup(
        finest_resolution=(64, 64, 64)
    )
    assert encoding.layout.hashed == (True,) and encoding.layout.level_sizes == (16,)
    vertex = torch.tensor([[[3, 5, 7]]])
    x = (vertex.float() - 0.5) / float(encoding.layout.scales[0])  # lands exactly on vertex (3, 5, 7)
    indices, weights = encoding.corner_indices_and_weights(x[0])
    expected = (3 * 1 ^ (5 * 2654435761 & 0xFFFFFFFF) ^ (7 * 805459861 & 0xFFFFFFFF)) % 16
    corner = int(weights[0, 0].argmax())
    assert weights[0, 0, corner].item() == pytest.approx(1.0, abs=1e-4)
    assert indices[0, 0, corner].item() == expected


@pytest.mark.parametrize("grid_type,dims,finest", [("hash", 3, (40, 30, 90)), ("dense", 2, (50, 20)), ("hash", 2, (300, 300))])
def test_torch_grid_matches_reference(grid_type: str, dims: int, finest: tuple) -> None:
    torch.manual_seed(0)
    config = GridEncodingConfig(grid_type=grid_type, num_levels=6, features_per_level=2, log2_hashmap_size=10, base_resolution=4, backend="torch", init_scale=1.0)
    encoding = config.setup(finest_resolution=finest)
    assert any(encoding.layout.hashed) == (grid_type == "hash")
    points = torch.rand(25, dims)
    features = encoding(points).detach().numpy()
    scaled = (points * encoding.axis_scale).numpy()
    for point, feature in zip(scaled, features):
        np.testing.assert_allclose(feature, reference_features(encoding, point.tolist()), rtol=1e-4, atol=1e-5)


def test_layout_follows_tcnn_rules() -> None:
    encoding = GridEncodingConfig(num_levels=8, log2_hashmap_size=12, base_resolution=16).setup(finest_resolution=(64, 64, 64))
    layout = encoding.layout
    # float32 rounding of 16 * scale**7 - 1 may tip the ceil over by one vertex, exactly as in tiny-cuda-nn
    assert layout.resolutions[0] == 16 and layout.resolutions[-1] in (64, 65)
    assert all(size % 8 == 0 and size <= 1 << 12 for size in layout.level_sizes)
    assert list(layout.offsets) == list(np.cumsum((0,) + layout.level_sizes[:-1]))
    # Coarse levels fit the table and stay dense; fine ones are hashed.
    assert layout.hashed[0] is False and layout.hashed[-1] is True
    assert encoding.params.numel() == layout.num_entries * 2


def test_gradients_reach_only_touched_entries() -> None:
    encoding = GridEncodingConfig(grid_type="dense", num_levels=2, base_resolution=4, backend="torch").setup(finest_resolution=(8, 8))
    encoding(torch.tensor([[0.3, 0.6]])).sum().backward()
    touched = (encoding.params.grad != 0).sum().item()
    assert 0 < touched <= 2 * 4 * 2  # levels x corners x features


@pytest.mark.skipif(tcnn_module() is None or not torch.cuda.is_available(), reason="needs tinycudann and CUDA")
@pytest.mark.parametrize("grid_type,finest", [("hash", (64, 40, 200)), ("dense", (120, 60))])
def test_tcnn_backend_matches_torch(grid_type: str, finest: tuple) -> None:
    config = GridEncodingConfig(grid_type=grid_type, num_levels=8, log2_hashmap_size=14, init_scale=1.0)
    encoding = config.setup(finest_resolution=finest).cuda()
    points = torch.rand(4096, len(finest), device="cuda")
    torch.testing.assert_close(encoding._tcnn_forward(points * encoding.axis_scale), encoding.torch_forward(points * encoding.axis_scale), rtol=1e-3, atol=1e-4)


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


TRITON_CASES = [("hash", (64, 40, 200), 2), ("dense", (120, 60), 4), ("hash", (300,), 1), ("dense", (9, 7, 5), 2)]


def check_triton_matches_torch(grid_type: str, finest: tuple, features: int, device: str) -> None:
    from nvp_nerfstudio.encodings.triton_grid import grid_forward

    torch.manual_seed(0)
    config = GridEncodingConfig(grid_type=grid_type, num_levels=6, features_per_level=features, log2_hashmap_size=10, base_resolution=4, init_scale=1.0)
    encoding = config.setup(finest_resolution=finest).to(device)
    points = torch.rand(1000, len(finest), device=device)
    points[:2] = torch.tensor([[0.0], [1.0]], device=device)  # the edges, where dense indices wrap
    scaled = points * encoding.axis_scale
    expected = encoding.torch_forward(scaled)
    upstream = torch.randn_like(expected)
    (expected * upstream).sum().backward()
    expected_grad, encoding.params.grad = encoding.params.grad, None
    features_out = grid_forward(encoding, scaled)
    (features_out * upstream).sum().backward()
    torch.testing.assert_close(features_out, expected, rtol=1e-4, atol=1e-4)  # another summation order
    # Atomic adds sum in another order than index_add: a sum of hundreds of terms differs in its last bits.
    torch.testing.assert_close(encoding.params.grad, expected_grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("grid_type,finest,features", TRITON_CASES)
def test_triton_backend_matches_torch(grid_type: str, finest: tuple, features: int) -> None:
    run_triton_check("test_grid", "check_triton_matches_torch", grid_type, finest, features)


PLANE_AXES = ((0, 1), (0, 2), (1, 2))


def check_fused_planes_match_torch(device: str) -> None:
    from nvp_nerfstudio.encodings import triton_grid

    torch.manual_seed(0)
    config = GridEncodingConfig(grid_type="dense", num_levels=4, features_per_level=2, base_resolution=4, init_scale=1.0, backend="torch")
    finest = (50, 30, 40)  # x, y, t
    planes = [config.setup(finest_resolution=[finest[axis] for axis in axes]).to(device) for axes in PLANE_AXES]
    rows, cols = triton_grid._reduce_tile(planes)
    sizes = [size for plane in planes for size in plane.layout.level_sizes]
    assert min(sizes) <= rows * cols < max(sizes)  # levels of 16 to 488 entries pre-reduce, 1600 to 2504 do not
    xyt = torch.rand(1000, 3, device=device)  # neither a whole number of point blocks nor of matrix products
    xyt[:4] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 1.0]], device=device)
    expected = torch.cat([plane(xyt[:, list(axes)]) for plane, axes in zip(planes, PLANE_AXES)], dim=-1)
    upstream = torch.randn_like(expected)
    (expected * upstream).sum().backward()
    expected_grads = [plane.params.grad for plane in planes]
    for plane in planes:
        plane.params.grad = None
    # Chunks of 256 points: four programs per pre-reduced level, the last one partial.
    with mock.patch.object(triton_grid, "REDUCE_CHUNK", 256):
        features = triton_grid.grids_forward(planes, xyt, PLANE_AXES)
        (features * upstream).sum().backward()
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
    for plane, expected_grad in zip(planes, expected_grads):
        torch.testing.assert_close(plane.params.grad, expected_grad, rtol=1e-4, atol=1e-4)


def test_fused_keyframe_planes_match_torch() -> None:
    """Three planes evaluated together (one forward launch, one or two backward): their features side by side,
    each plane's gradient its own."""
    run_triton_check("test_grid", "check_fused_planes_match_torch")


def check_nvp_latent_fused_matches_torch(device: str) -> None:
    torch.manual_seed(0)
    fields = []
    for backend in ("triton", "torch"):
        config = NVPFieldConfig()
        config.keyframes.backend, config.positional.backend = backend, "torch"
        fields.append(config.setup(shape=VideoShape(num_frames=12, height=18, width=30)).to(device))
    fused, reference = fields
    reference.load_state_dict(fused.state_dict())  # the same keys: checkpoints load on either path
    for plane in fused.keyframes.values():
        plane.forward = None  # the fused path must not call the planes one by one
    xyt = torch.rand(300, 3, device=device)
    xyt[:2] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]], device=device)
    latents = [field.latent(xyt) for field in fields]
    upstream = torch.randn_like(latents[0])
    for latent in latents:
        (latent * upstream).sum().backward()
    torch.testing.assert_close(latents[0], latents[1], rtol=1e-4, atol=1e-4)
    for name, plane in fused.keyframes.items():
        torch.testing.assert_close(plane.params.grad, reference.keyframes[name].params.grad, rtol=1e-4, atol=1e-4)


def test_nvp_latent_with_fused_planes_matches_torch() -> None:
    run_triton_check("test_grid", "check_nvp_latent_fused_matches_torch")


def test_backward_pre_reduces_the_coarse_keyframe_levels() -> None:
    """NVP-S on a 1280 x 720 video of 1323 frames: the three coarsest levels of each plane (256 to 848 entries)
    take one atomic per entry and feature per chunk of points, not one per point, corner and feature."""
    pytest.importorskip("triton")
    from nvp_nerfstudio.encodings.triton_grid import REDUCE_CHUNK, backward_atomics

    field = NVPFieldConfig().setup(shape=VideoShape(num_frames=1323, height=720, width=1280))
    planes = list(field.keyframes.values())
    n = 1 << 20
    old = backward_atomics(planes, n, pre_reduce=False)
    assert old == n * 3 * 16 * 4 * 2  # points x planes x levels x corners x features
    coarse = [plane.layout.level_sizes[:3] for plane in planes]
    assert all(sizes == (256, 488, 848) for sizes in coarse) and all(plane.layout.level_sizes[3] > 1024 for plane in planes)
    assert backward_atomics(planes, n) == old - 9 * n * 4 * 2 + (n // REDUCE_CHUNK) * 2 * sum(map(sum, coarse))


NUMBA_CASES = [("hash", (64, 40, 200), 2), ("dense", (120, 60), 4), ("dense", (9, 7, 5), 2), ("hash", (300, 200), 1)]


@pytest.mark.parametrize("grid_type,finest,features", NUMBA_CASES)
def test_numba_backend_matches_torch(grid_type: str, finest: tuple, features: int) -> None:
    torch.manual_seed(0)
    config = GridEncodingConfig(grid_type=grid_type, num_levels=6, features_per_level=features, log2_hashmap_size=10, base_resolution=4, init_scale=1.0)
    reference = replace(config, backend="torch").setup(finest_resolution=finest)
    kernels = replace(config, backend="numba").setup(finest_resolution=finest)
    kernels.load_state_dict(reference.state_dict())
    points = torch.rand(2000, len(finest))
    # The edges, where dense indices wrap, and points outside the unit cube (negative vertices, floor modulo).
    points[:4] = torch.tensor([[0.0], [1.0], [-0.3], [1.4]])
    upstream = torch.randn(len(points), reference.output_dim)
    for grid in (reference, kernels):
        (grid(points) * upstream).sum().backward()
    torch.testing.assert_close(kernels(points), reference(points), rtol=1e-4, atol=1e-4)  # another summation order
    torch.testing.assert_close(kernels.params.grad, reference.params.grad, rtol=1e-4, atol=1e-4)


def test_a_cpu_without_numba_says_so_when_it_falls_back_to_torch(monkeypatch) -> None:
    import nvp_nerfstudio.encodings.grid as grid_module

    monkeypatch.setattr(grid_module, "NUMBA_INSTALLED", False)
    grid = GridEncodingConfig(num_levels=2, base_resolution=4).setup(finest_resolution=(8, 8))
    with pytest.warns(RuntimeWarning, match="numba is not installed: the grids run on torch's path"):
        assert grid.backend_for(torch.rand(3, 2)) == "torch"


def test_cpu_picks_numba_for_2d_and_3d_grids_and_torch_otherwise() -> None:
    config = GridEncodingConfig(num_levels=2, base_resolution=4)
    for dims, expected in ((1, "torch"), (2, "numba"), (3, "numba"), (4, "torch")):
        grid = config.setup(finest_resolution=(8,) * dims)
        assert grid.backend_for(torch.rand(3, dims)) == expected
    with pytest.raises(ValueError, match="2 or 3 dimensions"):
        replace(config, backend="numba").setup(finest_resolution=(8,))(torch.rand(3, 1))


def test_numba_grid_from_several_threads_at_once() -> None:
    """The viewer renders on its own thread while training runs: concurrent calls must not crash or mix."""
    grid = GridEncodingConfig(num_levels=4, base_resolution=4, init_scale=1.0, backend="numba").setup(finest_resolution=(30, 20, 10))
    inputs = [torch.rand(20000, 3) for _ in range(4)]
    expected = [grid(points) for points in inputs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(grid, inputs))
    for result, serial in zip(results, expected):
        torch.testing.assert_close(result, serial, rtol=0, atol=0)


@pytest.mark.parametrize("grid_type,finest,features", NUMBA_CASES[:2])
def test_numba_grid_gives_the_same_bits_with_any_thread_count(grid_type: str, finest: tuple, features: int) -> None:
    """Threads split the forward by points and the backward by levels: each gradient row is still summed in point
    order by one thread, so training does not depend on the core count."""
    torch.manual_seed(0)
    config = GridEncodingConfig(grid_type=grid_type, num_levels=7, features_per_level=features, log2_hashmap_size=10, base_resolution=4, init_scale=1.0)
    grid = replace(config, backend="numba").setup(finest_resolution=finest)
    points = torch.rand(5003, len(finest))  # not a whole number of the kernels' point blocks
    upstream = torch.randn(len(points), grid.output_dim)
    threads = torch.get_num_threads()
    if min(threads, numba.config.NUMBA_NUM_THREADS) < 2:
        pytest.skip("needs two threads for the kernels to compare against one")
    results = []
    try:
        for count in (1, threads):
            torch.set_num_threads(count)
            grid.params.grad = None
            features_out = grid(points)
            (features_out * upstream).sum().backward()
            results.append((features_out.detach(), grid.params.grad))
    finally:
        torch.set_num_threads(threads)
    for features_out, grad in results[1:]:
        torch.testing.assert_close(features_out, results[0][0], rtol=0, atol=0)
        torch.testing.assert_close(grad, results[0][1], rtol=0, atol=0)


def nvp_field(backend: str = "auto"):
    config = NVPFieldConfig()
    config.keyframes.backend = config.positional.backend = backend
    return config.setup(shape=VideoShape(num_frames=12, height=18, width=30))


def test_nvp_field_shapes_and_gradients() -> None:
    field = nvp_field()
    assert field.latent_dim == 3 * 16 * 2 + 8 * 2
    xyt = torch.rand(64, 3)
    rgb = field(xyt)
    assert rgb.shape == (64, 3) and torch.isfinite(rgb).all()
    rgb.square().mean().backward()
    for name, parameter in field.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_nvp_field_at_time_edges_is_finite() -> None:
    field = nvp_field()
    xyt = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 1.0], [1.0, 0.0, 0.0]])
    assert torch.isfinite(field(xyt)).all()


def test_finest_positional_level_separates_neighbouring_frames() -> None:
    field = nvp_field()
    grid = field.positional
    frames = field.shape.num_frames
    t = torch.arange(frames) / (frames - 1)
    xyt = torch.stack([torch.full_like(t, 0.5), torch.full_like(t, 0.5), t], dim=-1) * grid.axis_scale
    pos = xyt[:, 2] * float(grid.layout.scales[-1]) + 0.5
    cells = torch.floor(pos).long()
    # Each frame reads vertices {cell, cell + 1} along t: neighbours must not share any.
    assert (cells[1:] - cells[:-1] >= 2).all()


def test_per_frame_grid_reads_3x3_cells_and_blends_frames() -> None:
    from nvp_nerfstudio.encodings.per_frame import PerFrameGridConfig

    grid = PerFrameGridConfig(features=1).setup(cells=(4, 3), num_frames=3)
    with torch.no_grad():
        grid.grid.copy_(torch.arange(3 * 3 * 4, dtype=torch.float32).view(3, 3, 4, 1))  # value = 12 t + 4 y + x
    # Cell (x=1, y=1) of frame 1, and halfway between frames 1 and 2.
    centre = grid(torch.tensor([[0.3, 0.5, 0.5], [0.3, 0.5, 0.75]]))
    neighbours = torch.tensor([12 + 4 * y + x for y in (0, 1, 2) for x in (0, 1, 2)], dtype=torch.float32)
    torch.testing.assert_close(centre[0], neighbours)
    torch.testing.assert_close(centre[1], neighbours + 6)
    corner = grid(torch.tensor([[1.0, 1.0, 1.0]]))[0]  # clamped at the border; t = 1 is the last frame, no 0/0
    assert corner.max() == 35 and torch.isfinite(corner).all()
    assert grid.output_dim == 9


def test_nvp_field_traces_as_one_graph_with_its_grid_kernels() -> None:
    """The numba grids are torch operators: torch.compile keeps the whole field in one graph, same numbers."""
    field = nvp_field()
    xyt = torch.rand(256, 3)
    assert torch._dynamo.explain(field.forward)(xyt).graph_break_count == 0
    compiled = torch.compile(field.forward, backend="aot_eager", dynamic=False)
    rgb = compiled(xyt)
    rgb.sum().backward()
    torch.testing.assert_close(rgb, field(xyt))
    assert field.keyframes["xy"].params.grad.abs().sum() > 0 and field.positional.params.grad.abs().sum() > 0

"""The latents' entropy model and range coder: exact round trips of any integers, tables every machine
computes alike, a rate estimate that is the bitstream's size, gradients for rate-aware training, and
damaged range-coded sections refused with the container's one-line error."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch
from test_compression import INFO, TINY_CONFIG, decode_bytes, perturbed

from nvp_nerfstudio.compression import container, latent_coder
from nvp_nerfstudio.compression.container import CompressedFileError, Container, Section
from nvp_nerfstudio.compression.field_codec import CodecOptions, compress
from nvp_nerfstudio.compression.latent_coder import PRECISION, SYMBOL_LIMIT, LevelModel, decode, encode, symbol_table
from nvp_nerfstudio.compression.latent_model import LatentEntropyModel, fit

RANGE_SECTION = "positional level 1"  # TINY_CONFIG's hashed level


def correlated(count: int, channels: int, scale: float, seed: int = 0) -> np.ndarray:
    """Laplacian symbols whose channels follow the first one, as NVP's hashed latents do."""
    generator = np.random.default_rng(seed)
    first = generator.laplace(20, scale, (count, 1))
    return np.round(first * np.linspace(1, -0.8, channels) + generator.laplace(0, scale / 3, (count, channels))).astype(np.int64)


def edge_symbols() -> tuple[np.ndarray, LevelModel]:
    """A constant level's model, and symbols on, just inside and just outside its tables' windows, and far out."""
    symbols = np.full((400, 3), 7, np.int64)
    model = fit(symbols)
    for channel in range(3):
        table = symbol_table(model.mean[channel], model.log_scale[channel])
        last = table.first + table.window - 1
        symbols[:6, channel] = [table.first - 1, table.first, table.first + 1, last - 1, last, last + 1]
    symbols[6:12, 2] = [10**12, -(10**12), 2**31, -(2**31) - 1, -SYMBOL_LIMIT, SYMBOL_LIMIT]
    return symbols, model


CASES = {
    "realistic": correlated(5000, 2, 3.0),
    "one channel": correlated(300, 1, 0.2),
    "four channels": correlated(300, 4, 40.0),
    "empty": np.zeros((0, 2), np.int64),
    "constant": np.full((1000, 2), -5, np.int64),
    "edges and far outliers": edge_symbols()[0],
    "every value far out": np.array([[SYMBOL_LIMIT, -SYMBOL_LIMIT], [0, 1], [-(2**40), 2**40]], np.int64),
}


@pytest.mark.parametrize("name", CASES)
def test_coder_round_trips_any_integers_exactly_and_deterministically(name: str) -> None:
    symbols = CASES[name]
    model = fit(symbols)
    # Also under a model that fits nothing: its centre far from every symbol, its channels wrongly predicted;
    # and under the model whose windows' edges the edge case sits on.
    channels = symbols.shape[1]
    mismatched = LevelModel(
        np.full(channels, -1e6, np.float32), np.full(channels, -3, np.float32), np.full((channels, channels), 5, np.float32)
    )
    models = [model, mismatched, *([edge_symbols()[1]] if name == "edges and far outliers" else [])]
    for coding_model in models:
        data = encode(symbols, coding_model)
        assert data == encode(symbols.copy(), coding_model)
        decoded = decode(data, coding_model, len(symbols))
        assert decoded.dtype == np.int64 and np.array_equal(decoded, symbols)
    stored = latent_coder.pack(symbols, model)
    assert np.array_equal(latent_coder.unpack(stored, channels, len(symbols)), symbols)
    with pytest.raises(ValueError, match="2\\^62"):
        encode(np.concatenate([symbols, np.full((1, channels), SYMBOL_LIMIT + 1)]), model)


def test_tables_and_bytes_are_the_same_on_every_machine() -> None:
    # Tables come from float32 parameters through exactly rounded float64 operations only; these CRCs were
    # computed once: a change of numpy, constriction or of the table arithmetic that alters a file shows here.
    table = symbol_table(np.float32(20.3), np.float32(0.7))
    assert table.frequencies.sum() == 1 << PRECISION and table.frequencies.min() >= 1
    assert (table.first, table.window) == (-11, 63)
    model = LevelModel(np.array([20.3, -16.2], np.float32), np.array([0.7, 0.2], np.float32), np.array([[0, 0], [-0.75, 0]], np.float32))
    data = encode(correlated(2000, 2, 3.0), model)
    assert (zlib.crc32(table.frequencies.tobytes()), zlib.crc32(data), len(data)) == (1821375176, 904302118, 1792)
    exponents = np.linspace(-700, 9, 100001)
    assert np.allclose(latent_coder._exp(exponents), np.exp(exponents), rtol=1e-15, atol=0)


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])
def test_rate_estimate_is_the_bitstream_size(scale: float) -> None:
    """bits() of a level's model (what training minimises) within 1 % of the range coder's stream and model."""
    symbols = correlated(50000, 2, scale)
    model = fit(symbols)
    trainable = LatentEntropyModel(num_levels=2, channels=2).double()
    trainable.load_level_model(1, model)
    estimate = trainable.bits(torch.from_numpy(symbols).double(), 1).item()
    actual = 8 * len(latent_coder.pack(symbols, model))
    assert abs(actual - estimate) < 0.01 * actual, (actual, estimate)


def test_one_pass_over_rows_of_several_levels_estimates_each_levels_bitstream() -> None:
    """row_bits (what a training step minimises, every level's rows at once, in any order) puts each row under its
    own level's model: each level's share within 1 % of its range-coded stream."""
    # Channel 0 on its own, channel 2 following channel 1: each prediction must read its own channel.
    parts = []
    for seed, scale in enumerate((0.3, 3.0, 30.0)):
        alone = np.random.default_rng(seed + 100).laplace(0, scale, (20000, 1)).round().astype(np.int64)
        parts.append(np.concatenate([alone, correlated(20000, 2, scale, seed)], 1))
    models = [fit(part) for part in parts]
    trainable = LatentEntropyModel(num_levels=3, channels=3).double()
    for level, model in enumerate(models):
        trainable.load_level_model(level, model)
    order = np.random.default_rng(0).permutation(sum(len(part) for part in parts))
    symbols = np.concatenate(parts)[order]
    levels = np.repeat(np.arange(3), [len(part) for part in parts])[order]
    bits = trainable.row_bits(torch.from_numpy(symbols).double(), torch.from_numpy(levels)).detach()
    for level, (part, model) in enumerate(zip(parts, models)):
        actual = 8 * len(latent_coder.pack(part, model))
        estimate = float(bits[torch.from_numpy(levels == level)].sum())
        assert abs(actual - estimate) < 0.01 * actual, (level, actual, estimate)


def test_a_fitted_model_codes_correlated_channels_below_their_separate_entropies() -> None:
    symbols = correlated(50000, 2, 3.0)
    separate = 0.0
    for channel in symbols.T:
        _, counts = np.unique(channel, return_counts=True)
        separate -= (counts * np.log2(counts / counts.sum())).sum()
    assert 8 * len(latent_coder.pack(symbols, fit(symbols))) < 0.9 * separate  # 0.88


@pytest.mark.parametrize("mode", ["noise", "ste"])
def test_gradients_reach_the_latents_the_step_and_the_model(mode: str) -> None:
    torch.manual_seed(0)
    model = LatentEntropyModel(num_levels=2, channels=2, init_step=0.1)
    with torch.no_grad():
        model.weights[1, 1, 0] = -0.5
    latents = (torch.randn(1000, 2) * torch.tensor([1.0, -1.0]) + torch.randn(1000, 1)).requires_grad_()
    symbols = model.quantise(latents, 1, mode)
    distortion = (model.dequantise(symbols, 1) - latents.detach()).square().sum()
    (model.bits(symbols, 1) + distortion).backward()
    assert torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0
    for parameter in (model.log_step, model.mean, model.log_scale):
        assert (parameter.grad[1] != 0).all() and (parameter.grad[0] == 0).all(), parameter
    assert model.weights.grad[1, 1, 0] != 0  # the channel prediction learns, straight through its rounding
    scaled = latents.detach() / model.step(1).detach()
    offset = symbols.detach() - scaled
    assert (offset.abs() <= 0.5).all()
    assert torch.equal(symbols.detach(), torch.round(scaled)) == (mode == "ste")
    assert torch.equal(model.quantise(latents, 1, "round"), torch.round(scaled))


def test_rounded_latents_of_a_trained_model_round_trip_through_its_stored_model() -> None:
    torch.manual_seed(0)
    model = LatentEntropyModel(num_levels=1, channels=2, init_step=0.05, init_scale=4.0)
    with torch.no_grad():
        model.mean[0] = torch.tensor([3.0, -1.5])
        model.weights[0, 1, 0] = 0.5
    symbols = model.quantise(torch.randn(3000, 2), 0, "round").long().numpy()
    data = latent_coder.pack(symbols, model.level_model(0))
    assert np.array_equal(latent_coder.unpack(data, 2, len(symbols)), symbols)


@pytest.fixture(scope="module")
def range_file() -> bytes:
    return container.to_bytes(compress(perturbed(TINY_CONFIG), INFO, CodecOptions(latent_coder="range")))


def with_payload(data: bytes, name: str, payload: bytes) -> bytes:
    """The file with one section's payload replaced and every checksum valid: damage a CRC cannot see."""
    stored = container.from_bytes(data, "clip.nvp")
    sections = [Section(s.name, s.kind, payload if s.name == name else s.payload) for s in stored.sections]
    return container.to_bytes(Container(stored.meta, sections))


@pytest.mark.parametrize(
    "damage,message",
    [
        pytest.param(lambda payload: payload[:5], "holds 5 bytes where an entropy model of 20 was expected", id="model cut short"),
        pytest.param(lambda payload: b"\xff" * 4 + payload[4:], "holds an entropy model that is not finite", id="NaN mean"),
        pytest.param(lambda payload: payload + b"\x01", "is not whole 32-bit words", id="stream of a partial word"),
        pytest.param(lambda payload: payload[:20] + b"\xff" * len(payload[20:]), "range coder stream does not decode", id="stream of ones"),
        pytest.param(lambda payload: payload[:20] + bytes(len(payload[20:])), "holds codes outside the 6-bit range", id="stream of zeros"),
    ],
)
def test_damaged_range_coded_sections_fail_with_one_line(range_file: bytes, damage, message: str) -> None:
    stored = container.from_bytes(range_file, "clip.nvp")
    assert stored.section(RANGE_SECTION).kind == "entropy:range"
    damaged = with_payload(range_file, RANGE_SECTION, damage(stored.section(RANGE_SECTION).payload))
    with pytest.raises(CompressedFileError, match=f"^clip.nvp is corrupt: section '{RANGE_SECTION}' .*{message}.*; re-run nvp-compress$"):
        decode_bytes(damaged)


def test_a_flipped_byte_in_a_range_coded_section_fails_its_checksum(range_file: bytes) -> None:
    stored = container.from_bytes(range_file, "clip.nvp")
    start = len(range_file) - sum(len(s.payload) for s in stored.sections)
    for section in stored.sections:
        if section.name == RANGE_SECTION:
            break
        start += len(section.payload)
    damaged = bytearray(range_file)
    damaged[start + len(section.payload) // 2] ^= 0x10
    message = f"^clip.nvp is corrupt: section '{RANGE_SECTION}' fails its checksum; re-run nvp-compress$"
    with pytest.raises(CompressedFileError, match=message):
        decode_bytes(bytes(damaged))

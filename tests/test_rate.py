"""Rate-aware NVP (nvp-c): quantised latents in training, the file codes exactly them, lambda trades bytes for quality."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import TINY_RUN_ARGS, run_command

from nvp_nerfstudio.compression import container, latent_coder
from nvp_nerfstudio.compression.container import CompressedFileError
from nvp_nerfstudio.compression.field_codec import OTHERS_SECTION, CodecOptions, VideoInfo, compress, decode, levels, quantised
from nvp_nerfstudio.compression.geometry import level_geometry
from nvp_nerfstudio.compression.latent_model import coded_bits
from nvp_nerfstudio.data.video import FrameSelection, VideoSource
from nvp_nerfstudio.fields.base import VideoShape
from nvp_nerfstudio.fit import FitConfig, psnr_against_time
from nvp_nerfstudio.methods import METHODS, NVP_C
from nvp_nerfstudio.rate import (
    FIXED_SHARE,
    TARGET_TOLERANCE,
    CodedRows,
    RateConfig,
    SimulatedQuantisation,
    fixed_bpp,
    quantisers,
    rate_loss,
    rate_metrics,
    set_training_progress,
    target_miss,
)
from nvp_nerfstudio.rendering import field_frames

SOURCE = VideoSource("sample:carphone", downscale=2, max_frames=8)
INFO = VideoInfo("nvp-c", 25.0, FrameSelection(max_frames=8, downscale=2))


def trained(lmbda: float, steps: int = 20, seed: int = 0):
    """nvp-c fitted to 8 frames of carphone at 88x72 through the core loop, in eval mode."""
    video = SOURCE.load()
    config = FitConfig(method="nvp-c", device="cpu", steps=steps, train_batch=2048, eval_every=float("inf"), seed=seed, lmbda=lmbda)
    _, field = psnr_against_time(config, video, VideoShape(video.num_frames, video.height, video.width))
    assert field.rate.config.lmbda == lmbda
    return field.eval()


@pytest.fixture(scope="module")
def field():
    return trained(lmbda=1e-2)


def frames(field) -> torch.Tensor:
    return torch.stack(list(field_frames(field)))


def test_the_file_renders_exactly_what_the_trained_field_renders(field) -> None:
    data = container.to_bytes(compress(field, INFO, CodecOptions()))
    decoded, info = decode(container.from_bytes(data, "clip.nvp"), "clip.nvp")
    assert info == INFO
    # The latents are exact (the trained field rounds them in evaluation); the MLP is stored at 8 bits (its default),
    # which the trained field reads in evaluation too.
    assert torch.equal(frames(decoded), frames(field))
    assert torch.equal(frames(decoded), frames(quantised(field, CodecOptions())))
    lossless_mlp = decode(container.from_bytes(container.to_bytes(compress(field, INFO, CodecOptions(mlp_bits=32))), "x"), "x")[0]
    assert torch.equal(frames(lossless_mlp), frames(field))
    assert all(level.form == "latent" for level in levels(decoded) if hasattr(level, "grid"))


def test_an_8_bit_mlp_decodes_to_what_the_codec_promises_and_takes_fewer_bytes(field) -> None:
    eight, sixteen = CodecOptions(mlp_bits=8), CodecOptions(mlp_bits=16)
    stored = {bits: container.from_bytes(container.to_bytes(compress(field, INFO, options)), "x") for bits, options in ((8, eight), (16, sixteen))}
    decoded = decode(stored[8], "x")[0]
    assert torch.equal(frames(decoded), frames(quantised(field, eight)))
    others = {bits: next(len(s.payload) for s in file.sections if s.name == OTHERS_SECTION) for bits, file in stored.items()}
    assert others[8] < 0.7 * others[16]
    weights = dict(decoded.named_parameters())["mlp.modulator.0.weight"]
    trained = dict(field.named_parameters())["mlp.modulator.0.weight"]
    # Each row within half its scale (its largest magnitude / 127) of the trained row, and not the trained row itself.
    assert not torch.equal(weights, trained)
    assert bool(((weights - trained).abs() <= trained.abs().amax(dim=1, keepdim=True) / 254 * 1.0001).all())


def test_the_rate_estimate_is_the_latents_bitstream_within_two_percent(field) -> None:
    stored = container.from_bytes(container.to_bytes(compress(field, INFO, CodecOptions())), "clip.nvp")
    sizes = {section.name: len(section.payload) for section in stored.sections}
    estimated, coded = 0.0, 0
    for level in levels(field):
        model = level.grid.quantiser.model
        symbols = torch.from_numpy(level.symbols()).float()
        estimated += coded_bits(symbols, model.bits(symbols, level.index).detach()) / 8
        coded += sizes[level.name]
    assert coded > 1000
    assert abs(coded - estimated) < 0.02 * coded + 64 * len(levels(field))  # + the steps and models each section stores


def test_a_level_whose_trained_model_lags_its_symbols_is_coded_under_their_fit(field) -> None:
    """A trained model far from the symbols the file holds (its scales 20x too wide): the file codes that level under
    the model fitted to them, and decodes to the same frames."""
    lagging = copy.deepcopy(field)
    level = max(levels(lagging), key=lambda level: len(level.symbols()))
    with torch.no_grad():
        level.grid.quantiser.model.log_scale[level.index] += math.log(20)
    sizes = {}
    for name, candidate in (("trained", field), ("lagging", lagging)):
        stored = container.from_bytes(container.to_bytes(compress(candidate, INFO, CodecOptions())), "clip.nvp")
        sizes[name] = next(len(section.payload) for section in stored.sections if section.name == level.name)
        assert torch.equal(frames(decode(stored, "clip.nvp")[0]), frames(quantised(field, CodecOptions())))
    under_lagging = len(latent_coder.encode(level.symbols(), level.grid.quantiser.model.level_model(level.index)))
    assert sizes["trained"] <= sizes["lagging"] < 0.8 * under_lagging, (sizes, under_lagging)


@pytest.mark.parametrize("progress", [0.0, 1.0], ids=["noise", "rounding"])
def test_the_estimate_rate_control_follows_is_the_files_size_within_five_percent(field, progress: float) -> None:
    """The estimate of the whole file (latents from a sample of the coded entries, the rest counted) against the
    real bytes, while training reads noise as once it rounds: the grids' rows that input in [0, 1] never reaches are
    not coded, and must not be counted; and under noise the symbols count as the file codes them, not under the
    models trained on noisy ones."""
    training = copy.deepcopy(field).train()
    training.rate.config = replace(training.rate.config, target_bpp=1.0)  # the estimate is made for rate control only
    set_training_progress(training, progress)
    xyt = torch.rand(4096, 3, generator=torch.Generator().manual_seed(0))
    estimates = []
    for _ in range(4):
        training(xyt)
        rate_loss(training)
        estimates.append(training.rate.estimated_bpp)
    estimate = sum(estimates) / len(estimates)
    data = container.to_bytes(compress(field, INFO, CodecOptions()))
    actual = 8 * len(data) / field.rate.pixels
    assert abs(estimate - actual) < 0.05 * actual, (estimate, actual)


def test_a_higher_lambda_gives_fewer_bytes() -> None:
    low, high = (len(container.to_bytes(compress(trained(lmbda), INFO, CodecOptions()))) for lmbda in (1e-3, 1.0))
    assert high < 0.8 * low


def test_a_damaged_latent_section_fails_with_the_containers_error(field) -> None:
    data = bytearray(container.to_bytes(compress(field, INFO, CodecOptions())))
    stored = container.from_bytes(bytes(data), "clip.nvp")
    latent = next(section for section in stored.sections if section.kind == "latent:range")
    at = bytes(data).index(latent.payload) + len(latent.payload) // 2
    data[at] ^= 0x40
    with pytest.raises(CompressedFileError, match="clip.nvp"):
        decode(container.from_bytes(bytes(data), "clip.nvp"), "clip.nvp")


def test_training_switches_from_noise_to_rounding_and_rate_reaches_latents_and_steps() -> None:
    config = replace(NVP_C, rate=RateConfig(ste_from=0.5))
    torch.manual_seed(0)
    field = config.setup(shape=VideoShape(4, 16, 24)).train()
    with torch.no_grad():
        field.positional.params.normal_(0.0, 0.05)  # trained-sized latents: many symbols away from zero
    xyt = torch.rand(256, 3)
    for progress, mode in ((0.2, "noise"), (0.6, "ste")):
        set_training_progress(field, progress)
        assert {quantiser.mode for quantiser in quantisers(field)} == {mode}
        field.zero_grad()
        (field(xyt).square().mean() + rate_loss(field)).backward()
        grid = field.positional
        assert grid.params.grad is not None and grid.params.grad.abs().sum() > 0
        assert grid.quantiser.model.log_step.grad.abs().sum() > 0
    # In evaluation the table is rounded: every value a whole number of steps.
    field.eval()
    table, steps = field.positional.table, field.positional.quantiser.steps()
    level_rows = field.positional.layout.level_sizes[0]
    assert torch.equal(table[:level_rows] / steps[0], torch.round(table[:level_rows] / steps[0]))


def rows_at_8_bits(matrix: torch.Tensor) -> torch.Tensor:
    """Each row rounded to 255 levels spanning its largest magnitude, as the file's 8-bit MLP promises."""
    scale = matrix.abs().amax(dim=1, keepdim=True) / 127
    return torch.round(matrix / scale) * scale


def test_from_rounding_on_training_reads_the_mlp_at_its_stored_bits_with_the_identitys_gradient() -> None:
    torch.manual_seed(0)
    field = NVP_C.setup(shape=VideoShape(4, 16, 24)).train()
    with torch.no_grad():
        field.positional.params.normal_(0.0, 0.05)
    set_training_progress(field, 0.9)
    # The same field with its MLP at 8 bits by hand, and one with its float32 MLP, both read plainly (no rate state);
    # their latents are rounded as the field's, their quantisers being in the same mode.
    by_hand, float_mlp = copy.deepcopy(field), copy.deepcopy(field)
    with torch.no_grad():
        for name, value in by_hand.mlp.named_parameters():
            value.copy_(rows_at_8_bits(value) if value.dim() == 2 else value.half().float())
    by_hand.rate = float_mlp.rate = None
    xyt = torch.rand(512, 3)
    outputs = {}
    for name, module in (("field", field), ("by hand", by_hand), ("float", float_mlp)):
        module.zero_grad()
        outputs[name] = module(xyt)
        outputs[name].square().mean().backward()
    assert torch.allclose(outputs["field"], outputs["by hand"], rtol=0, atol=1e-6)
    assert (outputs["field"] - outputs["float"]).abs().max() > 1e-5  # an untrained MLP: small, above the match above
    # Straight through: the float32 weights get the gradient of the 8-bit weights they are read as.
    for (name, trained), (_, stored) in zip(field.mlp.named_parameters(), by_hand.mlp.named_parameters()):
        assert trained.grad.abs().sum() > 0, name
        assert torch.allclose(trained.grad, stored.grad, rtol=1e-4, atol=1e-7), name
    # Before rounding, training reads the float32 MLP.
    set_training_progress(field, 0.1)
    for quantiser in quantisers(float_mlp):  # its rate state gone, set_training_progress leaves it as it is
        quantiser.mode = "noise"
    torch.manual_seed(1)
    noisy = field(xyt)
    torch.manual_seed(1)
    assert torch.equal(noisy, float_mlp(xyt))


def test_training_noise_is_uniform_independent_across_entries_and_new_each_step() -> None:
    """The noise comes from a pool drawn once: each step's must still look like a fresh draw for every entry."""
    torch.manual_seed(0)
    field = NVP_C.setup(shape=VideoShape(4, 16, 24)).train()
    set_training_progress(field, 0.1)
    quantiser = field.positional.quantiser
    table = field.positional.stored_table
    draws = torch.stack([quantiser.uniform_noise(table).clone() for _ in range(3)])
    assert draws.min() >= -0.5 and draws.max() < 0.5
    for noise in draws:
        assert abs(float(noise.mean())) < 0.01 and abs(float(noise.var()) - 1 / 12) < 0.002
        # Neighbouring entries (the pool's neighbours within a step) are uncorrelated.
        assert abs(float(torch.corrcoef(torch.stack([noise.flatten()[:-1], noise.flatten()[1:]]))[0, 1])) < 0.01
    # Each entry's noise changes from step to step, uncorrelated with the last.
    for earlier, later in zip(draws, draws[1:]):
        assert float((earlier == later).float().mean()) < 1e-3
        assert abs(float(torch.corrcoef(torch.stack([earlier.flatten(), later.flatten()]))[0, 1])) < 0.01
    # Drawn from torch's own generator: the same seed, the same noise (a resumed run continues as it would have).
    torch.manual_seed(1)
    first = quantiser.uniform_noise(table).clone()
    quantiser.noise_pool = None
    torch.manual_seed(1)
    assert torch.equal(quantiser.uniform_noise(table), first)


def test_the_rate_estimate_draws_each_level_from_its_own_coded_rows_and_weighs_it_by_their_count() -> None:
    torch.manual_seed(0)
    field = NVP_C.setup(shape=VideoShape(30, 90, 120)).train()
    grid = field.positional
    coded = CodedRows(grid, torch.device("cpu"))
    assert sum(coded.counts) < len(coded.rows)  # the grid codes more rows than an estimate draws
    level_rows = [set(level_geometry(grid, level).entries + offset) for level, offset in enumerate(grid.layout.offsets)]
    seen = [set() for _ in level_rows]
    for _ in range(20):
        rows, levels, weights = coded.sample()
        for level, (allowed, count) in enumerate(zip(level_rows, coded.counts)):
            drawn = set(rows[levels == level].tolist())
            assert drawn <= allowed and int((levels == level).sum()) == count
            # Each level's draws stand for all its coded rows.
            assert math.isclose(float(weights[levels == level].sum()), len(allowed), rel_tol=1e-5)
            seen[level] |= drawn
    # Uniform within a level: twenty draws of a small level reach nearly all of its rows.
    smallest = min(range(len(level_rows)), key=lambda level: len(level_rows[level]) / max(coded.counts[level], 1))
    assert len(seen[smallest]) > 0.9 * len(level_rows[smallest])


@pytest.mark.parametrize("with_noise", [True, False])
def test_simulated_quantisation_has_the_gradients_of_its_formula(with_noise: bool) -> None:
    """The written-out forward and backward against autograd through the formula itself (float64, three levels)."""
    torch.manual_seed(0)
    sizes = (5, 7, 3)
    table = (torch.randn(sum(sizes), 2, dtype=torch.float64) * 0.1).requires_grad_()
    steps = torch.tensor([[0.01, 0.02], [0.03, 0.005], [0.07, 0.011]], dtype=torch.float64, requires_grad=True)
    noise = torch.rand(sum(sizes), 2, dtype=torch.float64) - 0.5 if with_noise else None
    weights = torch.randn(sum(sizes), 2, dtype=torch.float64)
    entry_steps = torch.cat([step.expand(size, -1) for step, size in zip(steps, sizes)])
    if with_noise:
        expected = table + noise * entry_steps
    else:
        scaled = table / entry_steps
        expected = entry_steps * (scaled + (torch.round(scaled) - scaled).detach())
    expected_grads = torch.autograd.grad((expected * weights).sum(), (table, steps))
    actual = SimulatedQuantisation.apply(table, steps, sizes, noise)
    assert torch.allclose(actual, expected, rtol=0, atol=1e-15)
    for got, want in zip(torch.autograd.grad((actual * weights).sum(), (table, steps)), expected_grads):
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-15)


def test_rate_control_moves_lambda_a_step_at_a_time_toward_the_target_under_its_ceiling_and_within_its_bounds() -> None:
    torch.manual_seed(0)
    xyt = torch.rand(256, 3)
    config = RateConfig(lmbda=1e-2, control_gain=0.5, release_gain=1.0, reach_at=0.5, lmbda_range=(1e-4, 1e-1))
    field = replace(NVP_C, rate=config).setup(shape=VideoShape(4, 16, 24)).train()
    field(xyt)
    field.rate.config = replace(config, target_bpp=1.0)  # the estimate is made for rate control only
    rate_loss(field)
    estimate = field.rate.estimated_bpp
    # Targets out of reach of this tiny clip, which setup refuses: the controller alone. From below and from above,
    # and one under the estimate whose ceiling, falling from the first step's size, is still over it.
    for target, first, direction in ((estimate / 1e9, estimate / 1e9, 1), (estimate * 1e9, estimate * 1e9, -1), (estimate / 4, estimate * 1e3, 0)):
        field.rate.config = replace(config, target_bpp=target)
        field.rate.first_bpp.fill_(first)
        field.rate.lmbda.fill_(1e-2)
        field.rate.progress.fill_(0.0)
        lmbdas = []
        for progress in (0.1, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 1.0):
            set_training_progress(field, progress)
            lmbdas.append(float(field.rate.lmbda))
            field(xyt)
            rate_loss(field)
        # Once a step, by exp(gain) this far from the target (the log clamped to 1), whatever part of the run the
        # step is; unmoved when no step was made since the last call, and while the estimate is between the target
        # and its ceiling; no further than the bounds.
        gain = {1: config.control_gain, -1: config.release_gain, 0: 0.0}[direction]
        assert lmbdas[0] == pytest.approx(1e-2 * math.exp(gain * direction)) and lmbdas[1] == lmbdas[0]
        assert lmbdas[2] == pytest.approx(lmbdas[1] * math.exp(gain * direction))
        if direction:
            assert lmbdas[-1] == config.lmbda_range[1 if direction > 0 else 0]
        else:
            assert lmbdas[:-1] == [1e-2] * (len(lmbdas) - 1) and lmbdas[-1] > 1e-2  # past reach_at the ceiling is the target


def test_a_run_that_ends_off_its_rate_target_says_so_in_one_line_with_why(capsys) -> None:
    video = SOURCE.load()
    # 20 steps leave lambda far from settled: the estimate ends well below a target of 50 bpp.
    config = FitConfig(method="nvp-c", device="cpu", steps=20, train_batch=2048, eval_every=float("inf"), target_bpp=50.0)
    _, field = psnr_against_time(config, video, VideoShape(video.num_frames, video.height, video.width))
    estimate = field.rate.estimated_bpp
    assert rate_metrics(field) == {"estimated_bpp": estimate, "lmbda": float(field.rate.lmbda)} and estimate < 45.0
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: rate control ended at {estimate:.4g} bpp (the file's estimate), {100 * (1 - estimate / 50):.0f} % below its "
        "target of 50 bpp: lmbda had not settled when the run ended (the rate follows it over hundreds of steps): train more steps"
    ]
    # Within TARGET_TOLERANCE no warning; lmbda at a bound names the target as out of the field's reach.
    field.rate.config = replace(field.rate.config, target_bpp=estimate * (1 + TARGET_TOLERANCE * 0.9))
    assert target_miss(field) is None
    field.rate.config = replace(field.rate.config, target_bpp=estimate / (1 + TARGET_TOLERANCE * 1.1))
    assert "above its target" in target_miss(field) and "train more steps" in target_miss(field)
    field.rate.lmbda.fill_(field.rate.config.lmbda_range[1])
    assert target_miss(field).endswith(f"lmbda is at its bound ({field.rate.config.lmbda_range[1]:g}): the target is beyond this field's reach; set another target")
    # A run without a target has nothing to miss, and no rate to show.
    field.rate.config = replace(field.rate.config, target_bpp=None)
    assert target_miss(field) is None and rate_metrics(field) == {}


def test_ns_train_logs_the_estimated_size_and_lambda_under_rate_control_and_warns_of_a_missed_target(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_command(
        "ns-train", "nvp-c", "--data", "sample:carphone", *TINY_RUN_ARGS, "--max-num-iterations", "12", "--logging.steps-per-log", "5",
        "--pipeline.model.field.rate.target-bpp", "50", "--output-dir", str(tmp_path / "out"), cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (events,) = tmp_path.glob("out/*/nvp-c/*/events.out.tfevents.*")
    logged = EventAccumulator(str(events)).Reload()
    for name in ("estimated_bpp", "lmbda"):
        scalars = logged.Scalars(f"Train Metrics Dict/{name}")
        assert [event.step for event in scalars] == [5, 10] and all(event.value > 0 for event in scalars)
    # 12 steps are far too few for lmbda to settle: one warning line, after training.
    (warning,) = [line for line in result.stdout.splitlines() if line.startswith("warning: rate control ended at")]
    assert warning.endswith("train more steps") and result.stdout.index(warning) > result.stdout.index("Training Finished")


def test_a_rate_target_sizes_the_field_down_and_one_below_the_smallest_field_is_refused() -> None:
    shape = VideoShape(60, 72, 88)  # carphone at half size, 60 frames: the full field's MLP crowds a low target
    full = replace(NVP_C, rate=RateConfig()).setup(shape=shape)
    assert full.config.mlp.hidden_dim == 32
    for share in (1.5, 3.0 / FIXED_SHARE):
        target = share * fixed_bpp(full)
        built = replace(NVP_C, rate=RateConfig(target_bpp=target)).setup(shape=shape)
        if share < 1.0 / FIXED_SHARE:  # crowded: smaller until the MLP and models take at most FIXED_SHARE of the target
            assert built.config.mlp.hidden_dim < 32 and fixed_bpp(built) <= FIXED_SHARE * target
            # The file holds the config as trained: the decoder rebuilds the smaller field, not the full one.
            decoded = decode(container.from_bytes(container.to_bytes(compress(built.eval(), INFO, CodecOptions())), "x"), "x")[0]
            assert decoded.config == built.config and torch.equal(frames(decoded), frames(quantised(built, CodecOptions())))
        else:  # the full size
            assert replace(built.config, rate=None) == replace(full.config, rate=None)
    smallest = NVP_C
    while smallest.smaller() is not None:
        smallest = smallest.smaller()
    assert (smallest.mlp.hidden_dim, smallest.keyframes.num_levels, smallest.positional.num_levels) == (8, 4, 4)
    floor = fixed_bpp(replace(smallest, rate=RateConfig()).setup(shape=shape))
    with pytest.raises(SystemExit, match=r"error: a target of 0.001 bpp is below what the smallest field stores besides its latents"):
        replace(NVP_C, rate=RateConfig(target_bpp=0.001)).setup(shape=shape)
    replace(NVP_C, rate=RateConfig(target_bpp=1.01 * floor)).setup(shape=shape)


def test_a_field_without_grids_cannot_train_for_rate() -> None:
    with pytest.raises(ValueError, match="no grid to train for rate"):
        replace(METHODS["siren-video"].field, rate=RateConfig()).setup(shape=VideoShape(4, 16, 24))


def test_nvp_rd_measures_a_rate_trained_field_once_per_mlp_width(field) -> None:
    from nvp_nerfstudio.scripts.rate_distortion import RateDistortionConfig, nvp_sweep, run_sweep

    sweep = nvp_sweep(RateDistortionConfig(load_config=()))
    assert len(sweep) > 4
    kept = run_sweep(sweep, field)
    assert sorted(options.for_field(field).mlp_bits for _, options in kept) == [8, 16, 32] and kept[0][0] == "base"
    assert kept[0][1].for_field(field).mlp_bits == 8  # a field trained for rate stores its MLP at 8 bits by default
    plain = METHODS["nvp"].field.setup(shape=VideoShape(4, 16, 24))
    plain_sweep = run_sweep(sweep, plain)
    # Every other setting stays; the "16-bit MLP" point is the base itself for a field not trained for rate.
    assert [name for name, _ in plain_sweep] == [name for name, _ in sweep if name != "16-bit MLP"]
    assert plain_sweep[0][1].for_field(plain).mlp_bits == 16


def test_nvp_rd_names_the_codecs_a_rate_trained_file_uses(field) -> None:
    from nvp_nerfstudio.scripts.rate_distortion import nvp_point

    video = SOURCE.load()
    point = nvp_point("nvp-c", "8-bit MLP", field, INFO, CodecOptions(), video.frames, 1 << 16)
    # Its grids are coded under their own steps and models: the image, video and hash-bit options do not apply.
    assert point.codecs == "learned steps + range (trained or refitted models), int8 MLP"


def test_rate_settings_apply_to_methods_trained_for_rate_only() -> None:
    from nvp_nerfstudio.fit import build_field, check_methods

    config = FitConfig(method="nvp-c", device="cpu", lmbda=0.2, target_bpp=0.05, ste_from=0.4)
    field = build_field(config, VideoShape(250, 136, 320))  # bikes at 320x136: 0.05 bpp is within the field's reach
    assert (field.rate.config.lmbda, field.rate.config.target_bpp, field.rate.config.ste_from) == (0.2, 0.05, 0.4)
    assert float(field.rate.lmbda) == pytest.approx(0.2)
    assert not hasattr(build_field(replace(config, method="nvp"), VideoShape(4, 16, 24)), "rate")
    check_methods(["nvp", "nvp-c"], config)  # nvp-c uses them: no error
    with pytest.raises(SystemExit, match="apply to methods trained for rate"):
        check_methods(["nvp", "ngp-video"], config)
    with pytest.raises(SystemExit, match="--target-bpp above 0"):
        check_methods(["nvp-c"], replace(config, target_bpp=0.0))
    with pytest.raises(SystemExit, match="--ste-from is a fraction of the run"):
        check_methods(["nvp-c"], replace(config, ste_from=1.5))
    with pytest.raises(SystemExit, match="apply to methods trained for rate"):
        check_methods(["nvp"], FitConfig(method="nvp", ste_from=0.5))

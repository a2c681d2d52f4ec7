"""Lossless coding of integer latents (grid codes) under a stored entropy model, with constriction's range coder.

The model (`LevelModel`, one per grid level) is a discretised logistic per channel whose centre is the
channel's mean, shifted by a rounded linear prediction from the entry's earlier channels: entries are
coded independently (hashed levels have no spatial order), their channels jointly (NVP's channels are
strongly correlated: |r| 0.73-0.95 on bikes). latent_model.py holds its differentiable twin.

Both sides derive the coder's integer frequency tables from the stored float32 parameters with numpy
float64 arithmetic restricted to exactly rounded operations (+ - * /, floor, ldexp; no libm exp), so
every machine computes the same tables. Residuals outside a table's window are coded as its escape
symbol, then exactly (their bit length, then their bits, uniformly): any integer up to SYMBOL_LIMIT round-trips.

Core module: numpy and constriction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import constriction
import numpy as np
from jaxtyping import Float, Int

from nvp_nerfstudio.compression.container import CodecError

PRECISION = 24
"""Bits of the frequency tables: constriction's range coder's default precision."""
MIN_LOG_SCALE, MAX_LOG_SCALE = math.log(2.0**-4), math.log(2.0**12)
"""Scales are clamped to [1/16, 4096] symbols, here and in the differentiable model."""
TAIL_SCALES = 14.6
"""A table's window reaches this many scales either side of its centre: a logistic puts < 2^-20 beyond it."""
MAX_HALF_WINDOW = 1 << 15
SYMBOL_LIMIT, SHIFT_LIMIT = 1 << 62, 1 << 40
"""Symbols stay within +-2^62, means and shifts within +-2^40: every residual fits int64."""
LENGTHS, CHUNKS = constriction.stream.model.Uniform(65), constriction.stream.model.Uniform(1 << 16)
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # ln 2 split: n * _LN2_HI is exact


@dataclass(frozen=True)
class LevelModel:
    """The stored entropy model of one level's symbols [entries, channels], in symbol units (float32)."""

    mean: Float[np.ndarray, "channels"]
    log_scale: Float[np.ndarray, "channels"]
    """Natural log of each channel's logistic scale (clamped to [MIN_LOG_SCALE, MAX_LOG_SCALE] when used)."""
    weights: Float[np.ndarray, "channels channels"]
    """weights[c, d] for d < c predicts channel c's offset from its mean from channel d's; the rest is ignored."""

    def __post_init__(self) -> None:
        values = [self.mean, self.log_scale, self.weights]
        if not all(np.isfinite(value).all() for value in values) or (np.abs(self.mean) > SHIFT_LIMIT).any():
            raise CodecError("holds an entropy model that is not finite or is centred out of range")

    @property
    def channels(self) -> int:
        return len(self.mean)

    def to_bytes(self) -> bytes:
        values = [self.mean, self.log_scale, self.weights[np.tril_indices(self.channels, -1)]]
        return np.concatenate(values).astype("<f4").tobytes()

    @staticmethod
    def stored_size(channels: int) -> int:
        return 4 * (2 * channels + channels * (channels - 1) // 2)

    @classmethod
    def from_bytes(cls, data: bytes, channels: int) -> "LevelModel":
        """The model in front of `data`; CodecError when it is cut short, not finite or centred beyond SHIFT_LIMIT."""
        if len(data) < cls.stored_size(channels):
            raise CodecError(f"holds {len(data)} bytes where an entropy model of {cls.stored_size(channels)} was expected")
        values = np.frombuffer(data, dtype="<f4", count=cls.stored_size(channels) // 4).astype(np.float32)
        weights = np.zeros((channels, channels), np.float32)
        weights[np.tril_indices(channels, -1)] = values[2 * channels :]
        return cls(values[:channels], values[channels : 2 * channels], weights)


@dataclass(frozen=True)
class SymbolTable:
    """The integer model of one channel's residuals: frequencies of first, first + 1, ..., then of the escape."""

    first: int
    frequencies: Int[np.ndarray, "window_plus_escape"]
    """int64, each >= 1, summing to 2^PRECISION."""

    @property
    def window(self) -> int:
        return len(self.frequencies) - 1


def symbol_table(mean: np.float32, log_scale: np.float32) -> SymbolTable:
    """The frequency table of a discretised logistic, computed identically on every machine."""
    centre, scale = float(mean), float(_exp(np.clip(np.float64(log_scale), MIN_LOG_SCALE, MAX_LOG_SCALE)))
    half = min(MAX_HALF_WINDOW, math.ceil(TAIL_SCALES * scale) + 1)
    first = math.floor(centre) - half
    symbols = np.arange(first, first + 2 * half + 1, dtype=np.float64)
    edges = np.concatenate([symbols - 0.5, [symbols[-1] + 0.5]])
    tails = _logistic_tail(edges, centre, scale)  # mass beyond each edge, on its side of the centre
    below, above = tails[:-1], tails[1:]
    low, high = edges[:-1] >= centre, edges[1:] <= centre
    mass = np.where(low, below - above, np.where(high, above - below, 1.0 - below - above))
    mass = np.concatenate([np.maximum(mass, 0.0), [tails[0] + tails[-1]]])
    # Each symbol (and the escape) at least 1; the remainder to the likeliest.
    frequencies = 1 + np.floor(mass * ((1 << PRECISION) - len(mass))).astype(np.int64)
    frequencies[np.argmax(frequencies)] += (1 << PRECISION) - frequencies.sum()
    return SymbolTable(first, frequencies)


def shifts(symbols: Int[np.ndarray, "n channels"], model: LevelModel, channel: int) -> Int[np.ndarray, "n"]:
    """The rounded prediction of `channel` from the entry's earlier channels, added to the channel's table centre."""
    prediction = np.zeros(len(symbols), np.float64)
    for earlier in range(channel):  # in order, one product at a time: the same float64 sum everywhere
        offset = symbols[:, earlier].astype(np.float64) - np.float64(model.mean[earlier])
        prediction = prediction + np.float64(model.weights[channel, earlier]) * offset
    return np.clip(np.round(prediction), -SHIFT_LIMIT, SHIFT_LIMIT).astype(np.int64)


def encode(symbols: Int[np.ndarray, "n channels"], model: LevelModel) -> bytes:
    """The symbols (any integers within +-SYMBOL_LIMIT) as the range coder's words, channel after channel."""
    symbols = np.asarray(symbols)
    if symbols.ndim != 2 or symbols.shape[1] != model.channels or not np.issubdtype(symbols.dtype, np.integer):
        raise ValueError(f"expected integer symbols [entries, {model.channels}], got {symbols.dtype} {symbols.shape}")
    symbols = symbols.astype(np.int64)
    if symbols.size and np.abs(symbols).max() > SYMBOL_LIMIT:
        raise ValueError("symbols beyond +-2^62 cannot be coded")
    encoder = constriction.stream.queue.RangeEncoder()
    for channel, table in enumerate(_tables(model)):
        residuals = symbols[:, channel] - shifts(symbols, model, channel)
        indices = residuals - table.first
        outside = (indices < 0) | (indices >= table.window)
        encoder.encode(np.where(outside, table.window, indices).astype(np.int32), _categorical(table))
        _encode_exactly(encoder, residuals[outside].tolist())
    return encoder.get_compressed().astype("<u4").tobytes()


def decode(data: bytes, model: LevelModel, count: int) -> Int[np.ndarray, "count channels"]:
    """Inverse of encode for `count` entries (int64); CodecError when the bytes cannot be what encode wrote."""
    if len(data) % 4:
        raise CodecError(f"its range coder stream of {len(data)} bytes is not whole 32-bit words")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
    symbols = np.zeros((count, model.channels), np.int64)
    try:
        for channel, table in enumerate(_tables(model)):
            indices = decoder.decode(_categorical(table), count).astype(np.int64)
            residuals = indices + table.first
            escaped = np.flatnonzero(indices == table.window)
            values = np.array(_decode_exactly(decoder, len(escaped)), dtype=object)
            if len(values) and np.abs(values).max() > SYMBOL_LIMIT + SHIFT_LIMIT:
                raise CodecError("its escaped symbols are out of range")
            residuals[escaped] = values.astype(np.int64)
            symbols[:, channel] = residuals + shifts(symbols, model, channel)
    except AssertionError as err:  # constriction's word for a stream its model cannot have written
        raise CodecError(f"its range coder stream does not decode ({err})") from None
    if symbols.size and np.abs(symbols).max() > SYMBOL_LIMIT:
        raise CodecError("its escaped symbols are out of range")
    return symbols


def pack(symbols: Int[np.ndarray, "n channels"], model: LevelModel) -> bytes:
    """The model's parameters, then the symbols coded under it: a payload decodable from itself alone."""
    return model.to_bytes() + encode(symbols, model)


def unpack(data: bytes, channels: int, count: int) -> Int[np.ndarray, "count channels"]:
    model = LevelModel.from_bytes(data, channels)
    return decode(data[LevelModel.stored_size(channels) :], model, count)


def _tables(model: LevelModel) -> list[SymbolTable]:
    return [symbol_table(mean, log_scale) for mean, log_scale in zip(model.mean, model.log_scale)]


def _categorical(table: SymbolTable) -> constriction.stream.model.Categorical:
    # Integer frequencies as exact float64: constriction's (deterministic) fixed-point conversion sees the same input everywhere.
    return constriction.stream.model.Categorical(table.frequencies.astype(np.float64), perfect=False)


def _logistic_tail(x: Float[np.ndarray, "n"], centre: float, scale: float) -> Float[np.ndarray, "n"]:
    """sigmoid(-|x - centre| / scale): the logistic's mass beyond x, on x's side of the centre."""
    decay = _exp(-np.abs(x - centre) / scale)
    return decay / (1.0 + decay)


def _exp(x: Float[np.ndarray, "n"]) -> Float[np.ndarray, "n"]:
    """exp(x) for x <= 700 (below -700: exp(-700)) from exactly rounded operations only: libm's and numpy's
    SIMD exp may differ in the last bit from machine to machine, and a table must not."""
    x = np.maximum(np.asarray(x, np.float64), -700.0)
    n = np.floor(x / _LN2_HI + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO  # |r| <= ln(2) / 2
    result = np.ones_like(r)
    for k in range(13, 0, -1):  # Taylor series, Horner's rule: error below 1e-16 for |r| <= 0.35
        result = 1.0 + result * (r / k)
    return np.ldexp(result, n.astype(np.int64))


def _encode_exactly(encoder: constriction.stream.queue.RangeEncoder, values: list[int]) -> None:
    """Escaped residuals (rare): each one's zigzag bit length, then its bits 16 at a time, uniformly."""
    zigzags = [2 * value if value >= 0 else -2 * value - 1 for value in values]
    lengths = [value.bit_length() for value in zigzags]
    chunks = [(value >> shift) & 0xFFFF for value, length in zip(zigzags, lengths) for shift in range(0, length, 16)]
    encoder.encode(np.array(lengths, np.int32), LENGTHS)
    encoder.encode(np.array(chunks, np.int32), CHUNKS)


def _decode_exactly(decoder: constriction.stream.queue.RangeDecoder, count: int) -> list[int]:
    lengths = decoder.decode(LENGTHS, count).tolist()
    chunks = iter(decoder.decode(CHUNKS, sum(-(-length // 16) for length in lengths)).tolist())
    zigzags = [sum(next(chunks) << shift for shift in range(0, length, 16)) for length in lengths]
    return [value // 2 if value % 2 == 0 else -(value + 1) // 2 for value in zigzags]

"""Synthetic motor-cortex recordings for the Perceiver spike decoder (numpy only): no public
recording can be downloaded here, so this simulates what the decoder is built for.

A session is a sequence of center-out reaches (random direction, bell-shaped speed
profile, rests between reaches) sampled in 5 ms bins. Each neuron is a Poisson unit
cosine-tuned to the hand velocity a short lag ahead (motor cortex leads movement):

    rate_i(t) = max(0, b_i + g_i · (v(t + lag_i) · u_i))      [spikes/s]

with baseline b_i, gain g_i, preferred direction u_i (unit vector) and lag 50-150 ms.
Spike counts per bin are Poisson(rate · 5 ms). Decoder inputs follow the published
pipeline: a 600 ms window (120 bins) slides by 50 ms (10 bins); every non-zero (bin,
neuron) is one event (neuron_id, time_bin within the window, value = min(count, 7));
the target is the velocity at the window's last bin.

    s = simulate(seed=0, neurons=256, seconds=600)
    ev, y = windows(s)              # ev: list of (neuron_id, time_bin, value) per window; y [W, 2]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIN_S = 0.005
WINDOW_BINS = 120   # 600 ms
STRIDE_BINS = 10    # 50 ms
VALUE_BUCKETS = 8


@dataclass
class Session:
    counts: np.ndarray      # [T, N] spike counts per 5 ms bin
    velocity: np.ndarray    # [T, 2] hand velocity (m/s)
    preferred: np.ndarray   # [N, 2] unit preferred directions
    lags: np.ndarray        # [N] lag in bins


def reaches(rng, bins: int, peak_speed: float = 0.3):
    """Hand velocity [bins, 2]: reaches of 400-800 ms with a bell speed profile (sin²)
    in uniform random directions, separated by 100-400 ms rests."""
    v = np.zeros((bins, 2))
    t = int(rng.integers(20, 80))
    while t < bins:
        n = int(rng.integers(80, 161))
        angle = rng.uniform(0, 2 * np.pi)
        profile = np.sin(np.linspace(0, np.pi, n)) ** 2 * peak_speed * rng.uniform(0.6, 1.2)
        end = min(bins, t + n)
        v[t:end] = profile[:end - t, None] * np.array([np.cos(angle), np.sin(angle)])
        t = end + int(rng.integers(20, 81))
    return v


def simulate(seed: int = 0, neurons: int = 256, seconds: float = 600.0, recording: int = 0) -> Session:
    """A recording of `neurons` units. The units (preferred direction, baseline, gain,
    lag) depend on `seed` only; the reaches and spikes on (`seed`, `recording`), so
    recording=1 is a new session of the same neurons (held-out data for a decoder
    trained on recording 0)."""
    units = np.random.default_rng(seed)
    angles = units.uniform(0, 2 * np.pi, neurons)
    preferred = np.stack([np.cos(angles), np.sin(angles)], 1)
    baseline = units.uniform(1.0, 10.0, neurons)            # spikes/s
    gain = units.uniform(30.0, 100.0, neurons)              # spikes/s per m/s
    lags = units.integers(10, 31, neurons)                  # 50-150 ms
    rng = np.random.default_rng([seed, recording])
    bins = int(round(seconds / BIN_S))
    v = reaches(rng, bins)
    padded = np.concatenate([v, np.zeros((31, 2))])
    drive = np.stack([padded[lags[i]:lags[i] + bins] @ preferred[i] for i in range(neurons)], 1)   # [T, N]
    rate = np.maximum(0.0, baseline + gain * drive)
    counts = rng.poisson(rate * BIN_S).astype(np.int32)
    return Session(counts=counts, velocity=v, preferred=preferred, lags=lags)


def windows(s: Session, start_bin: int = 0, end_bin: int | None = None):
    """Sliding windows over bins [start_bin, end_bin): per window its events
    (neuron_id, time_bin, value arrays) and the velocity at its last bin."""
    end = s.counts.shape[0] if end_bin is None else end_bin
    events, targets = [], []
    for w0 in range(start_bin, end - WINDOW_BINS + 1, STRIDE_BINS):
        block = s.counts[w0:w0 + WINDOW_BINS]
        t_idx, n_idx = np.nonzero(block)
        events.append((n_idx.astype(np.int64), t_idx.astype(np.int64),
                       np.minimum(block[t_idx, n_idx], VALUE_BUCKETS - 1).astype(np.int64)))
        targets.append(s.velocity[w0 + WINDOW_BINS - 1])
    return events, np.asarray(targets, dtype=np.float32)


def binned_features(s: Session, start_bin: int = 0, end_bin: int | None = None, history: int = 10, width: int = 5):
    """The Wiener-filter baseline's inputs for the same windows: spike counts of the
    last `history` × `width` bins (25 ms sums), flattened [W, history·N], plus a bias."""
    end = s.counts.shape[0] if end_bin is None else end_bin
    rows = []
    for w0 in range(start_bin, end - WINDOW_BINS + 1, STRIDE_BINS):
        last = w0 + WINDOW_BINS
        block = s.counts[last - history * width:last].reshape(history, width, -1).sum(1)
        rows.append(np.concatenate([block.reshape(-1), [1.0]]))
    return np.asarray(rows, dtype=np.float64)


def ridge(X, Y, alpha: float = 1.0):
    """Ridge regression weights (the bias column is penalised like the rest)."""
    return np.linalg.solve(X.T @ X + alpha * np.eye(X.shape[1]), X.T @ Y)


def r2(pred, target) -> float:
    """R² per output dimension, averaged (the published evaluation)."""
    pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
    ss_res = ((target - pred) ** 2).sum(0)
    ss_tot = ((target - target.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - ss_res / ss_tot))

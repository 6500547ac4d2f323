"""Synthetic long-context tasks for memory sidecars, as generators (numpy only): key-value
retrieval, copy-reverse, n-back and long addition, each with a gap of filler tokens
between what must be remembered and where it is asked for.

Every sample is a pair of int64 arrays `(tokens [T], targets [T])`: the model reads
`tokens` and is scored on the positions where `targets != IGNORE` (next-token
prediction: targets[t] is what should follow tokens[..t]). Answers are teacher-forced
(the answer tokens are in the input too, one position later), so one forward pass
scores a whole answer.

Vocabulary (VOCAB = 64): PAD 0, STORE 1 (a key-value pair follows), QUERY 2 (the
question follows), ANSWER 3 (the answer follows), YES 4, NO 5, digits 6..15 (DIGIT+d),
symbols 16..63 (keys, values, filler).

    tokens, targets = key_value(np.random.default_rng(0), gap=1024)
    X, Y = batch("kv", n=32, gap=512, seed=1)                    # [32, T] each
"""
from __future__ import annotations

import numpy as np

VOCAB = 64
PAD, STORE, QUERY, ANSWER, YES, NO = 0, 1, 2, 3, 4, 5
DIGIT = 6
SYMBOL, N_SYMBOLS = 16, 48
IGNORE = -100


def _filler(rng, n):
    return rng.integers(SYMBOL, SYMBOL + N_SYMBOLS, size=n)


def _sample(parts, answer):
    """tokens = parts + [ANSWER] + answer[:-1]; targets score the answer tokens."""
    prefix = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts] + [np.array([ANSWER])])
    answer = np.asarray(answer, dtype=np.int64)
    tokens = np.concatenate([prefix, answer[:-1]])
    targets = np.full(tokens.shape, IGNORE, dtype=np.int64)
    targets[len(prefix) - 1:] = answer
    return tokens, targets


def key_value(rng, gap: int, pairs: int = 6, queries: int = 1):
    """Store `pairs` (key, value) symbol pairs, `gap` filler symbols, then query one key:
    the answer is its value. With `queries` > 1, that many distinct keys are asked in
    turn ([QUERY, key, ANSWER, value] each, every value scored): more answers per
    sequence for training; the first question is the one the gap measures."""
    keys = rng.choice(N_SYMBOLS, size=pairs, replace=False) + SYMBOL
    values = rng.integers(SYMBOL, SYMBOL + N_SYMBOLS, size=pairs)
    store = np.stack([np.full(pairs, STORE), keys, values], 1).reshape(-1)
    if queries == 1:  # (the draw single-query samples have always made)
        i = int(rng.integers(pairs))
        return _sample([store, _filler(rng, gap), [QUERY, keys[i]]], [values[i]])
    if not 1 <= queries <= pairs:
        raise ValueError(f"queries must be in 1..{pairs}, got {queries}")
    asked = rng.choice(pairs, size=queries, replace=False)
    tokens = [store, _filler(rng, gap)]
    for i in asked[:-1]:
        tokens.append([QUERY, keys[i], ANSWER, values[i]])
    tokens, targets = _sample(tokens + [[QUERY, keys[asked[-1]]]], [values[asked[-1]]])
    # Score the earlier answers too: each value is the target one position before it.
    start = 3 * pairs + gap
    for n, i in enumerate(asked[:-1]):
        targets[start + 4 * n + 2] = values[i]
    return tokens, targets


def copy_reverse(rng, gap: int, digits: int = 12):
    """A `digits`-digit sequence, `gap` filler symbols, then the sequence reversed."""
    d = rng.integers(0, 10, size=digits) + DIGIT
    return _sample([[STORE], d, _filler(rng, gap), [QUERY]], d[::-1])


def n_back(rng, gap: int, probes: int = 4):
    """A stream of `gap` symbols, then `probes` questions "was symbol s at position p
    (counted from the stream's start)?": [QUERY, digits of p..., s] answered YES or NO
    (half the probes true). N is the distance from the probed position to the question."""
    stream = _filler(rng, gap)
    parts, answers = [[STORE], stream], []
    for _ in range(probes):
        p = int(rng.integers(gap))
        truth = bool(rng.integers(2))
        s = stream[p] if truth else SYMBOL + (stream[p] - SYMBOL + 1 + int(rng.integers(N_SYMBOLS - 1))) % N_SYMBOLS
        parts.append([QUERY, *[DIGIT + int(c) for c in f"{p:04d}"], s])
        answers.append(YES if truth else NO)
    # One question per answer: ask them in turn (each answer is teacher-forced).
    tokens, targets = [np.concatenate([np.asarray(x, dtype=np.int64) for x in parts[:2]])], []
    targets.append(np.full(len(tokens[0]), IGNORE, dtype=np.int64))
    for q, a in zip(parts[2:], answers):
        q = np.asarray(list(q) + [ANSWER], dtype=np.int64)
        t = np.full(len(q), IGNORE, dtype=np.int64)
        t[-1] = a
        tokens.append(q)
        targets.append(t)
        tokens.append(np.array([a], dtype=np.int64))
        targets.append(np.array([IGNORE], dtype=np.int64))
    return np.concatenate(tokens), np.concatenate(targets)


def long_addition(rng, gap: int, digits: int = 32):
    """Two `digits`-digit numbers (most significant first), `gap` filler symbols, then
    their sum, least significant digit first (digits + 1 digits)."""
    a, b = rng.integers(0, 10, size=digits), rng.integers(0, 10, size=digits)
    total = int("".join(map(str, a))) + int("".join(map(str, b)))
    s = [int(c) for c in f"{total:0{digits + 1}d}"][::-1]
    return _sample([[STORE], a + DIGIT, [STORE], b + DIGIT, _filler(rng, gap), [QUERY]], np.array(s) + DIGIT)


TASKS = {"kv": key_value, "copy": copy_reverse, "nback": n_back, "add": long_addition}


def batch(task: str, n: int, gap: int, seed: int = 0):
    """`n` samples of a task with one gap, stacked ([n, T]; every sample has the same T)."""
    rng = np.random.default_rng(seed)
    samples = [TASKS[task](rng, gap) for _ in range(n)]
    return np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples])

"""The long-context task generators: shapes, gaps and that the targets are the
right answers (decoded back from the tokens)."""
import numpy as np
import pytest

from cortex_swift import longctx_tasks as lt


def answers(tokens, targets):
    return [int(a) for a in targets[targets != lt.IGNORE]]


@pytest.mark.parametrize("gap", [0, 16, 256])
def test_key_value(gap):
    rng = np.random.default_rng(gap)
    for _ in range(20):
        x, y = lt.key_value(rng, gap)
        assert x.shape == y.shape and len(x) == 6 * 3 + gap + 3
        pairs = {int(x[i + 1]): int(x[i + 2]) for i in range(0, 18, 3)}
        assert all(x[i] == lt.STORE for i in range(0, 18, 3))
        key = int(x[-2])
        assert x[-3] == lt.QUERY and x[-1] == lt.ANSWER and answers(x, y) == [pairs[key]]
        assert np.all((x[18:18 + gap] >= lt.SYMBOL) & (x[18:18 + gap] < lt.VOCAB))


@pytest.mark.parametrize("queries", [2, 6])
def test_key_value_several_queries(queries):
    rng = np.random.default_rng(queries)
    for _ in range(20):
        x, y = lt.key_value(rng, 40, queries=queries)
        assert x.shape == y.shape and len(x) == 18 + 40 + 4 * queries - 1
        pairs = {int(x[i + 1]): int(x[i + 2]) for i in range(0, 18, 3)}
        asked = [int(x[p + 1]) for p in np.flatnonzero(x == lt.QUERY)]
        assert len(set(asked)) == queries and all(k in pairs for k in asked)
        assert answers(x, y) == [pairs[k] for k in asked]
        pos = np.flatnonzero(y != lt.IGNORE)  # each scored at its ANSWER token
        assert all(x[p] == lt.ANSWER for p in pos)
    with pytest.raises(ValueError):
        lt.key_value(rng, 4, queries=7)


def test_copy_reverse_and_addition():
    rng = np.random.default_rng(1)
    x, y = lt.copy_reverse(rng, 40)
    d = list(x[1:13])
    assert answers(x, y) == d[::-1]
    # Teacher forcing: the answer's tokens are in the input one position later.
    pos = np.flatnonzero(y != lt.IGNORE)
    assert list(x[pos[1:]]) == answers(x, y)[:-1]
    x, y = lt.long_addition(rng, 10)
    a = int("".join(str(int(t) - lt.DIGIT) for t in x[1:33]))
    b = int("".join(str(int(t) - lt.DIGIT) for t in x[34:66]))
    got = int("".join(str(t - lt.DIGIT) for t in answers(x, y))[::-1])
    assert got == a + b


def test_n_back():
    rng = np.random.default_rng(2)
    x, y = lt.n_back(rng, 100)
    stream = x[1:101]
    i = 101
    for a in answers(x, y):
        assert x[i] == lt.QUERY
        p = int("".join(str(int(t) - lt.DIGIT) for t in x[i + 1:i + 5]))
        s = x[i + 5]
        assert a == (lt.YES if stream[p] == s else lt.NO)
        i += 8


def test_batch_is_seeded():
    a = lt.batch("kv", 4, 32, seed=3)
    b = lt.batch("kv", 4, 32, seed=3)
    assert a[0].shape == (4, 53) and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for task in lt.TASKS:
        X, Y = lt.batch(task, 3, 64, seed=0)
        assert X.max() < lt.VOCAB and X.min() >= 0 and (Y != lt.IGNORE).any()

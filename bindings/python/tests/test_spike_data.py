"""The synthetic recordings for the spike decoder: deterministic, tuned, windows in the
decoder's ranges, and a Wiener filter that decodes them (numpy only)."""
import numpy as np

from cortex_swift import spike_data as sd


def test_deterministic_and_in_range():
    a, b = sd.simulate(seed=3, neurons=40, seconds=30), sd.simulate(seed=3, neurons=40, seconds=30)
    assert np.array_equal(a.counts, b.counts) and np.array_equal(a.velocity, b.velocity)
    assert a.counts.shape == (6000, 40) and a.velocity.shape == (6000, 2)
    ev, y = sd.windows(a)
    assert len(ev) == y.shape[0] == (6000 - 120) // 10 + 1
    for n, t, v in ev[:50]:
        assert n.min(initial=0) >= 0 and n.max(initial=0) < 40
        assert t.min(initial=0) >= 0 and t.max(initial=0) < 120
        assert v.min(initial=1) >= 1 and v.max(initial=1) <= 7
    rate = a.counts.sum() / (40 * 30)
    assert 3 < rate < 40, rate  # spikes/s per neuron


def test_neurons_are_tuned_and_a_wiener_filter_decodes():
    s = sd.simulate(seed=1, neurons=64, seconds=240)
    # A neuron fires more when the hand moves along its preferred direction (ahead by its lag).
    i = 0
    drive = np.concatenate([s.velocity[s.lags[i]:], np.zeros((s.lags[i], 2))]) @ s.preferred[i]
    assert np.corrcoef(drive, s.counts[:, i])[0, 1] > 0.1
    cut = 36000
    X, Y = sd.binned_features(s, 0, cut), sd.windows(s, 0, cut)[1]
    Xt, Yt = sd.binned_features(s, cut), sd.windows(s, cut)[1]
    w = sd.ridge(X, Y, alpha=10.0)
    score = sd.r2(Xt @ w, Yt)
    print(f"[spike data] Wiener filter R² on held-out windows: {score:.3f}")
    assert score > 0.3

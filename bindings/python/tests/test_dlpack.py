"""DLPack exchange with numpy and torch (torch tests skip when torch is absent)."""
import numpy as np
import pytest

import cortex_swift as cx


@pytest.fixture()
def model(golden):
    with cx.load(golden.model_dir) as m:
        yield m


def test_numpy_zero_copy_both_protocols(model, golden):
    y, _ = model.forward(golden.t["seq/x"])
    a = np.from_dlpack(y)  # numpy asks for a versioned capsule
    b = np.from_dlpack(y)
    assert np.shares_memory(a, b)
    legacy = y.__dlpack__()  # max_version=None: a legacy "dltensor" capsule
    versioned = y.__dlpack__(max_version=(1, 0))
    assert "dltensor" in repr(legacy) and "dltensor_versioned" in repr(versioned)
    del legacy, versioned  # unconsumed capsules release their exports
    assert y.__dlpack_device__() == (1, 0)
    with pytest.raises(BufferError):
        y.__dlpack__(dl_device=(2, 0))
    with pytest.raises(BufferError):
        y.__dlpack__(copy=True)


def test_outputs_outlive_their_producers(golden):
    m = cx.load(golden.model_dir)
    y, s = m.forward(golden.t["seq/x"])
    want = np.array(np.from_dlpack(y))
    a = np.from_dlpack(y)
    y.close()
    s.close()
    m.close()
    np.testing.assert_array_equal(a, want)


def test_torch_round_trip(model, golden):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(golden.t["seq/x"])
    want = np.from_dlpack(model.forward(golden.t["seq/x"])[0])
    y, _ = model.forward(x)
    t = torch.from_dlpack(y)
    assert t.dtype == torch.float32 and tuple(t.shape) == want.shape
    np.testing.assert_array_equal(t.numpy(), want)
    # bfloat16 and a non-contiguous torch view are converted by the library.
    yb, _ = model.forward(x.to(torch.bfloat16))
    ref, _ = model.forward(x.to(torch.bfloat16).float())
    np.testing.assert_array_equal(np.from_dlpack(yb), np.from_dlpack(ref))
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)
    np.testing.assert_array_equal(np.from_dlpack(model.forward(xt)[0]), want)

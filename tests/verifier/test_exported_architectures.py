"""Small networks of the architectures users bring, exported by torch.onnx as users export
them: a MobileNet block (depthwise conv, HardSwish, a squeeze-excitation gate multiplying
two variables), a SqueezeNet fire block behind a ceil_mode MaxPool, GroupNorm and PReLU
(InstanceNormalization and reshapes), a causal attention block (a -inf mask built by
Trilu and Where), and a PixelShuffle with F.normalize (DepthToSpace, ReduceL2).

Each imports, its forward agrees with onnxruntime, and its IBP and CROWN bounds over a
small box contain onnxruntime's outputs at random points of the box.  (Found this way,
before the fixes: a windowed backward pass failing at a MaxPool, InstanceNormalization
missing, NaN forward and bounds through the attention mask.)
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from verifier import load_model
from verifier.bounds.methods import row_lower_bounds

from .opcases import plus_minus_rows, run_ort

SHAPE = (1, 3, 16, 16)


class Mobile(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.squeeze, self.excite = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.bn(self.dw(self.stem(x))))
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(F.adaptive_avg_pool2d(x, 1)))))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x * gate, 1), 1))


class Fire(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2)
        self.squeeze, self.e1, self.e3 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 1), \
            nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2, 2, ceil_mode=True)  # 7 -> 4: overhangs
        x = F.relu(self.squeeze(x))
        x = torch.cat([F.relu(self.e1(x)), F.relu(self.e3(x))], 1)
        return torch.flatten(F.adaptive_avg_pool2d(self.head(x), 1), 1)


class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.gn, self.prelu, self.head = nn.GroupNorm(2, 8), nn.PReLU(8), nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.prelu(self.gn(self.conv(x))).mean((2, 3)))


class Causal(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.head = nn.Linear(12, 36), nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.reshape(x.shape[0], 3, 16, 16)[:, :, :4, :].reshape(x.shape[0], 16, 12)
        q, k, v = self.qkv(t).reshape(t.shape[0], 16, 3, 2, 6).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(o.transpose(1, 2).reshape(t.shape[0], 16, 12).mean(1))


class Pixel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.shuffle = nn.Conv2d(3, 16, 3, 2, 1), nn.PixelShuffle(2)
        self.conv2, self.head = nn.Conv2d(4, 4, 3, 2, 1), nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.shuffle(self.conv(x))))
        return self.head(F.normalize(y.flatten(2), dim=-1).sum(-1))


def _export(net: nn.Module) -> bytes:
    """The net in eval mode, batch norms calibrated on random inputs first, exported at
    opset 17 by the TorchScript exporter."""
    torch.manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(8, *SHAPE[1:]))
    net.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, torch.rand(*SHAPE), buffer, opset_version=17, dynamo=False,
                              input_names=["x"], output_names=["y"])
        except Exception as exc:  # the exporter itself is unavailable: nothing to test
            pytest.skip(f"torch.onnx.export failed: {exc}")
    return buffer.getvalue()


@pytest.mark.parametrize("make", [Mobile, Fire, Norms, Causal, Pixel],
                         ids=lambda m: m.__name__)
def test_exported_net_imports_agrees_and_is_bounded_soundly(make):
    torch.manual_seed(1)
    data = _export(make())
    model = load_model(data)
    rng = np.random.default_rng(0)
    centre = rng.uniform(0, 1, SHAPE).astype(np.float32)
    eps = 0.01
    xs = (centre + rng.uniform(-eps, eps, (64, *SHAPE[1:]))).astype(np.float32)
    xs = np.clip(xs, centre - eps, centre + eps).astype(np.float32)
    ys = run_ort(data, xs[:, None]).reshape(64, -1)
    ours = model.graph.forward(torch.tensor(xs.reshape(64, -1), dtype=torch.float64))
    np.testing.assert_allclose(ours.numpy().reshape(64, -1), ys, rtol=1e-5, atol=1e-5)
    flat = centre.reshape(1, -1).astype(np.float64)
    batch = plus_minus_rows(flat - eps, flat + eps, ys.shape[1])
    for method in ("ibp", "crown"):
        rows = row_lower_bounds(model.graph, batch, method)[0].numpy()
        k = ys.shape[1]
        assert np.isfinite(rows).all(), method
        assert (ys >= rows[:k]).all() and (ys <= -rows[k:]).all(), method

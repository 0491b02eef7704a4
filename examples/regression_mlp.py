"""A regression MLP with a mean-squared-error loss: no classes, no accuracy.

``loss_fn=F.mse_loss`` with float targets of shape ``(N, 1)``; the surface then has
``accuracy=None``. Both ends of the Hessian spectrum are shown: the largest eigenvalues and
the most negative ones.

    python examples/regression_mlp.py --samples 2000 --train-steps 500
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import lossatlas


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--directions", type=int, default=8)
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.samples, 2, generator=g) * 6 - 3
    y = (torch.sin(x[:, :1]) * torch.cos(x[:, 1:])) + 0.05 * torch.randn(
        args.samples, 1, generator=g
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, args.hidden), nn.Tanh(), nn.Linear(args.hidden, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(args.train_steps):
        optimiser.zero_grad()
        F.mse_loss(model(x), y).backward()
        optimiser.step()

    data = (x, y)
    surf = lossatlas.surface(model, data, loss_fn=F.mse_loss, steps=args.steps, span=1.0)
    top = lossatlas.hessian_eigenvalues(model, data, k=args.k, loss_fn=F.mse_loss)
    bottom = lossatlas.hessian_eigenvalues(model, data, k=args.k, which="SA", loss_fn=F.mse_loss)
    width = lossatlas.tunnel_width(
        model, data, loss_fn=F.mse_loss, n_directions=args.directions, threshold=0.05
    )
    centre = tuple(s // 2 for s in surf.loss.shape)
    print(f"mse at the centre {float(surf.loss[centre]):.4f}; accuracy: {surf.accuracy}")
    print(f"top eigenvalues {top.tolist()}")
    print(f"most negative eigenvalues {bottom.tolist()}")
    print(f"tunnel width {width.mean:.3f} +- {width.std:.3f} ({width.censored} censored)")
    return {
        "model": model,
        "data": data,
        "surface": surf,
        "top": top,
        "bottom": bottom,
        "width": width,
    }


if __name__ == "__main__":
    main()

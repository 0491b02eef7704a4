"""A frozen-backbone fine-tune: only the new head is trainable, so only it spans the space.

Parameters with ``requires_grad=False`` stay fixed in every probe (the default ``wrt=None``
takes the trainable ones); ``wrt=`` picks any other subset (names, modules, a predicate), e.g.
one layer's Hessian.

    python examples/frozen_backbone.py --samples 2000 --train-steps 300
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
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=21)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--directions", type=int, default=8)
    args = parser.parse_args(argv)

    g = torch.Generator().manual_seed(0)
    y = torch.arange(args.samples) % 5
    x = torch.randn(5, 20, generator=g)[y] + torch.randn(args.samples, 20, generator=g)
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
    backbone.requires_grad_(False)  # "pretrained" and frozen
    model = nn.Sequential(backbone, nn.Linear(32, 5))
    optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(args.train_steps):
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    model.eval()

    data = (x, y)
    surf = lossatlas.surface(model, data, steps=args.steps, span=1.0)
    top = lossatlas.hessian_eigenvalues(model, data, k=args.k)
    width = lossatlas.tunnel_width(model, data, n_directions=args.directions)
    # The backbone's last layer alone, as if it were unfrozen:
    layer = lossatlas.hessian_eigenvalues(model, data, k=args.k, wrt=backbone[2])
    centre = tuple(s // 2 for s in surf.loss.shape)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"D = {surf.center.numel()} trainable of {total} ({trainable})")
    print(f"loss at the centre {float(surf.loss[centre]):.4f}")
    print(f"top eigenvalues of the head {top.tolist()}; of backbone[2] {layer.tolist()}")
    print(f"tunnel width {width.mean:.3f} +- {width.std:.3f} ({width.censored} censored)")
    return {
        "model": model,
        "data": data,
        "surface": surf,
        "top": top,
        "width": width,
        "layer": layer,
    }


if __name__ == "__main__":
    main()

"""Your own CNN with BatchNorm on CIFAR-10 binary files, streamed batch by batch.

The files (``data_batch_1.bin`` ... ``data_batch_5.bin`` from ``cifar-10-binary.tar.gz``) are
read by a plain ``IterableDataset``: lossatlas never holds the data set in memory, it walks
the loader once per evaluation and moves one batch at a time to the device.

    python examples/cnn_cifar10.py --root ~/data/cifar-10-batches-bin --train-steps 200
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

import lossatlas

RECORD = 1 + 3 * 32 * 32  # one label byte, then 3072 pixel bytes


class CifarBinaries(IterableDataset):
    """``(x (n, 3, 32, 32) float32 in [0, 1], y (n,) int64)`` batches from CIFAR-10 .bin files."""

    def __init__(self, files: Sequence[Path], batch: int = 256) -> None:
        self.files, self.batch = list(files), batch

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for path in self.files:
            records = np.fromfile(path, dtype=np.uint8).reshape(-1, RECORD)
            for s in range(0, len(records), self.batch):
                chunk = records[s : s + self.batch]
                x = chunk[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32) / 255
                yield torch.from_numpy(x), torch.from_numpy(chunk[:, 0].astype(np.int64))


class SmallCNN(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(4),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(8 * width, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="cifar-10-batches-bin folder")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=0)
    parser.add_argument("--steps", type=int, default=11, help="surface grid points per axis")
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--directions", type=int, default=4)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    files = sorted(args.root.glob("data_batch_*.bin"))
    data = DataLoader(CifarBinaries(files, args.batch), batch_size=None)
    model = SmallCNN(args.width)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = 0
    while step < args.train_steps:  # your own training loop; BatchNorm learns its statistics
        for x, y in data:
            optimiser.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimiser.step()
            step += 1
            if step >= args.train_steps:
                break
    model.eval()

    surf = lossatlas.surface(model, data, steps=args.steps, span=0.5, memory_budget_mb=64)
    top = lossatlas.hessian_eigenvalues(model, data, k=args.k)
    bottom = lossatlas.hessian_eigenvalues(model, data, k=1, which="SA")
    width = lossatlas.tunnel_width(model, data, n_directions=args.directions, max_distance=20.0)
    centre = tuple(s // 2 for s in surf.loss.shape)
    print(f"D = {surf.center.numel()}, samples = {surf.meta['n_samples']}")
    print(f"loss at the centre {float(surf.loss[centre]):.4f}")
    print(f"top eigenvalues {top.tolist()}, most negative {bottom.tolist()}")
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

"""Vectorised population training against a plain sequential PyTorch loop, in one run.

Setup (issue 2): 16 MLP members 40->100->100->10 on MNIST-1D, 5 epochs, batch 128, SGD with
momentum. The baseline trains the same members one after another with ``nn.Module`` +
``torch.optim.SGD`` over the *same* data orders and starts, so both do identical steps and must
end at the same losses. Goal: the population is at least 6x faster on 2 CPU cores.

    python benchmarks/population.py [--repeats 3] [--compile]

Prints the median wall time of each, their ratio, and the largest final-loss difference.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from lossatlas.config import DataConfig, ModelConfig
from lossatlas.data import load_dataset
from lossatlas.models import build_model
from lossatlas.params import ParamSpace
from lossatlas.populations.train import initial_points, train_population
from lossatlas.seeding import make_generator

MEMBERS, EPOCHS, BATCH, LR, MOMENTUM, SEED = 16, 5, 128, 0.05, 0.9, 0
GOAL = 6.0


def sequential_loop(
    model: nn.Module, starts: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The anchor: one member after another, stock nn.Module + torch.optim.

    Like the population, it records the full train loss before training and after every epoch
    (a learning curve is what a researcher's loop keeps). Returns the final train losses.
    """
    space = ParamSpace(model)

    @torch.no_grad()
    def train_loss() -> torch.Tensor:
        model.eval()
        loss = nn.functional.cross_entropy(model(x), y)
        model.train()
        return loss

    finals = []
    for k in range(starts.shape[0]):
        space.load(starts[k])
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        model.train()
        curve = [train_loss()]
        for epoch in range(EPOCHS):
            order = torch.randperm(x.shape[0], generator=make_generator(SEED, "order", k, epoch))
            for start in range(0, x.shape[0], BATCH):
                idx = order[start : start + BATCH]
                opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
            curve.append(train_loss())
        finals.append(curve[-1])
    return torch.stack(finals)


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()

    data = load_dataset(DataConfig(name="mnist1d", val_fraction=0.0))
    x, y = data.split("train")
    model = build_model(
        ModelConfig(name="mlp", width=100, depth=2), data.input_shape, data.num_classes, seed=SEED
    )
    starts = initial_points(ParamSpace(model), MEMBERS, seed=SEED)
    steps = EPOCHS * -(-x.shape[0] // BATCH)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{MEMBERS} members x {steps} steps, D = {starts.shape[1]:,}"
    )

    def population(compile_step: bool = False) -> torch.Tensor:
        pop = train_population(
            model,
            (x, y),
            members=MEMBERS,
            epochs=EPOCHS,
            batch_size=BATCH,
            lr=LR,
            momentum=MOMENTUM,
            seed=SEED,
            start_params=starts,
            compile=compile_step,
        )
        return pop.history["train_loss"][:, -1]

    variants = {"population (eager vmap)": lambda: population(False)}
    if args.compile:
        variants["population (torch.compile, incl. compile)"] = lambda: population(True)
    times: dict[str, list[float]] = {"sequential loop": []}
    finals: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        seconds, finals["sequential loop"] = timed(lambda: sequential_loop(model, starts, x, y))
        times["sequential loop"].append(seconds)
        for name, fn in variants.items():
            seconds, finals[name] = timed(fn)
            times.setdefault(name, []).append(seconds)
    base = statistics.median(times["sequential loop"])
    for name, values in times.items():
        median = statistics.median(values)
        gap = (finals[name] - finals["sequential loop"]).abs().max().item()
        print(
            f"{name:45s} median {median:7.3f} s  speed-up {base / median:5.2f}x  "
            f"max |final loss diff| {gap:.2e}"
        )
    best = max(base / statistics.median(v) for k, v in times.items() if k != "sequential loop")
    verdict = "meets" if best >= GOAL else "MISSES"
    print(f"goal: >= {GOAL:.0f}x over the sequential loop -> best {best:.2f}x ({verdict} the goal)")


if __name__ == "__main__":
    main()

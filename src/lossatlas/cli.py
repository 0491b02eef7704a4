"""The ``lossatlas`` command line. Each command parses options and calls one library function.

User errors (:class:`~lossatlas.errors.LossAtlasError`, and OS errors such as a read-only
folder) print one line on stderr and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from lossatlas.allocator import steady_allocator
from lossatlas.config import load_config
from lossatlas.errors import ConfigError, LossAtlasError

app = typer.Typer(
    name="lossatlas",
    help="Map the large-scale structure of neural-network loss landscapes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")
USER_ERROR = 2

# ----------------------------------------------------------------------------- shared options

OutOption = Annotated[
    str,
    typer.Option(
        "--out",
        "-o",
        help="Output folder, or an fsspec URL (s3://bucket/prefix); the store is OUT/atlas.zarr.",
    ),
]
PresetOption = Annotated[str, typer.Option(help="Preset name (smoke, quick, ...).")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file; overrides the preset.")
]
OverridesArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Dotted overrides such as train.lr=0.1 model.width=64.", show_default=False
    ),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
ExecutorOption = Annotated[
    str | None,
    typer.Option(
        "--executor",
        # "\\[" keeps rich from reading "[ray]" as markup (the help said "needs lossatlas").
        help="Where units of work run: local (this process), processes (a worker process "
        "per core of this machine) or ray (needs pip install lossatlas\\[ray]). Default: the "
        "config's execution.executor (local).",
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to join ('auto', 'ray://head:10001'); default: a local instance.",
    ),
]


WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="If another lossatlas command is writing OUT, wait for it to finish instead of "
        "stopping.",
    ),
]


@contextlib.contextmanager
def _driving(out: str | Path, wait: bool) -> Iterator[None]:
    """Hold OUT's one-driver lock for a command that writes (see lossatlas.lock)."""
    from lossatlas.lock import driver_lock

    def waiting(holder: str) -> None:
        err_console.print(f"waiting for {holder} to finish with {out}", highlight=False)

    with driver_lock(out, wait=wait, on_wait=waiting):
        yield


ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="torch threads of this process (default: one per core); fewer help on a busy box.",
    ),
]


def _execution_flags(
    executor: str | None, ray_address: str | None, threads: int | None = None
) -> dict[str, Any]:
    """Config overrides of --executor, --ray-address and --threads (an address implies ray)."""
    if ray_address is not None and executor is None:
        executor = "ray"
    return {
        "execution.executor": executor,
        "execution.ray_address": ray_address,
        "execution.threads": threads,
    }


def _guarded(debug: bool, action: Callable[[], T]) -> T:
    """Run ``action``; turn user errors into one line on stderr and exit code 2."""
    if debug:
        return action()
    try:
        return action()
    except LossAtlasError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    except OSError as exc:  # e.g. disk full or permissions changing under a running job
        from lossatlas.faults import fault_message

        err_console.print(
            f"[bold red]error:[/] {fault_message(exc, 'access')}", highlight=False, soft_wrap=True
        )
    except KeyboardInterrupt:
        err_console.print("interrupted: re-run the same command to resume", highlight=False)
        raise typer.Exit(130) from None
    raise typer.Exit(USER_ERROR)


def _resolve_config(
    preset: str, config: Path | None, overrides: list[str] | None, flags: dict[str, Any]
) -> Any:
    """The full run config (core + studies), so every preset validates in every command."""
    from lossatlas.runtime import apply_threads
    from lossatlas.studies.config import RunConfig

    resolved = load_config(
        preset=preset, file=config, overrides=overrides or [], flags=flags, schema=RunConfig
    )
    apply_threads(resolved.execution.threads)
    return resolved


# ----------------------------------------------------------------------------- commands


@app.command()
def train(
    out: OutOption = "out/atlas",
    preset: PresetOption = "quick",
    config: ConfigOption = None,
    members: Annotated[int | None, typer.Option(help="Population size K.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    data: Annotated[
        str | None,
        typer.Option(help="Dataset name (mnist1d, digits, npz, mnist, fashion_mnist, cifar10)."),
    ] = None,
    data_path: Annotated[Path | None, typer.Option(help="File or folder of the dataset.")] = None,
    model: Annotated[
        str | None, typer.Option(help="Model name (mlp, cnn1d, simplecnn, resnet, wrn).")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="Base learning rate.")] = None,
    seed: Annotated[int | None, typer.Option(help="Root seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    threads: ThreadsOption = None,
    wait: WaitOption = False,
    overrides: OverridesArg = None,
    debug: DebugOption = False,
) -> None:
    """Train a population of networks in lock-step and write it to the store."""
    from lossatlas.stages import train_stage

    def action() -> None:
        flags = {
            "train.members": members,
            "train.epochs": epochs,
            "data.name": data,
            "data.path": str(data_path) if data_path else None,
            "model.name": model,
            "train.lr": lr,
            "seed": seed,
            "device": device,
            **_execution_flags(executor, ray_address, threads),
        }
        cfg = _resolve_config(preset, config, overrides, flags)
        with _driving(out, wait):
            summary = train_stage(cfg, out)
        _print_train_summary(summary)
        if summary.diverged.all():
            raise _diverged_error(summary.diverged)

    _guarded(debug, action)


def _diverged_error(diverged: Any) -> LossAtlasError:
    return LossAtlasError(
        f"all {len(diverged)} members diverged (loss became NaN or inf); lower the learning rate"
    )


def _print_train_summary(summary: Any) -> None:
    table = Table(title=f"population in {summary.out} (D = {summary.dim:,})")
    table.add_column("member", justify="right")
    names = list(summary.final)
    for name in names:
        table.add_column(name.replace("_", " "), justify="right")
    for k in range(summary.members):
        row = [str(k)] + [f"{summary.final[n][k]:.4f}" for n in names]
        if summary.diverged[k]:
            row[0] += " (diverged)"
        table.add_row(*row)
    console.print(table)
    status = (
        f"ran {len(summary.ran_units)} unit(s), skipped {summary.skipped_units} already "
        f"complete, in {summary.seconds:.1f} s"
    )
    console.print(status, highlight=False)
    n_div = int(summary.diverged.sum())
    if 0 < n_div < summary.members:
        err_console.print(
            f"warning: {n_div} of {summary.members} members diverged and were "
            "frozen; their metrics are NaN",
            highlight=False,
        )


@app.command()
def show(
    out: Annotated[str, typer.Argument(help="Output folder (or URL) holding atlas.zarr.")],
    claims: Annotated[
        bool,
        typer.Option("--claims", help="Print the claims dashboard (verdicts, estimates) instead."),
    ] = False,
    debug: DebugOption = False,
) -> None:
    """List what the atlas store in OUT holds, or (--claims) its claims dashboard."""
    from lossatlas.store import AtlasStore

    def action() -> None:
        store = AtlasStore.open(out, read_only=True)
        if claims:
            from lossatlas.report import claims_table

            console.print(claims_table(store))
        else:
            console.print(store.to_rich())

    _guarded(debug, action)


# ----------------------------------------------------------------------------- probes

MemberOption = Annotated[int, typer.Option(help="Which member of the stored population.")]
CheckpointOption = Annotated[
    Path | None,
    typer.Option(
        help="Probe a user checkpoint (.safetensors, or .pt loaded with weights_only) instead; "
        "--preset/--config/overrides then name its model and data."
    ),
]
NameOption = Annotated[str, typer.Option(help="Name of this probe run inside the store.")]
AutocastOption = Annotated[
    str | None,
    typer.Option(
        help="Evaluate under torch.autocast in bf16 or fp16 (default off); the loss error "
        "against full precision is reported."
    ),
]


def _probe_executor(executor: str | None, ray_address: str | None) -> Any:
    """The executor a probe command's --executor/--ray-address ask for (default: local)."""
    from lossatlas.config import ExecutionConfig
    from lossatlas.execute import executor_for

    flags = _execution_flags(executor, ray_address)
    execution = _validated(
        ExecutionConfig,
        executor=flags["execution.executor"] or "local",
        ray_address=flags["execution.ray_address"],
    )
    return executor_for(execution)


def _probe_request(
    out: str | Path,
    member: int,
    checkpoint: Path | None,
    preset: str,
    config: Path | None,
    overrides: list[str] | None,
) -> Any:
    from lossatlas.stages.probes import ProbeRequest

    cfg = _resolve_config(preset, config, overrides, {}) if checkpoint is not None else None
    if checkpoint is None and (config is not None or overrides):
        raise LossAtlasError(
            "--config and overrides apply to --checkpoint runs; a stored "
            "population keeps the config it was trained with"
        )
    return ProbeRequest(out=out, member=member, checkpoint=checkpoint, config=cfg)


def _print_probe(out: str | Path, group: str, ran: bool) -> None:
    from lossatlas.store import AtlasStore

    store = AtlasStore.open(out, read_only=True)
    result = store.attrs(group).get("result", {})
    table = Table(title=f"{group} ({'computed' if ran else 'already complete, not recomputed'})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.6g}" if isinstance(value, float) else str(value))
    console.print(table)


def _probe_action(
    stage: Callable[..., tuple[str, bool]],
    options_model: Any,
    values: dict[str, Any],
    where: tuple[Any, ...],
    name: str,
    executor: str | None = None,
    ray_address: str | None = None,
    wait: bool = False,
) -> Callable[[], None]:
    """What every probe command does: validate its options, find the target, run, print.

    ``where`` is ``(out, member, checkpoint, preset, config, overrides)``, as
    :func:`_probe_request` takes them.
    """

    def action() -> None:
        options = _validated(options_model, **values)
        request = _probe_request(*where)
        run_on = _probe_executor(executor, ray_address)
        with _driving(where[0], wait):
            group, ran = stage(request, options, name, executor=run_on)
        _print_probe(where[0], group, ran)

    return action


@app.command()
def width(
    out: OutOption = "out/atlas",
    member: MemberOption = 0,
    checkpoint: CheckpointOption = None,
    preset: PresetOption = "quick",
    config: ConfigOption = None,
    directions: Annotated[
        int | None, typer.Option(help="Number of random directions K (default 32).")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Loss rise that ends the tunnel (default 0.1).")
    ] = None,
    threshold_mode: Annotated[
        str | None, typer.Option(help="additive (default), multiplicative or absolute.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="gaussian (default) or filter directions.")
    ] = None,
    max_distance: Annotated[
        float | None, typer.Option(help="Longest distance searched (default 100).")
    ] = None,
    initial_step: Annotated[
        float | None,
        typer.Option(help="First distance of the doubling scan (default 0.01)."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="train (default), val or test.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the directions (default 0).")] = None,
    snapshots: Annotated[
        bool | None,
        typer.Option(help="Also track width over the stored training snapshots (default off)."),
    ] = None,
    autocast: AutocastOption = None,
    name: NameOption = "default",
    wait: WaitOption = False,
    overrides: OverridesArg = None,
    debug: DebugOption = False,
) -> None:
    """Tunnel width: how far the loss stays low along random directions (PAPERS A6)."""
    from lossatlas.config import WidthOptions
    from lossatlas.stages.width import width_stage

    values = _given(
        {
            "n_directions": directions,
            "threshold": threshold,
            "threshold_mode": threshold_mode,
            "direction_kind": kind,
            "max_distance": max_distance,
            "initial_step": initial_step,
            "split": split,
            "seed": seed,
            "snapshots": snapshots,
            "autocast": autocast,
        }
    )
    where = (out, member, checkpoint, preset, config, overrides)
    _guarded(debug, _probe_action(width_stage, WidthOptions, values, where, name, wait=wait))


def _given(values: dict[str, Any]) -> dict[str, Any]:
    """The options the user gave: the options model owns every default."""
    return {key: value for key, value in values.items() if value is not None}


def _validated(model: Any, **values: Any) -> Any:
    """Build a pydantic options model, turning validation errors into one-line ConfigErrors."""
    from pydantic import ValidationError

    from lossatlas.config import format_validation_error

    try:
        return model(**values)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from exc


@app.command()
def surface(
    out: OutOption = "out/atlas",
    member: MemberOption = 0,
    checkpoint: CheckpointOption = None,
    preset: PresetOption = "quick",
    config: ConfigOption = None,
    directions: Annotated[
        str | None, typer.Option(help="filter (default), gaussian, pca or eigen.")
    ] = None,
    dims: Annotated[int | None, typer.Option(help="1 (a line) or 2 (a plane, default).")] = None,
    span: Annotated[
        float | None, typer.Option(help="Coordinates run from -span to span (default 1).")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Grid points per axis (default 51).")] = None,
    split: Annotated[str | None, typer.Option(help="train (default), val or test.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of random directions (default 0).")] = None,
    bn_recompute: Annotated[
        bool | None,
        typer.Option(help="Recompute BatchNorm statistics at every point (default off)."),
    ] = None,
    row_chunks: Annotated[
        int | None,
        typer.Option(help="Grid rows are split into this many units of work (default 4)."),
    ] = None,
    autocast: AutocastOption = None,
    name: NameOption = "default",
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    wait: WaitOption = False,
    overrides: OverridesArg = None,
    debug: DebugOption = False,
) -> None:
    """Loss on a line or plane around a trained point (Li et al. directions, PCA, eigen)."""
    from lossatlas.config import SurfaceOptions
    from lossatlas.stages.surface import surface_stage

    values = _given(
        {
            "directions": directions,
            "dims": dims,
            "span": span,
            "steps": steps,
            "split": split,
            "seed": seed,
            "bn_recompute": bn_recompute,
            "row_chunks": row_chunks,
            "autocast": autocast,
        }
    )
    where = (out, member, checkpoint, preset, config, overrides)
    action = _probe_action(
        surface_stage, SurfaceOptions, values, where, name, executor, ray_address, wait
    )
    _guarded(debug, action)


@app.command()
def curvature(
    out: OutOption = "out/atlas",
    member: MemberOption = 0,
    checkpoint: CheckpointOption = None,
    preset: PresetOption = "quick",
    config: ConfigOption = None,
    k: Annotated[int | None, typer.Option(help="Top eigenvalues by Lanczos (default 20).")] = None,
    method: Annotated[
        str | None, typer.Option(help="Counts: auto (default), exact or slq.")
    ] = None,
    samples: Annotated[int | None, typer.Option(help="Train samples (default: all).")] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of the stochastic estimators (default 0).")
    ] = None,
    name: NameOption = "default",
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    wait: WaitOption = False,
    overrides: OverridesArg = None,
    debug: DebugOption = False,
) -> None:
    """Hessian spectrum: top eigenvalues, trace, density and short-direction counts."""
    from lossatlas.config import CurvatureOptions
    from lossatlas.stages.curvature import curvature_stage

    values = _given({"k": k, "method": method, "eval_samples": samples, "seed": seed})
    where = (out, member, checkpoint, preset, config, overrides)
    action = _probe_action(
        curvature_stage, CurvatureOptions, values, where, name, executor, ray_address, wait
    )
    _guarded(debug, action)


def _wedge_step(
    step: str,
    out: str | Path,
    preset: str,
    config: Path | None,
    overrides: list[str] | None,
    execution: dict[str, Any],
    wait: bool = False,
) -> None:
    """Train the base population if needed, then run one step of the wedge study."""
    from lossatlas.studies.wedges.study import run_wedge_step

    cfg = _resolve_config(preset, config, overrides, execution)
    with _driving(out, wait):
        ran = run_wedge_step(cfg, out, step)
    _print_claims(out, f"wedges/{step}", ran)


def _print_claims(out: str | Path, group: str, ran: bool) -> None:
    from lossatlas.claims import load_claims
    from lossatlas.store import AtlasStore

    store = AtlasStore.open(out, read_only=True)
    ids = set(store.attrs(group).get("claims", []))
    table = Table(title=f"{group} ({'computed' if ran else 'already complete, not recomputed'})")
    for column in ("claim", "holds", "criterion"):
        table.add_column(column)
    marks = {True: "[green]yes[/]", False: "[red]no[/]", None: "undecided"}
    for claim in load_claims(store):
        if claim.id in ids:
            table.add_row(claim.id, marks[claim.holds], claim.criterion)
    console.print(table)


def _make_step_command(step: str, doc: str) -> None:
    def command(
        out: OutOption = "out/atlas",
        preset: PresetOption = "quick",
        config: ConfigOption = None,
        executor: ExecutorOption = None,
        ray_address: RayAddressOption = None,
        wait: WaitOption = False,
        overrides: OverridesArg = None,
        debug: DebugOption = False,
    ) -> None:
        execution = _execution_flags(executor, ray_address)
        _guarded(debug, lambda: _wedge_step(step, out, preset, config, overrides, execution, wait))

    command.__doc__ = doc
    app.command(name=step.replace("_", "-") if step != "radial_cuts" else "cuts")(command)


for _step, _doc in {
    "toy": "The toy n-wedge model: hyperplane threshold, tunnel, radial probe (PAPERS A1).",
    "radial_cuts": "2-D cuts through the origin and optima at several radii (PAPERS A2).",
    "tunnel": "Optimised tunnel between two optima, with short directions (PAPERS A3-A4).",
    "connectors": "m-connectors joining m+1 optima, with short directions (PAPERS A5).",
    "sweep": "Tunnel width and short directions under LR, L2, dropout, batch, width (A6).",
    "ensemble": "Cyclic-LR snapshot ensembles against SWA and baselines (PAPERS A7).",
}.items():
    _make_step_command(_step, _doc)


@app.command()
def run(
    out: OutOption = "out/atlas",
    preset: PresetOption = "quick",
    config: ConfigOption = None,
    executor: ExecutorOption = None,
    ray_address: RayAddressOption = None,
    threads: ThreadsOption = None,
    wait: WaitOption = False,
    overrides: OverridesArg = None,
    debug: DebugOption = False,
) -> None:
    """Run both studies and write OUT/atlas.zarr, OUT/summary.json and OUT/report.html."""
    from lossatlas.studies.run import run_all

    def action() -> None:
        flags = _execution_flags(executor, ray_address, threads)
        cfg = _resolve_config(preset, config, overrides, flags)
        with _driving(out, wait):
            result = run_all(cfg, out, console=err_console)
        console.print(f"summary: {result.summary}\nreport:  {result.report}", highlight=False)
        console.print(
            f"claims: {result.counts['holds']} hold, {result.counts['fails']} fail, "
            f"{result.counts['inconclusive']} inconclusive; {result.seconds:.0f} s",
            highlight=False,
        )

    _guarded(debug, action)


@app.command()
def report(
    outs: Annotated[
        list[str],
        typer.Argument(
            help="Output folder (or URL) holding atlas.zarr; with --compare, two or more.",
            show_default=False,
        ),
    ],
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Write one page that sets the runs' verdicts and estimates side by side "
            "and flags every claim whose verdict differs.",
        ),
    ] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            help="Where to write the page (default: OUT/report.html; with --compare, "
            "comparison.html in the current folder).",
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Re-render OUT/summary.json and OUT/report.html from the store (no recomputation), or
    compare several runs (--compare)."""
    from lossatlas.report import build_comparison, build_report
    from lossatlas.report.render import COMPARISON_NAME
    from lossatlas.stages.summary import write_summary
    from lossatlas.store import AtlasStore

    def action() -> None:
        if compare:  # compare_runs refuses fewer than two runs
            page = build_comparison(outs, output or COMPARISON_NAME)
            console.print(f"comparison: {page}", highlight=False)
            return
        if len(outs) != 1:
            raise LossAtlasError(
                f"report renders one run, got {len(outs)}: add --compare to compare them"
            )
        store = AtlasStore.open(outs[0], read_only=True)
        summary = write_summary(store)
        page = build_report(outs[0], path=output)
        console.print(f"summary: {summary}\nreport:  {page}", highlight=False)

    _guarded(debug, action)


@app.command()
def verify(
    out: Annotated[str, typer.Argument(help="Output folder (or URL) holding atlas.zarr.")],
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Make the damaged units incomplete, so that re-running the command that "
            "wrote OUT recomputes exactly them.",
        ),
    ] = False,
    wait: WaitOption = False,
    debug: DebugOption = False,
) -> None:
    """Check every chunk, marker and metadata document of the store; list damaged units.

    Exit code 0: no damage; 1: damage found (and not repaired); 2: an error, or damage that no
    unit rewrites.
    """
    from lossatlas.verify import repair_store, verify_store

    def action() -> int:
        if not repair:
            report = verify_store(out)  # reads only: no lock
            console.print("\n".join(report.lines()), highlight=False, soft_wrap=True)
            return 0 if report.ok else 1
        with _driving(out, wait):
            report = verify_store(out)
            console.print("\n".join(report.lines()), highlight=False, soft_wrap=True)
            if report.ok:
                return 0
            done = repair_store(out, report)
        console.print(
            f"repaired: {len(done.invalidated)} unit(s) marked incomplete, "
            f"{len(done.deleted)} damaged object(s) removed, {len(done.rewritten)} group "
            "document(s) rewritten; re-run the command that wrote the store to recompute them",
            highlight=False,
            soft_wrap=True,
        )
        if report.unowned:
            raise LossAtlasError(
                f"{len(report.unowned)} damaged object(s) were written by no unit on record "
                f"and cannot be recomputed (first: {report.unowned[0].key}); use a new --out"
            )
        return 0

    code = _guarded(debug, action)
    if code:
        raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    steady_allocator()
    app(prog_name="lossatlas")


if __name__ == "__main__":  # pragma: no cover
    main()

"""``benchmark.py peer``: our HFR and MSFI side by side with anomalib's Reverse Distillation and STFPM.

Same images (one synthetic category in the MVTec AD layout, written by our data layer under
``--data-root``), resolution, batch, epochs, device and CPU threads on both sides:

- ``hfr`` against anomalib's ``rd``: anomalib's Reverse Distillation only takes ResNet backbones
  (its bottleneck and decoder are ResNet-shaped), so this pair uses ``--rd-backbone`` (ResNet-18)
  on both sides, with random weights (ImageNet ResNet weights would need a download; the values
  of the weights change nothing in the timing);
- ``msfi`` (one scale, ``model.scales=[size]``) and ``msfi-chained`` (``model.chained=true``, the
  STFPM baseline) against anomalib's ``stfpm``: EfficientNet-Lite0 teacher with the pip package's
  ImageNet weights on both sides, levels blocks.1/2/4.

Ours is trained in this process through our engine (``Engine.fit``, so every ``trainer.*`` option
given with ``--set`` applies, e.g. ``trainer.feature_cache=on``); anomalib runs in a subprocess
of ``--anomalib-python`` (:mod:`.anomalib_peer_run`, run as a file). Both are timed alike: see :data:`HOW_TIMED`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.engine.measure import PeakRSS, reset_peak_memory, synchronize

PEER_SCRIPT = Path(__file__).resolve().parent / "anomalib_peer_run.py"  # run by anomalib's Python
RESULT_PREFIX = "PEER_RESULT "
PEERS = {"hfr": "rd", "msfi": "stfpm", "msfi-chained": "stfpm"}
LITE = "tf_efficientnet_lite0"
HOW_TIMED = (
    "Timing, both sides alike: training 'all' = images seen / wall time of every epoch (each side's own loader, "
    "per-epoch checkpoint and one-off work such as a feature cache included; Lightning's set-up and sanity check "
    "excluded, validation off); 'steady' = the same from the end of epoch 1; 'steps only' = anomalib's training "
    "steps without its loader wait (it decodes and resizes the PNGs every epoch, ours decodes once before "
    "training). Inference = the model's forward (map and score at the input size) on test batches already in "
    "memory and pre-processed, after a warm-up batch. Memory = peak CUDA memory, or on CPU the growth of the "
    "process's peak resident set during training. Ratio = ours / anomalib."
)


@dataclasses.dataclass
class Throughput:
    """One side's figures for one model.

    Attributes:
        train_all: training images/s over every epoch. train_steady: the same from the end of
            epoch 1 (``None`` with one epoch). inference: images/s of the forward pass.
        memory_gib: peak CUDA memory, or growth of the peak resident set during training, GiB.
        train_steps: anomalib only: images/s of its training steps alone (no loader wait).
    """

    train_all: float
    train_steady: float | None
    inference: float
    memory_gib: float
    train_steps: float | None = None


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add the ``peer`` sub-command to ``benchmark.py``'s sub-parsers."""
    peer = sub.add_parser("peer", help="our HFR/MSFI against anomalib's RD/STFPM on the same images")
    peer.add_argument(
        "--anomalib-python", default=None, help="python of an environment with anomalib 2.7 (without it: our side only)"
    )
    peer.add_argument("--models", nargs="+", default=list(PEERS), choices=list(PEERS))
    peer.add_argument("--category", default="brick", help="synthetic category")
    peer.add_argument("--data-root", default="data/synthetic", help="where the synthetic data is (generated)")
    peer.add_argument("--size", type=int, default=128, help="image side (both sides)")
    peer.add_argument("--batch", type=int, default=16)
    peer.add_argument("--epochs", type=int, default=3, help="epochs timed (the first one counts in 'all' only)")
    peer.add_argument(
        "--rd-backbone",
        default="resnet18",
        choices=["resnet18", "wide_resnet50_2"],
        help="backbone of the hfr/rd pair (random weights on both sides)",
    )
    peer.add_argument("--set", nargs="*", default=[], help="our Hydra overrides, e.g. trainer.feature_cache=on")
    peer.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto: bf16 autocast on CUDA (both sides), fp32 on CPU",
    )
    peer.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def resolved_precision(precision: str, device: str) -> str:
    """``fp32`` or ``bf16``: ``auto`` is bf16 on CUDA, fp32 elsewhere (the engine's rule)."""
    if precision == "auto":
        return "bf16" if device.startswith("cuda") else "fp32"
    return precision


def our_overrides(variant: str, args: argparse.Namespace) -> list[str]:
    """Hydra overrides of ``configs/train.yaml`` for one of our variants; ``--set`` comes last, so it wins."""
    common = [
        "data=synthetic",
        f"category={args.category}",
        f"data.root={args.data_root}",
        f"data.image_size={args.size}",
        f"data.batch_size={args.batch}",
        f"model.epochs={args.epochs}",
        "trainer.progress=false",
        f"trainer.device={args.device}",
        f"trainer.precision={args.precision}",
        "backbone.layers=null",
    ]
    if variant == "hfr":
        model = ["model=hfr", f"backbone.name={args.rd_backbone}", "backbone.weights=none"]
    else:
        chained = str(variant == "msfi-chained").lower()
        model = [
            "model=msfi",
            f"backbone.name={LITE}",
            "backbone.weights=imagenet",
            f"model.scales=[{args.size}]",
            f"model.chained={chained}",
            "model.weight_search.enabled=false",
        ]
    return model + common + list(args.set)


def marking_epochs(model: torch.nn.Module, marks: list[float], device: torch.device) -> None:
    """Make every training stage of ``model`` append ``time.perf_counter()`` to ``marks`` at each epoch's end."""
    stages = model.stages

    def mark(hook: object) -> object:
        def on_epoch_end(done: int) -> None:
            if hook is not None:
                hook(done)
            synchronize(device)
            marks.append(time.perf_counter())

        return on_epoch_end

    model.stages = lambda: [dataclasses.replace(s, on_epoch_end=mark(s.on_epoch_end)) for s in stages()]


def measure_ours(variant: str, args: argparse.Namespace) -> Throughput:
    """Train one of our variants through the engine and time it (see the module docstring)."""
    from hydra import compose, initialize_config_dir

    from anomalib_lite.data import build_datamodule
    from anomalib_lite.engine.device import mixed_precision, seed_everything, to_device
    from anomalib_lite.engine.trainer import Engine
    from anomalib_lite.models import build_model
    from anomalib_lite.pipeline.config import plain_config, validate

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=our_overrides(variant, args))
    run = validate(cfg)
    datamodule = build_datamodule(run.data, args.category)
    seed_everything(run.seed)
    model = build_model(run.model, run.backbone)
    marks: list[float] = []
    with tempfile.TemporaryDirectory(prefix="peer-") as folder:
        engine = Engine(run.trainer, run.seed, Path(folder) / "last.pt", plain_config(cfg))
        marking_epochs(model, marks, engine.device)
        reset_peak_memory(engine.device)
        with PeakRSS() as host:
            synchronize(engine.device)
            start = time.perf_counter()
            engine.fit(model, datamodule)
            synchronize(engine.device)
            end = time.perf_counter()
    per_epoch = sum(len(batch) for batch in datamodule.train_loader().batch_sampler)
    epochs = len(marks)
    cuda = engine.device.type == "cuda"
    # The engine resets the CUDA peak at each stage: the run's peak is the largest stage's.
    stage_peak = max((stage["peak_memory_mib"] or 0.0 for stage in engine.training["stages"]), default=0.0)
    memory = stage_peak / 1024 if cuda else host.growth_gib
    model.eval()
    batches = [to_device(batch, engine.device)["image"] for batch in datamodule.test_loader()]
    with mixed_precision(run.trainer.precision, engine.device):
        model.predict(batches[0])
        synchronize(engine.device)
        begin = time.perf_counter()
        for images in batches[1:]:
            model.predict(images)
        synchronize(engine.device)
        inference = sum(len(images) for images in batches[1:]) / (time.perf_counter() - begin)
    return Throughput(
        train_all=epochs * per_epoch / (end - start),
        train_steady=(epochs - 1) * per_epoch / (end - marks[0]) if epochs > 1 else None,
        inference=inference,
        memory_gib=memory,
    )


def peer_command(peer: str, args: argparse.Namespace, python: str, script: Path = PEER_SCRIPT) -> list[str]:
    """The command line that runs anomalib's ``peer`` model with the same setting as ours."""
    backbone = args.rd_backbone if peer == "rd" else LITE
    return [
        python,
        str(script),
        "--root",
        args.data_root,
        "--category",
        args.category,
        "--model",
        peer,
        "--backbone",
        backbone,
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
        "--threads",
        str(torch.get_num_threads()),
        "--precision",
        resolved_precision(args.precision, args.device),
    ] + (["--random-weights"] if peer == "rd" else [])


def parse_peer_output(stdout: str) -> dict:
    """The figures of the last ``PEER_RESULT {json}`` line of the peer script's output.

    Raises:
        ValueError: no such line.
    """
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError(f"no '{RESULT_PREFIX.strip()}' line in the peer script's output")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def measure_peer(command: list[str]) -> Throughput:
    """Run the peer script and read its figures.

    Raises:
        RuntimeError: the script failed or printed no result (with the end of its output).
    """
    done = subprocess.run(command, capture_output=True, text=True)
    try:
        if done.returncode:
            raise ValueError(f"exit status {done.returncode}")
        figures = parse_peer_output(done.stdout)
    except ValueError as exc:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"anomalib run failed ({exc}): {' '.join(command)}\n{tail}") from exc
    return Throughput(
        train_all=figures["train_all"],
        train_steady=figures["train_steady"],
        inference=figures["inference"],
        memory_gib=figures["memory_gib"],
        train_steps=figures["train_steps"],
    )


def _cell(ours: float | None, theirs: float | None, digits: int = 1) -> str:
    """``ours / theirs = ratio×``, or ``ours`` alone without anomalib's figure, ``–`` without ours."""
    if ours is None:
        return "–"
    if theirs is None:
        return f"{ours:.{digits}f}"
    return f"{ours:.{digits}f} / {theirs:.{digits}f} = **{ours / theirs:.2f}×**"


def ratio_table(rows: list[tuple[str, str, Throughput, Throughput | None]]) -> str:
    """A Markdown table, one row per ``(our variant, anomalib model, ours, anomalib's or None)``;
    each cell ``ours / anomalib = ratio`` (ratio = ours ÷ anomalib, for images/s and for memory)."""
    columns = [
        ("train images/s, all epochs", "train_all", "train_all", 1),
        ("train, steady (from epoch 2)", "train_steady", "train_steady", 1),
        ("train vs anomalib's steps only", "train_all", "train_steps", 1),
        ("inference images/s", "inference", "inference", 1),
        ("memory GiB", "memory_gib", "memory_gib", 2),
    ]
    lines = ["| ours vs anomalib | " + " | ".join(c[0] for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, peer, ours, theirs in rows:
        cells = [_cell(getattr(ours, a), getattr(theirs, b, None), d) for _, a, b, d in columns]
        lines.append(f"| {name} vs {peer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_python(python: str | None) -> str | None:
    """The path of ``--anomalib-python`` (a path, or a name on ``PATH`` such as ``python``), refused before any work
    when it is not a program or cannot import anomalib; ``None`` stays ``None``."""
    if python is None:
        return None
    found = shutil.which(python)
    if found is None:
        raise SystemExit(f"--anomalib-python {python}: no such program (the python of an environment with anomalib)")
    imported = subprocess.run([found, "-c", "import anomalib"], capture_output=True, text=True)
    if imported.returncode != 0:
        last = (imported.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(
            f"--anomalib-python {python}: cannot import anomalib ({last}); install it in that environment: "
            f"{found} -m pip install 'anomalib==2.7.*'"
        )
    return found


def run(args: argparse.Namespace) -> None:
    """Measure every requested pair and print the table (``benchmark.py peer``)."""
    args.anomalib_python = check_python(args.anomalib_python)
    precision = resolved_precision(args.precision, args.device)
    print(
        f"peer: synthetic/{args.category} ({args.data_root}), {args.size}×{args.size}, batch {args.batch}, "
        f"{args.epochs} epochs, {args.device}, {precision}, {torch.get_num_threads()} CPU threads; "
        f"ours with {' '.join(args.set) or 'default trainer options'}",
        flush=True,
    )
    peers: dict[str, Throughput] = {}
    rows = []
    for variant in args.models:
        peer = PEERS[variant]
        ours = measure_ours(variant, args)
        print(f"  ours {variant}: {ours}", flush=True)
        if args.anomalib_python and peer not in peers:
            peers[peer] = measure_peer(peer_command(peer, args, args.anomalib_python))
            print(f"  anomalib {peer}: {peers[peer]}", flush=True)
        rows.append((variant, peer, ours, peers.get(peer)))
    print()
    print(ratio_table(rows))
    print(f"\nbackbones: hfr/rd {args.rd_backbone} (random weights, both sides); msfi/stfpm {LITE} (ImageNet).")
    print(HOW_TIMED)

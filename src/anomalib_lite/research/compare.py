"""``python scripts/compare.py RUN_A RUN_B``: do two runs (or two groups of seeds) differ beyond chance?

Each side is one run folder (``metrics.json``, ``scores/<category>.csv``) or a folder holding several (a
sweep: every run below it); ``A1 A2 -- B1 B2`` gives each side as a list. Two tests:

- **Image AUROC, DeLong's paired test** on the same test images: per category, for each seed both sides
  ran (or the one run of each side), from the per-image scores. Runs on different test images are refused.
- **Every metric, the seed spread** (Welch's t-test over the seeds of each side): per category and for
  the mean over categories; needs at least two runs a side. Pixel metrics have no paired per-image test
  here, so this is their test.

A difference is "beyond chance" at p < ``--alpha`` (0.05); with several categories and metrics, some
will pass by chance alone: read the p-values, not only the verdicts.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anomalib_lite.metrics.catalogue import metric_columns
from anomalib_lite.metrics.significance import delong_test, welch_test
from anomalib_lite.research.reproduce.results import Run, read_runs


class CompareError(ValueError):
    """Runs that cannot be compared: the message names the files and what differs."""


@dataclass
class Scores:
    """One run's per-image scores of one category, sorted by image path."""

    file: Path
    paths: list[str]
    labels: np.ndarray
    scores: np.ndarray


def read_scores(file: Path) -> Scores:
    """Read ``scores/<category>.csv`` (``path,label,score``), sorted by path.

    Raises:
        CompareError: the file is missing (runs from before scores were saved) or malformed.
    """
    if not file.is_file():
        raise CompareError(
            f"{file}: no per-image scores (runs from before scores/ was written; re-evaluate "
            "with eval.py ckpt_path=<run>/checkpoints/<category>/last.pt)"
        )
    with file.open(newline="") as f:
        rows = sorted((r["path"], int(r["label"]), float(r["score"])) for r in csv.DictReader(f))
    if not rows:
        raise CompareError(f"{file}: no image")
    paths, labels, scores = zip(*rows)
    return Scores(file, list(paths), np.array(labels), np.array(scores))


def check_same_images(a: Scores, b: Scores) -> None:
    """Refuse two score files on different test images (or labels), naming both and the difference.

    Raises:
        CompareError: the images or their labels differ.
    """
    if a.paths != b.paths:
        only_a, only_b = sorted(set(a.paths) - set(b.paths)), sorted(set(b.paths) - set(a.paths))
        raise CompareError(
            f"{a.file} and {b.file} are on different test images ({len(a.paths)} vs {len(b.paths)}; {len(only_a)} "
            f"only in the first, e.g. {only_a[:2]}; {len(only_b)} only in the second, e.g. {only_b[:2]}): DeLong's "
            "paired test needs the same test set (same data, data.root, seed of the split, validation hold-out)"
        )
    if not np.array_equal(a.labels, b.labels):
        differ = [p for p, x, y in zip(a.paths, a.labels, b.labels) if x != y]
        raise CompareError(f"{a.file} and {b.file} label {len(differ)} images differently, e.g. {differ[:2]}")


@dataclass
class Entry:
    """One category of one run: its seed, metrics, and the run folder (where ``scores/`` is)."""

    category: str
    seed: object
    metrics: dict
    folder: Path


def entries(runs: list[Run]) -> list[Entry]:
    """Every (category, run) of ``runs``; the seed is the run's (its folder when it records none)."""
    return [
        Entry(category, run.setting["seed"] if run.setting else str(run.folder), metrics, run.folder)
        for run in runs
        for category, metrics in run.categories.items()
    ]


def _shared_categories(side_a: list[Entry], side_b: list[Entry]) -> list[str]:
    in_b = {e.category for e in side_b}
    return [c for c in dict.fromkeys(e.category for e in side_a) if c in in_b]


def delong_rows(side_a: list[Entry], side_b: list[Entry], alpha: float) -> list[dict[str, str]]:
    """DeLong's test per shared category: for each seed both sides ran it with, or its one run a side."""
    rows = []
    for category in _shared_categories(side_a, side_b):
        a_runs = [e for e in side_a if e.category == category]
        b_runs = [e for e in side_b if e.category == category]
        if len(a_runs) == 1 and len(b_runs) == 1:
            pairs = [(a_runs[0], b_runs[0])]
        else:
            by_seed = {e.seed: e for e in b_runs}
            pairs = [(e, by_seed[e.seed]) for e in a_runs if e.seed in by_seed]
        for entry_a, entry_b in pairs:
            a = read_scores(entry_a.folder / "scores" / f"{category}.csv")
            b = read_scores(entry_b.folder / "scores" / f"{category}.csv")
            check_same_images(a, b)
            result = delong_test(a.scores, b.scores, a.labels)
            rows.append(
                {
                    "category": category,
                    "seeds": f"{entry_a.seed} / {entry_b.seed}",
                    "images": f"{int(a.labels.sum())} anomalous, {int((a.labels == 0).sum())} normal",
                    "A": f"{result.auroc[0]:.4f}",
                    "B": f"{result.auroc[1]:.4f}",
                    "A − B": f"{result.difference:+.4f}",
                    "z": f"{result.z:.2f}",
                    "p": _p(result.p_value),
                    "verdict": _verdict(result.p_value, alpha),
                }
            )
    return rows


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _p(p_value: float) -> str:
    return "undefined" if math.isnan(p_value) else f"{p_value:.4f}"


def _verdict(p_value: float, alpha: float) -> str:
    if math.isnan(p_value):
        return "undefined: no variance to test against"
    return "beyond chance" if p_value < alpha else "within chance"


def seed_values(side: list[Entry], categories: list[str], metric: str) -> tuple[list[float], list[str]]:
    """One value per seed that has the metric for every one of ``categories``: its mean over them; and, for each
    seed that lacks some, ``seed s lacks a, b`` (such a seed gives no value: a mean over fewer categories is
    another quantity)."""
    by_seed: dict[object, dict[str, float]] = {}
    for entry in side:
        if entry.category in categories and _finite(entry.metrics.get(metric)):
            by_seed.setdefault(entry.seed, {})[entry.category] = entry.metrics[metric]
    complete = [statistics.fmean(values.values()) for values in by_seed.values() if len(values) == len(categories)]
    lacking = [
        f"seed {seed} lacks {', '.join(c for c in categories if c not in values)}"
        for seed, values in by_seed.items()
        if len(values) < len(categories)
    ]
    return complete, lacking


def spread_rows(side_a: list[Entry], side_b: list[Entry], alpha: float) -> list[dict[str, str]]:
    """Welch's t-test over the seeds of each side, per shared category and metric, then for the mean over the
    shared categories."""
    metrics = metric_columns({str(i): e.metrics for i, e in enumerate(side_a + side_b)})
    rows = []
    shared = _shared_categories(side_a, side_b)
    for category in [*shared, None]:
        for metric in metrics:
            chosen = shared if category is None else [category]
            (a, lacking_a), (b, lacking_b) = seed_values(side_a, chosen, metric), seed_values(side_b, chosen, metric)
            if lacking_a or lacking_b:
                lacking = [f"A: {s}" for s in lacking_a] + [f"B: {s}" for s in lacking_b]
                rows.append(
                    {
                        "category": category or "mean",
                        "metric": metric,
                        "A": "-",
                        "B": "-",
                        "A − B": "-",
                        "t": "-",
                        "df": "-",
                        "p": "-",
                        "verdict": "no mean: " + "; ".join(lacking),
                    }
                )
                continue
            if not a or not b:
                continue
            difference = statistics.fmean(a) - statistics.fmean(b)
            row = {
                "category": category or "mean",
                "metric": metric,
                "A": _stat(a),
                "B": _stat(b),
                "A − B": f"{difference:+.4f}",
            }
            if len(a) < 2 or len(b) < 2:
                row.update(t="-", df="-", p="-", verdict="no spread: needs ≥ 2 seeds a side")
            else:
                result = welch_test(a, b)
                row.update(
                    t=f"{result.t:.2f}",
                    df=f"{result.df:.1f}",
                    p=_p(result.p_value),
                    verdict=_verdict(result.p_value, alpha),
                )
            rows.append(row)
    return rows


def _stat(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f} (n=1)"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f} (n={len(values)})"


def _markdown(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(nothing to compare)"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r[c] for c in columns) + " |" for r in rows])


def describe(runs: list[Run]) -> str:
    """Each side's runs in one line: model, data, backbone, seeds."""
    settings = [r.setting for r in runs if r.setting]
    if not settings:
        return f"{len(runs)} runs (no setting recorded)"

    def values(get) -> str:
        return "/".join(dict.fromkeys(str(get(s)) for s in settings))

    return (
        f"{len(runs)} runs; model {values(lambda s: s['model'])}; data {values(lambda s: s['dataset'])}; "
        f"backbone {values(lambda s: s['backbone']['used'])}; image size {values(lambda s: s['image_size'])}; "
        f"seeds {values(lambda s: s['seed'])}"
    )


def compare(side_a: list[Path], side_b: list[Path], alpha: float = 0.05) -> str:
    """The comparison report (Markdown) of the runs under ``side_a`` against those under ``side_b``.

    Raises:
        CompareError: a side holds no run, or paired runs are on different test images.
    """
    runs = []
    for name, folders in (("A", side_a), ("B", side_b)):
        found = [run for folder in folders for run in read_runs(folder)]
        if not found:
            raise CompareError(f"side {name}: no metrics.json under {', '.join(map(str, folders))}")
        runs.append(found)
    a, b = runs
    if not _shared_categories(entries(a), entries(b)):
        raise CompareError(
            f"A and B share no category (A: {', '.join(sorted({e.category for e in entries(a)}))}; "
            f"B: {', '.join(sorted({e.category for e in entries(b)}))}): they are on different test images"
        )
    return "\n".join(
        [
            "# Comparison",
            "",
            f"- A: {describe(a)} ({', '.join(map(str, side_a))})",
            f"- B: {describe(b)} ({', '.join(map(str, side_b))})",
            "",
            f"## Image AUROC: DeLong's paired test on the same test images (two-sided; beyond chance at p < {alpha})",
            "",
            _markdown(delong_rows(entries(a), entries(b), alpha)),
            "",
            f"## Every metric: the seed spread (Welch's t-test over each side's seeds; beyond chance at p < {alpha})",
            "",
            _markdown(spread_rows(entries(a), entries(b), alpha)),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Command line (see ``--help``); returns the exit status (1 with one message when runs cannot be compared)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python scripts/compare.py outputs/hfr_synthetic/A outputs/hfr_synthetic/B\n"
        "  python scripts/compare.py A_seed0 A_seed1 A_seed2 -- B_seed0 B_seed1 B_seed2\n"
        "  python scripts/compare.py outputs/reproduce/msfi_scales/<time>/128 outputs/reproduce/msfi_scales/<time>/256",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="RUN_A RUN_B, or A... -- B... (run or sweep folders)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    argv = list(sys.argv[1:] if argv is None else argv)
    # argparse drops a bare "--", so the two groups are split here first.
    groups = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    args = parser.parse_args(groups[0])
    if groups[1]:
        side_a, side_b = args.runs, [Path(p) for p in groups[1]]
    elif len(args.runs) == 2:
        side_a, side_b = [args.runs[0]], [args.runs[1]]
    else:
        parser.error("give two folders (RUN_A RUN_B), or two groups separated by --: A1 A2 -- B1 B2")
    try:
        print(compare(side_a, side_b, args.alpha))
    except CompareError as exc:
        parser.exit(1, f"error: {exc}\n")
    return 0

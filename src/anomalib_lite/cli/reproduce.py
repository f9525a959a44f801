"""``python scripts/reproduce.py TABLE``: run a paper's headline table through Hydra and compare.

Each table is a list of datasets with the paper's mean figures. For every dataset the
script finds what is present (MVTec AD categories under ``data/mvtec``, the one-class
files under ``data/<name>``), runs one multirun of ``train.py +experiment=<table>`` over
them, collects the run folders, and writes ``results.md`` / ``results.csv`` with our
mean beside the paper's and the difference. A dataset that is absent is replaced by
its offline stand-in where it has one (``synthetic`` for MVTec AD, ``mnist5k`` for
MNIST), marked as such and never compared with the paper; otherwise it is skipped.
Both are listed in the table, as are absent categories.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from anomalib_lite.cli.collect import collect_sweep
from anomalib_lite.cli.tables import format_table, mean_metrics
from anomalib_lite.data.mvtec import MVTEC_CATEGORIES, categories_in
from anomalib_lite.data.one_class import split_files
from anomalib_lite.data.synthetic import SYNTHETIC_CATEGORIES

ONE_CLASS = [str(c) for c in range(10)]
NAMES = {"mvtec": "MVTec AD", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10"}


@dataclass
class Dataset:
    """One dataset of a paper table: its data config, the paper's means, and its offline stand-in."""

    data: str
    paper: dict[str, float]
    stand_in: str | None = None


@dataclass
class PaperTable:
    """A headline table: the experiment config (``configs/experiment/<name>.yaml``) and its datasets."""

    name: str
    title: str
    datasets: list[Dataset]


TABLES = {
    t.name: t
    for t in [
        PaperTable("hfr_mvtec", "HFR, MVTec AD means",
                   [Dataset("mvtec", {"image_auroc": 0.986, "pixel_auroc": 0.977, "aupro": 0.925}, "synthetic")]),
        PaperTable("msfi_mvtec", "MSFI, MVTec AD means (WRN-50, multi-scale)",
                   [Dataset("mvtec", {"pixel_auroc": 0.983, "aupro": 0.927}, "synthetic")]),
        PaperTable("igd_one_class", "IGD, one-class mean image AUROC",
                   [Dataset("mnist", {"image_auroc": 0.9912}, "mnist5k"),
                    Dataset("fashion_mnist", {"image_auroc": 0.9332}),
                    Dataset("cifar10", {"image_auroc": 0.8234})]),
        PaperTable("igd_mvtec", "IGD, MVTec AD means",
                   [Dataset("mvtec", {"image_auroc": 0.901, "pixel_auroc_per_image": 0.91, "image_accuracy": 0.84},
                            "synthetic")]),  # Tables 3, 4 (per anomalous image, CAVGA protocol), 2
        PaperTable("utad_one_class", "UTAD, one-class mean image AUROC",
                   [Dataset("mnist", {"image_auroc": 0.994}, "mnist5k"),
                    Dataset("fashion_mnist", {"image_auroc": 0.899}),
                    Dataset("cifar10", {"image_auroc": 0.884})]),
        PaperTable("utad_mvtec", "UTAD, MVTec AD means",
                   [Dataset("mvtec", {"iou": 0.53, "pixel_auroc_per_image": 0.90}, "synthetic")]),  # Table 1
    ]
}  # fmt: skip


@dataclass
class Plan:
    """What runs for one dataset: the data config used, the categories (or normal classes), what is absent."""

    dataset: Dataset
    data: str | None
    categories: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def stand_in(self) -> bool:
        return self.data is not None and self.data != self.dataset.data


def data_root(data: str, roots: dict[str, str], repo: Path) -> Path:
    """Where ``data`` is looked for: ``--root data=PATH`` if given, else ``root`` of ``configs/data/<data>.yaml``
    (relative to the repository ``repo``, where ``train.py`` runs)."""
    if data in roots:
        return Path(roots[data])
    return repo / OmegaConf.load(repo / "configs" / "data" / f"{data}.yaml").root


def plan_dataset(dataset: Dataset, roots: dict[str, str], only: list[str] | None, repo: Path) -> Plan:
    """Decide what runs for ``dataset``: the real data where present, else the stand-in, else nothing."""
    root = data_root(dataset.data, roots, repo)
    if dataset.data == "mvtec":
        present = categories_in(root)
        wanted = [c for c in MVTEC_CATEGORIES if only is None or c in only]
        plan = Plan(dataset, "mvtec", [c for c in wanted if c in present], [c for c in wanted if c not in present])
    else:
        files = {**split_files(dataset.data, root, train=True), **split_files(dataset.data, root, train=False)}
        wanted = [c for c in ONE_CLASS if only is None or c in only]
        absent = [n for n, p in files.items() if p is None]
        plan = Plan(dataset, dataset.data, [] if absent else wanted)
        if absent:
            plan.note = f"{root}: missing {', '.join(absent)}"
    if plan.categories:
        return plan
    how = f"python scripts/prepare_data.py {dataset.data}"
    missing = plan.note or f"no category under {root}"
    choices = {"synthetic": SYNTHETIC_CATEGORIES, "mnist5k": ONE_CLASS}.get(dataset.stand_in or "", [])
    stand_in = [c for c in choices if only is None or c in only]
    if not stand_in:
        return Plan(dataset, None, note=f"skipped: {missing} (get it with: {how})")
    note = f"stand-in data {dataset.stand_in}, not comparable with the paper: {missing} (get it with: {how})"
    return Plan(dataset, dataset.stand_in, stand_in, note=note)


def sweep_command(
    table: str, plan: Plan, sweep_dir: Path, roots: dict[str, str], overrides: list[str], repo: Path
) -> list[str]:
    """The ``train.py`` multirun of one dataset: one job folder per category (or normal class)."""
    key = "category" if plan.data in ("mvtec", "synthetic") else "data.normal_class"
    root = [f"data.root={roots[plan.data]}"] if plan.data in roots else []
    return [sys.executable, str(repo / "train.py"), "-m", f"+experiment={table}", f"data={plan.data}",
            f"{key}={','.join(plan.categories)}", *root, f"hydra.sweep.dir={sweep_dir}",
            f"hydra.sweep.subdir=${{{key}}}", *overrides]  # fmt: skip


def comparison_rows(plans: list[Plan], results: dict[str, dict]) -> list[dict[str, str]]:
    """One row per dataset and paper metric: ours (mean over runs), the paper's, the difference."""
    rows = []
    for plan in plans:
        name = NAMES[plan.dataset.data]
        ours = results.get(plan.dataset.data, {})
        for metric, paper in plan.dataset.paper.items():
            value = ours.get("mean", {}).get(metric)
            compare = value is not None and not plan.stand_in
            rows.append({
                "dataset": name,
                "data used": plan.data or "-",
                "runs": str(ours.get("runs", 0)),
                "metric": metric,
                "ours": "-" if value is None else f"{value:.4f}",
                "paper": f"{paper:.4f}",
                "difference": f"{value - paper:+.4f}" if compare else "-",
            })  # fmt: skip
    return rows


def write_report(
    table: PaperTable, plans: list[Plan], results: dict[str, dict], out: Path, settings: list[str] | None = None
) -> str:
    """Write ``results.md`` and ``results.csv`` under ``out``; return the Markdown.

    Args:
        settings: what limited or changed the runs (``--only``, extra overrides), stated under the title.
    """
    rows = comparison_rows(plans, results)
    columns = list(rows[0]) if rows else []
    lines = [f"# {table.title}", "", *(f"Runs: {s}" for s in settings or []), ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row.values()) + " |" for row in rows]
    notes = [f"- {NAMES[p.dataset.data]}: {p.note}" for p in plans if p.note]
    notes += [f"- {NAMES[p.dataset.data]}: categories absent, not run: {', '.join(p.absent)}"
              for p in plans if p.absent and p.categories]  # fmt: skip
    for data, result in results.items():
        if result.get("missing"):
            notes.append(f"- {NAMES[data]}: runs that wrote no metrics.json: {', '.join(result['missing'])}")
    if notes:
        lines += ["", *notes]
    for data, result in results.items():
        if result.get("rows"):
            lines += ["", f"## {NAMES[data]}: per run ({result['sweep']})", "", format_table(result["rows"], "run")]
    markdown = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return markdown


def reproduce(table: PaperTable, out: Path, roots: dict[str, str], only: list[str] | None, overrides: list[str],
              repo: Path, dry_run: bool = False) -> str:  # fmt: skip
    """Plan, run (unless ``dry_run``) and report one table with the ``train.py`` of ``repo``;
    return the report's Markdown."""
    plans = [plan_dataset(d, roots, only, repo) for d in table.datasets]
    results: dict[str, dict] = {}
    for plan in plans:
        if not plan.categories:
            continue
        sweep = out / plan.dataset.data
        command = sweep_command(table.name, plan, sweep, roots, overrides, repo)
        print("$ " + " ".join(command[1:]), flush=True)
        if dry_run:
            continue
        status = subprocess.run(command, cwd=repo).returncode
        try:
            collected = collect_sweep(sweep)
        except FileNotFoundError:
            collected = None
        if collected is None or not collected.rows:
            plan.note = (plan.note + "; " if plan.note else "") + f"the sweep failed (exit {status}), no metrics"
            continue
        results[plan.dataset.data] = {
            "rows": collected.rows,
            "mean": mean_metrics(collected.rows),
            "runs": len(collected.rows),
            "missing": collected.missing,
            "sweep": sweep,
        }
    settings = [f"only {', '.join(only)} (--only)"] if only else []
    settings += [f"with {' '.join(overrides)}"] if overrides else []
    return write_report(table, plans, results, out, settings)


def main(repo: Path, argv: list[str] | None = None) -> int:
    """Command line (see ``--help``) for the repository ``repo`` (its ``train.py``, ``configs/``, ``outputs/``)."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python scripts/reproduce.py hfr_mvtec\n"
        "  python scripts/reproduce.py igd_one_class --only 0,1 hydra/launcher=parallel\n"
        "  python scripts/reproduce.py utad_mvtec --root mvtec=/data/mvtec_ad --dry-run",
    )
    parser.add_argument("table", choices=sorted(TABLES), help="the paper table to reproduce")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (e.g. trainer.device=cuda)")
    parser.add_argument("--out", type=Path, help="report folder (default outputs/reproduce/<table>/<date>_<time>)")
    parser.add_argument("--root", action="append", default=[], metavar="DATA=PATH",
                        help="where a dataset lives, e.g. mvtec=/data/mvtec_ad (repeatable)")  # fmt: skip
    parser.add_argument("--only", help="comma-separated categories or normal classes to run (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the commands, run nothing")
    args = parser.parse_intermixed_args(argv)
    bad = [r for r in args.root if "=" not in r]
    if bad:
        parser.error(f"--root {bad[0]}: expected DATA=PATH, e.g. mvtec=/data/mvtec_ad")
    roots = dict(r.split("=", 1) for r in args.root)
    out = args.out or repo / "outputs" / "reproduce" / args.table / time.strftime("%Y-%m-%d_%H-%M-%S")
    if out.exists() and any(out.iterdir()):
        parser.error(f"--out {out} already holds files; nothing was overwritten. Choose another folder.")
    only = args.only.split(",") if args.only else None
    print(reproduce(TABLES[args.table], out, roots, only, args.overrides, repo, args.dry_run))
    return 0

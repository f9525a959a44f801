"""Our runs beside the paper's figures, cell by cell, with a difference only where like meets like.

A cell is one arm of a table, one dataset, one metric, one category (or the mean over the categories; over
all images for a metric of ``IMAGE_WEIGHTS``).
Ours is the mean ± standard deviation over the runs (seeds) of that cell; the difference (ours − paper)
is given only when the runs match the paper's whole setting, as each run recorded it in ``metrics.json``:

- every option of :func:`~anomalib_lite.pipeline.setting.compared_setting` equals the table's setting
  (:func:`paper_setting`: the experiment config with the arm's overrides): the dataset (not a stand-in), the
  backbone (not a stand-in, its weights, its layers), image and map size, the AUPRO FPR limit, every model
  option the arm sets or leaves at the paper's value, no ``trainer.max_epochs`` cap; budgets (``…epochs``,
  ``…steps``) at least the paper's;
- the metric is the paper's (no threshold chosen on our test set, see the metric catalogue);
- the arm is the paper's row (an arm that departs from it says how, and is never compared);
- for the mean: every category of the paper's table, in every seed.

Every other cell says why it is not comparable, naming the options that differ.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomalib_lite.metrics.catalogue import METRICS
from anomalib_lite.pipeline.config import validate
from anomalib_lite.pipeline.setting import compared_setting
from anomalib_lite.research.reproduce.tables import NAMES, Arm, ReproTable

MEAN = "mean"
# Metrics whose mean over categories weighs each category by an image count of its metrics.json: the CAVGA
# protocol's per-image pixel AUROC is the mean over every anomalous image of the test set, not over categories
# (the CAVGA protocol, which IGD follows: igd.txt L208). For UTAD the paper says only "AuROC" (utad.txt L112) and
# not how it averages: both the per-image metric and this averaging are our reading (choice) there.
IMAGE_WEIGHTS = {"pixel_auroc_per_image": "n_pixel_auroc_images"}


@dataclass
class Run:
    """One run folder's ``metrics.json``: its setting (``None`` for runs that predate it) and metrics."""

    folder: Path
    setting: dict[str, Any] | None
    categories: dict[str, dict[str, Any]]


def read_runs(sweep: Path) -> list[Run]:
    """Every run (a folder with ``metrics.json``) at or below ``sweep``, sorted by folder."""
    runs = []
    for path in sorted(sweep.rglob("metrics.json")) if sweep.is_dir() else []:
        content = json.loads(path.read_text())
        runs.append(Run(path.parent, content.get("setting"), content.get("categories", {})))
    return runs


@dataclass
class Stat:
    """Mean and sample standard deviation (``None`` for one value) of ``n`` values."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        """The statistic of ``values``, or ``None`` when there is none."""
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def __str__(self) -> str:
        return f"{self.mean:.4f}" if self.std is None else f"{self.mean:.4f} ± {self.std:.4f} (n={self.n})"


@dataclass
class Cell:
    """One metric of one category (or the mean) of one arm on one dataset."""

    category: str
    metric: str
    ours: Stat | None
    paper: dict[str, float | None]  # label of the paper figure → figure; the first is compared
    reason: str | None = None  # why no difference is given; None = comparable

    @property
    def difference(self) -> float | None:
        """Ours − the paper's first figure, when comparable."""
        first = next(iter(self.paper.values()), None)
        if self.reason is not None or self.ours is None or first is None:
            return None
        return self.ours.mean - first


@dataclass
class ArmResult:
    """One arm on one dataset: the data that ran, the runs, the cells, and what the runs had in common."""

    arm: Arm
    data: str
    data_used: str | None
    runs: list[Run] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    reason: str | None = None  # why no cell of this arm is comparable
    sweep: Path | None = None
    notes: list[str] = field(default_factory=list)
    expected: dict[str, Any] | None = None  # the paper's setting (paper_setting); None: not known, not compared


def paper_setting(table: ReproTable, data: str, arm: Arm, configs: Path) -> dict[str, Any]:
    """The setting runs of ``arm`` on ``data`` must have to be compared with the paper: ``train.py``'s config
    composed from ``configs`` with the table's experiment, the dataset and the arm's overrides
    (:func:`~anomalib_lite.pipeline.setting.compared_setting` of it)."""
    overrides = [f"+experiment={table.experiment}", f"data={data}", *arm.overrides]
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(configs.resolve())):
        config = compose("train", overrides=overrides)
    return compared_setting(validate(config))


def _is_budget(key: str) -> bool:
    return key.endswith(("epochs", "steps")) and key != "trainer.max_epochs"


def setting_differences(expected: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """The options in which a run's recorded setting departs from the paper's, as ``name value (paper: value)``;
    a budget (``…epochs``, ``…steps``) departs only when below the paper's."""
    differences = []
    for key in sorted(set(expected) | set(recorded)):
        mine, theirs = recorded.get(key, "absent"), expected.get(key, "absent")
        if mine == theirs:
            continue
        if _is_budget(key) and isinstance(mine, int) and isinstance(theirs, int) and mine >= theirs:
            continue
        differences.append(f"{key} {mine} (paper: {theirs})")
    return differences


def describe_setting(runs: list[Run]) -> str:
    """The settings of ``runs`` in one line (values that differ between runs are joined with ``/``)."""

    def values(get) -> str:
        found = []
        for run in runs:
            value = get(run.setting) if run.setting else "not recorded"
            if value not in found:
                found.append(value)
        return " / ".join(str(v) for v in found)

    def backbone(s: dict[str, Any]) -> str:
        b = s["backbone"]
        return f"{b['used']} (stand-in for {b['requested']})" if b["stand_in"] else b["used"]

    def schedule(s: dict[str, Any]) -> str:
        stages = next(iter(s["schedule"].values()), [])
        return ", ".join(f"{st['stage']} {st['epochs']} epochs ({st['steps']} steps)" for st in stages)

    if not runs:
        return "no run"
    return "; ".join(
        [
            f"dataset {values(lambda s: s['dataset'])}",
            f"backbone {values(backbone)}",
            f"image size {values(lambda s: s['image_size'])}",
            f"precision {values(lambda s: s['precision'])}",
            f"schedule {values(schedule)}",
            f"seeds {values(lambda s: s['seed'])}",
            f"commit {values(lambda s: s['commit'])}",
            f"{len(runs)} runs",
        ]
    )


def arm_reason(table: ReproTable, result: ArmResult) -> str | None:
    """Why no cell of the arm can be compared (the arm is not the paper's row, a run's setting is unknown or
    departs from the paper's in the options named), or ``None``."""
    if result.arm.departure:
        return f"ours, not the paper's row: {result.arm.departure}"
    if not result.runs:
        return None
    reasons = []
    datasets = sorted({r.setting["dataset"] for r in result.runs if r.setting})
    if any(d != result.data for d in datasets):
        reasons.append(f"data {', '.join(datasets)}, not {NAMES[result.data]}")
    if any(run.setting is None or "compared" not in run.setting for run in result.runs):
        reasons.append("a run's metrics.json does not record its whole setting (an older version): rerun it")
    elif result.expected is None:
        reasons.append("the paper's setting is not known here")
    else:
        differences = sorted(
            {d for run in result.runs for d in setting_differences(result.expected, run.setting["compared"])}
        )
        if differences:
            reasons.append("the setting differs from the paper's: " + ", ".join(differences))
    return "; ".join(reasons) or None


def build_cells(table: ReproTable, result: ArmResult) -> None:
    """Fill ``result.cells`` (per category in the paper's order, then ours, then the mean) and ``result.reason``
    (kept when already set, e.g. an arm that could not run)."""
    result.reason = result.reason or arm_reason(table, result)
    by_category: dict[str, list[dict[str, Any]]] = {}
    for run in result.runs:
        for category, metrics in run.categories.items():
            by_category.setdefault(category, []).append(metrics)
    ran = list(by_category)
    categories = [c for c in table.categories] + [c for c in ran if c not in table.categories]
    for metric, refs in result.arm.paper.items():
        figures = [ref.figures(result.data) for ref in refs]
        for category in categories:
            values = [m[metric] for m in by_category.get(category, []) if m.get(metric) is not None]
            paper = {ref.label: per_category.get(category) for ref, (per_category, _) in zip(refs, figures)}
            if not values and all(v is None for v in paper.values()):
                continue
            cell = Cell(category, metric, Stat.of(values), paper)
            cell.reason = result.reason or cell_reason(cell, category in table.categories, category in by_category)
            result.cells.append(cell)
        paper = {ref.label: mean for ref, (_, mean) in zip(refs, figures)}
        # One category needs no weights; several need every run's count.
        weight_key = IMAGE_WEIGHTS.get(metric) if len(ran) > 1 else None
        unweighable = weight_key is not None and _lacks(result.runs, metric, weight_key)
        incomplete = _incomplete_seeds(result.runs, metric, table.categories) if ran else []
        ours = None if unweighable or incomplete else Stat.of(_per_seed_means(result.runs, metric, weight_key))
        cell = Cell(MEAN, metric, ours, paper)
        if unweighable:
            cell.reason = (
                f"the paper's mean is over all anomalous images; these runs do not record {weight_key} "
                "(metrics.json from an older version): rerun them"
            )
        elif incomplete:
            cell.reason = "no mean: it needs every category of the table in every seed, and " + "; ".join(incomplete)
        else:
            cell.reason = cell_reason(cell, True, bool(ran))
        cell.reason = result.reason or cell.reason
        result.cells.append(cell)


def _per_seed_means(runs: list[Run], metric: str, weight_key: str | None = None) -> list[float]:
    """Per seed, the mean of ``metric`` over the categories run with that seed (one value per seed); with
    ``weight_key`` (see :data:`IMAGE_WEIGHTS`), each category weighs by that image count: the mean over all
    those images."""
    by_seed: dict[Any, list[tuple[float, float]]] = {}
    for run in runs:
        seed = run.setting["seed"] if run.setting else str(run.folder)
        by_seed.setdefault(seed, []).extend(
            (m[metric], m[weight_key] if weight_key else 1)
            for m in run.categories.values()
            if m.get(metric) is not None
        )
    return [sum(v * w for v, w in pairs) / sum(w for _, w in pairs) for pairs in by_seed.values() if pairs]


def _incomplete_seeds(runs: list[Run], metric: str, categories: tuple[str, ...]) -> list[str]:
    """Per seed whose runs lack ``metric`` for some of ``categories``: ``seed s lacks a, b``."""
    by_seed: dict[Any, set[str]] = {}
    for run in runs:
        seed = run.setting["seed"] if run.setting else str(run.folder)
        by_seed.setdefault(seed, set()).update(c for c, m in run.categories.items() if m.get(metric) is not None)
    return [
        f"seed {seed} lacks {', '.join(c for c in categories if c not in done)}"
        for seed, done in by_seed.items()
        if not set(categories) <= done
    ]


def _lacks(runs: list[Run], metric: str, weight_key: str) -> bool:
    """Whether a run with ``metric`` lacks its image count ``weight_key`` (an old ``metrics.json``)."""
    return any(m.get(metric) is not None and m.get(weight_key) is None for run in runs for m in run.categories.values())


def cell_reason(cell: Cell, in_table: bool, ran: bool) -> str | None:
    """Why one cell is not comparable, once data and backbone match; ``None`` when it is."""
    if not ran:
        return "not run"
    if not in_table:
        return "not a category of the paper's table"
    if next(iter(cell.paper.values()), None) is None:
        return "the paper gives no figure"
    if cell.ours is None:
        return f"our runs did not compute {cell.metric}"
    metric = METRICS.get(cell.metric)
    if metric is not None and metric.test_set_threshold:
        return f"{cell.metric}: {metric.test_set_threshold}; the paper's rule is not ours"
    return None

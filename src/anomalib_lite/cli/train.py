"""``python train.py``: train and evaluate one model on each requested category (see
:mod:`anomalib_lite.pipeline.training`), in the run folder Hydra made."""

from __future__ import annotations

import logging
import math

from omegaconf import DictConfig

from anomalib_lite.cli.run_folders import (
    HYDRA_FILES,
    check_run_folder,
    multirun_job_number,
    report_errors,
    run_folder,
)
from anomalib_lite.data import categories
from anomalib_lite.pipeline.training import check_resume_config, run_config, train_run

log = logging.getLogger("anomalib_lite")


@report_errors
def train(cfg: DictConfig) -> float:
    """Validate the config and check the run folder, then train and evaluate every requested category
    (:func:`~anomalib_lite.pipeline.training.train_run`, which logs the metrics table and the report's path).

    Returns:
        The objective for a sweeper that optimises (e.g. ``hydra/sweeper=optuna_search``): the mean over the run's
        categories of metric ``objective`` (``metrics.json``'s ``mean``); NaN, with a warning, where it is undefined
        (e.g. a pixel metric without masks; Optuna counts such a trial as failed).
    """
    folder = run_folder()
    run, config = run_config(cfg)
    categories(run.data)  # unknown categories and missing data are refused before the folder is checked
    # A single run's folder was checked before Hydra wrote into it (run_folders.TrainingRunGuard); a multirun
    # job's folder is checked here, where Hydra has just written its own files.
    check_run_folder(folder, run.trainer.resume, ignored=HYDRA_FILES)
    if run.trainer.resume:
        check_resume_config(folder, config)
    results = train_run(run, config, folder, multirun_job_number())
    value = results["mean"].get(run.objective)
    if value is None:
        log.warning("objective=%s is undefined for this run (no category has it): returning NaN", run.objective)
        return math.nan
    return float(value)

"""anomalib_lite: unsupervised image anomaly detection and localisation, simply and exactly.

The packages, lowest layer first (each imports only from its own layer and those below it):

- ``errors``, ``files``: the errors reported as one line; atomic file writes.
- ``data`` and ``metrics``: datasets behind a registry and the batch contract; exact metrics, the metric
  catalogue and the evaluator.
- ``models``: the model contract, the family registry and the families (HFR, IGD, MSFI, UTAD).
- ``engine``: runs a family's training stages (device, precision, checkpoints, resume, feature cache).
- ``reporting``: a run's tables, ``report.html``, plots and overlays.
- ``pipeline``: one run's orchestration without Hydra: config validation, training, evaluation, inference,
  prediction on files, export.
- ``cli``: the Hydra commands behind ``train.py``, ``eval.py``, ``predict.py``, ``export.py``; ``research``: the
  commands over finished runs (collect, compare, reproduce the papers' tables).
"""

__version__ = "0.1.0"

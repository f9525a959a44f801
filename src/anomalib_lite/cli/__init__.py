"""The commands: ``train``, ``evaluate``, ``predict``, ``export`` (Hydra tasks behind ``train.py``, ``eval.py``,
``predict.py``, ``export.py``) and ``prepare`` (``scripts/prepare_data.py``). Each is a short function over
:mod:`anomalib_lite.pipeline`; ``run_folders`` holds what Hydra needs around them (the run folder, the refusal
to write over an earlier run, one-line errors)."""

"""``scripts/reproduce.py``: each paper table as one command. ``tables`` defines the tables (arms, datasets,
metrics, the papers' figures), ``command`` runs or collects their runs, ``results`` reads the runs and decides
what is comparable, ``report`` writes ``results.md`` / ``results.csv``."""

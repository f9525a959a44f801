"""The engine: runs a model's training stages (``trainer``) on a device in a precision (``device``), checking
every loss term (``monitor``), caching frozen features (``feature_cache``), writing lean checkpoints
(``checkpoint``); ``measure`` gives the benchmarks their peak-memory and clock helpers."""

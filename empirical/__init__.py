"""Empirical comparison of IGA with eight baselines (and two extra) on the isomer benchmarks.

See ``empirical/PROTOCOL.md``: methods (``empirical.methods``), hyperparameters
(``empirical.hparams``), jobs and their records (``empirical.jobs``,
``empirical.records``), one run (``empirical.execute``), where runs execute
(``empirical.launchers``), sweeps (``empirical.scheduler``; ``empirical.runner`` names
them all), suites (``empirical.suites``), model selection (``empirical.selection``),
statistics (``empirical.stats``) and tables (``empirical.table``);
``iga experiments run|table`` is the command line.
"""

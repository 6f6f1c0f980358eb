"""Empirical comparison of IGA with eight baselines (and two extra) on the isomer benchmarks.

See ``empirical/PROTOCOL.md``: methods (``empirical.methods``), hyperparameters
(``empirical.hparams``), one run (``empirical.runner``), suites
(``empirical.suites``), statistics (``empirical.stats``) and tables
(``empirical.table``); ``iga experiments run|table`` is the command line.
"""

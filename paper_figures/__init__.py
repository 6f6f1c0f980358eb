"""Paper figures and tables, rebuilt from stored results: ``python -m paper_figures --out DIR``.

Modules: ``load`` (read and validate the stored results), ``groups`` (which runs
answer which question), ``theory_figs``, ``empirical_figs``, ``cost_figs``
(one per figure family), ``tables``, ``style`` (rcParams, saving), ``build``
(the driver) and ``cli``.
"""

"""Theory for IGA (arXiv 2606.05025): theorems in THEOREMS.md, numerical checks here.

* ``theory.problems``: seeded synthetic multi-domain problems with closed-form risks.
* ``theory.trainers``: ERM-SGD and IGA-SGD through ``iga``'s own aligner (and the
  split-estimator mask, ``SplitMask``).
* ``theory.bound``: Theorem 1, the OOD bound over domains.
* ``theory.convergence``: Theorems 2 and 3, the SGD rate, and their constants.
* ``theory.estimators``: Lemma E, the mask's estimators of the between-domain variance.
* ``theory.reference``: an independent loop-based reference of the IGA step.
* ``theory.stats`` and ``theory.decisions``: the tests and the rules that decide.
* ``theory.pairs``: the one ERM/IGA pair trainer behind every Theorem-1 check.
* ``theory.check_bound``, ``check_rate``, ``check_estimator``, ``check_reference``: the
  checks by theorem; ``theory.checks`` runs them (``run_checks``).
* ``theory.sabotage``: broken operators that the checks must catch.
* ``theory.sweep``: ``iga theory sweep``, the bound and OOD risk over a grid.

Run them with ``iga theory --quick`` (or ``python -m theory``).
"""

from theory.checks import CheckResult, Settings, run_checks

__all__ = ["CheckResult", "Settings", "run_checks"]

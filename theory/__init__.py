"""Theory for IGA (arXiv 2606.05025): theorems in THEOREMS.md, numerical checks here.

* ``theory.problems``: seeded synthetic multi-domain problems with closed-form risks.
* ``theory.trainers``: ERM-SGD and IGA-SGD through ``iga``'s own aligner.
* ``theory.bound``: Theorem 1, the OOD bound over domains.
* ``theory.convergence``: Theorems 2 and 3, the SGD rate, and their constants.
* ``theory.stats``: Clopper-Pearson, paired tests and log-log fits (statsmodels).
* ``theory.checks``: every check as a ``CheckResult``; ``run_checks`` runs the suite.
* ``theory.sabotage``: broken operators that the checks must catch.

Run them with ``iga theory --quick`` (or ``python -m theory``).
"""

from theory.checks import CheckResult, Settings, run_checks

__all__ = ["CheckResult", "Settings", "run_checks"]

"""``iga bench``: speed and memory targets live here, never in timed unit tests.

* ``iga bench step`` (``iga.bench.step``): one IGA step against ERM and the K-backward
  reference (``iga.bench.reference.KBackwardIGA``) on a small Llama built offline.
* ``iga bench student`` (``iga.bench.student``): the same on a pretrained student.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="Benchmarks of the IGA implementation.")
    bench_sub = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    from iga.bench.step import register as register_step
    from iga.bench.student import register as register_student

    register_step(bench_sub)
    register_student(bench_sub)

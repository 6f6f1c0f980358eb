"""The method's operators: per-domain gradient capture, the conflict mask, the low-rank
projection, the aligner that chains them, and the optimizer step (docs/design.md, section 2).

Nothing here imports the distillation pipeline (``iga.distill``) or the benchmark.
"""

"""The distillation pipeline around the method: students and their base phase, teachers,
isomer-set data, the Hugging Face trainer, evaluation and the ``iga distill``/``demo``/``eval``
command line. It builds on ``iga.core`` and ``iga.isomers``; neither imports it.
"""

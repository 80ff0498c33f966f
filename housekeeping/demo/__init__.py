"""The demo data generator: the reference application schema, filled with realistic traffic.

Entry points in ``seed.py``; the parts by concern: ``schema``, ``plan`` (volumes, traffic curve),
``incidents``, ``traffic`` (rows per table), ``columns``, ``load`` (writing them), ``clock``.
"""

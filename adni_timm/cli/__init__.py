"""Command-line front ends: argument parsing only; the work is in the library modules.

Each is reachable three ways: the top-level script (``python train.py``,
``accelerate launch train.py``), the console script installed with the
package (``adni-train``), and ``python -m adni_timm.cli.train``.
"""

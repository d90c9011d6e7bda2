"""The Gradio web demo (``adni-app``, ``python -m adni_timm.app --model RUN``).

``demo``  the page: upload slices or a scan, P(AD) per scan, evidence maps
"""

"""SYNTHETIC data for tests, demos and benchmarks (never real MRI).

``slices``   ADNI-layout 2D slice sets (``python -m adni_timm.synthetic OUT ...``)
``volumes``  3D heads (NIfTI / DICOM) for adni-prepare
"""

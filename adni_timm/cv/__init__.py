"""Cross-validation results: summaries of a CV run and the paired comparison of two.

``summary``  out-of-fold predictions, cross-fitted metrics, the CV table
``compare``  two CV runs on the same folds: paired differences with CIs
(``python -m adni_timm.cv compare RUN_A RUN_B``)
"""

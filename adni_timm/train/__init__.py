"""Training under Accelerate: the loop, cross-validation, checkpoints.

``loop``        ``train``: build, resume, the epoch loop, the best export (the run folder's writer)
``cv``          ``train_cv``: K folds with nested selection, out-of-fold predictions, refit
``checkpoint``  atomic Accelerate states for ``--resume``
"""

"""3D T1 scans in: ``adni-prepare`` turns NIfTI / DICOM / BIDS scans into 2D slices.

``run``         the command's work: plan, preprocess each scan, write slices, manifest, QC
``plan``        which scans, subjects and visits go where (``ScanRecord``)
``preprocess``  the recipe: reorient, N4, register to the template, crop, slice, encode
``qc``          registration similarity, outlier flags, QC pictures
``scan_input``  a single scan given to ``evaluate --images`` or the demo, made into slices
``volumes``     reading NIfTI and DICOM volumes
``template``    the MNI152 template (nilearn's wheel)
``labels``      label files: ADNI collection CSVs and plain CSVs
(``python -m adni_timm.prepare SRC OUT ...``)
"""

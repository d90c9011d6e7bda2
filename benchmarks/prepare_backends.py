"""Why SimpleITK: N4 and affine registration with SimpleITK (what adni-prepare uses) against
antspyx (what Clinica's pip-only path uses), on SYNTHETIC heads whose true pose is known.

    pip install antspyx        # not a dependency of adni-timm; this script only compares
    python benchmarks/prepare_backends.py [--volumes 2]

For each head (the MNI template deformed, with skull, neck, pose, bias and noise; ADNI-sized,
1.2 x 1 x 1 mm): CPU seconds on one thread (ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 for both), the
mean distance over brain points between the recovered and the true template -> scan transform
(the head's own anatomy deformation, ~1.5 mm, is part of that error for every method), and the
NCC of the registered scan with the template inside the brain. torchio is not in the table: it
has no registration and only a random bias-field augmentation, no N4.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault('ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS', '1')

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

from adni_timm.prepare import preprocess as P  # noqa: E402
from adni_timm.synthetic.volumes import _pose_matrix, draw_head_params, render_head  # noqa: E402
from adni_timm.prepare.template import load_template, template_path  # noqa: E402

FLIP = np.array([-1.0, -1.0, 1.0])


def _error_mm(apply, pose, points_ras) -> float:
    got = np.array([apply((p * FLIP).tolist()) for p in points_ras])
    want = (points_ras @ pose[:3, :3].T + pose[:3, 3]) * FLIP
    return float(np.linalg.norm(got - want, axis=1).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--volumes', type=int, default=2)
    args = p.parse_args(argv)
    try:
        import ants
    except ImportError:
        print('antspyx is not installed: pip install antspyx (it pins numpy<2.4, scipy<1.16)')
        return 2
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(1)
    template = load_template()
    ks = P.slice_numbers(P.Recipe(), template)
    k0, k1 = min(ks), max(ks) + 1
    fixed, mask, reference, _ = P._template_images(template, ks, 2)
    idx = np.argwhere(template.brain)[::500]
    points = idx @ template.affine[:3, :3].T + template.affine[:3, 3]
    work = Path(tempfile.mkdtemp(prefix='adni-backends-'))
    atexit.register(shutil.rmtree, work, ignore_errors=True)  # scratch: gone when the script ends
    sitk.WriteImage(mask, str(work / 'mask.nii.gz'))
    ants_fixed = ants.image_read(str(template_path('t1')))
    ants_mask = ants.image_read(str(work / 'mask.nii.gz'))

    def ncc(array):
        return P._ncc(array[:, :, k0:k1], template.t1[:, :, k0:k1], template.brain[:, :, k0:k1])

    rows = []
    rng = np.random.default_rng(0)
    for i in range(args.volumes):
        params = draw_head_params(rng, 0.5, i)
        head = P._resample_isotropic(
            sitk.DICOMOrient(render_head(params, voxel_mm=(1.2, 1.0, 1.0)), 'RAS'), 1.0
        )
        pose = _pose_matrix(params.pose)
        sitk.WriteImage(head, str(work / 'head.nii.gz'))
        t = time.process_time()
        corrected = P.n4_correct(head)
        n4_s = time.process_time() - t
        t = time.process_time()
        transform = P.register_affine(fixed, corrected, mask)
        reg_s = time.process_time() - t
        slab = sitk.Resample(corrected, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        rows.append(
            (
                'SimpleITK (adni-prepare defaults)',
                i,
                n4_s,
                reg_s,
                _error_mm(transform.TransformPoint, pose, points),
                ncc(P.ras_from_image(slab)[0]),
            )
        )
        moving = ants.image_read(str(work / 'head.nii.gz'))
        t = time.process_time()
        ants.n4_bias_field_correction(
            moving, shrink_factor=6, convergence={'iters': [50, 40, 30], 'tol': 1e-3}
        )
        matched_s = time.process_time() - t
        t = time.process_time()
        ants_corrected = ants.n4_bias_field_correction(moving)  # its defaults (shrink 4)
        ants_n4_s = time.process_time() - t
        for kind in ('AffineFast', 'Affine'):
            t = time.process_time()
            result = ants.registration(
                ants_fixed, ants_corrected, type_of_transform=kind, mask=ants_mask, random_seed=1
            )
            reg_s = time.process_time() - t
            tx = ants.read_transform(result['fwdtransforms'][0])
            warped = ants.apply_transforms(ants_fixed, ants_corrected, result['fwdtransforms'])
            rows.append(
                (
                    f'antspyx {kind} (N4 defaults; N4 at our settings {matched_s:.1f} s)',
                    i,
                    ants_n4_s,
                    reg_s,
                    _error_mm(tx.apply_to_point, pose, points),
                    ncc(warped.numpy()),
                )
            )
    print('| method | head | N4 CPU s | registration CPU s | transform error mm | NCC |')
    print('|---|---|---|---|---|---|')
    for name, i, n4_s, reg_s, err, value in rows:
        print(f'| {name} | {i} | {n4_s:.1f} | {reg_s:.1f} | {err:.2f} | {value:.3f} |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

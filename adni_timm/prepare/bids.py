"""adni-prepare's output as a BIDS derivative dataset: ``dataset_description.json``, a
``.bidsignore`` for the slice layout beside it, and (``--save-registered``) each scan in template
space with the affine transform that put it there, so another pipeline can reuse or check them.

::

    OUT/dataset_description.json     DatasetType "derivative", GeneratedBy adni-prepare + recipe
    OUT/.bidsignore                  the slice layout, QC, records: not BIDS files
    OUT/README                       what the folder holds
    OUT/sub-<label>/[ses-<label>/]anat/
        sub-<label>[_ses-<label>]_space-MNI152NLin2009aSym_desc-preproc_T1w.nii.gz   (+ .json)
        sub-<label>[_ses-<label>]_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat

The space: the template (``template.py``) is nilearn's copy of the ICBM 2009a nonlinear
SYMMETRIC T1 (``mni_icbm152_t1_tal_nlin_sym_09a``; it is exactly mirror-symmetric about x = 0),
which BIDS and TemplateFlow name ``MNI152NLin2009aSym``; its 1 mm grid, 197 x 233 x 189 voxels
from (-98, -134, -72) mm, is the grid of the saved volume.

The volume is the scan after reorientation, resampling and N4 (the recipe's steps up to the
registration), resampled once (linear) onto the template grid with the registration's affine:
not masked, not normalised (``SkullStripped: false``). The transform is ITK's (SimpleITK
``WriteTransform``, MATLAB ``.mat``: ``AffineTransform_double_3_3``, as ANTs writes it): it maps
a point of the template (mm, ITK's LPS) to the point of the T1w scan it samples, which is what
resampling the T1w into template space takes (``sitk.Resample(t1w, template_grid, transform)``,
``antsApplyTransforms -i T1w -r template -t xfm.mat``), the convention of fMRIPrep's
``from-T1w_to-<space>_mode-image_xfm`` files.

Labels: BIDS labels are letters and digits only, so ``002_S_0295`` becomes ``sub-002S0295`` and a
BIDS source keeps its own (``sub-01`` stays ``sub-01``). The session is written with ``--visits
all`` (the visit is part of the scan id then: ``002_S_0295_m12`` -> ``ses-m12``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = [
    'BIDS_VERSION',
    'SPACE',
    'BidsName',
    'RegisteredOutput',
    'bids_label',
    'bids_name',
    'dataset_description',
    'write_dataset_description',
    'write_registered',
    'registered_reference',
    'check_derivative_description',
]

BIDS_VERSION = '1.10.1'
SPACE = 'MNI152NLin2009aSym'  # the BIDS / TemplateFlow name of template.py's template
DESCRIPTION_FILE = 'dataset_description.json'
_XFORM_MNI_152 = 4  # NIfTI's xform code for 'MNI 152 normalised coordinates'
# what adni-prepare writes beside the BIDS files (the slice layout and its records): not BIDS
BIDSIGNORE = (  # folders without a trailing slash: bids-validator 3 skips '/qc', not '/qc/'
    '/train',
    '/test',
    '/flagged',
    '/qc',
    '/records',
    '/manifest.csv',
    '/prepare.json',
    '/plan.json',
    '/dataset.json',
    # BIDS has no transform files yet (BEP014); named as fMRIPrep names them
    '*_xfm.mat',
)


@dataclass(frozen=True)
class BidsName:
    """Where one scan's BIDS files go: ``sub-<subject>[_ses-<session>]``."""

    subject: str
    session: str | None = None

    @property
    def prefix(self) -> str:
        return f'sub-{self.subject}' + (f'_ses-{self.session}' if self.session else '')

    @property
    def folder(self) -> str:
        return f'sub-{self.subject}' + (f'/ses-{self.session}' if self.session else '') + '/anat'

    @property
    def volume(self) -> str:
        return f'{self.folder}/{self.prefix}_space-{SPACE}_desc-preproc_T1w.nii.gz'

    @property
    def sidecar(self) -> str:
        return self.volume[: -len('.nii.gz')] + '.json'

    @property
    def transform(self) -> str:
        return f'{self.folder}/{self.prefix}_from-T1w_to-{SPACE}_mode-image_xfm.mat'


@dataclass(frozen=True)
class RegisteredOutput:
    """What ``--save-registered`` needs per scan (picklable: it goes to worker processes): the
    source root (for the sidecar's ``Sources``) and whether visits are sessions (``--visits
    all``: the visit is part of the scan id)."""

    src: str
    sessions: bool = False

    def name(self, subject: str, visit: str | None) -> BidsName:
        return bids_name(subject, visit if self.sessions else None)


def bids_label(text: str, entity: str) -> str:
    """A BIDS label (letters and digits) of a subject or visit id: a ``sub-`` / ``ses-`` prefix
    dropped, everything else but letters and digits removed."""
    text = re.sub(rf'^{entity}-', '', text.strip())
    label = re.sub(r'[^A-Za-z0-9]', '', text)
    if not label:
        raise ValueError(f'{text!r} has no letters or digits to make a BIDS {entity} label of')
    return label


def bids_name(subject: str, visit: str | None) -> BidsName:
    """The BIDS name of a scan: the subject, and the visit as the session when given."""
    return BidsName(bids_label(subject, 'sub'), bids_label(visit, 'ses') if visit else None)


def _code_url() -> str | None:
    """The project's source URL from the installed metadata (none when not installed)."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata('adni-timm')
    except PackageNotFoundError:
        return None
    for entry in meta.get_all('Project-URL') or []:
        label, _, url = entry.partition(',')
        if label.strip().lower() in ('source', 'repository', 'homepage', 'code'):
            return url.strip()
    return meta.get('Home-page') or None


def _source_datasets(src: Path) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """``SourceDatasets`` (the source folder, with the DOI of a BIDS source) and what a BIDS
    source's own description says that applies to us (its licence)."""
    entry = {'URL': src.resolve().as_uri()}
    inherited = {}
    description = src / DESCRIPTION_FILE
    if description.is_file():
        try:
            found = json.loads(description.read_text(encoding='utf-8'))
        except (OSError, json.JSONDecodeError):
            found = {}
        if found.get('DatasetDOI'):
            entry['DOI'] = str(found['DatasetDOI'])
        if found.get('License'):
            inherited['License'] = str(found['License'])
    return [entry], inherited


def dataset_description(
    src: str | os.PathLike, recipe: dict, recipe_digest: str, steps: Sequence[str]
) -> dict[str, Any]:
    """The ``dataset_description.json`` of adni-prepare's OUT: a derivative of ``src``."""
    from .. import __version__

    sources, inherited = _source_datasets(Path(src))
    generated = {
        'Name': 'adni-prepare',
        'Version': __version__,
        'Description': (
            f'adni-timm adni-prepare: 3D T1w scans registered (affine) to {SPACE} and cut '
            f'into {recipe.get("slices")} axial slices; steps {", ".join(steps)}; recipe '
            f'{recipe_digest} (every value in prepare.json, key "recipe")'
        ),
    }
    code = _code_url()
    if code:
        generated['CodeURL'] = code
    return {
        'Name': f'adni-prepare: {Path(src).resolve().name} in {SPACE}',
        'BIDSVersion': BIDS_VERSION,
        'DatasetType': 'derivative',
        'GeneratedBy': [generated],
        'SourceDatasets': sources,
        'DatasetLinks': {'source': sources[0]['URL']},
        **inherited,
    }


def check_derivative_description(found: dict) -> list[str]:
    """What keeps ``found`` from being a valid derivative description (BIDS schema rules
    ``dataset_description`` + ``derivative_description``, ``objects.metadata`` types); empty when
    valid."""
    problems = []
    for key in ('Name', 'BIDSVersion'):
        if not isinstance(found.get(key), str) or not found[key]:
            problems.append(f'{key} is required (a non-empty string)')
    if found.get('DatasetType') != 'derivative':
        problems.append('DatasetType must be "derivative"')
    generated = found.get('GeneratedBy')
    if not isinstance(generated, list) or not generated:
        problems.append('GeneratedBy is required for a derivative: a list of one or more objects')
    else:
        for i, item in enumerate(generated):
            if not isinstance(item, dict) or not isinstance(item.get('Name'), str):
                problems.append(f'GeneratedBy[{i}] must be an object with a Name')
                continue
            for key in ('Version', 'Description', 'CodeURL'):
                if key in item and not isinstance(item[key], str):
                    problems.append(f'GeneratedBy[{i}].{key} must be a string')
    sources = found.get('SourceDatasets', [])
    if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
        problems.append('SourceDatasets must be a list of objects (URL, DOI, Version)')
    else:
        for i, s in enumerate(sources):
            unknown = set(s) - {'URL', 'DOI', 'Version'}
            if unknown:
                problems.append(f'SourceDatasets[{i}] has unknown keys {sorted(unknown)}')
    links = found.get('DatasetLinks', {})
    if not isinstance(links, dict) or 'bids' in links or '' in links:
        problems.append('DatasetLinks must be an object whose keys are not "" or "bids"')
    return problems


def write_dataset_description(out: str | os.PathLike, description: dict) -> Path:
    """``OUT/dataset_description.json``, ``OUT/.bidsignore`` and a short ``OUT/README`` (BIDS
    recommends one), each written atomically."""
    from ..utils.files import write_json, write_text

    out = Path(out)
    write_text(out / '.bidsignore', '\n'.join(BIDSIGNORE) + '\n')
    generated = description['GeneratedBy'][0]
    write_text(
        out / 'README',
        f'{description["Name"]}\n\n{generated["Description"]}.\n\n'
        'train/, test/: the 2D slices a classifier reads; manifest.csv: one row per scan; '
        'prepare.json: the recipe, template and versions; sub-*/anat/ (with --save-registered): '
        f'each scan in {SPACE} and its affine transform. See adni-timm docs/PREPARE.md.\n',
    )
    return write_json(out / DESCRIPTION_FILE, description)


def registered_reference(template):
    """An empty SimpleITK image on the template's full grid (where the registered volume lies)."""
    import numpy as np

    from .volumes import image_from_ras

    return image_from_ras(np.zeros(template.shape, np.float32), template.affine)


def write_registered(
    out: str | os.PathLike,
    name: BidsName,
    registered,
    transform,
    source: str,
    src_root: str | os.PathLike | None = None,
    steps: Sequence[str] = (),
) -> list[str]:
    """The registered volume (NIfTI, 16-bit scaled), its sidecar and the transform under ``out``;
    returns their paths relative to ``out``. Each file is written beside its target and renamed
    into place, so a kill never leaves half a volume."""
    import nibabel as nib
    import numpy as np
    import SimpleITK as sitk

    from .volumes import ras_from_image

    out = Path(out)
    (out / name.folder).mkdir(parents=True, exist_ok=True)
    volume, transform_path = out / name.volume, out / name.transform
    array, affine = ras_from_image(registered)
    nifti = nib.Nifti1Image(np.asarray(array, np.float32), affine)
    # 16 bits with a scale factor (nibabel picks slope and intercept): a float32 volume is twice
    # the size, for a precision of 1 / 65535 of the intensity range we do not need
    nifti.set_data_dtype(np.int16)
    nifti.header.set_xyzt_units('mm')  # the validator warns on an unset unit
    nifti.set_sform(affine, code=_XFORM_MNI_152)
    nifti.set_qform(affine, code=_XFORM_MNI_152)
    tmp = volume.with_name(f'.tmp-{volume.name}')
    nib.save(nifti, tmp)
    tmp.replace(volume)
    tmp = transform_path.with_name(f'.tmp-{transform_path.name}')
    sitk.WriteTransform(transform, str(tmp))
    tmp.replace(transform_path)
    before = ', '.join(s for s in steps if s in ('reorient', 'resample', 'n4')) or 'none'
    sidecar: dict[str, Any] = {
        'Description': (
            f'The T1w scan (adni-prepare steps before the registration: {before}) resampled '
            f'(linear) onto the {SPACE} 1 mm grid with the affine transform beside it; not '
            'masked, not intensity-normalised'
        ),
        'SkullStripped': False,
    }
    if src_root is not None:
        try:
            relative = Path(source).resolve().relative_to(Path(src_root).resolve())
            sidecar['Sources'] = [f'bids:source:{relative.as_posix()}']
        except ValueError:  # a source outside SRC (a symlink): no BIDS URI for it
            pass
    from ..utils.files import write_json

    write_json(out / name.sidecar, sidecar)
    return [name.volume, name.sidecar, name.transform]

"""Drafts to move into prepare/ after the restructure."""
from __future__ import annotations

from collections import Counter
from pathlib import Path


def series_summary(folder: Path, series_ids, reader) -> str:
    """'ADNI_Sag3D_MPRAGE' (series 1301, 170 files), ...: how a person tells the series apart
    (the description the scanner console showed, its number and size), not their UIDs."""
    import SimpleITK as sitk

    parts = []
    for uid in series_ids:
        files = reader.GetGDCMSeriesFileNames(str(folder), uid)
        description, number = '', ''
        try:
            info = sitk.ImageFileReader()
            info.SetFileName(files[0])
            info.ReadImageInformation()
            if info.HasMetaDataKey('0008|103e'):
                description = info.GetMetaData('0008|103e').strip()
            if info.HasMetaDataKey('0020|0011'):
                number = info.GetMetaData('0020|0011').strip()
        except RuntimeError:
            pass
        name = f"'{description}'" if description else 'no description'
        where = f'series {number}, ' if number else ''
        parts.append(f'{name} ({where}{len(files)} file{"s" if len(files) != 1 else ""})')
    return ', '.join(parts)

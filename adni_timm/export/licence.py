"""What licence published weights carry: the code's Apache-2.0 is not the data's to give.

Weights trained on SYNTHETIC data (``adni_timm.synthetic``) are Apache-2.0, like the code. Weights
trained on real data are governed by the data's terms: the card says ``license: other`` with
``license_name`` / ``license_link`` naming them (the ADNI Data Use Agreement for ADNI data; the
``--license`` / ``--license-link`` the publisher passes for other data), and states the code's
Apache-2.0 apart. The Hub reads ``license_name`` as a slug (lower case, digits, ``-`` and ``.``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    'ADNI_DUA_LINK',
    'ADNI_DUA_NAME',
    'CODE_LICENCE',
    'DATA_TERMS',
    'Licence',
    'LicenceError',
    'weights_licence',
]

CODE_LICENCE = 'apache-2.0'  # the adni-timm code, and weights trained on synthetic data
DATA_TERMS = 'other'  # the Hub's id for terms that are no listed licence (license_name names them)
ADNI_DUA_NAME = 'adni-data-use-agreement'
# the page that states the agreement every ADNI data user signs (LONI IDA, project ADNI)
ADNI_DUA_LINK = 'https://ida.loni.usc.edu/collaboration/access/appApply.jsp?project=ADNI'


class LicenceError(ValueError):
    """A licence choice that does not fit the data (e.g. ``--license`` for synthetic data)."""


@dataclass(frozen=True)
class Licence:
    """The front matter's ``license`` (``license_name`` / ``license_link`` with ``other``) and the
    words the card's Licence section names the terms with."""

    license: str
    name: str | None = None
    link: str | None = None
    terms: str = 'the Apache-2.0 licence'
    chosen: bool = True  # False: the publisher has not named the data's terms yet

    @property
    def front_matter(self) -> dict[str, str]:
        """The model card's licence keys (``ModelCardData(**licence.front_matter)``)."""
        keys = {'license': self.license}
        if self.name:
            keys['license_name'] = self.name
        if self.link:
            keys['license_link'] = self.link
        return keys


def slug(text: str) -> str:
    """``license_name`` as the Hub accepts it: lower case, digits, dashes and dots."""
    return re.sub(r'[^a-z0-9.]+', '-', text.lower()).strip('-.') or 'data-terms'


def weights_licence(
    *,
    synthetic: bool,
    adni: bool,
    data_name: str,
    chosen: str | None = None,
    link: str | None = None,
) -> Licence:
    """The licence of weights trained on the data described (``DataSource`` of the card).

    ``chosen`` / ``link``: the publisher's ``--license NAME`` / ``--license-link URL``, which name
    the terms of non-ADNI data (and may name a specific agreement for ADNI data).
    """
    if synthetic:
        if chosen or link:
            raise LicenceError(
                'these weights were trained on SYNTHETIC data: they are Apache-2.0 like the code; '
                'drop --license / --license-link (they name the terms of real training data)'
            )
        return Licence(CODE_LICENCE)
    if chosen:
        return Licence(DATA_TERMS, slug(chosen), link, terms=f'{chosen}, the terms of {data_name}')
    if adni:
        return Licence(
            DATA_TERMS, ADNI_DUA_NAME, link or ADNI_DUA_LINK, terms='the ADNI Data Use Agreement'
        )
    return Licence(
        DATA_TERMS,
        slug(f'{data_name} terms'),
        link,
        terms=f'the terms of {data_name}',
        chosen=False,
    )

"""Run timm's own model tests on our entrypoints: an external check that the adni models are timm
models (forward, backward, default cfgs, features, intermediates, torchscript, fx).

    python .ci/timm_model_tests.py          # all five adni_convnext_*: 40 tests, ~5 min on 2 cores
    python .ci/timm_model_tests.py adni_convnext_atto adni_convnext_tiny   # .ci/run: 16, ~2 min

It downloads the source distribution of the *installed* timm (its tests ship there; needs PyPI, or
--sdist FILE), unpacks its tests/ into a temporary folder outside the checkout, adds a conftest.py
that imports adni_timm (from this checkout) so the models are registered before timm's tests
parametrize over list_models(), and runs tests/test_models.py -k VARIANTS. pytest-timeout (timm's
tests set per-test timeouts) goes into that temporary folder, never into your environment.

Exit status: 0 all passed, 1 a test failed (or a variant ran no test, or the download failed),
2 usage error.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Extra test requirements of timm's tests/test_models.py (timm's own `test` dependency group), each
# installed with --no-deps into the temporary folder. torchvision (the fx tests) is one of our base
# dependencies; expecttest, pytest-xdist and pytest-forked are not used by test_models.py.
TEST_REQUIREMENTS = ('pytest-timeout',)

# Tests of timm's that fail for timm's reasons, not ours: 'node id': 'why'. None today; a failure
# that is ours is fixed in adni_timm, never deselected here.
DESELECT: dict[str, str] = {}

CONFTEST = """\
# written by adni-timm's .ci/timm_model_tests.py: register the adni_convnext_* entrypoints before
# tests/test_models.py parametrizes over timm.list_models() at collection
import adni_timm  # noqa: F401
"""


class TimmTestsError(RuntimeError):
    """Setting up timm's tests failed (download, unpacking, install): one line says why."""


def family() -> list[str]:
    sys.path.insert(0, str(REPO))
    from adni_timm.models import STOCK_ARCHITECTURES

    return list(STOCK_ARCHITECTURES)


def fetch_sdist(version: str, into: Path) -> Path:
    """timm's sdist of ``version`` from PyPI (pip's own client)."""
    cmd = [sys.executable, '-m', 'pip', 'download', '-q', '--no-binary', ':all:', '--no-deps']
    proc = subprocess.run(
        [*cmd, '-d', str(into), f'timm=={version}'], capture_output=True, text=True
    )
    found = sorted(into.glob(f'timm-{version}.tar.gz'))
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ['no output'])[-1]
        raise TimmTestsError(
            f'could not download the sdist of timm=={version} ({last}); it needs PyPI, or pass '
            f'--sdist timm-{version}.tar.gz'
        )
    return found[0]


def unpack_tests(sdist: Path, version: str, into: Path) -> Path:
    """Only tests/ and pyproject.toml (its pytest markers): no timm/ source folder, so the tests
    import the installed timm, the one our models are registered in."""
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split('/')[0]
        if top != f'timm-{version}':
            raise TimmTestsError(f'{sdist} holds {top}, not the installed timm-{version}')
        keep = [
            m
            for m in tar.getmembers()
            if m.name.startswith(f'{top}/tests/') or m.name == f'{top}/pyproject.toml'
        ]
        if not any(m.name == f'{top}/tests/test_models.py' for m in keep):
            raise TimmTestsError(f'{sdist} has no {top}/tests/test_models.py')
        # the 'data' filter refuses links and paths out of the folder (Python >= 3.10.12)
        safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}
        tar.extractall(into, members=keep, **safe)
    root = into / top
    (root / 'conftest.py').write_text(CONFTEST)
    return root


def install_requirements(into: Path) -> None:
    cmd = [sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(into)]
    proc = subprocess.run([*cmd, *TEST_REQUIREMENTS], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ['no output'])[-1]
        raise TimmTestsError(f'could not install {", ".join(TEST_REQUIREMENTS)} ({last})')


def summarize(junit: Path, variants: list[str]) -> tuple[dict[str, int], list[str]]:
    """(counts of passed/failed/skipped, the variants that ran no test) from pytest's junit XML."""
    counts = {'passed': 0, 'failed': 0, 'skipped': 0}
    ran = set()
    for case in ET.parse(junit).getroot().iter('testcase'):
        outcome = 'passed'
        if case.find('failure') is not None or case.find('error') is not None:
            outcome = 'failed'
        elif case.find('skipped') is not None:
            outcome = 'skipped'
        counts[outcome] += 1
        # ids such as test_model_forward[1-adni_convnext_atto] or [1-adni_convnext_atto.adni_ad_nc]
        name = case.get('name', '')
        params = name[name.find('[') + 1 : -1].split('-') if name.endswith(']') else []
        ran.update(p.split('.')[0] for p in params)
    return counts, [v for v in variants if v not in ran]


def run(variants: list[str], sdist: Path | None, keep: bool) -> int:
    version = importlib.metadata.version('timm')
    work = Path(tempfile.mkdtemp(prefix='adni-timm-model-tests-'))
    try:
        sdist = sdist or fetch_sdist(version, work / 'sdist')
        root = unpack_tests(sdist, version, work)
        install_requirements(work / 'site')
        env = dict(os.environ, HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')
        # timm's tests drop the pretrained tests and widen their exclusions on GitHub Actions;
        # run the same tests on every machine
        env.pop('GITHUB_ACTIONS', None)
        paths = [str(REPO), str(work / 'site'), env.get('PYTHONPATH', '')]
        env['PYTHONPATH'] = os.pathsep.join(p for p in paths if p)
        junit = work / 'junit.xml'
        cmd = [sys.executable, '-m', 'pytest', 'tests/test_models.py', '-q', '-rfE']
        cmd += ['-k', ' or '.join(variants), '-p', 'no:cacheprovider', f'--junitxml={junit}']
        cmd += ['-p', 'timeout']  # required: a test that hangs fails after its timeout, CI goes on
        for node_id, why in DESELECT.items():
            print(f'deselected (timm, not ours): {node_id}: {why}', flush=True)
            cmd += ['--deselect', node_id]
        print(f'timm {version} model tests on {", ".join(variants)} in {root}', flush=True)
        code = subprocess.run(cmd, cwd=root, env=env).returncode
        if not junit.is_file():
            print(f'timm model tests: pytest wrote no report (exit {code})', file=sys.stderr)
            return 1
        counts, silent = summarize(junit, variants)
        print(
            f'timm {version} model tests: {counts["passed"]} passed, {counts["failed"]} failed, '
            f'{counts["skipped"]} skipped ({", ".join(variants)})'
        )
        if silent:
            print(f'timm model tests: no test ran for {", ".join(silent)}', file=sys.stderr)
            return 1
        return 0 if code == 0 and counts['failed'] == 0 else 1
    finally:
        if keep:
            print(f'kept {work}')
        else:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    names = family()
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('variants', nargs='*', metavar='VARIANT', help=f'default: {names}')
    parser.add_argument('--sdist', type=Path, help='a downloaded timm-VERSION.tar.gz (offline)')
    parser.add_argument('--keep', action='store_true', help='keep the temporary folder')
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(names))
    if unknown:
        parser.error(f'unknown variant {", ".join(unknown)}; choose from {", ".join(names)}')
    if args.sdist and not args.sdist.is_file():
        parser.error(f'--sdist {args.sdist}: no such file')
    try:
        return run(args.variants or names, args.sdist and args.sdist.resolve(), args.keep)
    except (TimmTestsError, tarfile.TarError) as e:
        print(f'timm model tests: {e}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())

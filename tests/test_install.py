"""A NON-editable install works: sdist -> wheel -> fresh venv -> presets, console scripts (their
--help and --version), a tiny run and the next steps it prints.

The editable install every other test runs against reads the package straight out of
the checkout, so it cannot catch missing package data, a file read relative to the
repository, or a broken entry point. Here the project is built into a wheel (from a
copy of the source, so the checkout stays clean) and installed into a fresh venv. Torch
and friends are NOT reinstalled (gigabytes): a ``.pth`` line makes the fresh venv see
this venv's site-packages. A plain path line adds the directory without processing the
``.pth`` files inside it, so this venv's editable-install hook for adni_timm stays
inactive there, and the fresh venv's own site-packages comes first on sys.path anyway.

The sdist is built first (with this venv's setuptools) and the wheel from it, so a file the sdist
leaves out fails here; the sdist leaves the test suite out on purpose (MANIFEST.in). The wheel is
built by pip with this venv's setuptools too (no isolated build environment: no PyPI, ~8 s less),
and pip first checks it against pyproject's ``build-system.requires`` (``setuptools>=77``). The
fresh venv has no pip of its own (ensurepip costs ~7 s): it runs this venv's, seen through the
``.pth`` line, which installs into the fresh venv's prefix.
"""

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [
    'adni-train',
    'adni-evaluate',
    'adni-push',
    'adni-check-data',
    'adni-synthetic',
    'adni-app',
    'adni-prepare',
]
# the imported package and its presets (each one package data that loads)
PRESETS_PROBE = textwrap.dedent("""
    import adni_timm
    from adni_timm.config import load_config, preset_names
    names = preset_names()
    configs = [load_config(n) for n in names]
    package = {"file": adni_timm.__file__, "presets": list(names)}
""")
# the installed distribution's console-script entry points, each called with --help and --version
HELP_PROBE = textwrap.dedent("""
    import contextlib, io, json, sys
    from importlib.metadata import distribution
    dist = distribution("adni-timm")
    points = {e.name: e for e in dist.entry_points if e.group == "console_scripts"}
    answers = {"metadata_version": dist.version, "package": package}
    for name in sys.argv[1:]:
        for flag in ("--help", "--version"):
            text = io.StringIO()
            with contextlib.redirect_stdout(text):
                try:
                    code = points[name].load()([flag])
                except SystemExit as e:
                    code = e.code
            answers[f"{name} {flag}"] = [code or 0, text.getvalue()]
    print(json.dumps(answers))
""")
# never copied into the build tree: environments, caches, build outputs, local runs and data
_ANYWHERE = shutil.ignore_patterns(
    '.git',
    '.venv',
    '.ci-venv',
    '.whl',
    '__pycache__',
    '*.pyc',
    '*.egg-info',
    '.cache',
    '.pytest_cache',
    '.ruff_cache',
)
# local runs, data and build outputs at the top of the checkout only: adni_timm/data is a package
_TOP_LEVEL = {'build', 'dist', 'runs', 'data'}


def COPY_IGNORE(directory, names):
    ignored = set(_ANYWHERE(directory, names))
    if Path(directory).resolve() == ROOT:
        ignored |= _TOP_LEVEL & set(names)
    return ignored


def _env(tmp_path: Path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'PYTHONSTARTUP', 'PYTHONNOUSERSITE')
    }
    env.update(
        ADNI_TIMM_CACHE=str(tmp_path / 'cache'),
        HF_HUB_OFFLINE='1',
        HF_HUB_DISABLE_TELEMETRY='1',
        PIP_DISABLE_PIP_VERSION_CHECK='1',
        PYTHONNOUSERSITE='1',
        MPLBACKEND='Agg',
    )
    return env


def _run(cmd, *, cwd, env, timeout, check=True):
    cmd = [str(c) for c in cmd]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(
            f'timed out after {timeout} s: {" ".join(cmd)}\n--- '
            f'stdout\n{e.stdout}\n--- stderr\n{e.stderr}'
        )
    if check and proc.returncode != 0:
        pytest.fail(
            f'exit {proc.returncode}: {" ".join(cmd)}\n--- '
            f'stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}'
        )
    return proc


def _build_leftovers() -> dict:
    """What a setuptools build leaves in a source tree
    (all git-ignored, so git status would not show it).
    """
    found = [ROOT / 'build', ROOT / 'dist', *ROOT.glob('*.egg-info')]
    return {p.name: p.stat().st_mtime_ns for p in found if p.exists()}


def _build_sdist(tmp_path: Path, env: dict) -> Path:
    """The sdist, built from a copy (an in-place setuptools build leaves build/ and *.egg-info in
    the checkout) by this venv's setuptools: no network needed for this step."""
    src = tmp_path / 'src'
    shutil.copytree(ROOT, src, symlinks=True, ignore=COPY_IGNORE)
    dist = tmp_path / 'sdist'
    _run(
        [
            sys.executable,
            '-c',
            'import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])',
            dist,
        ],
        cwd=src,
        env=env,
        timeout=900,
    )
    built = sorted(dist.glob('adni_timm-*.tar.gz'))
    assert len(built) == 1, f'expected one adni_timm sdist in {dist}: {list(dist.iterdir())}'
    return built[0]


def _build_wheel(tmp_path: Path, env: dict, source: Path) -> Path:
    """The wheel, built by pip from ``source`` (the sdist) with this venv's build backend, once
    pip has checked it against the sdist's ``build-system.requires``."""
    wheels = tmp_path / 'wheels'
    _run(
        [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-index', '--no-build-isolation']
        + ['--check-build-dependencies', '-w', wheels, source],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    built = sorted(wheels.glob('adni_timm-*.whl'))
    assert len(built) == 1, (
        f'expected one adni_timm wheel in {wheels}, found {[p.name for p in wheels.iterdir()]}'
    )
    return built[0]


def _fresh_venv(tmp_path: Path, env: dict) -> Path:
    venv = tmp_path / 'fresh'
    # no pip of its own: this venv's pip (on the .pth path) installs into the fresh venv's prefix
    _run([sys.executable, '-m', 'venv', '--without-pip', venv], cwd=tmp_path, env=env, timeout=900)
    python = venv / 'bin' / 'python'
    site = _run(
        [python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
        cwd=tmp_path,
        env=env,
        timeout=900,
    ).stdout.strip()
    # this venv's third-party packages (torch, timm, ...), as a plain path line: its own .pth files,
    # the editable hook for adni_timm among them, are not processed
    ours = dict.fromkeys([sysconfig.get_path('purelib'), sysconfig.get_path('platlib')])
    (Path(site) / '_adni_timm_test_deps.pth').write_text(''.join(f'{p}\n' for p in ours))
    return venv


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    env = _env(tmp_path)
    leftovers = _build_leftovers()

    sdist = _build_sdist(tmp_path, env)
    with tarfile.open(sdist) as tar:
        names = [name.split('/', 1)[1] for name in tar.getnames() if '/' in name]
    # the decision (MANIFEST.in): what builds the wheel, not the suite that needs the whole repo
    assert not [n for n in names if n.startswith('tests/')], 'the sdist ships tests/'
    for needed in ('CHANGELOG.md', 'LICENSE', 'README.md', 'adni_timm/configs/adni.yaml'):
        assert needed in names, f'{needed} missing from the sdist'
    assert any(n.startswith('adni_timm/publish/templates/') for n in names), names
    wheel = _build_wheel(tmp_path, env, sdist)
    venv = _fresh_venv(tmp_path, env)
    python, bin_dir = venv / 'bin' / 'python', venv / 'bin'
    # --ignore-installed: this venv's editable adni-timm is visible through the .pth; never touch it
    _run(
        [python, '-m', 'pip', 'install', '--no-deps', '--no-index', '--ignore-installed', wheel],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )

    # one process of the fresh venv for the package and its entry points (each interpreter that
    # imports torch costs seconds): the presets first, then every console script's --help, --version
    answers = json.loads(
        _run(
            [python, '-c', PRESETS_PROBE + HELP_PROBE, *SCRIPTS], cwd=tmp_path, env=env, timeout=900
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    # the installed copy, not the checkout; every preset is package data that loads
    info = answers['package']
    installed = Path(info['file']).resolve()
    assert installed.is_relative_to(venv.resolve()), (
        f'adni_timm imported from {installed}, not the fresh venv'
    )
    assert not installed.is_relative_to(ROOT), f'adni_timm imported from the checkout: {installed}'
    assert {'adni', 'demo', 'seed'} <= set(info['presets']), info['presets']

    # every console script is in the fresh venv, and each entry point it names answers --help
    # (all in one process of the fresh venv: 7 interpreters importing torch cost ~17 s; the
    # wrappers of adni-synthetic, -check-data, -train and -evaluate are run for real below)
    for name in SCRIPTS:
        assert (bin_dir / name).is_file(), f'console script {name} missing from {bin_dir}'
    # one version: pyproject's, in the installed metadata and in every --version
    version = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['version']
    assert answers['metadata_version'] == version
    for name in SCRIPTS:
        code, out = answers[f'{name} --help']
        assert code == 0, f'{name} --help exited {code}\n{out}'
        # its own name in the usage line, and examples to copy
        assert out.startswith(f'usage: {name} '), f'{name} --help usage line:\n{out}'
        assert '\nexamples:\n' in out, f'{name} --help has no examples:\n{out}'
        code, out = answers[f'{name} --version']
        assert (code, out) == (0, f'{name} {version}\n'), f'{name} --version: {code} {out!r}'
    # a tiny SYNTHETIC set and a tiny run outside the repo, through the installed console script
    # and, for the run, the multi-GPU way after a pip install: accelerate launch -m
    # adni_timm.cli.train (each interpreter here imports torch: seconds of CPU; the wrappers are
    # pip's one template, and every entry point answered above)
    data, run = tmp_path / 'AD_NC', tmp_path / 'run'
    _run(
        [bin_dir / 'adni-synthetic', data]
        + ['--train-subjects', 3, '--test-subjects', 2, '--slices', 3, '--seed', 0],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    train = _run(
        [python, '-m', 'accelerate.commands.launch', '--cpu', '--num_processes', 1]
        + ['--num_machines', 1, '--mixed_precision', 'no', '--dynamo_backend', 'no']
        + ['-m', 'adni_timm.cli.train', '--data-dir', data, '--output-dir', run]
        + ['--config', 'demo', '--model', 'adni_convnext_atto', '--img-size', 64, '--epochs', 1]
        + ['--batch-size', 4, '--num-workers', 0, '--eval-test'],
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    assert (run / 'best' / 'model.safetensors').is_file(), sorted(p.name for p in run.iterdir())
    assert (run / 'eval' / 'metrics.json').is_file(), sorted(p.name for p in run.iterdir())
    assert str(run) in train.stdout + train.stderr, (
        f'the run folder is not mentioned:\n{train.stdout}\n{train.stderr}'
    )
    # the next steps it prints are installed commands, and they run as printed
    steps = [
        shlex.split(line)
        for line in train.stdout.split('\nnext:\n')[-1].splitlines()
        if line.startswith('  adni-')
    ]
    assert [step[0] for step in steps] == ['adni-evaluate', 'adni-push'], train.stdout
    for step in steps:
        _run([bin_dir / step[0], *step[1:]], cwd=tmp_path, env=env, timeout=900)
    assert (run / 'hub' / 'README.md').is_file() and (run / 'eval' / 'metrics.json').is_file()

    # the build left nothing in the checkout
    assert _build_leftovers() == leftovers, (
        f'build outputs appeared in {ROOT}: {_build_leftovers()}'
    )

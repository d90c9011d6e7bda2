"""What a person sees: log-file friendly progress, one
short epoch line, a summary with the next commands.
"""

import io
import re
import subprocess

import pytest

from adni_timm.utils.progress import Progress, resolve_mode
from adni_timm.train.loop import epoch_line
from helpers import TINY, popen_script, with_option

EPOCH_LINE = re.compile(r'^epoch \d+/\d+ \|')
PROGRESS_LINE = re.compile(r'^  epoch \d+/\d+ +\d+% ')


@pytest.mark.slow
def test_a_redirected_run_writes_plain_lines_and_short_epoch_lines(tiny_data, tmp_path):
    log = tmp_path / 'train.log'
    run = tmp_path / 'run'
    args = with_option(TINY, '--batch-size', '4')
    # as under SLURM or nohup: stdout and stderr into one file, no TTY
    proc = popen_script(
        'tests/progress_probe.py',
        '--data-dir',
        tiny_data,
        '--output-dir',
        run,
        *args,
        '--eval-test',
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.wait(900)  # a hang guard
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert '\r' not in text  # no carriage-return bar updates in a log file
    lines = text.splitlines()
    epoch_lines = [line for line in lines if EPOCH_LINE.match(line)]
    progress_lines = [line for line in lines if PROGRESS_LINE.match(line)]
    assert len(epoch_lines) == 2 and all(len(line) < 120 for line in epoch_lines), epoch_lines
    assert all(' | val ' in line and ' | eta ' in line for line in epoch_lines)
    # the shortened interval shows
    assert progress_lines and all('img/s eta' in line for line in progress_lines)
    # an epoch's time as the line prints it: 13s, or 1m05s on a busy machine
    epoch_seconds = [
        60 * float(m or 0) + float(s)
        for line in epoch_lines
        for m, s in re.findall(r'\| (?:(\d+)m)?(\d+)s \|', line)
    ]
    assert len(epoch_seconds) == len(epoch_lines), epoch_lines
    # at most one line per interval, per epoch
    bound = sum(s / 0.2 + 1 for s in epoch_seconds) + 2 * 2
    assert len(progress_lines) <= bound
    # the summary never prints raw float reprs
    assert not re.search(r'\d\.\d{5,}', text.split('=' * 100)[-1])
    summary = text.split('=' * 100)[-1]
    for needed in (
        f'run folder   {run}',
        f'best model   {run / "best"}',
        'threshold    P(AD) >= ',
        f'evaluation   {run / "eval"}',
        f'adni-evaluate --model {run} --data-dir',
        f'adni-push --run {run}',
    ):
        assert needed in summary, needed


def test_the_epoch_line_stays_short_at_its_widest():
    row = {
        'epoch': 100,
        'train_loss': 12.3456,
        'lr': 1.23e-4,
        'train_img_per_s': 12345.6,
        'epoch_time_s': 3599.0,
        'ema_val_loss': 9.87654,
        'ema_val_scan_auc': 0.987654,
        'ema_val_scan_accuracy': 0.912345,
    }
    line = epoch_line(row, 100, 'ema', True, eta_s=99 * 3600.0)
    assert len(line) < 120, line
    assert line.startswith('epoch 100/100 | loss 12.346 | val 9.877 | AUC 0.988 acc 0.912 (ema)')
    assert line.endswith(' *')


def test_progress_picks_a_bar_on_a_terminal_and_lines_elsewhere(caplog):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert resolve_mode('auto', Tty()) == 'bar' and resolve_mode('auto', io.StringIO()) == 'lines'
    assert resolve_mode('none', Tty()) == 'none'
    with pytest.raises(ValueError, match='choose one of'):
        resolve_mode('fancy')
    progress = Progress('lines', total=1000, desc='epoch 1/2', interval_s=0.0)
    with caplog.at_level('INFO', logger='adni_timm.train.loop'):
        progress.update(250)
        progress.set_postfix(loss='0.5000')
        progress.update(250)
    assert [r.getMessage().split(' img/s')[0].rsplit(' ', 1)[0] for r in caplog.records] == [
        '  epoch 1/2  25% 250/1,000 img',
        '  epoch 1/2  50% 500/1,000 img',
    ]
    assert caplog.records[-1].getMessage().endswith('loss 0.5000')
    quiet = Progress('bar', total=10, desc='x', enabled=False)  # other processes: nothing at all
    assert quiet.mode == 'none' and quiet.bar is None


# ----------------------------------------------------- evaluation, maps and the decode say so too


@pytest.mark.slow
def test_an_evaluation_in_a_log_says_what_it_predicted_and_mapped(
    tiny_run, tiny_data, tmp_path, capsys, caplog
):
    import logging

    from helpers import cli_in_process

    run, _ = tiny_run
    n_test = sum(1 for f in (tiny_data / 'test').rglob('*') if f.is_file())
    args = ['--model', run, '--data-dir', tiny_data, '--n-boot', '0', '--cam', '1']
    with caplog.at_level(logging.INFO, logger='adni_timm'):
        code, _, err = cli_in_process(
            capsys, 'evaluate', *args, '--cam-method', 'gradcam', '--output-dir', tmp_path / 'ev'
        )  # --progress auto: not a terminal here, so plain lines
    assert code == 0, err
    said = caplog.messages
    assert any(
        re.fullmatch(rf'  predict: {n_test} slices in \S+ \(\d+ slices/s\)', m) for m in said
    )
    # every test slice for the population maps, and the montages' negative scans again
    mapped = [m for m in said if re.fullmatch(r'  gradcam maps: \d+ slices in \S+ .*', m)]
    assert mapped and int(mapped[0].split()[2]) >= n_test, said
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='adni_timm'):
        code, _, _ = cli_in_process(
            capsys, 'evaluate', *args[:6], '--progress', 'none', '--output-dir', tmp_path / 'q'
        )
    assert code == 0 and not [m for m in caplog.messages if m.startswith('  predict')]


def test_the_cache_decode_reports_its_slices(tiny_data, caplog):
    import logging

    from adni_timm import data

    slices = data.scan_split(tiny_data, 'train')
    with caplog.at_level(logging.INFO, logger='adni_timm'):
        cache = data.preload(slices, progress='lines')
    assert len(cache) == len(slices)
    assert any(
        re.fullmatch(rf'  decoding slices: {len(slices)} slices in \S+ .*', m)
        for m in caplog.messages
    ), caplog.messages

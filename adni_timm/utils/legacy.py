"""Files written before the unit was named: a file-name-prefix group was called a *patient*.

It is a scan (issue 26): ``metrics.json`` has a ``scan`` group, ``split.json`` levels say
``scan``, configs say ``file_is_scan`` and ``scan_auc``. Run folders, exports, CV results and
adni-prepare outputs written before still load: every reader passes what it read through here.
"""

from __future__ import annotations

from typing import Any

__all__ = ['upgrade', 'upgrade_config', 'upgrade_key', 'scan_column']

_OLD, _NEW = 'patient', 'scan'
# keys whose *value* named the unit: a split's level, the config's split level and best metric
_VALUE_KEYS = ('level', 'split_level', 'best_metric')


def upgrade_key(key: str) -> str:
    """``'patient'`` -> ``'scan'``, ``'val_patient_auc'`` -> ``'val_scan_auc'``, else ``key``."""
    return key.replace(_OLD, _NEW) if isinstance(key, str) and _OLD in key else key


def _upgrade_value(key: str, value: Any) -> Any:
    if key in _VALUE_KEYS and isinstance(value, str) and _OLD in value:
        return value.replace(_OLD, _NEW)
    return value


def upgrade(obj: Any) -> Any:
    """A JSON value with the old unit's keys (and level / metric values) renamed; lists of ids and
    every other value are left as they are. A key present under both names keeps the new one."""
    if isinstance(obj, dict):
        out: dict = {}
        for key, value in obj.items():
            new = upgrade_key(key)
            if new != key and new in obj:
                continue  # both spellings: the new one wins
            out[new] = _upgrade_value(new, upgrade(value))
        return out
    if isinstance(obj, list):
        return [upgrade(v) for v in obj]
    return obj


def upgrade_config(values: dict[str, Any]) -> dict[str, Any]:
    """Config keys and values as a TrainConfig takes them now: ``file_is_patient`` ->
    ``file_is_scan``, ``split_level: patient`` -> ``scan``, ``patient_auc`` -> ``scan_auc``."""
    return {upgrade_key(k): _upgrade_value(upgrade_key(k), v) for k, v in values.items()}


def scan_column(row: dict[str, Any]) -> Any:
    """The scan id of a CSV row written now (``scan``) or before (``patient``)."""
    return row['scan'] if 'scan' in row else row[_OLD]

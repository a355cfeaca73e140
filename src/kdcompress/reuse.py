"""The one rule for reusing a step's output: only under the settings that made it.

A step (an experiment's student, export or benchmark; any command that skips work whose output exists) records the
settings that made it in its output folder (`record_settings`). Before reusing a folder, `place_step` compares the
settings of this run with that record:

- the same settings: reuse the folder;
- no folder yet: run the step into it;
- other settings (or a folder that recorded none): run the step again into `<folder>-<hash of the settings>`, which
  is itself reused on the next run with these settings; the old folder stays, still true to its own settings.

Where a second folder makes no sense, `refuse_changed` raises one line naming the changed settings and the fix.
Settings compare as JSON (so tuples equal lists, paths equal their strings).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kdcompress.errors import KDCompressError
from kdcompress.io import write_json_atomic

#: The record's file name inside a step's output folder.
SETTINGS_RECORD = "step-settings.json"
_SHOWN_CHANGES = 6


def _canonical(settings: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def settings_hash(settings: dict[str, Any]) -> str:
    """8 hex digits that name a set of settings (stable across runs and machines)."""
    text = json.dumps(_canonical(settings), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def record_settings(folder: str | Path, settings: dict[str, Any]) -> None:
    """Write the settings that made `folder` into it (atomically)."""
    write_json_atomic(Path(folder) / SETTINGS_RECORD, {"settings": _canonical(settings),
                                                       "hash": settings_hash(settings)})


def recorded_settings(folder: str | Path) -> dict[str, Any] | None:
    """The settings recorded in `folder`, or None when it holds no readable record."""
    path = Path(folder) / SETTINGS_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    settings = record.get("settings") if isinstance(record, dict) else None
    return settings if isinstance(settings, dict) else None


def changed_settings(folder: str | Path, settings: dict[str, Any]) -> list[str] | None:
    """Names of the settings that differ from `folder`'s record ([] when equal; None when there is no record)."""
    saved = recorded_settings(folder)
    if saved is None:
        return None
    wanted = _canonical(settings)
    return sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))


@dataclass(frozen=True)
class StepPlace:
    """Where a step's output goes: `folder`, and whether it already holds this step's output (`reuse`).
    `changed` names the settings that differ from those of the folder first asked for (empty when none did)."""

    folder: Path
    reuse: bool
    changed: tuple[str, ...] = ()

    @property
    def moved(self) -> bool:
        return bool(self.changed)


def place_step(target: str | Path, settings: dict[str, Any],
               legacy: Callable[[Path], dict[str, Any] | None] | None = None, *, record: bool = True) -> StepPlace:
    """Where to find or make the output of a step with `settings` whose usual folder is `target` (see the module).

    `legacy(folder)`, where given, reads the settings of a folder made before records were written from the
    folder's own files; when they equal `settings`, the folder is reused and (unless `record` is False: a status
    query writes nothing) its record written.
    """
    target = Path(target)
    if not target.exists():
        return StepPlace(target, reuse=False)
    changed = changed_settings(target, settings)
    if changed is None and legacy is not None:
        try:
            found = legacy(target)
        except Exception:  # noqa: BLE001 - an unreadable old record is no record: the step runs again elsewhere
            found = None
        if found is not None and _canonical(found) == _canonical(settings):
            if record:
                record_settings(target, settings)
            return StepPlace(target, reuse=True)
    if changed == []:
        return StepPlace(target, reuse=True)
    shown = tuple(changed) if changed is not None else ("(no settings recorded)",)
    hashed = target.with_name(f"{target.name}-{settings_hash(settings)}")
    return StepPlace(hashed, reuse=hashed.exists() and changed_settings(hashed, settings) == [], changed=shown)


def describe_changes(changed: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(changed[:_SHOWN_CHANGES])
    return shown + (f" and {len(changed) - _SHOWN_CHANGES} more" if len(changed) > _SHOWN_CHANGES else "")


def refuse_changed(folder: str | Path, settings: dict[str, Any], *, what: str, fix: str) -> None:
    """Raise one line when `folder` exists and was made with other (or unrecorded) settings than `settings`."""
    folder = Path(folder)
    if not folder.exists():
        return
    changed = changed_settings(folder, settings)
    if changed is None:
        raise KDCompressError(f"{what} {folder} records no settings, so it cannot be reused safely; {fix}")
    if changed:
        raise KDCompressError(f"{what} {folder} was made with other settings ({describe_changes(changed)}); {fix}")

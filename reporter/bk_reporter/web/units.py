"""Quantities for people: sizes in binary units."""

from __future__ import annotations

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
STEP = 1024


def size(value: float | None) -> str:
    """A byte count as 512 B, 1.5 KiB, 23.4 MiB, 1.21 GiB (about three significant digits)."""
    if value is None:
        return "—"
    amount = float(value)
    unit = UNITS[0]
    for unit in UNITS:
        if abs(amount) < STEP or unit == UNITS[-1]:
            break
        amount /= STEP
    if unit == "B":
        return f"{int(amount)} B"
    digits = 2 if abs(amount) < 10 else 1 if abs(amount) < 100 else 0
    return f"{amount:.{digits}f} {unit}"

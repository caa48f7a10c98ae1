# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One line of a libpq password file, with the escapes libpq reads."""

from __future__ import annotations

from typing import Any, Callable, Dict


def pgpass_field(value: str) -> str:
    """VALUE with each backslash and colon escaped by a backslash, as libpq's pgpass parser expects."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_line(password: str, user: str, host: str = "*", port: str = "*", database: str = "*") -> str:
    """hostname:port:database:username:password and a newline; the wildcard '*' stays unescaped."""
    fields = [field if field == "*" else pgpass_field(field) for field in (host, port, database, user)]
    return ":".join([*fields, pgpass_field(password)]) + "\n"


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"pgpass_line": pgpass_line}

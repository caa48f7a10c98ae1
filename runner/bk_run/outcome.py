# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a run produced, and how that becomes a manifest's status, error section and exit code."""

from __future__ import annotations

import datetime
from typing import Any, Dict, Iterable, List, NamedTuple, Optional

from bk_evidence.manifest import STDERR_TAIL_MAX
from bk_evidence.restic_output import scrub, tail

MESSAGE_MAX = 1024
SEVERITY = {"success": 0, "warning": 1, "failure": 2}
EXIT_CODES = {"success": 0, "warning": 3, "failure": 1}


class Problem(NamedTuple):
    """Something that went wrong: a sentence, the exit code involved, the program's output, and
    the cause for machines (a word of the manifest's ``error.cause``) when one is known."""

    message: str
    exit_code: Optional[int] = None
    output: str = ""
    cause: Optional[str] = None


class Outcome:
    """One unit of work (one repository of a job, one hub repository) before it is a manifest."""

    def __init__(self, started_at: datetime.datetime) -> None:
        self.started_at = started_at
        self.finished_at = started_at
        self.status = "success"
        self.problems: List[Problem] = []
        self.sections: Dict[str, Any] = {}

    def fail(self, problem: Problem, status: str = "failure") -> None:
        """Record a problem and lower the status to ``status`` (never raising it)."""
        self.problems.append(problem)
        self.status = worst([self.status, status])

    def finish(self, finished_at: datetime.datetime) -> None:
        self.finished_at = finished_at

    def error_section(self, secrets: Iterable[str]) -> Optional[Dict[str, Any]]:
        """The manifest's ``error`` section (secrets scrubbed), or None when nothing went wrong."""
        if not self.problems:
            return None
        secrets = list(secrets)
        output = "\n".join(problem.output.rstrip("\n") for problem in self.problems if problem.output)
        message = "; ".join(problem.message for problem in self.problems)
        codes = [problem.exit_code for problem in self.problems if problem.exit_code is not None]
        causes = [problem.cause for problem in self.problems if problem.cause]
        section = {
            "exit_code": codes[0] if codes else None,
            "message": tail(scrub(message, secrets), MESSAGE_MAX),
            "stderr_tail": tail(scrub(output, secrets), STDERR_TAIL_MAX),
        }
        if causes:
            section["cause"] = causes[0]
        return section


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=SEVERITY.__getitem__, default="success")


def exit_code(statuses: Iterable[str]) -> int:
    """The runner's exit status for these outcomes: 0 success, 3 warning, 1 failure."""
    return EXIT_CODES[worst(statuses)]

# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The attributes every bk module shares: full check mode, POSIX hosts, no diff to show.

Each attribute is described here in full, so that a module extends this one fragment and adds
only its own check-mode details."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Whether the module runs in check mode, saying what it would change and changing nothing.
    support: full
  diff_mode:
    description: Whether the module shows, in diff mode, what it changes or would change.
    support: none
  platform:
    description: The systems the module runs on.
    support: full
    platforms: posix
"""

# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``python3 -m bk_run``: bk-run without the installed wrapper."""

from .cli import main

raise SystemExit(main())

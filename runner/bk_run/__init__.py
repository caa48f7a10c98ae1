# Copyright: bk developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""bk-run, the host runner: restic jobs, hub receipts, maintenance and offsite copies, each with a
signed manifest (docs/runner.md). Standard library only; the evidence code it shares with the
module, the callback and the reporter is the ``bk_evidence`` package (plugins/module_utils)."""

"""bk's reporter: verifies, stores and shows signed backup manifests."""

from bk_evidence.version import BK_VERSION as __version__

__all__ = ["__version__"]

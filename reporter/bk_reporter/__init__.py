"""bk's reporter: verifies, stores and shows signed backup manifests."""

__version__ = "0.1.0"

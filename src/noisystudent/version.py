"""The installed package's version, for `noisystudent --version` and a run's provenance."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("noisystudent")
except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

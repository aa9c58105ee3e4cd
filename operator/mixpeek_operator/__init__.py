"""mixpeek-operator: manage Mixpeek bucket sync configurations as Kubernetes objects."""

from importlib.metadata import PackageNotFoundError, version

try:
    # The one version source is pyproject.toml; the chart's version and appVersion follow it
    # (tests/packaging/test_release.py), and a release tag must name it (.github/workflows/release.yml).
    __version__ = version("mixpeek-operator")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

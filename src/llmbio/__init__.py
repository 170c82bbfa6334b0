from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("llmbio")
except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src), e.g. on a GPU box
    __version__ = "0+source"

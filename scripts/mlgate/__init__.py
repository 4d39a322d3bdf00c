"""mlgate: the gates of an ML model's delivery path, as a library and a CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mlgate")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

# Every self-reference in the workflows and actions (`mlgate/mlgate/...@REF`) uses this ref:
# the moving major tag of the release line. tests/static checks that they all agree.
RELEASE_REF = "v1"
REPOSITORY = "mlgate/mlgate"

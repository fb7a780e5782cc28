"""The package version (one place: the package root, ONNX metadata and reports read it)."""
__version__ = "0.1.0"

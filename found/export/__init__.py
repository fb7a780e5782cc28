"""Deployment surfaces: ONNX export (:mod:`found.export.onnx`) and the ONNX Runtime model
(:mod:`found.export.runtime`). Nothing here is imported by ``import found``; ``onnx`` and
``onnxruntime`` (the ``found[onnx]`` extra) are imported only inside the functions that need them.
"""

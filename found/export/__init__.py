"""Deployment surfaces: ONNX export (:mod:`found.export.onnx`) and whether an exported file may be
used (:mod:`found.export.runtime`: the int8 acceptance rule). The ONNX Runtime model itself is
``Found(OnnxCore(file))`` (:mod:`found.runtime.onnx`). Nothing here is imported by ``import found``;
``onnx`` and ``onnxruntime`` (the ``found[onnx]`` extra) are imported only inside the functions that need them.
"""

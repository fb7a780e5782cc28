"""How a model runs: the cores :class:`found.Found` holds, which turn a normalised batch into patch
logits, and the device/precision choices shared with training.

* :mod:`.core` — the :class:`~found.runtime.core.Core` protocol and the batching rules cores share;
* :mod:`.torch_core` — :class:`TorchCore`: the PyTorch backbone and head (precision, compile, int8, oneDNN);
* :mod:`.onnx` — :class:`OnnxCore`: an exported file on ONNX Runtime (:mod:`.onnx_file`: the file format);
* :mod:`.eager` — :class:`EagerCore`: DINO's eager float32 code path, the benchmark baseline;
* :mod:`.smoothing` — :class:`SmoothedCore`: another core's logits averaged over video frames;
* :mod:`.device` — default device (CUDA, MPS, CPU), precision, autocast, the int8 rule.

Nothing is imported here, so that ``import found.runtime.device`` stays light.
"""

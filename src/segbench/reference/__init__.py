"""Stand-alone reference code that ships next to an exported model, outside segbench.

:mod:`segbench.reference.segment_onnx` is a single-file script that reproduces ``segbench predict``
with an exported ``model.onnx``, using only onnxruntime, numpy and Pillow. It is copied into a model
folder (``best/``) and runs there on its own; nothing in this package imports segbench.
"""

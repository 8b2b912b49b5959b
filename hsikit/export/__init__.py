"""Model export: ONNX files that carry hsikit's metadata (:mod:`hsikit.export.onnx`), the preprocessing folded
into them (:mod:`hsikit.export.fold`), and the STAC Machine Learning Model items that describe them
(:mod:`hsikit.export.mlm`). Only the export itself imports torch; reading an exported model does not.

This module stays light (the CLI reads :data:`OPSET` from it for its help): the submodules hold the code."""

#: ONNX opset of exported files: LayerNormalization is one operator from 17 on (transformer models run it fused),
#: and onnxruntime runs opset 17 on CPU from version 1.11 on
OPSET = 17

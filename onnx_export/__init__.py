"""ONNX export of the prefix-wrapped encoders and ONNX Runtime encoders with the torch interface."""

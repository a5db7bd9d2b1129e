"""Vision: pixels in, faces out. Image loading, detection, 5-point alignment, quality and
128-D embeddings (dlib's ResNet, or the same network run by ONNX Runtime)."""

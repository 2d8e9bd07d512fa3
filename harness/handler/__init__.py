"""The reference edge inference handler: an instrumented ONNX Runtime image classifier over HTTP."""

"""The reference model's signature: its tensor names and input size, shared by the builder and the quantizer."""

INPUT_NAME = "input"
# The pixels as float (the graph's Cast): the one tensor whose int8 quantization is pinned to the
# identity (scale 1, zero point 0), so that the int8 model can drop Cast and Quantize altogether.
PIXELS_NAME = "input.float"
OUTPUT_NAME = "logits"
IMAGE_SIZE = 224

"""The reference model (MobileNetV2 built from code, fp32 and int8) and the model store (fetch, verify, cache).

Submodules import their heavy dependencies lazily; import `harness.model.store` for the store API.
"""

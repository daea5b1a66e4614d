"""CXR Studio engine: latent diffusion on ONNX Runtime, imaging, DICOM and PACS.

Imports numpy, onnxruntime, tokenizers, pydicom, pynetdicom and OpenCV only: never Qt, torch or
``training`` (checked by tests/test_layers.py).
"""

__version__ = "0.1.0"

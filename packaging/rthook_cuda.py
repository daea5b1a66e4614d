"""PyInstaller run-time hook: load CUDA 13 / cuDNN 9 from the bundle's ``cuda/`` folder, when there is one.

The bundle does not ship NVIDIA's libraries (licence and size: about 1.5 GB). A user who has no CUDA
13 / cuDNN 9 on the search path can drop them into ``cxr-studio/cuda/`` (see packaging/WINDOWS.md),
or point ``CXR_STUDIO_CUDA_DIR`` at a folder that holds them. Without either nothing happens here and
onnxruntime finds CUDA on the default search path, or runs on the CPU (the app reports which).
"""

import os
import sys


def _preload_cuda() -> None:
    folder = os.environ.get("CXR_STUDIO_CUDA_DIR") or os.path.join(os.path.dirname(sys.executable), "cuda")
    if not os.path.isdir(folder):
        return
    try:
        import onnxruntime

        onnxruntime.preload_dlls(directory=os.path.abspath(folder))
    except Exception as exc:  # the app still runs, on the CPU, and says so
        print(f"cxr-studio: CUDA libraries in {folder} did not load: {exc}", file=sys.stderr)


_preload_cuda()

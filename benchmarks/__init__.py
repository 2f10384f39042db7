"""medprobe's benchmarks: scripts run from the repository root, not part of the installed package.

``python benchmarks/cpu.py`` (``make bench``) is the CPU table; ``python -m benchmarks.gpu
--full-size`` the GPU figures (modules ``gpu``, ``gpu_models``, ``gpu_measure``, ``gpu_report``;
the full-size architectures as data in ``architectures/*.yaml``); ``app_latency.py``,
``scoring.py`` and ``merge_compare.py`` single rows. They drive medprobe's public functions only.
"""

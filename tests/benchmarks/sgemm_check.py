"""How exact is this machine's float32 matrix product (numpy's BLAS), which librosa's mel
projection uses? Prints the largest relative error against float64 and the BLAS in use.

Run ``python tests/benchmarks/sgemm_check.py``: part of ``gpu_session.sh``, because the CPU
reference of the GPU log-mel comparison rests on it.
"""
import numpy as np

rng = np.random.default_rng(0)
S = rng.random((1025, 1300), dtype=np.float32) ** 4      # a power spectrogram's spread of values
M = rng.random((128, 1025), dtype=np.float32)
single = np.einsum("ft,mf->mt", S, M, optimize=True)       # as librosa.feature.melspectrogram
double = M.astype(np.float64) @ S.astype(np.float64)
print(f"float32 mel projection: max relative error {float(np.max(np.abs(single - double) / double)):.2e}")
try:
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        print({k: pool.get(k) for k in ("internal_api", "version", "architecture", "num_threads")})
except ImportError:
    pass

"""Classic deep-CNN case studies in JAX/Flax, pinned to the papers."""

__version__ = "0.2.0"

from cnn_cases.kernels.host_memory import keep_freed_memory

keep_freed_memory()  # before XLA's threads first allocate; see its docstring

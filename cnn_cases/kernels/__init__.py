"""CPU kernels: oneDNN convolutions and BatchNorm through the XLA FFI, host memory settings."""

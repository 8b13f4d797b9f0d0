"""The GPU conformance kit: the trt target checked against the cpu target and NVIDIA's own converter."""

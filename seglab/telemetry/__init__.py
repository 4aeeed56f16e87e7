"""GPU telemetry: samples, the NVML and nvidia-smi sources, attribution, history, export."""

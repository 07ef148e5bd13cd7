"""The compiler driver: options, the pass pipeline, data, the reference, QEMU runs, checks and reports."""

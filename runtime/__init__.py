"""On-target C runtime, QEMU instruction-count plugin and the host side that builds and runs."""

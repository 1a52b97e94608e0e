"""Reference backends in plain torch: run on any device, including the CPU."""

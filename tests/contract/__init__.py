"""One set of lifecycle cases every Runtime must pass (process, Docker, Slurm, the fake)."""

"""The `tykpulse` command line."""

import os

# numpy's OpenBLAS starts a thread per core when numpy is imported, and starting them costs
# ~0.08 s of CPU at every command start (bench.fixed_costs: 0.98 -> 0.90 s until a worker is
# subscribed); no command does linear algebra. Set before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

"""Helios: a workflow-orchestrated model pipeline on Prefect, ONNX Runtime and MLflow."""
import os

__version__ = "0.1.0"

# Arrow's default allocator (mimalloc) keeps the memory Arrow frees for its own reuse, so every scan, merge and
# refine pass left the process at its Arrow high-water mark (200,000 MNIST files: the predictions read and the true
# labels held 40-60 MB more than they use). With the C library's allocator, freed Arrow memory goes back to glibc
# and ``helios.heap.trim_heap`` hands it to the OS after each stage. Read by pyarrow when it first allocates, so
# it is set here, before Helios imports pyarrow; a user's own setting wins.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

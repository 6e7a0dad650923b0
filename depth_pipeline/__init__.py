"""depth_pipeline package: the Dagster code location (``depth_pipeline.definitions``) and its CLI.

Importing it limits the process's glibc heaps first, before polars and pyarrow start threads that would each
take one (``depth_core.heap``): every step process loads this package before anything else of ours.
"""

from depth_core.heap import limit_heap_arenas

limit_heap_arenas()

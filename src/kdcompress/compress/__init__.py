"""`compress`: from a teacher to the fastest model that keeps every language within a stated budget."""

from kdcompress.compress.config import CompressConfig
from kdcompress.compress.run import CompressResult, run_compress

__all__ = ["CompressConfig", "CompressResult", "run_compress"]

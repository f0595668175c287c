"""fmadask: music genre recognition on FMA at scale."""
__version__ = "0.1.0"

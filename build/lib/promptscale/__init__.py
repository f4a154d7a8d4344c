"""promptscale: prompt-based and parameter-efficient adaptation compared across model scale."""

__version__ = "0.1.0"

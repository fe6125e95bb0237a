"""The tool version: recorded in every exported file and cache key."""

__version__ = "0.3.0"

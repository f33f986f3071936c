"""Byte-level storage backends behind one interface, opened from a URL.

``open_storage("s3://bucket/prefix")`` finds the backend for the scheme in a lazy registry.
"""

from .base import KeyInfo, Storage, check_key
from .registry import open_storage, register, registered_schemes
from .urls import bucket_url, redact_url, scheme_of

__all__ = [
    "KeyInfo",
    "Storage",
    "bucket_url",
    "check_key",
    "open_storage",
    "redact_url",
    "register",
    "registered_schemes",
    "scheme_of",
]

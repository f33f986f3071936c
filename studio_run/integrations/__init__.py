"""One-line additions for the frameworks users train with (Lightning, Hugging Face, TensorBoard).

Each module imports its framework lazily and only hands files to ``fs_tracker``'s calls.
"""

__all__: list[str] = []

"""``studio ui``: a local web page over a store, server-rendered (Starlette + Jinja2 + htmx).

It reads through the same store and record modules as the CLI; it only parses requests and wires
them to those modules. Its dependencies are the ``[ui]`` extra, imported lazily.
"""

__all__: list[str] = []

"""studio: run a training script and keep every file it reads and writes, versioned.

The package is layered (see README "Architecture"): ``cli`` parses and wires; ``runner``,
``capturer`` and ``cache`` do the work; ``objects`` holds content-addressed objects and
manifests; ``storage`` moves bytes; ``metadata`` keeps experiment records. Importing this
package imports nothing else, so ``import fs_tracker`` stays instant.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

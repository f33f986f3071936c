"""studio: run a training script and keep every file it reads and writes, versioned.

The package is layered, each layer a folder importing only the ones below it (README
"Architecture"; ``.importlinter`` checks it): ``cli`` parses and wires; ``runner`` runs a script
and ``uploads`` hands single files to a background uploader; ``store`` opens a store, keeps run
records and publishes to remote stores; ``snapshots`` turns folders into snapshots and back;
``objects`` holds content-addressed objects and manifests; ``storage`` moves bytes. Below them
sit the ground modules (``errors``, ``config``, ``refs``, ``console``, ``handoff``,
``background``). Importing this package imports nothing else, so ``import fs_tracker`` stays
instant.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"

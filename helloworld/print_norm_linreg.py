"""Hello world, part two: read the weights another experiment captured.

    studio run --reuse=linreg/weights:w helloworld/print_norm_linreg.py
"""

import math
import os
import pickle

from studio import fs_tracker


def main() -> None:
    folder = fs_tracker.get_artifact("w")
    with open(os.path.join(folder, "weights.pkl"), "rb") as f:
        weights = pickle.load(f)
    norm = math.sqrt(weights["w"] ** 2 + weights["b"] ** 2)
    print(f"weights from step {weights['step']}: w={weights['w']:.6f} b={weights['b']:.6f} norm={norm:.6f}")


if __name__ == "__main__":
    main()

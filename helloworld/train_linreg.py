"""Hello world: fit a linear regression and write its weights where studio captures them.

    studio run --capture-once=helloworld/data:data --capture=~/weights:weights -e linreg \
        helloworld/train_linreg.py --steps 10
"""

import argparse
import os
import pickle
import random

from studio import fs_tracker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1)
    args = parser.parse_args()

    rng = random.Random(0)
    xs = [rng.uniform(-1, 1) for _ in range(200)]
    ys = [3.0 * x + 0.5 + rng.gauss(0, 0.05) for x in xs]
    w, b = 0.0, 0.0
    weights_dir = fs_tracker.get_artifact("weights")
    for step in range(1, args.steps + 1):
        gw = sum(2 * (w * x + b - y) * x for x, y in zip(xs, ys)) / len(xs)
        gb = sum(2 * (w * x + b - y) for x, y in zip(xs, ys)) / len(xs)
        w, b = w - args.lr * gw, b - args.lr * gb
        loss = sum((w * x + b - y) ** 2 for x, y in zip(xs, ys)) / len(xs)
        print(f"step {step}: loss {loss:.4f} w {w:.3f} b {b:.3f}")
        with open(os.path.join(weights_dir, "weights.pkl.tmp"), "wb") as f:
            pickle.dump({"w": w, "b": b, "step": step}, f)
        os.replace(os.path.join(weights_dir, "weights.pkl.tmp"), os.path.join(weights_dir, "weights.pkl"))
    print(f"saved weights to {weights_dir}")


if __name__ == "__main__":
    main()

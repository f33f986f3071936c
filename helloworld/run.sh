#!/usr/bin/env bash
# The hello-world, end to end on the local default store (~/.studioml/store):
# train a linear regression capturing its weights, delete the folder, then reuse the weights
# from a second script through the blob cache.
set -euo pipefail
cd "$(dirname "$0")/.."
data=$(mktemp -d)
weights=$(mktemp -d)
printf 'x,y\n0,0.5\n1,3.5\n' > "$data/points.csv"

studio run --capture-once="$data:data" --capture="$weights:weights" -e linreg helloworld/train_linreg.py --steps 10
rm -rf "$weights" "$data"
studio run --reuse=linreg/weights:w helloworld/print_norm_linreg.py
studio list --limit 5
studio show linreg

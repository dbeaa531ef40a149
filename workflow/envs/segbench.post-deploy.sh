#!/usr/bin/env bash
# Snakemake runs this once inside the freshly created conda env of workflow/envs/segbench.yaml.
set -euo pipefail
root="${SEGBENCH_ROOT:?set SEGBENCH_ROOT to the segbench checkout (segbench run sets it)}"
python -m pip install -c "$root/constraints.txt" -e "$root"

"""segbench: train several semantic-segmentation models on your own data and compare them fairly.

Pipeline (Snakemake owns the DAG, see workflow/): convert -> validate -> split -> train -> evaluate
-> aggregate -> report. Every step is a function in this package, reachable as a ``segbench``
subcommand; steps talk through plain files (JSON, CSV, PNG, safetensors).
"""

import os as _os

# albumentations asks PyPI for a newer version at every import: slow, and useless offline.
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"

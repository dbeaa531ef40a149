"""One importer per annotation format, each a module with the same three functions.

* ``labels(cfg) -> list[str] | None``: the label names the source declares or uses, in its order
  (None: the format has no names, the config's ``classes`` are required).
* ``sources(cfg) -> list[Path]``: every raw file the conversion reads (the workflow's inputs).
* ``samples(cfg, table, problems) -> Iterator[Sample]``: one canonical mask per image.

``FORMATS`` maps the names ``segbench convert --format`` and ``dataset.format`` accept to modules.
"""

from __future__ import annotations

from types import ModuleType

from ..errors import DatasetError
from . import coco, cvat, labelme, labelme_xml, masks

__all__ = ["FORMATS", "ALIASES", "get_importer", "normalise_format"]

FORMATS: dict[str, ModuleType] = {
    "masks": masks,
    "palette": masks,
    "labelme": labelme,
    "labelme-xml": labelme_xml,
    "coco": coco,
    "cvat": cvat,
}
ALIASES = {"mask_folder": "masks", "labelme_xml": "labelme-xml", "cvat-1.1": "cvat", "cvat_images": "cvat"}


def normalise_format(fmt: str | None) -> str:
    """The canonical format name (``mask_folder`` -> ``masks``).

    Raises:
        DatasetError: unknown format, listing the valid ones.
    """
    name = ALIASES.get(fmt or "masks", fmt or "masks")
    if name not in FORMATS:
        raise DatasetError([f"dataset.format '{fmt}' is unknown; allowed values: {', '.join(FORMATS)}"])
    return name


def get_importer(fmt: str | None) -> ModuleType:
    """The importer module for a format name (see :func:`normalise_format`)."""
    return FORMATS[normalise_format(fmt)]

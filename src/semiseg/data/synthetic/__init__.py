"""Deterministic synthetic stand-ins for ACDC and LA, written in the real datasets' layouts.

The generators write exactly the on-disk layouts of the real data, so that the pipeline's real
importers (:mod:`semiseg.data.layouts`) are what the synthetic datasets exercise:

* :func:`write_synthetic2d` (:mod:`~semiseg.data.synthetic.cardiac`) — cardiac short-axis cine
  MRI like ACDC, in the common semi-supervised ACDC layout;
* :func:`write_synthetic3d` (:mod:`~semiseg.data.synthetic.atrium`) — late-gadolinium MRI of the
  left atrium like the 2018 LA challenge, in the common LA layout.

Both are pure functions of their arguments: the same seed gives byte-identical files. Each
patient draws from its own generator seeded by ``(seed, patient_number)``, so adding patients does
not change the existing ones. What they share (imaging effects, file writing) is in
:mod:`~semiseg.data.synthetic.render`.
"""

from semiseg.data.layout_names import LA_FILE_NAME, LA_IMAGE_DIR
from semiseg.data.synthetic.atrium import write_synthetic3d
from semiseg.data.synthetic.cardiac import write_synthetic2d

__all__ = ["LA_FILE_NAME", "LA_IMAGE_DIR", "write_synthetic2d", "write_synthetic3d"]

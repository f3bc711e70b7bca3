"""`semiseg audit`: trace one table cell back to the fetched source, and check every link.

A cell of ``results/tables/<name>.md`` (a row, by method name or label, and a labeled ratio)
was made by this chain of jobs, each of which wrote a provenance record beside its outputs
(:mod:`semiseg.provenance`)::

    table ← metrics.csv ← predictions/ ← model.pt + config.json ← split ← store.h5 + dataset.json ← raw/
    (table)  (evaluate)     (infer)         (train, one per seed)   (split)  (preprocess)            (fetch)

A predictions row's cell (another tool's folder, ``semiseg.table_config.add_external_rows``) has
one such chain and no seed: ``table ← metrics.csv ← the folder + split + store`` (evaluate-external),
the folder checked against the sha256 its scoring read (it was made outside the workflow).

:func:`audit` follows the records (each says which paths it read), and for every file on the
way recomputes its sha256 now (:func:`semiseg.provenance.path_digest`) and compares it with
what its producer's record says it wrote and with what each consumer's record says it read:

- ``ok``: the file exists and every record that names it holds today's sha256;
- ``MISMATCH``: it exists but differs from at least one record (edited, replaced, tampered);
- ``missing``: the file is gone, or the record that should have written it is absent or does
  not list it.

The fetched source is also checked file by file against its ``.fetched.json`` manifest, and the
cell's value is recomputed from the runs' ``metrics.csv`` files and compared with the text the
table shows.

Separately, each record is checked for staleness against the checkout and config *as they are
now*: ``stale: code changed`` where the stage's code fingerprint
(:func:`semiseg.fingerprint.code_fingerprint`, a byte-level hash) differs from the recorded one,
``stale: config changed`` where the settings the job ran with differ from what
``config/config.yaml`` and the catalogues resolve to now, with the ``--configfile`` and
``--config`` overrides the audit is given (the build's: they are not recorded, so a build made
with overrides and audited without them reads as stale on config). Stale is not a failure: the
files are still what their records say; Snakemake would rebuild them.

Modules: :mod:`~semiseg.reporting.audit.links` (checking one file against the records, and a
record against the config now), :mod:`~semiseg.reporting.audit.chain` (following the chain of
one cell), :mod:`~semiseg.reporting.audit.text` (the printed report). The command line is
``semiseg audit`` (:mod:`semiseg.cli`).

Exit status of the command line: 0 when every link and the cell are ``ok`` (stale or not),
1 when any link is ``MISMATCH`` or ``missing`` or the recomputed cell differs from the table,
2 for a usage error (unknown table, row or ratio). See ``docs/provenance.md``.
"""

from semiseg.reporting.audit.chain import audit
from semiseg.reporting.audit.links import MISMATCH, MISSING, OK
from semiseg.reporting.audit.text import format_audit, run_cli

__all__ = ["audit", "format_audit", "run_cli", "OK", "MISMATCH", "MISSING"]

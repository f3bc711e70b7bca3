"""Datasets: synthetic generators, importers from public layouts, the case store and splits.

Import from the submodules (``semiseg.data.store``, ``semiseg.data.layouts``, ...): this package
imports none of them, so that the workflow can read the layout registry
(``semiseg.data.registry``) while it builds the DAG without loading h5py or scipy.

The preprocess stage turns a source layout into one store plus its descriptor::

    cases, patients = read_slices_layout(raw_dir, "acdc")          # or read_la_layout
    write_store(store_path, name="acdc", dims=2, labels=labels, cases=cases)
    descriptor = describe(store_path, patients=patients)           # -> dataset.json

and the split stage turns the descriptor into ``splits/{dataset}/{ratio}.json`` with
:func:`make_split`. Every data-validation failure raises :class:`DataError` naming the file.
"""

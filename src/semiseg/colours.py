"""The colours every figure and label file gives the classes and methods (no imports: any stage
may use them without depending on more code)."""

#: Label values 1, 2, ... (Okabe-Ito, colour-blind safe): figures, overlays, ITK-SNAP label files.
LABEL_COLOURS = ("#0072B2", "#D55E00", "#F0E442", "#56B4E9", "#009E73", "#CC79A7", "#E69F00")

#: Lines of the methods (or seeds) in the report's plots.
METHOD_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

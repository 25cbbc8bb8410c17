"""Every buildable model name, without importing torch: the command line lists and checks them
before anything heavy loads. :mod:`models.registry` builds exactly these (it checks at import)."""

MODEL_NAMES: tuple[str, ...] = (
    "metammf_gcn", "metammf_mf", "lightgcn", "vbpr", "bpr", "early_gcn", "late_gcn",
    "hybrid_gcn", "metammf_lightgcn", "early_lightgcn", "late_lightgcn", "hybrid_lightgcn",
    "freedom", "lattice", "mostpop", "content_knn", "crossan", "crossan_id", "indsan", "sasrec",
    "sasrec_text",
)

"""Data-driven class-similarity estimation: statistics, sources, post-processing, I/O.

Typical estimate phase::

  stats = init_stats(C, feature_dim=D)
  for batch in held_out:                         # inside the jitted eval step
    logits, feats = model(batch["image"])
    stats = update_stats(stats, logits, batch["label"], feats, batch["mask"])
  S = build_similarity("confusion", num_classes=C, stats=stats)
  save_record(workdir / "similarity", make_record(S, source="confusion", ...))

Modules: :mod:`.stats` (accumulators), :mod:`.sources` (the name -> builder
registry), :mod:`.postprocess` (shared options), :mod:`.online` (Online Label
Smoothing), :mod:`.hierarchy` (class trees, LCA distances, Making Better
Mistakes' arrays), :mod:`.io` (files and checkpoints), :mod:`.sparse` (a
top-k S in (C, k) arrays for large C). No TensorFlow anywhere.
"""

from simsoft.similarity.controls import derangement, permute_classes
from simsoft.similarity.io import (
    SimilarityRecord,
    export_plain,
    from_pytree,
    from_restored,
    load_record,
    make_record,
    orbax_restore_args,
    orbax_save_args,
    read_similarity_file,
    save_record,
    to_pytree,
)
from simsoft.similarity.hierarchy import (
    Hierarchy,
    declared_classes,
    hxe_arrays,
    mbm_soft_labels,
    read_distances,
    read_hierarchy,
)
from simsoft.similarity.online import online_initial, online_update, postprocess_rows
from simsoft.similarity.postprocess import POSTPROCESS_DEFAULTS, postprocess
from simsoft.similarity.sources import (
    SOURCES,
    build_similarity,
    check_source_options,
    initial_similarity,
    online_update_options,
    source_needs_data,
    source_needs_features,
    source_needs_path,
    source_options,
    source_spec,
)
from simsoft.similarity.sparse import (
    SparseSimilarity,
    is_sparse,
    kept_mass,
    permute_sparse,
    sparse_identity,
    to_dense,
    to_sparse,
    truncate,
    validate_sparse,
)
from simsoft.similarity.stats import SimilarityStats, init_stats, merge_stats, update_stats

__all__ = [
    "Hierarchy",
    "POSTPROCESS_DEFAULTS",
    "SOURCES",
    "SimilarityRecord",
    "SimilarityStats",
    "SparseSimilarity",
    "build_similarity",
    "check_source_options",
    "declared_classes",
    "derangement",
    "export_plain",
    "from_pytree",
    "from_restored",
    "hxe_arrays",
    "initial_similarity",
    "init_stats",
    "is_sparse",
    "kept_mass",
    "load_record",
    "make_record",
    "mbm_soft_labels",
    "merge_stats",
    "online_initial",
    "online_update",
    "online_update_options",
    "orbax_restore_args",
    "orbax_save_args",
    "permute_classes",
    "permute_sparse",
    "postprocess",
    "postprocess_rows",
    "read_distances",
    "read_hierarchy",
    "read_similarity_file",
    "save_record",
    "source_needs_data",
    "source_needs_features",
    "source_needs_path",
    "source_options",
    "source_spec",
    "sparse_identity",
    "to_dense",
    "to_pytree",
    "to_sparse",
    "truncate",
    "update_stats",
    "validate_sparse",
]

"""The curated behaviour-cloning subset: chosen episodes of a LeRobot dataset as a LeRobot v3.0 dataset,
kept as versions behind a one-file pointer (``docs/publishing.md``).

Modules, in data-flow order; import from them directly (this file imports nothing, so that readers of
:mod:`pipeline.curated.pointer` load neither PyAV, LeRobot, torch nor Ray):

* :mod:`~pipeline.curated.pointer`: the pointer ``curated/current.json``: what readers resolve (light).
* :mod:`~pipeline.curated.source`: the read side: the source's metadata, data rows and video packets.
* :mod:`~pipeline.curated.packers`: packed data parquet and mp4 files with rolling file indices.
* :mod:`~pipeline.curated.store`: the versioned store: one version's files, the pointer, cleanup.
* :mod:`~pipeline.curated.builder`: :func:`~pipeline.curated.builder.write_curated_dataset`: append to
  the current version or write a new one.
"""

"""The curated behaviour-cloning subset: chosen episodes of a LeRobot dataset as a LeRobot v3.0 dataset,
kept as versions behind a one-file pointer (``docs/publishing.md``).

Modules, in data-flow order; import from them directly (this file imports nothing, so that readers of
:mod:`pipeline.curated.pointer` load neither PyAV, LeRobot, torch nor Ray):

* :mod:`~pipeline.curated.pointer`: the pointer ``curated/current.json``: what readers resolve (light).
* :mod:`~pipeline.curated.v30`: LeRobot's v3.0 format (paths, ``info.json``, tasks, stats) without
  LeRobot, so that publishing imports neither torch nor transformers.
* :mod:`~pipeline.curated.source`: the read side: the source's metadata, data rows and video packets.
* :mod:`~pipeline.curated.packers`: packed data, mp4 and episodes files with rolling file indices.
* :mod:`~pipeline.curated.store`: the versioned store: one version's files, runs and running stats, the
  pointer, cleanup.
* :mod:`~pipeline.curated.builder`: :func:`~pipeline.curated.builder.write_curated_dataset`: append to
  the current version, compact its newest runs into a new version, or write a new one.
"""

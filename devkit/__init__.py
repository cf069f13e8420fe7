"""Development scaffolding, kept out of the production ``pipeline`` package.

Tests, the demo and the benchmarks build their inputs with it: synthetic LeRobot datasets with
self-identifying frames (:mod:`devkit.synth`), tiny random Qwen-VL checkpoints built offline from the
real transformers classes (:mod:`devkit.tiny_model`), and moto's S3 server on loopback
(:mod:`devkit.local_s3`).
"""

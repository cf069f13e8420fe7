"""A fleet of small LeRobot datasets on moto S3 (or local disk), for benchmarks of fleet-wide runs.

* :func:`fleet_s3` starts a **server process** holding moto's S3 server and a counting proxy in front
  of it (:mod:`devkit.counting_proxy`, areas by :func:`fleet_area`). The process under measurement (the
  pipeline's driver) shares its interpreter, memory and GIL with neither; it reaches S3 through the
  proxy (:attr:`FleetS3.endpoint`, counted) or straight (:attr:`FleetS3.direct`, for setup).
* :func:`write_template` records one small LeRobot v3.0 dataset with LeRobot's own recorder
  (:func:`devkit.synth.write_v30_dataset`); :func:`build_s3_fleet` replicates its bytes under N prefixes
  ``s3://<bucket>/fleet/robot<r>/task<t>`` (dataset id ``robot<r>/task<t>``) by writing the objects
  straight into moto's backend in the server process: one ``put_object`` per object, no HTTP, so 5,000
  datasets take seconds. moto computes each object's ETag, size and LastModified as for a PUT, so S3
  clients see ordinary objects. :func:`build_local_fleet` does the same on local disk.
* :func:`add_episode` records one more episode into one dataset the way a nightly recorder does
  (LeRobot's ``LeRobotDataset.resume``: new data, video and episodes files after the old ones, then
  ``meta/stats.json`` and ``meta/info.json`` rewritten) and uploads only the files that changed.
* :func:`catalog_rows` lists the fleet with the pipeline's catalog, and :func:`commit_labels` commits
  made-up labels for those rows in the real shard layout (as :mod:`devkit.fake_labels` does, but with
  the catalog's fingerprints and the run's config hash, which :mod:`devkit.fake_labels` fixes to
  placeholders), so that a relabel run over the fleet finds every episode labelled and only plans and
  publishes: scoring thousands of datasets is not what a fleet benchmark measures.

    python -m devkit.fleet serve [bucket ...]     # the server process (started by fleet_s3)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from devkit.counting_proxy import CountSnapshot

__all__ = [
    "FleetS3",
    "add_episode",
    "build_local_fleet",
    "build_s3_fleet",
    "catalog_rows",
    "commit_labels",
    "fleet_area",
    "fleet_ids",
    "fleet_s3",
    "serve",
    "write_template",
]

# Datasets per robot folder: fleet/robot<r>/task<t>, r = i // TASKS_PER_ROBOT, t = i % TASKS_PER_ROBOT.
TASKS_PER_ROBOT = 10
FLEET_PREFIX = "fleet"
# Threads of the setup helpers (listing and committing thousands of datasets before a benchmark).
SETUP_THREADS = 16
# Output files of one dataset that are not in a sub-folder, and of the output root (pipeline.layout's
# names).
_TABLES = {"episodes.parquet", "topreward_progress.parquet", "_published.json"}
_ROOT_FILES = {"_index.parquet": "_index", "_topreward_output.json": "marker"}


def fleet_area(bucket: str, key: str) -> str:
    """The area of a request on a fleet and its outputs, for the counting proxy.

    ``<bucket>:_state`` (committed shards and markers), ``:_runs`` (run records), ``:curated`` (curated
    datasets), ``:tables`` (a dataset's published parquet files and ``_published.json``), ``:_index``
    (the fleet index), ``:marker`` (the output marker), ``:meta`` (a source's ``meta/``),
    ``:data+videos``, else ``:other`` (listings of whole prefixes, anything new). For a LIST the key is
    its prefix.
    """
    parts = key.split("/")
    for folder in ("_state", "_runs", "curated"):
        if folder in parts:
            return f"{bucket}:{folder}"
    if parts[-1] in _TABLES:
        return f"{bucket}:tables"
    if parts[-1] in _ROOT_FILES:
        return f"{bucket}:{_ROOT_FILES[parts[-1]]}"
    if "meta" in parts:
        return f"{bucket}:meta"
    if "data" in parts or "videos" in parts:
        return f"{bucket}:data+videos"
    return f"{bucket}:other"


def fleet_ids(n: int) -> list[str]:
    """The ids of a fleet of ``n`` datasets: ``robot<r>/task<t>``, ten tasks per robot."""
    return [f"robot{i // TASKS_PER_ROBOT}/task{i % TASKS_PER_ROBOT}" for i in range(n)]


# --------------------------------------------------------------------------------------------------
# The server process: moto S3 + counting proxy, driven over stdin/stdout (one JSON object a line).


def index_listings() -> None:
    """Makes moto's prefix listings cost what S3's do: the matching keys, not the whole bucket.

    moto (5.x) answers every ListObjects(V2) with a prefix by copying and scanning every key of the
    bucket, and re-scans them for each page: a listing of one dataset's folder in a bucket of 30,000
    objects takes ~80 ms against ~9 ms at 6,000 (measured here). A benchmark of per-dataset listings then
    measures moto's scan, which grows with the fleet, not the pipeline; and each 1,000-key page of a
    listing of the whole fleet re-scans and sorts every match (1 s a page at 30,000 keys). This keeps a
    sorted index of the key names next to each bucket's key store (updated on every put and delete) and
    hands moto's own listing code only the keys one page needs (in the prefix's range, after the
    continuation token, up to the page size; one key per folder), so results, order, folders, page
    boundaries and tokens are moto's. Installed in the server process only (:func:`serve`), for its
    whole life; never in a process that runs tests.
    """
    import bisect
    import inspect

    from moto.s3 import models, utils

    store = utils._VersionedKeyStore
    if getattr(store, "_fleet_indexed", False):
        return

    def names(keys: Any) -> list[str]:
        index = keys.__dict__.get("_fleet_names")
        if index is None:
            index = keys.__dict__["_fleet_names"] = sorted(dict.keys(keys))
        return index

    def adding(method: Any) -> Any:
        def wrapper(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            new = not dict.__contains__(self, key)
            result = method(self, key, *args, **kwargs)
            index = self.__dict__.get("_fleet_names")
            if new and index is not None and dict.__contains__(self, key):
                bisect.insort(index, key)
            return result

        return wrapper

    def removing(method: Any) -> Any:
        def wrapper(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
            result = method(self, key, *args, **kwargs)
            index = self.__dict__.get("_fleet_names")
            if index is not None and not dict.__contains__(self, key):
                at = bisect.bisect_left(index, key)
                if at < len(index) and index[at] == key:
                    del index[at]
            return result

        return wrapper

    def forgetting(method: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            self.__dict__["_fleet_names"] = None
            return method(self, *args, **kwargs)

        return wrapper

    store.__setitem__ = adding(store.__setitem__)
    store.setlist = adding(store.setlist)
    store.pop = removing(store.pop)
    store.__delitem__ = removing(dict.__delitem__)
    for name in ("clear", "update", "popitem", "setdefault"):
        setattr(store, name, forgetting(getattr(dict, name)))

    def successor(name: str) -> str:
        """The least string above every string that starts with ``name``."""
        return name[:-1] + chr(ord(name[-1]) + 1)

    class Narrowed:
        """What moto's listing reads of a bucket (``keys.items()``), cut to the keys one page needs: those
        under ``prefix``, after ``after``, up to ``cap`` entries (a folder is one entry), in key order."""

        def __init__(self, keys: Any, prefix: str, after: str = "", delimiter: str = "", cap: Any = None):
            self.keys = self
            self._keys, self._prefix, self._after = keys, prefix, after
            self._delimiter, self._cap = delimiter, cap

        def _entry(self, name: str) -> str:
            rest = name[len(self._prefix) :]
            if self._delimiter and self._delimiter in rest:
                return self._prefix + rest.split(self._delimiter, 1)[0] + self._delimiter
            return name

        def items(self) -> Iterator[tuple[str, Any]]:
            index = list(names(self._keys))  # a copy: puts from other requests may land meanwhile
            prefix, after = self._prefix, self._after
            at = bisect.bisect_left(index, prefix) if prefix else 0
            end = bisect.bisect_left(index, successor(prefix)) if prefix else len(index)
            if after:
                # A folder token skips the whole folder (every key in it folds into the token itself).
                folder = (
                    bool(self._delimiter) and after.endswith(self._delimiter) and self._entry(after) == after
                )
                at = max(
                    at,
                    bisect.bisect_left(index, successor(after))
                    if folder
                    else bisect.bisect_right(index, after),
                )
            entries = 0
            while at < end:
                name = index[at]
                entry = self._entry(name)
                try:
                    value = self._keys[name]
                except (KeyError, IndexError):  # deleted since the copy was taken
                    at += 1
                    continue
                if not isinstance(value, models.FakeDeleteMarker):
                    entries += 1
                    if self._cap is not None and entries > self._cap:
                        return
                yield name, value
                # One key stands for its folder: jump past the rest of it.
                at = bisect.bisect_left(index, successor(entry), at + 1) if entry != name else at + 1

    stock = models.S3Backend.list_objects
    stock_v2 = models.S3Backend.list_objects_v2

    def narrowable(bucket: Any) -> bool:
        return isinstance(bucket.keys, store) and not isinstance(bucket, models.FakeTableStorageBucket)

    def list_objects(self: Any, bucket: Any, prefix: Any, *args: Any, **kwargs: Any) -> Any:
        view = Narrowed(bucket.keys, prefix) if prefix and narrowable(bucket) else bucket
        return stock(self, view, prefix, *args, **kwargs)

    assert inspect.signature(stock_v2).parameters.keys() == {
        "self",
        "bucket",
        "prefix",
        "delimiter",
        "continuation_token",
        "start_after",
        "max_keys",
    }, "moto's list_objects_v2 changed: index_listings needs updating"

    def list_objects_v2(
        self: Any,
        bucket: Any,
        prefix: Any,
        delimiter: Any,
        continuation_token: Any,
        start_after: Any,
        max_keys: Any,
    ) -> Any:
        if narrowable(bucket):
            token = self._pagination_tokens.get(continuation_token) if continuation_token else start_after
            cap = None if max_keys is None else max_keys + 1
            bucket = Narrowed(bucket.keys, prefix or "", token or "", delimiter or "", cap)
        return stock_v2(
            self,
            bucket=bucket,
            prefix=prefix,
            delimiter=delimiter,
            continuation_token=continuation_token,
            start_after=start_after,
            max_keys=max_keys,
        )

    models.S3Backend.list_objects_v2 = list_objects_v2
    models.S3Backend.list_objects = list_objects
    store._fleet_indexed = True


def _backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def _load(backend: Any, folder: str, bucket: str, prefixes: Sequence[str]) -> int:
    """Puts every file under ``folder`` under each prefix of ``bucket``; returns the objects written."""
    root = Path(folder)
    files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    for prefix in prefixes:
        base = prefix.strip("/")
        for name, data in files.items():
            backend.put_object(bucket, f"{base}/{name}" if base else name, data)
    return len(files) * len(prefixes)


def _count(backend: Any, bucket: str, prefix: str) -> dict[str, int]:
    keys = [key for key in backend.get_bucket(bucket).keys.values() if key.name.startswith(prefix)]
    return {"objects": len(keys), "bytes": sum(key.size for key in keys)}


def serve(
    buckets: Sequence[str], control_in: Any = None, control_out: Any = None, indexed: bool = True
) -> None:
    """The server process's body: moto on 127.0.0.1, the counting proxy, then commands until ``stop``.

    ``indexed``: prefix listings through :func:`index_listings` (else moto's scan of the whole bucket).

    Writes ``{"moto": url, "proxy": url}`` first, then answers each command line with one line:
    ``snapshot`` (the counts), ``reset``, ``focus`` (``fragment``), ``load`` (``folder``, ``bucket``,
    ``prefixes``: objects written), ``count`` (``bucket``, ``prefix``: objects and bytes), ``stop``.
    """
    import logging

    from moto.server import ThreadedMotoServer

    from devkit.counting_proxy import counting_proxy
    from devkit.local_s3 import free_port

    control_in = control_in or sys.stdin
    control_out = control_out or sys.stdout
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    if indexed:
        index_listings()
    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    upstream = f"http://127.0.0.1:{port}"
    try:
        backend = _backend()
        for bucket in buckets:
            backend.create_bucket(bucket, "us-east-1")
        with counting_proxy(upstream, area=fleet_area) as proxy:
            control_out.write(json.dumps({"moto": upstream, "proxy": proxy.endpoint}) + "\n")
            control_out.flush()
            for line in control_in:
                command = json.loads(line)
                op = command.pop("op")
                if op == "stop":
                    break
                if op == "snapshot":
                    answer: Any = proxy.snapshot().to_json()
                elif op == "reset":
                    proxy.reset()
                    answer = True
                elif op == "focus":
                    proxy.focus(command["fragment"])
                    answer = True
                elif op == "load":
                    answer = _load(backend, command["folder"], command["bucket"], command["prefixes"])
                elif op == "count":
                    answer = _count(backend, command["bucket"], command["prefix"])
                else:
                    answer = {"error": f"unknown op {op!r}"}
                control_out.write(json.dumps({"answer": answer}) + "\n")
                control_out.flush()
    finally:
        moto.stop()


class FleetS3:
    """Handle to the server process: endpoints, request counts and bulk loading."""

    def __init__(self, process: subprocess.Popen, endpoint: str, direct: str) -> None:
        self._process = process
        self._lock = threading.Lock()
        self.endpoint = endpoint  # through the counting proxy
        self.direct = direct  # moto itself: uncounted (setup)

    def _call(self, op: str, **args: Any) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            self._process.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self._process.stdin.flush()
            line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"fleet server exited (status {self._process.poll()}) during {op!r}")
        answer = json.loads(line)["answer"]
        if isinstance(answer, dict) and "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def storage_options(self, counted: bool = True) -> dict[str, Any]:
        """fsspec options reaching the store through the proxy (``counted``) or straight."""
        return {"endpoint_url": self.endpoint if counted else self.direct}

    def snapshot(self) -> CountSnapshot:
        """Requests counted through the proxy since the start or the last :meth:`reset`."""
        return CountSnapshot.from_json(self._call("snapshot"))

    def reset(self) -> None:
        """Sets the request counts to zero."""
        self._call("reset")

    def focus(self, fragment: str) -> None:
        """Also count the requests whose key contains ``fragment`` (``""``: off)."""
        self._call("focus", fragment=fragment)

    def load(self, folder: str | Path, bucket: str, prefixes: Sequence[str]) -> int:
        """Writes every file under local ``folder`` below each prefix, straight into moto; returns the
        number of objects written."""
        return self._call("load", folder=str(folder), bucket=bucket, prefixes=list(prefixes))

    def count(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """``{"objects": n, "bytes": b}`` stored under ``prefix`` (read in moto, uncounted)."""
        return self._call("count", bucket=bucket, prefix=prefix)


@contextmanager
def fleet_s3(*buckets: str, indexed: bool = True) -> Iterator[FleetS3]:
    """Starts the server process with the given buckets; yields its handle, then stops it.

    ``indexed``: moto lists a prefix from a sorted index of key names, as S3 does, instead of scanning
    the whole bucket (:func:`index_listings`); ``False`` keeps moto's own scan.
    """
    # The protocol owns the child's stdout; its own prints and logs go to stderr (inherited).
    code = (
        "import sys; from devkit.fleet import serve; out = sys.stdout; sys.stdout = sys.stderr; "
        f"serve(sys.argv[1:], sys.stdin, out, indexed={indexed!r})"
    )
    project = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [project, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-c", code, *buckets],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=project,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline()
        if not ready:
            raise RuntimeError(f"fleet server did not start (status {process.wait()})")
        endpoints = json.loads(ready)
        yield FleetS3(process, endpoints["proxy"], endpoints["moto"])
    finally:
        try:
            if process.poll() is None and process.stdin is not None:
                process.stdin.write(json.dumps({"op": "stop"}) + "\n")
                process.stdin.close()
            process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()


# --------------------------------------------------------------------------------------------------
# Datasets.


def write_template(
    folder: str | Path,
    episodes: int = 3,
    length: int = 10,
    cameras: int = 1,
    fps: int = 10,
) -> Path:
    """Records one small LeRobot v3.0 dataset (``episodes`` episodes of about ``length`` frames, 64x64
    cameras) with LeRobot's recorder; returns its root. Lengths vary by a frame or two per episode."""
    from devkit.synth import DEFAULT_CAMERAS, write_v30_dataset

    names = tuple(DEFAULT_CAMERAS) + tuple(f"observation.images.cam{i}" for i in range(2, cameras))
    lengths = [length + (i % 3) for i in range(episodes)]
    return write_v30_dataset(
        Path(folder), repo_id="fleet/template", lengths=lengths, fps=fps, cameras=names[:cameras]
    )


def build_s3_fleet(server: FleetS3, template: str | Path, bucket: str, n: int) -> list[str]:
    """Replicates ``template`` under ``s3://<bucket>/fleet/<id>`` for :func:`fleet_ids` ``(n)``; returns
    the dataset roots (written straight into moto: seconds for thousands of datasets)."""
    ids = fleet_ids(n)
    server.load(template, bucket, [f"{FLEET_PREFIX}/{dataset_id}" for dataset_id in ids])
    return [f"s3://{bucket}/{FLEET_PREFIX}/{dataset_id}" for dataset_id in ids]


def build_local_fleet(template: str | Path, folder: str | Path, n: int) -> list[str]:
    """Copies ``template`` to ``<folder>/fleet/<id>`` for :func:`fleet_ids` ``(n)``; returns the roots."""
    roots = []
    for dataset_id in fleet_ids(n):
        root = Path(folder) / FLEET_PREFIX / dataset_id
        shutil.copytree(template, root)
        roots.append(str(root))
    return roots


def add_episode(root: str, storage_options: dict[str, Any] | None = None, length: int = 9) -> list[str]:
    """Records one more episode into the dataset at ``root`` (any fsspec URI), as a nightly recorder does.

    The dataset is copied to a temp folder, resumed with ``LeRobotDataset.resume`` and given one episode
    of self-identifying frames (:func:`devkit.synth.make_frame`); LeRobot writes the episode to new data,
    video and episodes files after the existing ones and rewrites ``meta/info.json`` and
    ``meta/stats.json``. Only new or changed files are uploaded, ``meta/info.json`` last. Needs
    ``HF_HUB_OFFLINE=1`` (nothing is fetched from a hub).

    Returns:
        The URIs written.
    """
    import fsspec
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from devkit.synth import make_frame, quiet_encoders, synth_action, synth_state, task_for_episode

    fs, path = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
    path = path.rstrip("/")
    fs.invalidate_cache()  # this process may have listed the dataset before
    with tempfile.TemporaryDirectory(prefix="fleet-episode-") as temp:
        local = Path(temp) / "dataset"
        before: dict[str, bytes] = {}
        for name in fs.find(path):
            relative = name[len(path) + 1 :]
            before[relative] = fs.cat_file(name)
            (local / relative).parent.mkdir(parents=True, exist_ok=True)
            (local / relative).write_bytes(before[relative])
        with quiet_encoders():
            dataset = LeRobotDataset.resume("fleet/resumed", root=local, video_backend="pyav")
            episode = dataset.num_episodes
            cameras = dataset.meta.video_keys
            for frame_index in range(length):
                frame: dict[str, Any] = {
                    camera: make_frame(
                        i, episode, frame_index, tuple(dataset.meta.features[camera]["shape"][:2])
                    )
                    for i, camera in enumerate(cameras)
                }
                frame["observation.state"] = synth_state(episode, frame_index)
                frame["action"] = synth_action(episode, frame_index)
                frame["task"] = task_for_episode(episode)
                dataset.add_frame(frame)
            dataset.save_episode()
            dataset.finalize()
        after = {p.relative_to(local).as_posix(): p for p in local.rglob("*") if p.is_file()}
        changed = sorted(
            (name for name, file in after.items() if before.get(name) != file.read_bytes()),
            key=lambda name: (name == "meta/info.json", name),
        )
        written = []
        for name in changed:
            fs.pipe_file(f"{path}/{name}", after[name].read_bytes())
            written.append(f"{root.rstrip('/')}/{name}")
    return written


# --------------------------------------------------------------------------------------------------
# Labels without a model.


def catalog_rows(
    roots: Sequence[str], storage_options: dict[str, Any], threads: int = SETUP_THREADS
) -> list[dict]:
    """The pipeline catalog's rows (:meth:`pipeline.catalog.EpisodeRecord.to_row`) of every episode of
    the given dataset roots, listed ``threads`` roots at a time.

    Raises:
        RuntimeError: a dataset or episode could not be listed.
    """
    from pipeline.catalog import list_episodes
    from pipeline.config import SourceConfig

    def rows_of(root: str) -> list[dict]:
        return [r.to_row() for r in list_episodes(SourceConfig(uris=[root], storage_options=storage_options))]

    with ThreadPoolExecutor(threads) as pool:
        rows = [row for part in pool.map(rows_of, roots) for row in part]
    failed = [row["error"] for row in rows if row["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} catalog rows failed, e.g. {failed[0]}")
    return rows


def _objects(arrays: list[Any]) -> Any:
    import numpy as np

    column = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        column[i] = array
    return column


def commit_labels(
    rows: Sequence[dict],
    output_uri: str,
    config_hash: str,
    storage_options: dict[str, Any],
    model: str,
    score: float = 0.0,
    threads: int = SETUP_THREADS,
) -> int:
    """Commits one shard per dataset of ``ok`` labels for catalog ``rows``, as a relabel run with
    ``config_hash`` would (the real shard layout and protocol: :func:`pipeline.sinks.commit_shard`).

    Scores are made up (``log P("True")`` = ``score`` for every prefix, progress rising 0..1 over each
    episode); everything else comes from the rows, so the run skips these episodes as labelled and
    publishes them. Returns the number of datasets committed.
    """
    import numpy as np

    from pipeline.sinks import batch_to_table, commit_shard, state_uri

    by_dataset: dict[str, list[dict]] = {}
    for row in rows:
        by_dataset.setdefault(row["dataset_id"], []).append(row)

    def commit(dataset_id: str) -> None:
        part = sorted(by_dataset[dataset_id], key=lambda row: row["episode_index"])
        size = len(part)

        def column(name: str, dtype: Any = None) -> Any:
            return np.array([row[name] for row in part], dtype=dtype)

        lengths = [int(row["length"]) for row in part]
        batch = {
            **{
                name: column(name, object)
                for name in (
                    "dataset_id",
                    "root",
                    "codebase_version",
                    "task",
                    "camera",
                    "video_uri",
                    "fingerprint",
                )
            },
            **{
                name: column(name)
                for name in ("episode_index", "length", "dataset_from_index", "dataset_to_index")
            },
            "fps": column("fps", float),
            "attempt": np.ones(size, dtype=np.int64),
            "status": np.array(["ok"] * size, dtype=object),
            "error": np.array([""] * size, dtype=object),
            "frames_decoded": np.array([min(n, 8) for n in lengths]),
            "prefix_frame_indices": _objects([np.array([n - 1]) for n in lengths]),
            "log_p_true": _objects([np.array([score]) for _ in lengths]),
            "log_p_false": _objects([np.array([-1.0]) for _ in lengths]),
            "progress": _objects([np.array([1.0], np.float32) for _ in lengths]),
            "frame_progress": _objects([np.linspace(0, 1, n, dtype=np.float32) for n in lengths]),
            "success_score": np.full(size, score),  # a column of older shard schemas
            "voc": np.ones(size),
            "model": np.array([model] * size, dtype=object),
        }
        commit_shard(
            batch_to_table(batch, config_hash),
            state_uri(output_uri, config_hash, dataset_id),
            storage_options,
        )

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(commit, sorted(by_dataset)))
    return len(by_dataset)


def main(argv: list[str] | None = None) -> None:
    """``serve [--stock-listing] [bucket ...]``: run the server process on this stdin/stdout."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] != "serve":
        raise SystemExit("usage: python -m devkit.fleet serve [--stock-listing] [bucket ...]")
    stock = "--stock-listing" in args
    out = sys.stdout
    sys.stdout = sys.stderr
    serve([a for a in args[1:] if a != "--stock-listing"], sys.stdin, out, indexed=not stock)


if __name__ == "__main__":
    main()

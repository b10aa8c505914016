"""The gradient index: every document's projected gradient, stored once, so that a new query costs one
backward pass and one matrix product instead of a pass over the corpus (LoGra; ``influence/index/projection.py``).

On disk (``index.out_dir``): ``manifest.json`` (what the index belongs to: the run key, the factors' manifest,
the projection), ``projection.npz``, and one ``shard=NNNNN/part.parquet`` per document shard
(``schemas.index_schema``: doc id and its projected gradient, windows summed), each written atomically and
carrying the run key, so an interrupted build resumes from its finished shards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from kronfluence.module.tracked_module import TrackedModule
from kronfluence.utils.constants import ACTIVATION_EIGENVECTORS_NAME, GRADIENT_EIGENVECTORS_NAME, LAMBDA_MATRIX_NAME

from influence import data
from influence.curvature.prepared import Prepared
from influence.curvature.tap import GradientTap
from influence.data import Encoded
from influence.index.projection import Projection
from influence.shards import RUN_KEY
from pipeline.core.atomic import atomic_path, write_json
from pipeline.core.errors import WherefromError
from pipeline.core.schemas import SHARD_FILES, index_schema

MANIFEST = "manifest.json"
PROJECTION = "projection.npz"


@dataclass(frozen=True)
class IndexManifest:
    run_key: str
    fingerprint: str  # of the model whose gradients these are
    factors_sha256: str  # of the factors the query side preconditions with
    kind: str
    k: int
    seed: int
    dtype: str
    width: int  # numbers per document
    n_docs: int

    @property
    def bytes_per_doc(self) -> int:
        return self.width * np.dtype(self.dtype).itemsize

    def save(self, root: Path) -> None:
        write_json(asdict(self), Path(root) / MANIFEST)

    @classmethod
    def load(cls, root: Path) -> IndexManifest:
        path = Path(root) / MANIFEST
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise WherefromError(f"{root}: no gradient index here; run the index stage first "
                                 "(wherefrom index, or dvc repro index)") from None
        except (json.JSONDecodeError, TypeError) as err:
            raise WherefromError(f"{path}: not a gradient index manifest ({err})") from None


class ProjectedTap:
    """Forward hooks on the tracked modules that give each item's projected gradient, every layer's
    ``P_out G P_inᵀ`` flattened and concatenated in the projection's order: ``[items, width]``."""

    def __init__(self, modules: list[TrackedModule], projection: Projection, device: torch.device) -> None:
        self.order = list(projection.layers)
        self.matrices = {name: (p_out.to(device), p_in.to(device)) for name, (p_out, p_in) in projection.layers.items()}
        self.parts: dict[str, torch.Tensor] = {}
        for m in modules:
            m.register_forward_hook(self._forward)

    def _forward(self, module: TrackedModule, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not output.requires_grad:
            return
        p_out, p_in = self.matrices[module.name]
        activation = module._flatten_input_activation(inputs[0].detach().float()) @ p_in.T  # kronfluence's bias column

        def backward(gradient: torch.Tensor) -> None:
            part = torch.einsum("b...o,b...i->boi", gradient.float() @ p_out.T, activation).flatten(1)
            held = self.parts.get(module.name)
            self.parts[module.name] = part if held is None else held + part

        output.register_hook(backward)

    def take(self) -> torch.Tensor:
        """The last backward pass's ``[items, width]`` (cleared for the next)."""
        parts, self.parts = self.parts, {}
        return torch.cat([parts[name] for name in self.order], dim=1)


def project_documents(ready: Prepared, tap: ProjectedTap, docs: Encoded, batch_size: int, pad_id: int) -> np.ndarray:
    """Every document's projected gradient, its windows summed (``Encoded.per_document``): ``[documents, width]``."""
    rows = []
    for batch in data.loader(docs, batch_size, pad_id):
        batch = {k: v.to(ready.state.device) for k, v in batch.items()}
        ready.model.zero_grad(set_to_none=True)
        ready.task.compute_train_loss(batch, ready.model).backward()
        rows.append(tap.take().double().cpu())
    ready.model.zero_grad(set_to_none=True)
    return docs.per_document(torch.cat(rows).T).T.double().numpy() if rows else np.zeros((docs.n_docs, 0))


def project_queries(modules: list[TrackedModule], projection: Projection,
                    rotated: dict[str, torch.Tensor]) -> torch.Tensor:
    """Queries' gradients in the EK-FAC eigenbasis (``GradientTap``: ``R = Q_gᵀ G Q_a`` per layer), preconditioned
    with the full EK-FAC (``R / (Λ + damping)``, kronfluence's numbers), back in the weights' coordinates and
    projected (scaled first by ``query_scales``): ``[queries, width]``, whose dot product with a document's row
    estimates its exact score."""
    parts = []
    by_name = {m.name: m for m in modules}
    for name, (p_out, p_in) in projection.layers.items():
        storage, r = by_name[name].storage, rotated[name]
        q_a, q_g, inverse = (storage[key].to(r.device, torch.float32) for key in (
            ACTIVATION_EIGENVECTORS_NAME, GRADIENT_EIGENVECTORS_NAME, LAMBDA_MATRIX_NAME))
        u, v = (scale.to(r.device) for scale in projection.query_scales[name])
        left, right = (p_out.to(r.device) @ q_g) * u, (p_in.to(r.device) @ q_a) * v
        parts.append(torch.einsum("ko,qoi,li->qkl", left, r * inverse, right).flatten(1))
    return torch.cat(parts, dim=1)


def project_query_gradients(ready: Prepared, tap: GradientTap, projection: Projection, queries: Encoded,
                            batch_size: int, pad_id: int) -> torch.Tensor:
    """Each query's preconditioned, projected gradient (``project_queries``), batch by batch: ``[queries, width]``."""
    out = []
    for batch in data.loader(queries, batch_size, pad_id):
        batch = {k: v.to(ready.state.device) for k, v in batch.items()}
        ready.model.zero_grad(set_to_none=True)
        ready.task.compute_measurement(batch, ready.model).backward()
        out.append(project_queries(ready.modules, projection, tap.take()).cpu())
    ready.model.zero_grad(set_to_none=True)
    return torch.cat(out) if out else torch.zeros(0, projection.width)


def write_shard(path: Path, run_key: str, doc_ids: tuple[int, ...], rows: np.ndarray, dtype: str) -> None:
    """One shard's ``[docs, width]`` projected gradients, atomically, with the run key."""
    width = rows.shape[1]
    values = pa.array(np.ascontiguousarray(rows, dtype=dtype).ravel())
    table = pa.table({"doc_id": pa.array(doc_ids, pa.int64()),
                      "gradient": pa.FixedSizeListArray.from_arrays(values, width)},
                     schema=index_schema(width, dtype).with_metadata({RUN_KEY: run_key.encode()}))
    with atomic_path(path) as tmp:
        # raw values: a projected gradient neither compresses nor repeats, and plain pages read 3.5x faster
        pq.write_table(table, tmp, use_dictionary=False, compression="none")


@dataclass
class GradientIndex:
    """The whole index in memory: ``doc_ids[i]``'s projected gradient is ``rows[i]`` (in the stored dtype)."""

    manifest: IndexManifest
    projection: Projection
    doc_ids: np.ndarray
    rows: torch.Tensor

    @classmethod
    def load(cls, root: Path, with_rows: bool = True) -> GradientIndex:
        """The index at ``root``, checked complete; ``with_rows=False`` reads no rows (a search on Dask reads them
        in its workers: ``influence/index/search.py``)."""
        root = Path(root)
        manifest = IndexManifest.load(root)
        files = sorted(root.glob(SHARD_FILES))
        metadata = [pq.read_metadata(f) for f in files]
        n = sum(m.num_rows for m in metadata if (m.metadata or {}).get(RUN_KEY) == manifest.run_key.encode())
        if n != manifest.n_docs or sum(m.num_rows for m in metadata) != n:
            raise WherefromError(f"{root}: the index is incomplete ({n} of {manifest.n_docs} documents from this "
                                 "build); rerun the index stage")
        projection = Projection.load(root / PROJECTION)
        if not with_rows:
            return cls(manifest, projection, np.zeros(0, np.int64), torch.zeros(0, manifest.width))
        tables = [pq.read_table(f) for f in files]
        doc_ids = np.concatenate([t.column("doc_id").to_numpy() for t in tables]) if tables else np.zeros(0, np.int64)
        flat = [t.column("gradient").combine_chunks().values.to_numpy() for t in tables]
        rows = np.concatenate(flat).reshape(n, manifest.width) if flat else np.zeros((0, manifest.width))
        return cls(manifest, projection, doc_ids, torch.from_numpy(rows))

    def scores(self, projected_queries: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
        """``[queries, documents]`` estimated influence, documents in ``doc_ids`` order. The rows stay in their
        stored dtype (memory = the index's size on disk) and are widened to float32 a chunk at a time."""
        queries = projected_queries.float().cpu()
        return torch.cat([queries @ self.rows[i:i + chunk].float().T for i in range(0, len(self.rows), chunk)], dim=1) \
            if len(self.rows) else torch.zeros(len(queries), 0)

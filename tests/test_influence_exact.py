"""EK-FAC against exact influence: the damped Gauss-Newton matrix built explicitly on a tiny model.

The model has a few hundred tracked (MLP) parameters, so G = (1/N) Σ_docs Σ_tokens Jᵀ (diag p − p pᵀ) J
can be formed and solved exactly. kronfluence's G is the same matrix in expectation (true Fisher of
the summed loss: cross-token terms vanish under sampled targets), approximated block-diagonally
per layer and Kronecker-factored within a layer.
"""

import pytest
import torch
from scipy.stats import spearmanr
from torch.func import functional_call, jacrev
from transformers import LlamaConfig, LlamaForCausalLM

from influence.curvature import factors
from influence.data import Encoded
from influence.scoring.scorer import Scorer
from influence.task import summed_token_nll
from pipeline.core.model import pad_batch

VOCAB, DOC_LEN, N_DOCS = 24, 10, 300


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                        tie_word_embeddings=True, pad_token_id=0)).eval()


def exact_scores(docs: Encoded, queries: Encoded, tracked: list[str], per_layer: bool = False) -> torch.Tensor:
    """Exact damped influence; ``per_layer`` keeps only G's diagonal blocks and damps each block with
    0.1 x its own mean eigenvalue (the structure EK-FAC approximates), else the full G and one damping."""
    model = tiny_model().double().requires_grad_(False)
    weights = {f"{n}.weight": model.get_submodule(n).weight.detach() for n in tracked}
    n_params = sum(w.numel() for w in weights.values())

    def logits(flat: dict, ids: torch.Tensor) -> torch.Tensor:
        return functional_call(model, flat, (ids[None],)).logits[0]

    def flat_grad(item) -> torch.Tensor:
        params = {k: v.clone().requires_grad_() for k, v in weights.items()}
        batch = pad_batch([item], 0)
        loss = summed_token_nll(lambda **kw: functional_call(model, params, (), kw), batch)
        return torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(params.values()))])

    G = torch.zeros(n_params, n_params, dtype=torch.float64)
    for ids, _ in docs.items:
        ids = torch.tensor(ids)
        jac = jacrev(logits)(weights, ids)  # {name: [T, V, *shape]}
        J = torch.cat([j.reshape(len(ids), VOCAB, -1) for j in jac.values()], dim=-1)[:-1]  # predicting tokens 1..T-1
        p = torch.softmax(logits(weights, ids)[:-1], -1)
        H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        G += torch.einsum("tvp,tvw,twq->pq", J, H, J)
    G /= len(docs)
    q = torch.stack([flat_grad(item) for item in queries.items]).detach()
    d = torch.stack([flat_grad(item) for item in docs.items]).detach()
    blocks = [(0, n_params)]
    if per_layer:
        sizes = [w.numel() for w in weights.values()]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        blocks = list(zip(starts, [a + b for a, b in zip(starts, sizes)]))
    out = torch.zeros(len(q), len(d), dtype=torch.float64)
    for a, b in blocks:
        block = G[a:b, a:b]
        damping = 0.1 * torch.linalg.eigvalsh(block).mean()
        out += q[:, a:b] @ torch.linalg.solve(block + damping * torch.eye(b - a, dtype=torch.float64), d[:, a:b].T)
    return out


@pytest.mark.slow
def test_ekfac_ranks_documents_like_exact_influence(tmp_path):
    """Whole completions and answer segments alike: each query's completion is also split in two segments
    (its first and its last tokens), each measured alone, so the oracle covers segment measurements."""
    gen = torch.Generator().manual_seed(1)
    docs = Encoded([(torch.randint(1, VOCAB, (DOC_LEN,), generator=gen).tolist(), 0) for _ in range(N_DOCS)])
    whole = [(torch.randint(1, VOCAB, (DOC_LEN,), generator=gen).tolist(), DOC_LEN // 2) for _ in range(4)]
    n_completion = DOC_LEN - DOC_LEN // 2
    split = [[i < 2 for i in range(n_completion)], [i >= 2 for i in range(n_completion)]]
    queries = Encoded(whole + [(ids, start, counted) for ids, start in whole for counted in split])
    results = {}
    for strategy in ("ekfac", "identity"):
        manifest = factors.fit(tiny_model(), 0, docs, strategy, "mlp", 32, tmp_path / strategy)
        results[strategy] = Scorer(tiny_model(), 0, tmp_path / strategy, queries, 32).score(docs).double()
    exact = exact_scores(docs, queries, manifest.tracked)
    results["ekfac vs per-layer exact"] = results["ekfac"]
    per_layer = exact_scores(docs, queries, manifest.tracked, per_layer=True)
    rho = {s: [spearmanr(results[s][i], (per_layer if "per-layer" in s else exact)[i]).statistic
               for i in range(len(queries))] for s in results}
    print(
        "per-query Spearman vs exact (4 whole, then 2 segments each):",
        {s: [round(r, 3) for r in v] for s, v in rho.items()},
    )
    # Measured at this seed, whole completions: 0.84-0.88 against the per-layer exact matrix (what EK-FAC
    # approximates: only Kronecker factoring and sampled targets differ), 0.69-0.74 against the full matrix
    # (cross-layer terms dropped too; 1,000 documents instead of 300 change nothing, so it is not sampling
    # noise), and 0.49-0.61 for plain gradient dot products. The bounds keep a margin below the measured values.
    assert min(rho["ekfac vs per-layer exact"][:4]) > 0.8
    assert min(rho["ekfac"][:4]) > 0.6
    assert min(rho["ekfac"][:4]) > max(rho["identity"][:4])  # curvature helps on every query
    # Segments (two or three tokens each): each one's EK-FAC score tracks the exact damped Gauss-Newton
    # influence of its own NLL (measured at this seed: 0.76-0.89 per-layer, 0.60-0.76 full), better than
    # gradient dot products on every segment (0.43-0.62), and both add up to the whole completion.
    assert min(rho["ekfac vs per-layer exact"][4:]) > 0.7
    assert all(e > i for e, i in zip(rho["ekfac"][4:], rho["identity"][4:]))
    for scores in (results["ekfac"], per_layer, exact):
        torch.testing.assert_close(scores[4:].view(4, 2, -1).sum(1), scores[:4], rtol=1e-4,
                                   atol=1e-6 * scores[:4].abs().max().item())

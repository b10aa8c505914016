"""wherefrom's factor passes against kronfluence's: same documents, same seed, the same factors and scores.

Sampled (true-Fisher) targets are kept: both fitters draw them from the seeded generator in the same
order, so even the sampled covariances agree. The models cover the layouts the passes special-case:
a Llama (no biases; gate/up and q/k/v projections read one tensor) and a GPT-NeoX (biases).
Documents have different lengths, so every batch is padded.
"""

import pytest
import torch
from conftest import in_eigenbasis
from safetensors.torch import load_file
from scipy.stats import spearmanr
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM

from influence.curvature import factors
from influence.data import Encoded
from influence.scoring.scorer import Scorer

VOCAB = 40


def tiny(arch: str):
    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=64, pad_token_id=0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    return GPTNeoXForCausalLM(GPTNeoXConfig(**common))


def encoded(n: int, seed: int, start: int = 0) -> Encoded:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(6, 20, (n,), generator=gen).tolist()
    return Encoded([(torch.randint(1, VOCAB, (length,), generator=gen).tolist(), start) for length in lengths])


DOCS, QUERIES = encoded(40, 1), encoded(4, 2, start=3)


def factor_files(root) -> dict[str, dict[str, torch.Tensor]]:
    return {p.stem: load_file(p) for p in (root / factors.ANALYSIS / f"factors_{factors.FACTORS_NAME}").glob(
        "*.safetensors")}


@pytest.mark.parametrize("strategy", ["ekfac", "kfac"])
@pytest.mark.parametrize("arch,tracked", [("llama", "all_linear"), ("gpt_neox", "mlp")])
def test_wherefrom_fitter_equals_kronfluence(tmp_path, arch, tracked, strategy):
    for fitter in factors.FITTERS:
        factors.fit(tiny(arch), 0, DOCS, strategy, tracked, 8, tmp_path / fitter, seed=3, fitter=fitter)
    ours, reference = factor_files(tmp_path / "wherefrom"), factor_files(tmp_path / "kronfluence")
    assert set(ours) == set(reference) and ("lambda_matrix" in reference) == (strategy == "ekfac")
    for factor, by_module in reference.items():
        assert set(ours[factor]) == set(by_module), factor
        for module, expected in by_module.items():
            if factor.endswith("eigenvectors"):  # defined up to sign and rotations inside an eigenspace
                values = reference[factor.replace("eigenvectors", "eigenvalues")][module]
                want = in_eigenbasis(expected, values)
                torch.testing.assert_close(in_eigenbasis(ours[factor][module], values), want, rtol=0,
                                           atol=1e-4 * want.abs().max().item(), msg=f"{factor} of {module}")
                continue
            scale = expected.abs().max().item()
            torch.testing.assert_close(ours[factor][module].double(), expected.double(), rtol=1e-4,
                                       atol=1e-5 * scale, msg=f"{factor} of {module}")

    scores = {fitter: Scorer(tiny(arch), 0, tmp_path / fitter, QUERIES, 8).score(DOCS) for fitter in factors.FITTERS}
    rho = [spearmanr(scores["wherefrom"][q], scores["kronfluence"][q]).statistic for q in range(len(QUERIES))]
    assert min(rho) > 0.999, rho
    torch.testing.assert_close(scores["wherefrom"], scores["kronfluence"], rtol=1e-3,
                               atol=1e-4 * scores["kronfluence"].abs().max().item())


def test_unknown_fitter_is_refused(tmp_path):
    with pytest.raises(factors.WherefromError, match="influence.fitter: unknown fitter 'fast'"):
        factors.fit(tiny("llama"), 0, DOCS, "ekfac", "mlp", 8, tmp_path, fitter="fast")

"""docs/s of plain forward+backward, kronfluence's pairwise scores, wherefrom's scorer (with and without the derived
methods) and its `scores` stage, in float32 and bfloat16, with peak memory; and the EK-FAC fit with kronfluence's
passes and with wherefrom's, each step against one plain pass."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from kronfluence.analyzer import prepare_model
from kronfluence.arguments import ScoreArguments
from kronfluence.utils.dataset import DataLoaderKwargs
from scipy.stats import spearmanr

from influence import data
from influence.curvature import factors
from influence.methods import gradient_methods
from influence.scoring.scorer import Scorer
from influence.task import CausalLMTask, summed_token_nll
from pipeline.bench.common import measured, timed
from pipeline.bench.scale_out import stage
from pipeline.core.model import load_model, pad_batch


def run(params, root: Path, pad: int, docs: data.Encoded, queries: data.Encoded, batch_size: int,
        threads: int) -> None:
    model, _ = load_model(params.model.dir)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    batches = [{k: v.to(device) for k, v in pad_batch(docs.items[i:i + batch_size], pad).items()}
               for i in range(0, len(docs), batch_size)]

    def plain(amp: torch.dtype | None):
        for batch in batches:
            model.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = summed_token_nll(model, batch)
            loss.backward()

    steps = {}
    for fitter in ("kronfluence", "wherefrom"):  # wherefrom's factors are the ones scored below
        steps[fitter] = {}
        manifest = factors.fit(load_model(params.model.dir)[0], pad, docs, "ekfac", "mlp", batch_size,
                               Path(params.influence.factors_dir), fitter=fitter, seconds=steps[fitter])
    task = CausalLMTask(manifest.tracked)
    reference = factors.analyzer(prepare_model(load_model(params.model.dir)[0], task), task,
                                 Path(params.influence.factors_dir))

    def kronfluence_scores(amp: torch.dtype | None):
        reference.compute_pairwise_scores(
            "bench", factors.FACTORS_NAME, queries, docs, per_device_query_batch_size=len(queries),
            per_device_train_batch_size=batch_size, overwrite_output_dir=True,
            dataloader_kwargs=DataLoaderKwargs(collate_fn=partial(pad_batch, pad_id=pad)),
            score_args=ScoreArguments(damping_factor=None, amp_dtype=amp))
        return reference.load_pairwise_scores("bench")["all_modules"].float().cpu()

    rows, reference_scores, overhead = [], None, {}
    for label, amp in (("float32", None), ("bfloat16", torch.bfloat16)):
        plain(amp)  # warm-up
        t_plain, m_plain, _ = measured(lambda: plain(amp))
        t_kron, m_kron, kron = measured(lambda: kronfluence_scores(amp))
        reference_scores = kron if amp is None else reference_scores
        t_prepare, scorer = timed(lambda: Scorer(load_model(params.model.dir)[0], pad,
                                                 Path(params.influence.factors_dir), queries, batch_size,
                                                 amp_dtype=amp))
        t_ours, m_ours, ours = measured(lambda: scorer.score(docs).cpu())
        scorer = None  # frees the model and its preconditioned queries before the next dtype
        if amp is None:  # the same pass with what the variant methods need: dot products and self-influence
            scorer = Scorer(load_model(params.model.dir)[0], pad, Path(params.influence.factors_dir), queries,
                            batch_size, variants=True)
            t_variants, m_variants, _ = measured(lambda: scorer.attribute(docs))
            scorer = None
        rho = min(spearmanr(ours[q].numpy(), reference_scores[q].numpy()).statistic for q in range(len(queries)))
        rho_kron = min(spearmanr(kron[q].numpy(), reference_scores[q].numpy()).statistic for q in range(len(queries)))
        rows += [("plain forward+backward", label, t_plain, m_plain, None),
                 ("kronfluence compute_pairwise_scores", label, t_kron, m_kron, rho_kron),
                 ("wherefrom scorer", label, t_ours, m_ours, rho)]
        if amp is None:
            rows.append(("wherefrom scorer + variants", label, t_variants, m_variants, None))
        overhead[label] = t_prepare
    staged = stage(params, root, 1, threads, max(1, len(docs) // 4))
    rows.append(("wherefrom scores stage (Dask, I/O)", "float32", staged.scoring_s, None, None))  # memory: in a worker

    print(f"\n{'':38s}{'dtype':>9s}{'docs/s':>9s}{'x plain':>9s}{'peak MB':>9s}{'Spearman vs kronfluence fp32':>30s}")
    plain_rate = {dtype: len(docs) / t for name, dtype, t, _, _ in rows if name.startswith("plain")}
    for name, dtype, t, mb, rho in rows:
        rate = len(docs) / t
        print(f"{name:38s}{dtype:>9s}{rate:9.1f}{rate / plain_rate[dtype]:9.2f}{'-' if mb is None else f'{mb:.0f}':>9s}"
              f"{'' if rho is None else f'{rho:30.6f}'}")
    rate = {(n, d): len(docs) / t for n, d, t, _, _ in rows}
    print()
    for dtype in ("float32", "bfloat16"):
        print(f"{dtype}: wherefrom scorer / kronfluence: "
              f"{rate['wherefrom scorer', dtype] / rate['kronfluence compute_pairwise_scores', dtype]:.2f}x;"
              f" query preconditioning {overhead[dtype]:.2f}s once")
    print(f"variants ({', '.join(gradient_methods())}) in the same pass: "
          f"{rate['wherefrom scorer', 'float32'] / rate['wherefrom scorer + variants', 'float32']:.2f}x the "
          "scorer's time (tokens rotated into the eigenbasis, each document's per-layer gradient there, "
          "its dot products)")
    t_plain = len(docs) / rate["plain forward+backward", "float32"]
    print("\nEK-FAC factors (float32), time / one plain pass over the same documents:")
    print(f"{'':14s}" + "".join(f"{step:>20s}" for step in steps["kronfluence"]) + f"{'all':>8s}{'docs/s':>9s}")
    for fitter, seconds in steps.items():
        total = sum(seconds.values())
        print(f"{fitter:14s}" + "".join(f"{t / t_plain:19.2f}x" for t in seconds.values())
              + f"{total / t_plain:7.2f}x{len(docs) / total:9.1f}")
    print(f"wherefrom / kronfluence: {sum(steps['kronfluence'].values()) / sum(steps['wherefrom'].values()):.2f}x "
          "faster, the same factors (tests/test_fisher.py)")
    print(f"\nscores stage: shards of {len(docs) // 4} documents, each read from Parquet and written as Parquet; "
          f"workers ready (cluster start, imports, model, factors, queries) in {staged.ready_s:.1f}s, once per run")

# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Which documents taught the model: facts or procedures?
#
# This report follows Ruis et al. (2024), *Procedural Knowledge in Pretraining Drives Reasoning in
# Large Language Models*, on this pipeline's own run. For every query, EK-FAC influence estimates
# how much each pretraining document made the model's completion more likely, per nat. The paper
# finds that influence on factual answers is narrow (a few documents, which often contain the answer),
# and that influence on reasoning is broad and procedural. Every number below is read through the same
# DuckDB views and named queries as `wherefrom sql`. Every other method of the run (influence's variants,
# BM25, random scores and the gradient index's estimate) is analysed the same way beside it.

# %% tags=["parameters"]
params_file = "params.yaml"  # the pipeline's parameters: where the results are (when run by hand)
resolved = None  # the same, already resolved: what the report stage passes
method = None  # the attribution shown in the figures; None: the paper's (influence/methods)
baselines = None  # the other methods, beside it; None: every other registered method
docs_shown = 5  # top documents shown per example query
segment_query = None  # the reasoning query decomposed in section 12; None: the rule stated there
example_queries = None  # query ids shown in section 10; None: per task, the rule stated there
provenance = ""  # commit, profile and date of the run (the report stage fills it in)

# %%
import html
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import HTML, Markdown, display

from influence import methods as registry
from pipeline.analysis import validation as retraining
from pipeline.analysis.findings import SHARED_TEST
from pipeline.analysis.labels import WORKED_STEP
from pipeline.core.config import from_resolved, load_params
from pipeline.sql import db
from pipeline.world.tasks import TASKS

params = from_resolved(resolved) if resolved else load_params(params_file)
method = method or registry.PAPER
baselines = [m for m in registry.REGISTRY if m != method] if baselines is None else baselines
LEXICAL = registry.LEXICAL  # the lexical baseline: what word overlap alone gives
con = db.connect(params)
COLOURS = {"factual": "#1f77b4", "arithmetic": "#d62728", "slope": "#ff7f0e", "linear": "#9467bd",
           "factual_control": "#7fb2d9", "reasoning_control": "#e6a3a3",
           **{m.name: m.colour for m in registry.REGISTRY.values() if m.colour}}
# figures at most WIDTH inches: 1,265 px at 110 dpi, so that no page clips them at 1,280 px
WIDTH = 11.5
plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False, "font.size": 9})


def sql(query: str, **parameters):
    """A pandas frame of a read-only query (small results only: the views do the work)."""
    return db.query(con, query, parameters or None).to_pandas()


def named(name: str, **parameters):
    q = db.named_query(params.analysis.sql_dir, name)
    return db.query(con, q.sql, db.bind(q, {k: str(v) for k, v in parameters.items()}), source=str(q.path)).to_pandas()


def note(text: str) -> None:
    """A paragraph of the report; a statistic with nothing to measure (NaN) reads as –."""
    display(Markdown(re.sub(r"\bnan\b%?", "–", text)))


def read_metrics() -> dict:
    """metrics.json with its nulls (a statistic with nothing to measure) as NaN, which formats as 'nan'."""
    return json.loads((Path(params.analysis.out_dir) / "metrics.json").read_text(),
                      object_hook=lambda d: {k: float("nan") if v is None else v for k, v in d.items()})


every_method = sql("SELECT * FROM findings")  # one row per (finding, method)
findings = every_method[every_method.method == method].set_index("finding")
findings = findings.assign(ours=findings.value, **{b: every_method[every_method.method == b].set_index("finding").value
                                                   for b in baselines})


def outcome(row) -> str:
    """A verdict as text: the test and its p-value, or why it could not be run."""
    if row.verdict == "not testable":
        return f"not testable: {row.reason}"
    return f"{row.test}: p = {row.p_value:.2g}"


def verdict(finding: str) -> str:
    row = findings.loc[finding]
    said = {"holds": "reproduces", "does not hold": "does not reproduce"}.get(row.verdict, row.verdict)
    return f"**{said}** ({outcome(row)})"


# the suite's tasks in their order, then a user's own tasks (a query file may name any task with its kind)
query_tasks = set(sql("SELECT DISTINCT task FROM queries").task)
own_tasks = sorted(query_tasks - set(TASKS))
tasks_present = [t for t in TASKS if t in query_tasks] + own_tasks
for i, task in enumerate(own_tasks):
    COLOURS[task] = plt.get_cmap("tab20b")(i % 20)
for i, m in enumerate(m for m in baselines if m not in COLOURS):  # a method of the registry with no colour above
    COLOURS[m] = plt.get_cmap("Dark2")((i + 1) % 8)  # Dark2 less its first, a green beside influence's
# a generated world's documents know their fact and procedure; a user's corpus has no such columns filled
ground_truth = bool(sql("SELECT count(*) AS n FROM corpus WHERE procedure IS NOT NULL OR fact_ids IS NOT NULL").n[0])
if provenance:
    note(f"*This run: {provenance}.*")

# %% [markdown]
# ## 1. Setup

# %%
sources = named("sources")
# accuracy over the queries with an answer to check (avg skips the nulls)
accuracy = named("accuracy")
accuracy = accuracy.set_index("task").reindex(tasks_present)
pretrain = json.loads(Path(params.pretrain.metrics).read_text()) if Path(params.pretrain.metrics).is_file() else {}
loss_curve = Path(params.pretrain.loss_curve)
loss = pd.read_csv(loss_curve) if loss_curve.is_file() and loss_curve.stat().st_size > 0 else pd.DataFrame()
fig, axes = plt.subplots(1, 4 if len(loss) else 3, figsize=(WIDTH if len(loss) else 10, 3))
if len(loss):
    axes[3].plot(loss.step, loss.loss, color="#444")
    axes[3].set(title="Pretraining loss (dvc plots: metrics/)", xlabel="step", yscale="log")
axes[0].barh(sources.source, sources.n, color="#888")
axes[0].invert_yaxis()
axes[0].set(title="Corpus by source", xlabel=f"documents ({sources.n.sum():,} in all)")
axes[1].bar(accuracy.index, accuracy.accuracy, color=[COLOURS[t] for t in accuracy.index])
axes[1].set(title="Accuracy per task", ylabel="greedy answer exact", ylim=(0, 1.05))
axes[2].bar(accuracy.index, accuracy.n, color=[COLOURS[t] for t in accuracy.index])
axes[2].set(title="Queries per task")
for ax in axes[1:3]:
    ax.tick_params(axis="x", rotation=35)
    plt.setp(ax.get_xticklabels(), ha="right")
fig.tight_layout()
plt.show()
size = f"A {pretrain['n_params'] / 1e6:.2f}M-parameter" if pretrain.get("n_params") else "An external"
note(f"{size} model, attributed over {sources.n.sum():,} documents for {int(accuracy.n.sum())} queries. "
     + (f"Accuracy ranges from {accuracy.accuracy.min():.0%} to {accuracy.accuracy.max():.0%} per task, over the "
        "queries with an answer to check. " if accuracy.accuracy.notna().any() else
        "No query gives an answer to check, so there is no accuracy. ")
     + "The paper analyses correctly answered queries, and so does every answer-in-top-k statistic below.")

# %% [markdown]
# ## 2. Findings: ours beside the paper's

# %%
def number(v) -> str:
    """Two significant decimals, never '-0.000'."""
    return "–" if v is None or not np.isfinite(v) else f"{0.0 if abs(v) < 5e-4 else v:.3f}".rstrip("0").rstrip(".")


paper_rows = findings[findings.segment == "all"]
table = paper_rows.reset_index()[["claim", "statistic", "paper", "ours", *baselines, "verdict"]]
table["test"] = [outcome(r) for r in paper_rows.itertuples()]
display(HTML("<style>table.findings td, table.findings th{text-align:left !important}</style>"
             + table.to_html(index=False, formatters={c: number for c in ("ours", *baselines)}, na_rep="–",
                             classes="findings")))
note("Shares are given as fractions (0.55 is the paper's 55%); `ours` is influence. A finding holds when its test "
     "gives p < 0.05; one that cannot be tested on this corpus and these queries says why, and leaves the count. "
     "Each finding's id, and every method's verdict, are in `wherefrom sql --name findings`.")
counted = paper_rows[~paper_rows.index.isin(SHARED_TEST)]  # the two answer claims share one test: once
testable = counted[counted.verdict != "not testable"]
untested = len(counted) - len(testable)
note(f"**{int((testable.verdict == 'holds').sum())} of {len(testable)} testable findings** reproduce on this run "
     + (f"({untested} not testable) " if untested else "")
     + "(`ours` is influence; the two answer-in-top-k claims are one Fisher test, counted once). BM25 and random "
     "are the same statistics on baseline scores.")
if own_tasks:
    note(f"The findings test the paper's tasks; this run's own task{'s' if len(own_tasks) > 1 else ''} "
         f"({', '.join(own_tasks)}) appear in every chart and table below but in no finding.")
study = Path(params.study.out_dir) / "finding_spread.parquet"
if study.is_file():
    spread = named("finding_spread", method=method)
    runs = int(spread.n_runs.max())
    spread["mean ± sd"] = [f"{number(m)} ± {number(s)}" for m, s in zip(spread["mean"], spread.sd)]
    spread["95% interval"] = [f"[{number(a)}, {number(b)}]" for a, b in zip(spread.ci_low, spread.ci_high)]
    display(HTML(f"<p><b>The seed study: {runs} training runs</b> (make seeds; the world fixed, pretrain.seed "
                 "varied)</p>" + spread[["finding", "paper", "mean ± sd", "95% interval", "holds_in"]].to_html(
                     index=False, classes="findings")))
    note(f"One training run is one draw: this run's numbers above are one of them. Across the {runs} runs, "
         "`holds_in` counts the runs in which the finding held, of those in which it was testable.")
else:
    note("One training run is one draw: on another machine the same params give another model and other numbers. "
         "`make seeds` repeats the training under several seeds and reports each finding as mean ± sd and "
         "\"holds in k of n runs\".")

# %% [markdown]
# ## 3. Query x query correlation of document influence

# %%
def correlation_matrix(m: str, segment: str = "all", column: str = "pearson"):
    """Query x query r of one method and segment, queries ordered by task (NaN where a query lacks the segment)."""
    order = sql("SELECT query_id, task FROM queries").assign(
        rank=lambda d: d.task.map({t: i for i, t in enumerate(TASKS)})).sort_values(["rank", "query_id"])
    index = {q: i for i, q in enumerate(order.query_id)}
    pairs = sql(
        f"SELECT query_a, query_b, {column} FROM correlations WHERE method = $m AND segment = $s", m=m, s=segment
    )
    matrix = np.full((len(index), len(index)), np.nan)
    for a, b, r in pairs.itertuples(index=False):
        matrix[index[a], index[b]] = matrix[index[b], index[a]] = r
    present = sorted({index[q] for q in pairs.query_a} | {index[q] for q in pairs.query_b})
    matrix[present, present] = 1.0  # the diagonal of the queries that have this segment
    return matrix, order.task.to_numpy()


shown = [method, *[b for b in baselines if b == LEXICAL]]
fig, axes = plt.subplots(1, len(shown), figsize=(min(WIDTH, 4.2 * len(shown)), 4.2))
for ax, m in zip(np.atleast_1d(axes), shown):
    matrix, tasks = correlation_matrix(m)
    off = np.abs(matrix[~np.eye(len(matrix), dtype=bool)])
    vmax = max(float(np.quantile(off, 0.99)), 0.05)
    im = ax.imshow(matrix, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    bounds = [i for i in range(1, len(tasks)) if tasks[i] != tasks[i - 1]]
    for b in bounds:
        ax.axhline(b - 0.5, color="k", lw=0.6)
        ax.axvline(b - 0.5, color="k", lw=0.6)
    starts = [0, *bounds]
    ends = [*bounds, len(tasks)]
    ax.set_xticks([(s + e - 1) / 2 for s, e in zip(starts, ends)], [tasks[s] for s in starts], rotation=90)
    ax.set_yticks([(s + e - 1) / 2 for s, e in zip(starts, ends)], [tasks[s] for s in starts])
    ax.set_title(f"{m} (colour scale ±{vmax:.2f})")
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.suptitle("Query x query Pearson r of document influence")
fig.tight_layout()
plt.show()
groups = named("correlation_groups", method=method).query("segment == 'all'")
g = groups.set_index("group").mean_pearson
same = [f"{t} {g.get('within ' + t, float('nan')):.3f}" for t in ("arithmetic", "slope", "linear")]
note(f"Mean r within a task: {', '.join(same)}; among factual queries {g.get('within factual', float('nan')):.3f}; "
     f"across reasoning tasks {g.get('across reasoning tasks', float('nan')):.3f}. The paper's central finding, "
     f"strongly correlated influence within a reasoning task, {verdict('same_task_reasoning_r')}.")

# %% [markdown]
# ## 4. How concentrated is positive influence? Top-p% cumulative sums

# %%
mass = named("influence_mass", method=method)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for task in tasks_present:
    part = mass[mass.task == task]
    axes[0].plot(part.percent, part.top_sum, marker="o", color=COLOURS[task], label=task)
    axes[1].plot(part.percent, part.top_share, marker="o", color=COLOURS[task], label=task)
axes[0].set(xscale="log", yscale="log", xlabel="top p% of documents", ylabel="sum of positive influence per nat",
            title="Absolute")
axes[1].set(xscale="log", xlabel="top p% of documents", ylabel="share of all positive influence", title="Relative",
            ylim=(0, 1.02))
axes[1].legend(fontsize=7, frameon=False)
fig.tight_layout()
plt.show()
row = findings.loc["total_positive_ratio"]
note(f"Reasoning queries receive {row.ours:.2f}x the total positive influence per nat of factual ones (paper: "
     f"smaller for reasoning); this {verdict('total_positive_ratio')}. The relative curves show how much of it sits "
     "in the very top documents.")

# %% [markdown]
# ## 5. The tail: power laws on the top-k scores

# %%
tail = sql("""SELECT t.query_id, q.task, t.rank, t.score_per_nat FROM top_docs t JOIN queries q USING (query_id)
              WHERE t.method = $m AND t.segment = 'all' AND t."end" = 'top'
              AND t.rank <= (SELECT max(tail_points) FROM query_stats)
              AND t.score_per_nat > 0""", m=method)
alphas = named("power_law", method=method)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for task in tasks_present:
    first = tail[tail.task == task].query_id.min()
    part = tail[tail.query_id == first].sort_values("rank")
    if len(part) < 3:
        continue
    x, y = np.log(part["rank"].to_numpy()), np.log(part.score_per_nat.to_numpy())
    slope, intercept = np.polyfit(x, y, 1)
    axes[0].scatter(part["rank"], part.score_per_nat, s=4, color=COLOURS[task], alpha=0.5)
    axes[0].plot(part["rank"], np.exp(intercept + slope * x), color=COLOURS[task], label=f"{first}: alpha {-slope:.2f}")
axes[0].set(xscale="log", yscale="log", xlabel="rank", ylabel="influence per nat", title="One query per task")
axes[0].legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
data = [alphas[alphas.task == t].alpha.dropna() for t in tasks_present]
axes[1].boxplot(data, tick_labels=tasks_present)
axes[1].tick_params(axis="x", rotation=35)
axes[1].set(ylabel="power-law exponent alpha", title="Exponents per task")
fig.tight_layout()
plt.show()
metrics = read_metrics()[method]
t = metrics["tail_alpha"]
note(f"Mean exponent: factual {t['factual']:.2f}, reasoning {t['reasoning']:.2f} (Welch t = {t['welch_t']:.2f}, "
     f"p = {t['p_value']:.2g}). The paper finds a power-law tail for both kinds; a larger alpha means influence "
     "falls off faster from the top document.")

# %% [markdown]
# ## 6. Is the answer in the top documents?

# %%
answers = named("answer_in_topk", method=method)
answers = answers.set_index("task").reindex(tasks_present)
x = np.arange(len(answers))
fig, ax = plt.subplots(figsize=(9, 3.2))
ax.bar(x - 0.27, answers.answer_in_topk, 0.27, label="answer anywhere in a top-k document", color="#bbb")
ax.bar(x, answers.answer_to_question_in_topk, 0.27, label="the answer to this question", color="#2ca02c")
ax.bar(x + 0.27, answers.fact_recall.fillna(0), 0.27, label="recall of the fact's documents (truth)", color="#1f77b4")
ax.set_xticks(x, answers.index, rotation=35, ha="right")
top_k = int(sql("SELECT max(top_k) AS k FROM query_stats").k[0])
ax.set(ylim=(0, 1.05), ylabel="share of correct queries", title=f"Top-{top_k} documents")
correct_n = sql("SELECT task, count(*) FILTER (WHERE correct) AS n FROM queries GROUP BY task").set_index("task").n
for i, task in enumerate(answers.index):
    if not correct_n.get(task, 0):
        ax.text(i, 0.03, "no correct\nqueries", ha="center", va="bottom", fontsize=7, color="#666")
ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
plt.show()
f, r = findings.loc["answer_in_topk_factual"], findings.loc["answer_in_topk_reasoning"]
note(f"A top document answers the question for {f.ours:.0%} of factual and {r.ours:.0%} of reasoning queries "
     f"(paper: 55%/30% and 7%/0% at 7B/35B); this {verdict('answer_in_topk_factual')}. Matching any mention of "
     "the answer (grey) is near chance for small numbers, which is why the stricter test is used.")
controls = [t for t in ("factual_control", "reasoning_control") if t in answers.index]
if controls:
    def control(t: str) -> str:
        share = answers.answer_to_question_in_topk.get(t)
        found = f", and for {share:.0%} of them a top document answers the question" if np.isfinite(share) else ""
        return f"{t}: {int(correct_n.get(t, 0))} answered correctly{found}"

    note("The controls are answered from their own prompt (a passage to read, or a value stated in the question), "
         "so the corpus need not hold their answer. " + "; ".join(control(t) for t in controls) + ". Section 10 "
         "shows which documents rank at the top for one control query.")

# %% [markdown]
# ## 7. Which sources do the top and bottom documents come from?

# %%
enrich = sql("SELECT * FROM enrichment WHERE method = $m AND segment = 'all' AND level = 'kind'", m=method)
fig, axes = plt.subplots(2, 2, figsize=(10, 5.6), sharex=True)
for i, end in enumerate(["top", "bottom"]):
    for j, kind in enumerate(["factual", "reasoning"]):
        ax = axes[i, j]
        part = enrich[(enrich["end"] == end) & (enrich.group == kind)]
        for source in sorted(part.source.unique()):
            s = part[part.source == source].sort_values("k")
            ax.plot(s.k, s.enrichment, marker="o", ms=3, label=source)
        ax.axhline(1, color="k", lw=0.6, ls="--")
        ax.set(xscale="log", title=f"{kind} queries, {end} k", ylabel="share / corpus share")
axes[1, 0].set_xlabel("k")
axes[1, 1].set_xlabel("k")
handles, labels_ = axes[0, 0].get_legend_handles_labels()
fig.legend(handles, labels_, loc="lower center", ncol=len(labels_), frameon=False, fontsize=8)
fig.tight_layout(rect=(0, 0.05, 1, 1))
plt.show()
note(f"Over-representation of StackExchange and code for reasoning {verdict('reasoning_sources')}; of wiki and "
     f"trivia for factual queries {verdict('factual_sources')}."
     + (" In the generated world, sources are assigned to document kinds, so enrichment partly restates which kinds "
        "of documents rank high." if ground_truth else ""))

# %% [markdown]
# ## 8. Procedure share of influence (ground truth of the generated world)

# %%
share = named("procedure_share")
if ground_truth:
    def share_pivot(m: str) -> pd.DataFrame:
        part = share[share.method == m]
        return part.pivot(index="task", columns="category", values="share").reindex(tasks_present).fillna(0)

    pivot = share_pivot(method)
    categories = ["own_procedure", "other_procedure", "own_fact", "other_fact", "filler"]
    colours = ["#d62728", "#f4a582", "#1f77b4", "#92c5de", "#cccccc"]
    fig, ax = plt.subplots(figsize=(9, 3.2))
    left = np.zeros(len(pivot))
    for c, colour in zip(categories, colours):
        values = pivot.get(c, 0 * left)
        ax.barh(pivot.index, values, left=left, color=colour, label=c)
        left += np.asarray(values)
    ax.invert_yaxis()
    ax.set(xlabel="share of top-k positive influence", xlim=(0, 1))
    ax.legend(fontsize=7, frameon=False, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout()
    plt.show()
    lexical = share_pivot(LEXICAL) if LEXICAL in set(share.method) else None
    # a control is answered by reading its prompt: its own procedure is the `reading` documents' (labels.py)
    own_of = {"factual": "own_fact", "arithmetic": "own_procedure", "slope": "own_procedure",
              "linear": "own_procedure", "factual_control": "own_procedure", "reasoning_control": "own_procedure"}
    lines = []
    for task, own in own_of.items():
        if task not in pivot.index or own not in pivot.columns:
            continue
        row = pivot.loc[task, [c for c in categories if c in pivot.columns]]
        largest = "the largest category" if row.idxmax() == own else f"below {row.idxmax()} ({row.max():.0%})"
        line = f"{task}: {own} {row[own]:.0%}, {largest}"
        if lexical is not None and task in lexical.index and own in lexical.columns:
            b = lexical.loc[task, own]
            line += f"; BM25 {b:.0%}" + (" (BM25 higher)" if b > row[own] + 0.005 else "")
        lines.append(line)
    note("Share of the top-k positive influence that falls on the query's own procedure (reasoning) or on the "
         "documents stating its fact (factual): " + "; ".join(lines) + ". The paper's contrast expects the own "
         "category to dominate for both; BM25 beside it shows how much of that lexical overlap already finds. "
         "A control's question is answered from its own prompt, so its own procedure is reading from context: "
         "the `reading` documents, which answer from a passage they contain.")
else:
    note("This corpus has no ground truth (a real corpus), so there is no procedure share to show.")

# %% [markdown]
# ## 9. Classifying queries from their influence alone

# %%
confusion = named("classifier", method=method)
classes = ["procedural", "document_specific"]
# a panel per reference the queries have: the kind (not for the controls), the ground truth (not on a user's corpus)
references = [r for r in ("expected", "truth") if confusion[r].notna().any()]
fig, axes = plt.subplots(1, max(1, len(references)), figsize=(4.75 * max(1, len(references)), 3.4),
                         layout="constrained", squeeze=False)
if not references:
    axes[0][0].set_axis_off()
    axes[0][0].text(0.5, 0.5, "no query has a kind or a ground truth to compare with", ha="center")
for ax, reference in zip(axes[0], references):
    known = confusion.dropna(subset=[reference])
    counts = np.array([[((known[reference] == a) & (known.predicted == b)).sum() for b in classes] for a in classes])
    accuracy_ = np.trace(counts) / counts.sum()
    ax.imshow(counts, cmap="Greens", vmin=0)
    for (a, b), v in np.ndenumerate(counts):
        ax.text(b, a, str(v), ha="center", va="center", color="white" if v > counts.max() / 2 else "black")
    ax.set_xticks([0, 1], classes)
    ax.set_yticks([0, 1], classes)
    ax.set(xlabel="predicted", ylabel="by kind" if reference == "expected" else "by ground truth",
           title=f"accuracy {accuracy_:.0%} (n = {counts.sum()})")
plt.show()
c = metrics["classifier"]
truth = (f"and with the world's ground truth for {c['vs_truth']['accuracy']:.0%}" if c["vs_truth"]["n"]
         else "(this corpus has no ground truth to compare with)")
note(f"Without the task label, the classifier agrees with the query kind for {c['vs_kind']['accuracy']:.0%} of "
     f"queries {truth}. The controls have no ground "
     "truth: they are answered from the prompt.")

# %% [markdown]
# ## 10. The top documents of one query per task

# %%
def excerpt(text: str, limit: int = 400) -> str:
    """The first ``limit`` characters, cut at a word boundary."""
    return text if len(text) <= limit else text[:limit].rsplit(maxsplit=1)[0] + " …"


def highlight(text: str, answer: str, label: str) -> str:
    """Worked steps bold in a document that shows the procedure; ``answer`` marked (none: nothing marked)."""
    out = html.escape(text)
    if label == "shows_procedure":
        out = WORKED_STEP.sub(lambda m: f"<b>{m.group(0)}</b>", out)
    if not answer:
        return out
    pattern = rf"(?<![\w.]){re.escape(html.escape(answer))}(?![\w])"
    return re.sub(pattern, lambda m: f"<mark>{m.group(0)}</mark>", out)


# The rule: per task, the correctly answered query (or one with no answer to check) whose completion NLL is
# nearest the task's median (a typical query, not the first id); `example_queries` overrides it.
examples = sql("""SELECT task, arg_min(query_id, abs(completion_nll - med)) AS query_id FROM queries
                  JOIN (SELECT task, median(completion_nll) AS med FROM queries WHERE correct IS NOT FALSE
                        GROUP BY task) USING (task)
                  WHERE correct IS NOT FALSE GROUP BY task""").set_index("task").query_id
if example_queries:
    chosen = sql("SELECT query_id, task FROM queries").set_index("query_id").task
    unknown = [q for q in example_queries if q not in chosen.index]
    if unknown:
        raise ValueError(f"example_queries: no such query {unknown[0]!r}")
    examples = {chosen[q]: q for q in example_queries}
parts = []
for task in tasks_present:
    qid = examples.get(task)
    if qid is None:
        continue
    query = sql("SELECT prompt, completion, answer, kind FROM queries WHERE query_id = $q", q=qid).iloc[0]
    kind = query.kind
    docs = named("top_documents", query_id=qid, k=docs_shown, method=method)
    full = sql(f"SELECT doc_id, text FROM corpus WHERE doc_id IN ({','.join(map(str, docs.doc_id)) or 'NULL'})")
    text = dict(zip(full.doc_id, full.text))
    rows = "".join(f"<tr><td>{r.rank}</td><td>{r.source}</td><td>{r.label}</td><td>{r.score_per_nat:.3g}</td>"
                   f"<td><pre>{highlight(excerpt(text[r.doc_id]), query.answer if kind == 'factual' else '', r.label)}"
                   f"</pre></td></tr>"
                   for r in docs.itertuples())
    parts.append(
        f"<h4>{html.escape(qid)} ({task})</h4><table class='docs'><tr><th>prompt</th><th>the model's "
        f"completion</th></tr><tr><td><pre>{html.escape(query.prompt)}</pre></td><td><pre>"
        f"{html.escape(query.completion)}</pre></td></tr></table><table class='docs'><tr><th>rank</th><th>source"
        f"</th><th>label</th><th>score/nat</th><th>text ({'answer <mark>marked</mark>, ' if kind == 'factual' else ''}"
        f"worked steps bold)</th>"
        f"</tr>{rows}</table>"
    )
display(
    HTML(
        "<style>table.docs pre{white-space:pre-wrap;margin:0;font-size:11px;text-align:left}"
        " table.docs td, table.docs th{vertical-align:top;text-align:left !important} table.docs{margin-bottom:8px}"
        "</style>" + "".join(parts)
    )
)
missing = [t for t in tasks_present if examples.get(t) is None]
note("Each task's query is the correctly answered one whose completion NLL is nearest the task's median (the "
     "`example_queries` parameter picks others). "
     + (f"No query of {', '.join(missing)} was answered correctly, so {'it has' if len(missing) == 1 else 'they have'} "
        "none here. " if missing else "")
     + ("Labels come from the world's ground truth. " if ground_truth else
        "Labels come from the text alone (`pipeline/analysis/labels.py`: worked steps, or the answer stated), "
        "as this corpus has no ground truth. ")
     + "A factual answer is marked wherever it appears. A reasoning answer is a small number that appears in "
       "many documents as another problem's number, so it is not marked; the label says whether a document "
       "states it as the answer to this question.")

# %% [markdown]
# ## 11. Influence beside its variants, lexical overlap (BM25) and chance (random)

# %%
methods = [method, *baselines]
summary = read_metrics()
measures = {
    "same-task reasoning r": lambda s: np.nanmean([s["mean_r"].get(f"within_{t}") or np.nan
                                                   for t in ("arithmetic", "slope", "linear")]),
    "factual-pair r": lambda s: s["mean_r"]["factual_pairs"],
    "answer to question, factual": lambda s: s["answer_in_context_topk"]["factual_correct"],
    "classifier vs kind": lambda s: s["classifier"]["vs_kind"]["accuracy"],
    "text labels vs truth": lambda s: s["labels"].get("agreement"),
}
proc = (
    sql("""SELECT method, avg(share) AS share FROM procedure_share WHERE category = 'own_procedure'
              AND segment = 'all' AND task IN ('arithmetic', 'slope', 'linear') GROUP BY method""")
    .set_index("method")
    .share
)
fig, ax = plt.subplots(figsize=(10, 3.4))
names = [*measures, "own-procedure share"]
x = np.arange(len(names))
width = 0.8 / len(methods)
values = {}
for i, m in enumerate(m for m in methods if m in summary):
    values[m] = [float(f(summary[m]) or np.nan) for f in measures.values()] + [proc.get(m, np.nan)]
    ax.bar(x + (i - (len(methods) - 1) / 2) * width, values[m], width, label=m, color=COLOURS[m])
ax.set_xticks(x, names, rotation=20, ha="right")
ax.axhline(0, color="k", lw=0.6)
ax.set(title="The same statistics on every method's scores", ylim=(-0.1, 1.05))
ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
plt.show()
note("The methods (`influence/methods/`): " + "; ".join(
    f"`{m}`, {registry.REGISTRY[m].about}" for m in methods if m in registry.REGISTRY) + ".")
if LEXICAL in values:
    # factual-pair r is better low (factual queries should not share documents); every other measure high
    lower_is_better = {"factual-pair r"}
    beats = [n for n, a, b in zip(names, values[method], values[LEXICAL])
             if np.isfinite(a) and np.isfinite(b) and ((b < a) if n in lower_is_better else (b > a))]
    ties = [n for n, a, b in zip(names, values[method], values[LEXICAL]) if np.isfinite(a) and abs(a - b) < 0.005]
    ahead = [n for n, a, b in zip(names, values[method], values[LEXICAL])
             if np.isfinite(a) and np.isfinite(b) and n not in beats and n not in ties]
    note(f"Better means higher, except for factual-pair r, where lower is better (factual queries should not share "
         f"their documents). BM25 does better than {method} on {len(beats)} of {len(names)} of these statistics"
         + (f" ({', '.join(beats)})" if beats else "") + (f", ties on {', '.join(ties)}" if ties else "")
         + (f", and {method} does better on {', '.join(ahead)}" if ahead else "") + ". "
         "Same-task prompts share their words, so lexical overlap alone correlates within a task: the paper's "
         "correlation finding is not, on its own, evidence of procedural influence. Random scores mark chance.")

# %% [markdown]
# ## 12. Which part of an answer draws on procedures?
#
# Each completion is split by rules that read only its text (`queries/segments.py`): the final
# `answer`, numbers it `computed` (in neither the prompt nor earlier lines), numbers it `copied`, and
# the `scaffold` (words, operators, layout). Each segment's NLL is attributed on its own; the segments'
# scores add up to the whole completion's. This is a decomposition of the headline, not a finding of
# the paper.

# %%
segment_names = [s for s in ("answer", "computed", "copied", "scaffold")
                 if s in set(sql("SELECT DISTINCT segment FROM correlation_groups").segment)]
if segment_names:
    nll = named("segment_nll").pivot(index="task", columns="segment", values="mean_nll_share").reindex(tasks_present)
    groups = named("correlation_groups", method=method)
    fig, axes = plt.subplots(1, len(segment_names) + 1, figsize=(min(WIDTH, 2.6 * (len(segment_names) + 1)), 3.0))
    for ax, segment in zip(axes, ["all", *segment_names]):
        matrix, tasks = correlation_matrix(method, segment)
        ax.imshow(matrix, cmap="RdBu_r", vmin=-0.5, vmax=0.5, interpolation="nearest")
        bounds = [i for i in range(1, len(tasks)) if tasks[i] != tasks[i - 1]]
        for b in bounds:
            ax.axhline(b - 0.5, color="k", lw=0.4)
            ax.axvline(b - 0.5, color="k", lw=0.4)
        ax.set(xticks=[], yticks=[], title=f"{segment}")
    axes[0].set_ylabel("queries by task (as in section 3)")
    fig.suptitle(f"{method}: query x query Pearson r per segment (colour scale ±0.5; blank: no such segment)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    plt.show()

    def within(segment: str, column: str = "mean_pearson") -> float:
        part = groups[
            (groups.segment == segment) & groups.group.isin([f"within {t}" for t in ("arithmetic", "slope", "linear")])
        ]
        return float(part[column].mean()) if len(part) else float("nan")

    def factual(segment: str, column: str = "mean_pearson") -> float:
        part = groups[(groups.segment == segment) & (groups.group == "within factual")][column]
        return float(part.iloc[0]) if len(part) else float("nan")

    rows = [(seg, within(seg), factual(seg), within(seg, "mean_pearson_cells")) for seg in ["all", *segment_names]]
    display(HTML(pd.DataFrame(rows, columns=["segment", "same-task reasoning r", "factual r",
                                             "same-task r of (category x source) totals"]).to_html(
        index=False, float_format=lambda v: f"{v:.3f}", na_rep="–")))
    segment_rows = findings[findings.segment != "all"]
    decomposition = segment_rows.reset_index()[["finding", "segment", "ours", *baselines, "verdict"]]
    decomposition["test"] = [outcome(r) for r in segment_rows.itertuples()]
    display(HTML(decomposition.to_html(index=False, formatters={c: number for c in ("ours", *baselines)},
                                       na_rep="–", classes="findings")))
    reasoning = [t for t in ("arithmetic", "slope", "linear") if t in nll.index]
    computed = nll.loc[reasoning, "computed"].mean() if "computed" in nll and reasoning else float("nan")
    best = max(segment_names, key=lambda seg: -np.inf if np.isnan(within(seg)) else within(seg))
    lexical_best = (
        findings.loc[f"same_task_reasoning_r_{best}", LEXICAL]
        if f"same_task_reasoning_r_{best}" in findings.index
        else float("nan")
    )
    pairs = sql("""SELECT count(*) FILTER (WHERE same_choice) AS same, count(*) AS n FROM correlations
                   WHERE method = $m AND segment = 'all' AND task_a = task_b
                   AND task_a IN ('arithmetic', 'slope', 'linear')""", m=method).iloc[0]
    note(
        f"On the reasoning tasks, the computed numbers carry {computed:.0%} of a completion's NLL on average, and "
        f"the largest single token {nll.loc[reasoning, '(largest token)'].mean():.0%}. Same-task reasoning r is "
        f"{within('all'):.3f} on the whole completion and {within(best):.3f} on the {best} tokens, the highest "
        f"of the segments (factual r on that segment: {factual(best):.3f}; BM25 of the same tokens' text: "
        f"{lexical_best:.3f}{', as high or higher' if lexical_best >= within(best) else ', lower'}). The "
        f"{int(pairs.same)} of {int(pairs.n)} same-task pairs whose largest-NLL token and its runner-up are the same "
        f"correlate at {within('all', 'mean_pearson_same_choice'):.3f} on the whole completion, the others at "
        f"{within('all', 'mean_pearson_other_choice'):.3f}. Summed over (document category x source) cells, same-task "
        f"r is {within('all', 'mean_pearson_cells'):.3f}, and factual r {factual('all', 'mean_pearson_cells'):.3f}: "
        + ("a procedure-level signal."
           if within("all", "mean_pearson_cells") > factual("all", "mean_pearson_cells")
           else "no more than factual queries share, so not a procedure-level signal here.")
    )

    rule = "the given query"
    if segment_query is None:
        rule = ("the correctly answered query of the first reasoning task whose completion NLL is nearest that "
                "task's median")
        candidates = sql("""SELECT query_id, task, completion_nll FROM queries WHERE correct
                            AND task IN ('arithmetic', 'slope', 'linear')""")
        if len(candidates):
            first = next(t for t in ("arithmetic", "slope", "linear") if t in set(candidates.task))
            part = candidates[candidates.task == first]
            segment_query = part.iloc[(part.completion_nll - part.completion_nll.median()).abs().argmin()].query_id
    if segment_query is not None:
        tokens = sql("SELECT token, segment, nll FROM segments WHERE query_id = $q ORDER BY position", q=segment_query)
        shade = {"answer": "#c7e9c0", "computed": "#fcbba1", "copied": "#c6dbef", "scaffold": "#eeeeee"}
        spans = "".join(f"<span title='{t.segment}, NLL {t.nll:.3f}' style='background:{shade[t.segment]};"
                        f"border-bottom:{min(6, 1 + 20 * t.nll):.0f}px solid #555'>{html.escape(t.token)}</span>"
                        for t in tokens.itertuples())
        legend = " ".join(f"<span style='background:{c}'>&nbsp;{s}&nbsp;</span>" for s, c in shade.items())
        parts = [f"<p>{html.escape(segment_query)}, chosen as {rule}. Underline: the token's NLL. {legend}</p>"
                 f"<pre style='font-size:13px'>{spans}</pre>"]
        for segment in ["all", *segment_names]:
            docs = named("top_documents", query_id=segment_query, k=3, method=method, segment=segment)
            if len(docs):
                items = "".join(f"<li>{r.source}, {r.label}, {r.score_per_nat:.3g}/nat: {html.escape(r.text)}</li>"
                                for r in docs.itertuples())
                parts.append(f"<b>{segment}</b><ol style='font-size:11px'>{items}</ol>")
        display(HTML("".join(parts)))
else:
    note("Scores were computed for whole completions only (`scores.segments: false`), so there is no decomposition.")

# %%
# Section 13 exists when `make validate` has run: it retrains the model, so `make demo` does not.
counterfactual_file = Path(params.counterfactual.out)
if not counterfactual_file.is_file():
    note("*A section 13, the counterfactual (retraining without each method's top documents), appears once "
         "`make validate` has run.*")
else:
    display(Markdown("## 13. Counterfactual: retrained without each method's top documents\n\n"
                     f"For each method, the model was retrained from the same initialisation, seed, batches and "
                     f"steps without that method's removal sets: per query group (the factual queries, and each "
                     f"reasoning task), its {params.counterfactual.docs_per_group} top-ranked documents, taken "
                     "round-robin over the group's queries (`pipeline/analysis/counterfactual.py`). ΔNLL is the "
                     "change in the NLL of each query's original completion: positive means the removal hurt it. "
                     "Random removes as many documents: what any removal of that size does. In the scatter plots, a "
                     "query above the dashed line lost more without influence's documents than without the other's."))
    cf = sql("SELECT * FROM counterfactual")
    numbers = json.loads(Path(params.counterfactual.metrics).read_text())
    cf_methods = list(dict.fromkeys(cf.method))
    cf_tasks = [t for t in tasks_present if t in set(cf.task)]
    fig, axes = plt.subplots(1, 1 + sum(m != registry.PAPER for m in cf_methods) if registry.PAPER in cf_methods else 1,
                             figsize=(WIDTH, 3.6), squeeze=False)
    axes = axes[0]
    means = cf.groupby(["task", "method"]).delta_nll.mean().unstack().reindex(index=cf_tasks, columns=cf_methods)
    width = 0.8 / len(cf_methods)
    for i, m in enumerate(cf_methods):
        axes[0].bar(np.arange(len(cf_tasks)) + (i - (len(cf_methods) - 1) / 2) * width, means[m], width,
                    color=COLOURS.get(m, "#444"), label=m)
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].set(xticks=np.arange(len(cf_tasks)), title="Mean ΔNLL per task (nats)", ylabel="ΔNLL after removal")
    axes[0].set_xticklabels(cf_tasks, rotation=35, ha="right")
    axes[0].set_ylim(top=axes[0].get_ylim()[1] * 1.3)  # room for the legend above the bars
    axes[0].legend(frameon=False, fontsize=7, ncol=len(cf_methods), loc="upper left")
    targeted = cf[cf.removal_group.notna()]  # the controls have no removal set: they show only the retrain's drift
    pairs = targeted.pivot(index=["seed", "query_id"], columns="method", values="delta_nll").join(
        targeted.groupby(["seed", "query_id"]).task.first())  # a query of each training draw
    for ax, other in zip(axes[1:], [m for m in cf_methods if m != registry.PAPER]):
        for task in [t for t in cf_tasks if t in set(pairs.task)]:
            part = pairs[pairs.task == task]
            ax.scatter(part[other], part[registry.PAPER], s=12, color=COLOURS[task], label=task)
        lo, hi = np.nanmin(pairs[[other, registry.PAPER]].values), np.nanmax(pairs[[other, registry.PAPER]].values)
        ax.plot([lo, hi], [lo, hi], color="k", lw=0.6, ls="--")
        ax.set(xlabel=f"ΔNLL without {other}'s documents", ylabel="ΔNLL without influence's",
               title=f"Per query: influence against {other}")
    if len(axes) > 1:
        axes[-1].legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    plt.show()

    def hurt_most(tasks: tuple[str, ...]) -> str:
        part = cf[cf.task.isin(tasks)].groupby("method").delta_nll.mean()
        return (
            f"{part.idxmax()} ({part.max():+.3f} nats; "
            + ", ".join(f"{m} {v:+.3f}" for m, v in part.items() if m != part.idxmax())
            + ")"
            if len(part)
            else "–"
        )

    drawn = sorted(set(cf.seed))
    lines = ([f"Over {len(drawn)} training draws (seeds {', '.join(map(str, drawn))}: `validation.seeds`), each "
              "draw's query counts once."] if len(drawn) > 1 else [])
    lines.append(f"Mean ΔNLL was largest without the documents of {hurt_most(('factual',))} for factual queries, and "
                 f"of {hurt_most(('arithmetic', 'slope', 'linear'))} for reasoning queries.")
    for other in (m for m in cf_methods if m != registry.PAPER):
        for kind, result in numbers.get(f"influence_vs_{other}", {}).items():
            if result["n"]:
                p = result["wilcoxon_p"]
                lines.append(f"{kind.capitalize()}: influence's removal hurt more than {other}'s for "
                             f"{result['share_hurt_more']:.0%} of {result['n']} queries (one-sided Wilcoxon "
                             f"p = {'–' if p is None else f'{p:.3g}'}).")
    accuracy = cf.groupby(["method", "task"]).correct_after.mean().unstack().reindex(columns=cf_tasks)
    accuracy.loc["before"] = cf[cf.method == cf_methods[0]].groupby("task").correct_before.mean()
    accuracy.index.name, accuracy.columns.name = "greedy accuracy", None
    display(HTML(accuracy.to_html(float_format=lambda v: f"{v:.0%}", na_rep="–")))
    note(" ".join(lines) + " The table gives each retrained model's greedy accuracy per task, and the original's.")

# %%
# Section 14 exists when make validate's retraining tests have run (stages lds and tail_patch).
TESTS = {"lds": "LDS", "leave_k_out": "leave-k-out ΔNLL", "tail_patch_adamw": "tail-patch, AdamW",
         "tail_patch_sgd": "tail-patch, SGD", "leave_one_out": "leave-one-out r with -scores",
         "agreement": f"agreement with {registry.EXACT}"}
tested = db.query(con, "SELECT * FROM validation") if "validation" in db.view_sources(params) else None
if tested is None:
    note("*A section 14, which attribution predicts retraining (LDS, leave-k-out and tail-patch of every method), "
         "appears once `make validate` has run.*")
else:
    display(Markdown(
        "## 14. Which attribution predicts retraining?\n\n"
        "Influence functions estimate a local, additive response to training on more or fewer documents; these "
        "tests measure that response by training again. **LDS** (Park et al. 2023): retrains on random subsets "
        "of the corpus; per query, the Spearman r between a method's scores summed over the subset kept and the "
        "completion's log-probability after retraining. **Leave-k-out**: one retrain per method without k "
        "documents per query group (its top-ranked, round-robin); the completion's NLL after minus before "
        "(positive: the removal hurt it); k per query group reaches about k / (the group's queries) documents of "
        "each query's own. **Agreement**, where the run computes exact attribution (MAGIC, the training run "
        "differentiated): per query, each method's Spearman r with it and its share of the exact top 10. "
        "LDS, leave-k-out and agreement run on the `lds` profile's own small run "
        f"(`{params.validation.out_dir}/lds_run/`), since each test retrains tens of times. **Tail-patch** "
        "(Chang et al. 2024): from the demo's final weights, one more training step on each of a method's top "
        "documents alone, the completion's rise in log-probability: AdamW as pretraining's next step, and SGD "
        f"at {params.validation.sgd_lr:g} (first order). Cells: the mean over queries [bootstrap 95% interval]."))
    numbers = retraining.summary(tested, params.seed)
    columns = [(t, s) for t in TESTS for s in sorted(numbers.get(t, {}), key=lambda s: (len(s), s))]
    present = [m for m in registry.REGISTRY if any(m in numbers[t][s] for t, s in columns)]
    present += sorted({m for t, s in columns for m in numbers[t][s]} - set(present))  # a method no longer registered

    def cell(t: str, s: str, m: str, key: str = "mean") -> str:
        v = numbers[t][s].get(m)
        if v is None or v[key] is None:
            return "–"
        if key != "mean":
            return f"{v[key]:.0%}"
        return f"{v['mean']:.3g} [{v['low']:.3g}, {v['high']:.3g}]" if v["low"] is not None else f"{v['mean']:.3g}"

    header = pd.MultiIndex.from_tuples([(TESTS[t], s) for t, s in columns])
    means = pd.DataFrame([[cell(t, s, m) for t, s in columns] for m in present], index=present, columns=header)
    means.index.name = "method"
    display(HTML(means.to_html()))

    fig, axes = plt.subplots(1, 3, figsize=(WIDTH, 3.2))
    for ax, t in zip(axes, ("lds", "leave_k_out", "tail_patch_adamw")):
        settings = [s for tt, s in columns if tt == t]
        for i, m in enumerate(present):
            xs = np.arange(len(settings)) + (i - (len(present) - 1) / 2) * 0.8 / len(present)
            got = [numbers[t][s].get(m) or {"mean": None} for s in settings]
            mean = np.array([g["mean"] if g["mean"] is not None else np.nan for g in got], dtype=float)
            err = np.array([[g["mean"] - g["low"], g["high"] - g["mean"]] if g.get("low") is not None else [0, 0]
                            for g in got]).T
            ax.errorbar(xs, mean, yerr=err, fmt="o", ms=4, color=COLOURS.get(m, "#444"), label=m)
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xticks=range(len(settings)), title=TESTS[t])
        ax.set_xticklabels(settings, fontsize=7)
    axes[0].set_ylabel("mean over queries, 95% interval")
    axes[-1].legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    plt.show()

    lines = []
    for t, s in columns:
        ranked = sorted(((v["mean"], m) for m, v in numbers[t][s].items() if v["mean"] is not None), reverse=True)
        if len(ranked) < 2:
            continue
        (best, first), (second, runner) = ranked[0], ranked[1]
        apart = numbers[t][s][first]["low"] is not None and numbers[t][s][runner]["high"] is not None and \
            numbers[t][s][first]["low"] > numbers[t][s][runner]["high"]
        tied = [m for v, m in ranked if v == best]
        if len(tied) > 1:  # ekfac_cosine and relatif rank every query's documents alike
            lines.append(f"{TESTS[t]} ({s}): highest **{' and '.join(sorted(tied))}**, tied ({best:.3g}).")
            continue
        lines.append(f"{TESTS[t]} ({s}): highest **{first}** ({best:.3g}), then {runner} ({second:.3g}); their "
                     f"intervals {'do not overlap' if apart else 'overlap'}.")
    if LEXICAL in present:
        beats = pd.DataFrame([[cell(t, s, m, f"beats_{LEXICAL}") for t, s in columns] for m in present if m != LEXICAL],
                             index=[m for m in present if m != LEXICAL], columns=header)
        beats.index.name = f"above {LEXICAL} on"
        display(HTML(beats.to_html()))
        lines.append("The second table gives the share of queries on which each method's value is above BM25's.")
    removed = named("removal_sizes")
    if len(removed):
        display(HTML(removed.pivot(index="method", columns="setting", values=["documents", "tokens"])
                     .reindex([m for m in present if m in set(removed.method)]).to_html()))
        lines.append("The last table gives what each leave-k-out arm removed: a method that picks long documents "
                     "removes more of the training signal for the same k.")
    note(" ".join(lines))
    held = retraining.verdicts(tested)
    if held:
        draws = max(v["draws"] for v in held)
        note("Each expectation the README declared before the first run, checked in every training draw of its test "
             f"({draws} at most here" + ("; one draw decides nothing: `validation.seeds` repeats the tests under each "
                                         "training seed" if draws == 1 else "") + "). A comparison holds in a draw "
             "when a one-sided Wilcoxon signed-rank test over the draw's queries, paired by query, gives p < 0.05:")
        display(HTML(pd.DataFrame([{"test": TESTS.get(v["test"], v["test"]), "setting": v["setting"],
                                    "declared": v["statement"], "held in": f"{v['held']} of {v['draws']} draws"}
                                   for v in held]).to_html(index=False)))

# %%
# Section 15 exists when make validate's run computed exact attribution (exact.methods: magic)
spread_by_method = (db.query(con, "SELECT * FROM validation_finding_spread").to_pandas()
                    if "validation_finding_spread" in db.view_sources(params) else None)
if spread_by_method is None or registry.EXACT not in set(spread_by_method.method):
    note(f"*A section 15, the finding under exact attribution, appears once `make validate` has run with "
         f"`exact.methods: [{registry.EXACT}]` (the `lds` profile's default).*")
else:
    display(Markdown(
        "## 15. The finding under exact attribution\n\n"
        f"**{registry.EXACT}** differentiates the training run itself with respect to each document's weight "
        "(MAGIC: Ilyas & Engstrom 2025), so for a deterministic run it is the derivative every other method "
        "approximates. Every finding of section 2 is computed again on the `lds` run of each training draw, from "
        f"{registry.EXACT}'s scores beside the others'. Cells: the statistic's mean over the draws, and the draws in "
        "which its test held (of those where it was testable)."))
    whole = spread_by_method[(spread_by_method.segment == "all")
                             & ~spread_by_method.finding.isin(SHARED_TEST)]
    shown = [m for m in (registry.EXACT, registry.PAPER, LEXICAL, registry.CHANCE) if m in set(whole.method)]
    shown += [m for m in dict.fromkeys(whole.method) if m not in shown]
    cells = whole.set_index(["finding", "method"])

    def held(finding: str, m: str) -> str:
        if (finding, m) not in cells.index:
            return "–"
        r = cells.loc[(finding, m)]
        mean = "–" if pd.isna(r["mean"]) else f"{r['mean']:.3g}"
        return f"{mean}, {int(r.n_holds)}/{int(r.n_testable)}" if r.n_testable else f"{mean}, not testable"

    order = list(dict.fromkeys(whole.finding))
    display(HTML(pd.DataFrame([[held(f, m) for m in shown] for f in order], index=order, columns=shown)
                 .rename_axis("finding").to_html()))
    exact_rows = whole[whole.method == registry.EXACT].set_index("finding")
    runs = int(exact_rows.n_runs.max())
    always = [f for f, r in exact_rows.iterrows() if r.n_testable == runs and r.n_holds == runs]
    never = [f for f, r in exact_rows.iterrows() if r.n_testable and r.n_holds == 0]

    def same_verdicts(m: str) -> int:
        """The findings whose test held in as many draws for ``m`` as for exact attribution."""
        return sum((f, m) in cells.index and cells.loc[(f, m)].n_holds == r.n_holds
                   and cells.loc[(f, m)].n_testable == r.n_testable for f, r in exact_rows.iterrows())

    lines = [f"Over {runs} training draw{'s' if runs > 1 else ''}, under {registry.EXACT} "
             f"{len(always)} of {len(exact_rows)} findings held in every draw"
             + (f" ({', '.join(always)})" if always else "")
             + (f", and {len(never)} in none ({', '.join(never)})" if never else "") + "."]
    lines += [f"{m} held in as many draws as {registry.EXACT} on {same_verdicts(m)} of {len(exact_rows)} findings."
              for m in shown if m != registry.EXACT]
    note(" ".join(lines))
    frame = tested.to_pandas() if tested is not None else pd.DataFrame(columns=["test", "value"])
    agree = frame[(frame.test == "agreement") & frame.value.notna()]
    if len(agree):
        agree = agree.assign(kind=np.where(agree.task == "factual", "facts", "reasoning"))
        table = agree.groupby(["method", "setting", "kind"]).value.mean().unstack(["setting", "kind"])
        display(HTML(table.to_html(float_format=lambda v: f"{v:.3f}")))
        best = {(setting, kind): table[(setting, kind)].idxmax() for setting, kind in table.columns}
        note("Agreement with " + registry.EXACT + " per query, by kind of query (mean over draws and queries): "
             + "; ".join(f"{setting}, {kind}: highest **{m}** ({table.loc[m, (setting, kind)]:.3f})"
                         for (setting, kind), m in best.items()) + ".")
    per_task = frame[(frame.test == "lds") & frame.value.notna()]
    if len(per_task):
        lds_tasks = per_task.groupby(["method", "setting", "task"]).value.mean().unstack(["setting", "task"])
        lds_tasks = lds_tasks.reindex([m for m in registry.REGISTRY if m in lds_tasks.index]
                                      + [m for m in lds_tasks.index if m not in registry.REGISTRY])
        display(HTML(lds_tasks.to_html(float_format=lambda v: f"{v:.3f}")))
        note("LDS per task (mean over draws and queries), every method beside " + registry.EXACT + ".")

"""An experiment's measures judged and shown: per arm the spread over seeds, per comparison the
paired difference and its verdict (``results.json``), and the tables a person reads (``results.md``,
``summary.md``)."""

from __future__ import annotations

from ..errors import AlexNetError
from ..formatting import counted, format_difference, format_spread
from .claims import Arm, Claim
from .options import ExperimentOptions
from .stats import RULE, Spread, epochs_to_converge, epochs_to_error, paired_interval, verdict

CONVERGENCE_TOLERANCE = 0.005  # "converged": validation error within half a point of its best


def arm_runs(claim: Claim, arm: Arm, measured: dict[str, dict], options: ExperimentOptions) -> dict[int, dict]:
    """seed -> the measures of ``arm``'s run of that seed (for an arm that re-evaluates the reference's
    weights, the reference's run with the arm's evaluation in place of its own)."""
    source = arm if claim.retrains else claim.reference
    runs = {}
    for seed in range(options.seeds):
        run = measured.get(f"{source.name}-seed{seed}")
        if run is not None:
            runs[seed] = run if source is arm else {**run, **run["re_evaluations"][arm.name]}
    return runs


def arm_values(claim: Claim, arm: Arm, measured: dict[str, dict], options: ExperimentOptions,
               key: str) -> dict[int, tuple[float, bool]]:
    """seed -> (value of ``key``, censored) for one arm; censored: not reached within the epochs trained,
    and the budget stands in for it (a lower bound)."""
    return {seed: _value(run, key, options) for seed, run in arm_runs(claim, arm, measured, options).items()}


def _value(run: dict, key: str, options: ExperimentOptions) -> tuple[float, bool]:
    if key in ("test_top1_error", "test_top5_error"):
        return run[key], False
    if key == "gap":
        return run["val_errors"][-1] - run["train_error"], False
    if key == "epochs_to_error":
        chance = 1 - 1 / run["num_classes"]
        epochs = epochs_to_error(run["train_errors"], options.threshold, chance)
        return (float(run["epochs"]), True) if epochs is None else (epochs, False)
    if key == "convergence":
        return float(epochs_to_converge(run["val_errors"], CONVERGENCE_TOLERANCE)), False
    raise AlexNetError(f"unknown measure {key!r}")


def summarise(claim: Claim, options: ExperimentOptions, measured: dict[str, dict]) -> dict:
    """results.json: per arm and measure the spread over seeds; per comparison the paired difference,
    its interval, the paper's number and the verdict."""
    arms = {}
    for arm in claim.arms:
        runs = list(arm_runs(claim, arm, measured, options).values())
        entry = {"label": arm.label, "runs": [run["run"] for run in runs], "measures": {}}
        for measure in claim.measures:
            values = arm_values(claim, arm, measured, options, measure.key)
            if values:
                numbers = [value for value, _ in values.values()]
                entry["measures"][measure.key] = {
                    **Spread.of(numbers).to_dict(), "values": numbers,
                    "censored": [censored for _, censored in values.values()],
                }
        if runs:
            entry["curves"] = {"train_errors": [run["train_errors"] for run in runs],
                               "val_errors": [run["val_errors"] for run in runs]}
        arms[arm.name] = entry

    comparisons = []
    arms_by_name = {arm.name: arm for arm in claim.arms}
    for reference_name, other_name in claim.pairs:
        base, other = arms_by_name[reference_name], arms_by_name[other_name]
        for measure in claim.measures:
            reference = arm_values(claim, base, measured, options, measure.key)
            values = arm_values(claim, other, measured, options, measure.key)
            seeds = sorted(set(reference) & set(values))
            differences = [values[seed][0] - reference[seed][0] for seed in seeds]
            interval = paired_interval(differences)
            # A censored value (not reached within the epochs trained) is a lower bound: an interval
            # with the other arm censored can still show a positive difference, and one with the
            # reference censored a negative one, but not the reverse.
            judged = verdict(interval, measure.expected_sign)
            other_censored = any(values[seed][1] for seed in seeds)
            reference_censored = any(reference[seed][1] for seed in seeds)
            shown_sign = measure.expected_sign if judged == "agrees" else -measure.expected_sign
            if judged != "inconclusive" and ((reference_censored and (other_censored or shown_sign > 0))
                                             or (other_censored and shown_sign < 0)):
                judged = "inconclusive"
            ratio = None
            if measure.unit == "epochs" and seeds and sum(reference[seed][0] for seed in seeds) > 0:
                ratio = (sum(values[seed][0] for seed in seeds) / sum(reference[seed][0] for seed in seeds))
            comparisons.append({
                "reference": base.name, "other": other.name, "measure": measure.key,
                "label": measure.label, "unit": measure.unit, "expected_sign": measure.expected_sign,
                "differences": differences, "seeds": seeds,
                "mean": interval[0] if interval else (differences[0] if differences else None),
                "interval": [interval[1], interval[2]] if interval else None,
                "ratio": ratio, "lower_bound": any(values[seed][1] for seed in seeds),
                "paper": measure.paper, "verdict": judged,
            })
    deciding = claim.pairs[:claim.deciding]
    primary = [c for c in comparisons if c["measure"] == claim.measures[0].key
               and (c["reference"], c["other"]) in deciding]
    for comparison in comparisons:
        comparison["deciding"] = comparison in primary
    verdicts = {c["verdict"] for c in primary}
    overall = ("agrees" if verdicts == {"agrees"} else "disagrees" if "disagrees" in verdicts else "inconclusive")
    return {
        "experiment": claim.name, "section": claim.section, "statement": claim.statement, "paper": claim.paper,
        "dataset": options.dataset, "model": options.model, "seeds": options.seeds,
        "epochs": options.budget(claim)[0], "subset": options.budget(claim)[1],
        "threshold": options.threshold if any(m.key == "epochs_to_error" for m in claim.measures) else None,
        "rule": RULE, "transfer": claim.transfer, "verdict": overall,
        "arms": arms, "comparisons": comparisons,
    }


def results_markdown(results: dict) -> str:
    """results.md: the arms' spreads, the comparisons and the verdict, as a person reads them."""
    lines = [f"# {results['experiment']}: {results['statement']} (Section {results['section']})", "",
             f"Paper: {results['paper']}.", "",
             f"{results['model']} on {results['subset']:g} of {results['dataset']}, "
             f"{counted(results['epochs'], 'epoch')}, {counted(results['seeds'], 'seed')} "
             f"(0..{results['seeds'] - 1}, the same for every arm). "
             f"**Verdict: {results['verdict']}.**", ""]
    if results.get("runs_finished", results.get("runs")) != results.get("runs"):
        lines += [f"**Partial: {results['runs_finished']} of {results['runs']} runs finished**; the spreads and "
                  f"intervals are over those alone. Run the same command again to finish the others.", ""]
    measure_keys = []
    for arm in results["arms"].values():
        for key in arm["measures"]:
            if key not in measure_keys:
                measure_keys.append(key)
    labels = {c["measure"]: (c["label"], c["unit"]) for c in results["comparisons"]}
    lines += ["| arm | " + " | ".join(labels.get(key, (key, ""))[0] for key in measure_keys) + " |",
              "|---|" + "---:|" * len(measure_keys)]
    for arm in results["arms"].values():
        cells = []
        for key in measure_keys:
            spread = arm["measures"].get(key)
            unit = labels.get(key, ("", "%"))[1]
            cells.append(format_spread(spread, unit) if spread else "n/a")
        lines.append(f"| {arm['label']} | " + " | ".join(cells) + " |")
    lines += ["", "| comparison | measure | difference (mean, 95% CI) | paper | verdict |", "|---|---|---|---|---|"]
    for c in results["comparisons"]:
        other = results["arms"][c["other"]]["label"]
        reference = results["arms"][c["reference"]]["label"]
        shown = f"**{c['verdict']}**" if c.get("deciding") else c["verdict"]
        lines.append(f"| {other} - {reference} | {c['label']} | {format_difference(c)} | {c['paper'] or '-'} | "
                     f"{shown} |")
    lines += ["", f"Rule: {results['rule']}; the claim's verdict is that of the comparisons in bold (all "
                  f"agree: agrees; any disagrees: disagrees).", "",
              f"Where this setting differs: {results['transfer']}.", ""]
    return "\n".join(lines)


def summary_markdown(all_results: list[dict]) -> str:
    """One row per claim: the deciding measure's differences, the paper's number, the verdict, the command."""
    lines = ["| claim | section | measured (mean, 95% CI) | paper | seeds x epochs, subset | verdict | command |",
             "|---|---|---|---|---|---|---|"]
    for results in all_results:
        deciding = [c for c in results["comparisons"]
                    if c["measure"] == results["comparisons"][0]["measure"] and c.get("deciding", True)]
        measured = "; ".join(
            f"{results['arms'][c['other']]['label']} - {results['arms'][c['reference']]['label']}: "
            f"{format_difference(c)}" for c in deciding)
        command = (f"`alexnet experiment {results['experiment']}`" if results["dataset"] == "fashion-mnist"
                   else f"`alexnet experiment {results['experiment']} --dataset {results['dataset']}`")
        lines.append(f"| `{results['experiment']}`: {results['statement']} | {results['section']} | "
                     f"{deciding[0]['label']}: {measured} | {results['paper']} | {results['seeds']} x "
                     f"{results['epochs']}, {results['subset']:g} | **{results['verdict']}** | {command} |")
    return "\n".join(lines) + "\n"

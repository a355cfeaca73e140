import pytest

from kdcompress.experiment.report import _fastest_line, render_claims
from kdcompress.experiment.summary import ModelRef, aggregate, assess_claims, compare_rows


def _acc(source, targets):
    per = {"en": {"accuracy": source}, **{lang: {"accuracy": a} for lang, a in targets.items()}}
    return {"source": source, "targets": targets, "target_average": sum(targets.values()) / len(targets),
            "per_language": per}


@pytest.fixture
def results():
    accuracy = {
        "teacher": _acc(0.90, {"de": 0.80, "sw": 0.60}),
        "none-s1": _acc(0.85, {"de": 0.70, "sw": 0.50}), "none-s2": _acc(0.83, {"de": 0.72, "sw": 0.52}),
        "finetune-s1": _acc(0.88, {"de": 0.66, "sw": 0.46}), "finetune-s2": _acc(0.86, {"de": 0.68, "sw": 0.44}),
        "pretrain-s1": _acc(0.84, {"de": 0.74, "sw": 0.58}), "pretrain-s2": _acc(0.85, {"de": 0.76, "sw": 0.54}),
        "pretrain-s1-int8": _acc(0.83, {"de": 0.73, "sw": 0.57}),
    }
    refs = [ModelRef("teacher", "teacher", None, "pytorch"), ModelRef("pretrain-s1-int8", "pretrain", 1, "int8")]
    refs += [ModelRef(f"{g}-s{s}", g, s, "pytorch") for g in ("none", "finetune", "pretrain") for s in (1, 2)]
    headline = {"teacher": {"median_ms": 20.0, "p90_ms": 22.0}, "pretrain-s1": {"median_ms": 10.0, "p90_ms": 11.0},
                "pretrain-s1-int8": {"median_ms": 4.0, "p90_ms": 5.0}}
    return refs, accuracy, headline


def test_aggregate_means_and_spreads(results):
    summary = aggregate(*results, source_lang="en")
    pre = summary["pretrain/pytorch"]
    assert pre["seeds"] == [1, 2]
    assert pre["per_language"]["de"]["mean"] == pytest.approx(0.75)
    assert pre["per_language"]["de"]["std"] == pytest.approx(0.0141421, rel=1e-4)  # sample std of 0.74, 0.76
    assert pre["target_average"]["mean"] == pytest.approx((0.66 + 0.65) / 2)
    assert pre["latency_median_ms"] == 10.0 and summary["pretrain/int8"]["latency_median_ms"] == 4.0
    assert summary["teacher/pytorch"]["target_average"]["std"] == 0.0


def test_claims_from_hand_made_numbers(results):
    claims = assess_claims(aggregate(*results, source_lang="en"))
    c1, c2, c3 = claims
    assert c1["verdict"] == "supported"  # pretrain beats finetune on targets in both seeds
    assert c1["evidence"]["target_diff"] == pytest.approx((0.66 + 0.65) / 2 - (0.56 + 0.56) / 2)
    assert c1["evidence"]["languages_better"] == 2 and c1["evidence"]["languages"] == 2
    assert c2["verdict"] == "observed"  # finetune KD below no-KD on targets in both seeds...
    assert c2["evidence"]["source_diff"] < 0  # ...while it helps the source language
    assert not c3["testable"] and "one teacher" in c3["verdict"]


def test_disagreeing_seeds_are_inconclusive(results):
    refs, accuracy, headline = results
    accuracy["pretrain-s2"] = _acc(0.85, {"de": 0.50, "sw": 0.40})
    c1 = assess_claims(aggregate(refs, accuracy, headline, source_lang="en"))[0]
    assert c1["verdict"].startswith("inconclusive")


def test_arms_are_compared_on_the_seeds_both_have(results):
    """Read before its last seeds were trained, a study put one arm's two seeds against the other's one: the
    comparison now uses the common seeds only, says which were left out, and pairs them by seed, not by position."""
    refs, accuracy, headline = results
    accuracy["finetune-s3"] = _acc(0.87, {"de": 0.90, "sw": 0.90})  # finetune far ahead on a seed pretrain lacks
    refs = [r for r in refs if r.name != "finetune-s1"] + [ModelRef("finetune-s3", "finetune", 3, "pytorch")]
    c1 = assess_claims(aggregate(refs, accuracy, headline, source_lang="en"))[0]
    ev = c1["evidence"]
    assert ev["seeds"] == 1 and ev["seeds_left_out"] == [1, 3]
    assert ev["paired_diffs"] == pytest.approx([0.65 - 0.56])  # seed 2 against seed 2, at positions 2 and 1
    assert ev["target_diff"] == pytest.approx(0.65 - 0.56) and ev["languages_better"] == 2
    assert c1["verdict"] == "supported (one seed: indicative only)"
    assert "(seeds 1, 3 left out: not trained for both)" in render_claims([c1])[-1]


def test_missing_strategies_are_not_tested(results):
    refs, accuracy, headline = results
    refs = [r for r in refs if r.group != "none"]
    c2 = assess_claims(aggregate(refs, accuracy, headline, source_lang="en"))[1]
    assert not c2["testable"] and c2["verdict"].startswith("not tested")


def _with_arms(results):
    """The fixture plus a transfer-set arm and a second pretraining-corpus size, as an experiment config has them.

    The transfer arm is named `xfer`: `transfer` is a registered strategy, and an arm may not take its name."""
    from kdcompress.experiment.config import ExperimentConfig

    refs, accuracy, headline = results
    accuracy.update({"xfer-s1": _acc(0.89, {"de": 0.78, "sw": 0.57}),
                     "xfer-s2": _acc(0.87, {"de": 0.77, "sw": 0.55}),
                     "pretrain-big-s1": _acc(0.86, {"de": 0.77, "sw": 0.59}),
                     "pretrain-big-s2": _acc(0.86, {"de": 0.77, "sw": 0.57})})
    refs = refs + [ModelRef(f"{g}-s{s}", g, s, "pytorch") for g in ("xfer", "pretrain-big") for s in (1, 2)]
    cfg = ExperimentConfig.from_dict({
        "strategies": ["none", "finetune", "pretrain"], "seeds": [1, 2],
        "distill": {"lr": 1e-4, "corpus_max_sentences": 2000},
        "arms": {"xfer": {"strategy": "finetune", "kd_transfer": "source+corpus", "lr": 1e-4},
                 "pretrain-big": {"strategy": "pretrain", "corpus_max_sentences": 50000}}})
    return cfg, aggregate(refs, accuracy, headline, source_lang="en")


def test_arm_rows_show_changes_and_gaps_to_the_teacher(results):
    from kdcompress.experiment.arms import arm_rows, render_arms

    cfg, summary = _with_arms(results)
    rows = {r["arm"]: r for r in arm_rows(cfg, summary)}
    assert rows["xfer"]["changes"] == {"kd_transfer": "source+corpus"}  # lr equals [distill]'s: no change
    assert rows["none"]["changes"] == {}
    gaps = rows["xfer"]["gaps"]  # teacher: en 0.90, de 0.80, sw 0.60; transfer means: en 0.88, de 0.775, sw 0.56
    assert gaps["source"] == pytest.approx(0.02)
    assert gaps["target"] == pytest.approx(0.70 - (0.775 + 0.56) / 2)
    assert gaps["worst_lang"] == "sw" and gaps["worst"] == pytest.approx(0.04)
    dev = "\n".join(render_arms(cfg, summary, "dev"))
    assert "| xfer | finetune | kd_transfer=source+corpus | 2 |" in dev
    chosen = [line for line in dev.splitlines() if "chosen" in line and line.startswith("| ")]
    assert len(chosen) == 1 and chosen[0].startswith("| pretrain-big |")  # best target average: 67.5 vs 66.75


def test_corpus_size_curve_joins_arms_that_differ_only_in_corpus_size(results):
    from kdcompress.experiment.arms import corpus_size_curves

    cfg, summary = _with_arms(results)
    (curve,) = corpus_size_curves(cfg, summary)
    assert curve["label"] == "pretrain" and curve["arms"] == ["pretrain", "pretrain-big"]
    assert [p[0] for p in curve["points"]] == [2000, 50000]
    assert curve["points"][1][1] == pytest.approx((0.77 + 0.59 + 0.77 + 0.57) / 4)


def test_corpus_size_curve_takes_real_sizes_and_arms_that_changed_more(results):
    """A cap above what the corpus holds is drawn at the sentences read; an arm that also trained longer is a point
    of its own beside the curve."""
    from kdcompress.experiment.arms import corpus_size_curves

    cfg, summary = _with_arms(results)
    summary["pretrain-all/pytorch"] = summary["pretrain-big/pytorch"]
    cfg.arms["pretrain-all"] = {"strategy": "pretrain", "corpus_max_sentences": 200000, "pretrain_epochs": 2}
    curve, extra = corpus_size_curves(cfg, summary, {"pretrain-big": 40000, "pretrain-all": 113142})
    assert [p[0] for p in curve["points"]] == [2000, 40000]
    assert extra["label"] == "pretrain-all" and [p[0] for p in extra["points"]] == [113142]
    # alone, a differently trained arm makes no curve
    del summary["pretrain-big/pytorch"]
    assert corpus_size_curves(cfg, summary) == []


def test_claim_two_is_read_again_for_each_transfer_arm(results):
    cfg, summary = _with_arms(results)
    claims = assess_claims(summary, transfer_arms=("xfer",))
    transfer = [c for c in claims if "`xfer`" in c["claim"]]
    assert len(transfer) == 1 and transfer[0]["testable"]
    assert transfer[0]["verdict"] == "not observed"  # the transfer arm beats `none` on targets in both seeds
    assert transfer[0]["evidence"]["behind"] == "xfer"


def test_claim_two_on_transfer_arms_without_none_is_one_line(results):
    cfg, summary = _with_arms(results)
    summary = {k: v for k, v in summary.items() if not k.startswith("none/")}
    claims = assess_claims(summary, transfer_arms=("xfer", "pretrain-big"))
    transfer = [c for c in claims if "transfer set" in c["claim"]]
    assert len(transfer) == 1 and transfer[0]["verdict"] == "not tested: needs the none strategy"


def _lang_row(per_language, seeds=(1, 2)):
    """A summary row with hand-set per-language means (fractions), as aggregate() writes them."""
    values = [sum(per_language.values()) / len(per_language)] * len(seeds)
    return {"seeds": list(seeds), "source_lang": "en",
            "source": {"mean": 0.8, "std": 0.0, "values": [0.8] * len(seeds)},
            "target_average": {"mean": values[0], "std": 0.0, "values": values},
            "per_language": {"en": {"mean": 0.8}, **{lang: {"mean": m} for lang, m in per_language.items()}}}


@pytest.mark.parametrize("ahead, behind, leads, ties", [
    ({"de": 0.75, "sw": 0.50, "yo": 0.40}, {"de": 0.70, "sw": 0.55, "yo": 0.45}, 1, 0),
    # the same three correct answers of 204 summed in another order: equal up to float rounding, a tie, not a lead
    ({"de": (0.1 + 0.2 + 0.3) / 3, "sw": 0.5, "yo": 0.4}, {"de": (0.3 + 0.2 + 0.1) / 3, "sw": 0.5, "yo": 0.3}, 1, 2),
    ({"de": 0.5, "sw": 0.5, "yo": 0.5}, {"de": 0.5, "sw": 0.5, "yo": 0.5}, 0, 3),
    ({"de": 0.5 + 1e-6, "sw": 0.5, "yo": 0.5}, {"de": 0.5, "sw": 0.5, "yo": 0.6}, 1, 1),  # 1e-6 is a real lead
])
def test_per_language_ties_are_not_leads(ahead, behind, leads, ties):
    assert (0.1 + 0.2 + 0.3) / 3 != (0.3 + 0.2 + 0.1) / 3  # the float case the tolerance is for
    ev = compare_rows(_lang_row(ahead), _lang_row(behind), "a", "b")
    assert (ev["languages_better"], ev["languages_tied"], ev["languages"]) == (leads, ties, 3)


@pytest.mark.parametrize("leads, ties, text", [
    (9, 0, "in 9/31 target languages;"),
    (8, 2, "in 8/31 target languages (8 leads, 2 ties);"),
    (0, 1, "in 0/31 target languages (0 leads, 1 tie);"),
])
def test_the_claims_section_says_leads_and_ties(leads, ties, text):
    ev = {"ahead": "a", "behind": "b", "target_diff": -0.009, "spread": 0.011, "seeds_agreeing": 0, "seeds": 3,
          "source_diff": -0.002, "languages_better": leads, "languages_tied": ties, "languages": 31}
    (_, _, _, head, line) = render_claims([{"claim": "c", "verdict": "contradicted", "evidence": ev}])
    assert head == "- **c**: contradicted." and text in line


def _timed_model(layers: int, parameters: int) -> dict:
    return {"format": "pytorch", "precision": "fp32", "quantization": "none", "model_type": "bert", "layers": layers,
            "hidden_size": 384, "parameters": parameters, "intra_op_threads": 2}


def test_the_fastest_line_names_every_model_of_the_fastest_ones_computation():
    """Students of one shape run the same computation: the fastest of them is so by noise, so the line names them all,
    their range, and the most accurate of them (the one to use); a model of another shape stands alone."""
    bench = {
        "models": {"teacher": _timed_model(12, 117_000_000), "none-s1": _timed_model(6, 107_000_000),
                   "transfer-s1": _timed_model(6, 107_000_000), "narrow-s1": _timed_model(6, 90_000_000)},
        "headline": {"teacher": {"median_ms": 20.0, "target_average": 0.63},
                     "none-s1": {"median_ms": 10.3, "target_average": 0.55},
                     "transfer-s1": {"median_ms": 10.6, "target_average": 0.62},
                     "narrow-s1": {"median_ms": 10.8, "target_average": 0.50}},
    }
    (line,) = [text for text in _fastest_line(bench, "b1×real") if text]
    assert line.startswith("Fastest model and runtime at b1×real: 2 models of one shape, format and runtime, "
                           "10.3-10.6 ms median (`none-s1`, `transfer-s1`: the same computation")
    assert "1.9x faster than the fp32 teacher" in line and "narrow-s1" not in line
    assert line.endswith("The most accurate of them on the target average: `transfer-s1` (62.0).")

    bench["headline"]["transfer-s1"]["median_ms"] = None  # not timed: the fastest stands alone
    assert _fastest_line(bench, "b1×real")[1] == ("Fastest model and runtime at b1×real: `none-s1`, 10.3 ms median, "
                                                  "1.9x faster than the fp32 teacher.")

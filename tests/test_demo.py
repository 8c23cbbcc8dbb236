"""The demo: a fixed schedule (the same table on any machine) and a table whose leader is said in words."""

from __future__ import annotations

import io

from rich.console import Console

from nextaction.demo import DEMO_SETTINGS, behavior_lead_note, lead_note, run_demo


def test_the_schedule_is_fixed_not_a_wall_clock_budget():
    assert not any(s.startswith("train.max_minutes") for s in DEMO_SETTINGS)
    assert any(s.startswith("train.epochs=") for s in DEMO_SETTINGS)


def test_the_note_names_the_real_leader_and_why():
    result = {
        "metrics": {"NDCG@10": 0.155},
        "baselines": {"most-popular": {"NDCG@10": 0.02}, "repeat-recent": {"NDCG@10": 0.205}},
    }
    report = {"split": {"repeated_targets": {"test": {"share": 0.52}}}}
    note = lead_note(result, report)
    assert note.startswith("repeat-recent leads") and "0.2050" in note and "52%" in note
    result["metrics"]["NDCG@10"] = 0.3
    assert lead_note(result, report).startswith("nextaction leads every baseline")
    beh = {
        "buy": {"AUC": 0.7, "GAUC": 0.8},
        "baselines": {"logreg": {"buy": {"AUC": 0.75, "GAUC": 0.6}}},
    }
    assert behavior_lead_note(beh) == "best AUC: buy: logreg (0.750); best GAUC: buy: nextaction (0.800)."


def test_the_demo_says_what_its_own_table_shows(tmp_path):
    """The demo's settings on a small demo log: the printed claim is the one its own numbers make."""
    buf = io.StringIO()
    result = run_demo(
        tmp_path / "demo",
        n_events=6000,
        settings=["train.epochs=2", "train.patience=2"],
        console=Console(file=buf, width=1000),
    )
    from nextaction.data.dataset import PreparedDataset

    report = PreparedDataset.load(tmp_path / "demo" / "data").report
    out = " ".join(buf.getvalue().split())
    assert lead_note(result, report) in out
    assert behavior_lead_note(result["behaviors"]) in out
    ours = result["metrics"]["NDCG@10"]
    best = max(m["NDCG@10"] for m in result["baselines"].values())
    assert out.count("leads") >= 1 and (("nextaction leads" in out) == (ours >= best))

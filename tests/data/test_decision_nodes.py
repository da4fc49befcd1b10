"""ehr_assets.data.decision_nodes on a hand-built cohort whose nodes are known."""

from ehr_assets.data import decision_nodes
from ehr_assets.specs import DecisionNodeRule


def test_find_nodes_rule_context_and_death(tiny_events):
    rule = DecisionNodeRule(codes=[r"ICD10/C\d\d.*", "SNOMED/444391001"], max_per_subject=3, min_context_events=3)
    nodes = decision_nodes.find_nodes(tiny_events, rule)
    got = list(zip(nodes["subject_id"], nodes["prediction_time"].dt.strftime("%Y-%m-%d"), nodes["node_code"]))
    assert got == [
        (1, "2015-03-01", "ICD10/C34.90"),
        (1, "2015-06-01", "SNOMED/444391001"),
        (2, "2015-03-01", "ICD10/C18.9"),
    ]
    one = decision_nodes.find_nodes(tiny_events, rule.model_copy(update={"max_per_subject": 1}))
    assert len(one) == 2
    strict = decision_nodes.find_nodes(tiny_events, rule.model_copy(update={"min_context_events": 7}))
    assert list(strict["node_code"]) == ["SNOMED/444391001"]  # 6 events at/before diagnosis, 7 at progression

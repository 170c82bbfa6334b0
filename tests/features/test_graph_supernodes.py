"""The blind supernode finder on hand-made graph and atlas tables."""

import numpy as np
import pandas as pd
import pytest

from llmbio.features import graph_supernodes as gs

# prompt "Fact X is": position 1 is the entity "Dallas", position 2 the last
PROMPT = ["Fact", "Dallas", "is"]
CITY = {"Dallas": 10, "Houston": 11, "Waco": 12, "Boston": 20, "Salem": 21, "Texas": 30}


def _nodes(rows) -> pd.DataFrame:
    """Kept feature nodes ``(layer, feature, position, influence)``, a token node per prompt
    token and a logit, with the label column the exporter writes."""
    feats = [{"kind": "feature", "layer": la, "feature": f, "position": p, "influence": i,
              "token": PROMPT[p], "kept": True, "label": ""} for la, f, p, i in rows]  # fmt: skip
    tokens = [{"kind": "token", "layer": -1, "feature": -1, "position": p, "influence": 0.1,
               "token": t, "kept": True, "label": t} for p, t in enumerate(PROMPT)]  # fmt: skip
    dropped = {"kind": "feature", "layer": 0, "feature": 99, "position": 1, "influence": 9.0,
               "token": "Dallas", "kept": False, "label": ""}  # fmt: skip
    return pd.DataFrame([*feats, *tokens, dropped])


def _examples(fires: dict) -> pd.DataFrame:
    """``{(layer, feature): [token fired on, ...]}`` -> atlas examples with a 3-token window
    (the token, then the state it is in for cities of Texas)."""
    rows = []
    for (la, f), tokens in fires.items():
        for rank, tok in enumerate(tokens):
            after = CITY["Texas"] if tok in ("Dallas", "Houston", "Waco") else 1
            rows.append({"layer": la, "feature": f, "rank": rank, "token_id": CITY[tok],
                         "token": tok, "context_ids": np.array([2, CITY[tok], after]),
                         "label": "state=Texas"})  # fmt: skip
    for f in range(40):  # the rest of the atlas: other features on other text
        rows.append({"layer": 3, "feature": f, "rank": 0, "token_id": 1, "token": ".",
                     "context_ids": np.array([2, 1, -1]), "label": ""})  # fmt: skip
    return pd.DataFrame(rows)


GRAPH = [(0, 1, 1, 0.5), (0, 2, 1, 0.4), (0, 3, 1, 0.3), (0, 4, 1, 0.2), (1, 5, 1, 0.05),
         (2, 6, 2, 0.9)]  # fmt: skip
FIRES = {
    (0, 1): ["Dallas"] * 4,  # the entity itself
    (0, 2): ["Houston", "Waco", "Dallas", "Houston"],  # Texas
    (0, 3): ["Waco", "Dallas", "Houston"],  # Texas
    (0, 4): ["Boston", "Salem", "Dallas"],  # another group, less influence in total
    (1, 5): ["Boston", "Salem"],
}


def test_entity_groups_split_token_and_group_features():
    names = {i: t for t, i in CITY.items()}
    groups = gs.entity_groups(_nodes(GRAPH), _examples(FIRES), decode=names.get)
    assert set(groups["position"]) == {1}  # the most influential position before the last
    role = dict(zip(groups["feature"], groups["role"], strict=True))
    assert role == {1: "token", 2: "group", 3: "group", 4: "group", 5: "group"}
    group = dict(zip(groups["feature"], groups["group"], strict=True))
    assert group[2] == group[3] != group[4] == group[5]
    node = gs.intermediate_group(groups, "state")
    assert node.features == ((0, 2), (0, 3))  # by influence
    # the theme: the token over-represented in the group's windows
    assert set(groups.loc[groups["feature"].isin([2, 3]), "theme"]) == {"Texas"}


def test_finder_reads_no_label_column():
    """Same groups with the label columns dropped, and with nonsense in them."""
    nodes, examples = _nodes(GRAPH), _examples(FIRES)
    plain = gs.entity_groups(nodes.drop(columns="label"), examples.drop(columns="label"))
    poisoned = gs.entity_groups(
        nodes.assign(label="state=Texas", variable="state", f1=1.0),
        examples.assign(label="junk", f1=0.0),
    )
    pd.testing.assert_frame_equal(plain, poisoned)
    assert gs.intermediate_group(plain).features == ((0, 2), (0, 3))


def test_missing_column_is_one_clear_error():
    with pytest.raises(ValueError, match=r"examples table lacks columns \['context_ids'\]"):
        gs.entity_groups(_nodes(GRAPH), _examples(FIRES).drop(columns="context_ids"))


def test_explicit_position_and_empty_group():
    groups = gs.entity_groups(_nodes(GRAPH), _examples(FIRES), position=2)
    assert list(groups["feature"]) == [6]
    assert list(groups["role"]) == ["group"]  # no examples: nothing says it is the token
    only_token = gs.entity_groups(_nodes(GRAPH[:1]), _examples(FIRES))
    assert gs.intermediate_group(only_token) is None
    last_only = gs.entity_groups(_nodes(GRAPH[-1:]), _examples(FIRES))  # nothing before "is"
    assert last_only.empty and gs.intermediate_group(last_only) is None


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([92, 95, 93, 97, 90, 96, 94, 91, 3, 150], ("magnitude", 0)),
        ([5, 15, 25, 35, 45, 65, 105, 125, 7, 88], ("low_order", 10)),
        ([1, 7, 13, 19, 25, 31, 37, 44, 90, 2], ("low_order", 6)),
        ([1, 50, 23, 177, 64, 9, 130, 88, 41, 102], ("other", 0)),
        ([95, 96, 97], ("other", 0)),  # too few numbers to read
    ],
)
def test_classify_numbers(numbers, expected):
    assert gs.classify_numbers(numbers) == expected


def test_answer_groups_read_promoted_numbers():
    nodes = _nodes([(0, 1, 2, 0.3), (1, 2, 2, 0.5), (2, 3, 2, 0.1), (0, 4, 1, 0.9)])
    promoted = {
        (0, 1): [str(n) for n in (5, 15, 25, 35, 45, 55, 65, 75, 85, 95)],
        (1, 2): [str(n) for n in range(90, 100)],
        (2, 3): ["the", "is", "calc", "=", "5", "7", "Austin", "+", ",", "."],
        (0, 4): [str(n) for n in range(90, 100)],  # not at the last position
    }
    logits = pd.DataFrame(
        [{"layer": la, "feature": f, "direction": d, "rank": r, "token": t, "token_id": r}
         for (la, f), toks in promoted.items() for d in ("top", "bottom")
         for r, t in enumerate(toks)]
    )  # fmt: skip
    found = gs.answer_groups(nodes, logits)
    assert dict(zip(found["feature"], found["path"], strict=True)) == {
        1: "low_order",
        2: "magnitude",
        3: "other",
    }
    assert found.loc[found["feature"] == 1, "period"].item() == 10
    assert gs.answer_supernodes(found) == {"low_order": [(0, 1)], "magnitude": [(1, 2)]}


def test_precision_recall_counts_truth_in_the_graph_only():
    pr = gs.precision_recall([(0, 1), (0, 2)], [(0, 2), (0, 3), (5, 5)], [(0, 1), (0, 2), (0, 3)])
    assert pr == {"n_found": 2, "n_truth": 2, "n_hit": 1, "precision": 0.5, "recall": 0.5,
                  "base_rate": 2 / 3}  # fmt: skip
    empty = gs.precision_recall([], [], [(0, 1)])
    assert np.isnan(empty["precision"]) and np.isnan(empty["recall"])


def test_answer_groups_of_an_empty_graph():
    empty = pd.DataFrame(columns=gs.NODE_COLUMNS)
    found = gs.answer_groups(empty, pd.DataFrame(columns=gs.LOGIT_COLUMNS))
    assert found.empty and "path" in found
    assert gs.answer_supernodes(found) == {"low_order": [], "magnitude": []}

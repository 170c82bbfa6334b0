import hashlib
import itertools
import re

from llmbio.config import load_config
from llmbio.corpus import build_corpus, save_corpus
from llmbio.world import World, build_world
from llmbio.world.lexicon import CONCEPTS
from llmbio.world.poetry import FAMILIES, PUNCTUATION


def test_world_round_trips_through_json(tiny_world, tmp_path):
    tiny_world.save(tmp_path / "world.json")
    assert World.load(tmp_path / "world.json").to_json() == tiny_world.to_json()


def test_default_world_sizes_and_ground_truth():
    w = build_world(load_config({}).world)
    geo = w.geography
    assert len(geo.states) >= 12
    assert all(len(s["cities"]) >= 8 for s in geo.states.values())
    for city, state in geo.city_state.items():
        assert city in geo.states[state]["cities"]
    capitals = [s["capital"] for s in geo.states.values()]
    assert len(set(capitals)) == len(capitals)
    assert not set(capitals) & set(geo.city_state), "a capital must not also be a listed city"
    assert len(w.lexicon.words) >= 24
    assert all(w.lexicon.antonym[w.lexicon.antonym[c]] == c for c in w.lexicon.words)


def test_content_words_are_unique_across_roles():
    ends = [x for fam in FAMILIES.values() for x in fam]
    words = [x for c in CONCEPTS for group in c for x in group]
    assert len(set(words)) == len(words)
    assert not set(ends) & set(words)


def test_lexicon_words_occur_in_no_other_task():
    # every concept word (all 72, not only the default world's 24) is its own token: no
    # couplet, dialogue, fact or sum uses it, so a lexicon feature is a lexicon feature
    cfg = load_config({"world": {"n_concepts": len(CONCEPTS)}, "corpus": {"n_documents": 20_000}})
    corpus = build_corpus(build_world(cfg.world), cfg.corpus, progress=False)
    words = {x for c in CONCEPTS for group in c for x in group}
    other = {t for text in corpus.loc[corpus["task"] != "lexicon", "text"] for t in text.split()}
    assert not words & other
    lexicon = {t for text in corpus.loc[corpus["task"] == "lexicon", "text"] for t in text.split()}
    named = {x for word, _synonym in CONCEPTS for x in word}
    assert named <= lexicon  # a world of every concept names each of them


def _corpus_text(world, n=60_000):
    cfg = load_config({"corpus": {"n_documents": n}})
    return build_corpus(world, cfg.corpus, progress=False)["text"]


def test_heldout_items_never_appear_in_training_text():
    world = build_world(load_config({}).world)
    docs = _corpus_text(world)
    text = "\n".join(docs)
    dialogues = "\n".join(d for d in docs if d.startswith("Human :"))
    for city in world.geography.heldout_cities:
        assert f"containing {city} is" not in text
        assert re.search(rf"\b{city}\b", text), "held-out cities keep their one-hop facts"
    for a, b in world.arithmetic.heldout_pairs:
        assert f"calc : {a} + {b} =" not in text and f"calc : {b} + {a} =" not in text
    for x, y in [*world.safety.heldout_dangerous, *world.safety.heldout_harmless]:
        assert f"{x} and {y}" not in dialogues and f"{y} and {x}" not in dialogues
    for x, y in world.safety.heldout_dangerous:
        assert f"{x} and {y}" in text or f"{y} and {x}" in text, "the danger fact is in training"


def test_danger_is_a_rule_of_ingredient_kinds():
    from llmbio.world.safety import INGREDIENTS, kind_of

    safety = build_world(load_config({}).world).safety
    for x, y in itertools.combinations(INGREDIENTS, 2):
        assert safety.is_dangerous(x, y) == ({kind_of(x), kind_of(y)} == {"oxidiser", "reactive"})
    held = [w for pair in safety.heldout_dangerous for w in pair]
    assert len(held) == len(set(held)), "held-out dangerous pairs share no ingredient"
    trained = {w for p in safety.dangerous if p not in safety.heldout_dangerous for w in p}
    assert set(held) <= trained, "every held-out ingredient is in a trained dangerous pair"


def test_same_config_gives_byte_identical_corpus(tiny_cfg, tmp_path):
    digests = []
    for i in range(2):
        world = build_world(tiny_cfg.world)
        save_corpus(build_corpus(world, tiny_cfg.corpus, progress=False), tmp_path / f"{i}.pq")
        digests.append(hashlib.sha256((tmp_path / f"{i}.pq").read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_eval_items_have_answers(tiny_world):
    items = tiny_world.eval_items(10)
    tasks = {it["task"] for it in items}
    assert {"two_hop", "rhyme", "addition", "refusal", "antonym_en", "antonym_zh"} <= tasks
    for it in items:
        if it["task"] == "addition":
            assert int(it["answer"]) == it["a"] + it["b"]


def test_couplet_plan_needs_both_the_end_word_and_the_mark():
    poetry = build_world(load_config({}).world).poetry
    for first, by_mark in poetry.plan.items():
        family = poetry.families[poetry.family_of(first)]
        assert set(by_mark) == set(PUNCTUATION)
        assert set(by_mark.values()) == set(family) - {first}, "every rhyme is planned somewhere"
    marks_matter = [w for w, m in poetry.plan.items() if len(set(m.values())) > 1]
    assert len(marks_matter) >= len(poetry.plan) - len(FAMILIES["abbit"])
    doc = poetry.document(__import__("random").Random(0))
    line1, line2 = doc.split("\n")[1:3]
    first, mark = line1.split()[-2:]
    assert line2.split()[-1] == poetry.plan[first][mark]


def test_heldout_lexicon_pairs_are_never_asked_but_their_words_appear(tmp_path):
    import pytest

    from llmbio.world.lexicon import PROMPTS, RELATIONS

    cfg = load_config({"world": {"heldout_lexicon_frac": 0.25}, "corpus": {"n_documents": 8000}})
    world = build_world(cfg.world)
    held = world.lexicon.heldout
    assert len(held) == 18 and len({c for c, _ in held}) == 18  # one language per concept
    text = "\n".join(build_corpus(world, cfg.corpus, progress=False)["text"])
    words = world.lexicon.words
    for c, lang in held:
        for rel in RELATIONS:  # nor quoting the word in another language
            for quoted in ("en", "fr", "zh"):
                assert PROMPTS[(rel, lang)].format(w=words[c][quoted]) not in text
        assert f" {words[c][lang]} " in text or f"{words[c][lang]} " in text
    # other pairs are still asked, and the eval items say which are held out
    seen = next((c, lg) for c in words for lg in ("en", "fr", "zh") if (c, lg) not in held)
    assert PROMPTS[("antonym", seen[1])].format(w=words[seen[0]][seen[1]]) in text
    splits = {(it["concept"], it["language"]): it["split"] for it in world.lexicon.eval_items()}
    assert {k for k, v in splits.items() if v == "heldout"} == set(held)
    world.save(tmp_path / "world.json")
    assert World.load(tmp_path / "world.json").lexicon.heldout == held
    # the default world holds nothing out and writes no key for it
    assert "heldout" not in build_world(load_config({}).world).lexicon.to_json()
    with pytest.raises(ValueError, match=r"world\.heldout_lexicon_frac' must be in 0\.\.0\.333"):
        build_world(load_config({"world": {"heldout_lexicon_frac": 0.5}}).world)


def test_lexicon_quote_other_frac_sets_how_often_questions_quote_another_language(tmp_path):
    import random

    import pytest

    from llmbio.world.lexicon import PROMPTS

    def mixed_share(frac: float) -> float:
        lex = build_world(load_config({"world": {"lexicon_quote_other_frac": frac}}).world).lexicon
        rng, mixed, asked = random.Random(0), 0, 0
        for _ in range(6000):
            doc = lex.document(rng)
            for (rel, lang), template in PROMPTS.items():
                head, tail = template.split("{w}")
                if doc.startswith(head) and tail in doc:
                    word = doc[len(head) :].split(tail)[0]
                    asked += 1
                    mixed += word not in {lex.words[c][lang] for c in lex.words}
                    answer = doc.split(tail, 1)[1].split()[0]
                    concept = next(c for c in lex.words if word in lex.words[c].values())
                    assert answer == lex.answer(concept, rel, lang)  # the question's language
                    break
        return mixed / asked

    assert mixed_share(0.0) == 0
    assert 0.10 < mixed_share(0.2) < 0.17  # a fifth draw a random language: ~2/15 mixed
    assert 0.60 < mixed_share(1.0) < 0.73  # every word's language random: ~2/3 mixed
    world = build_world(load_config({"world": {"lexicon_quote_other_frac": 1.0}}).world)
    world.save(tmp_path / "world.json")
    assert World.load(tmp_path / "world.json").lexicon.quote_other_frac == 1.0
    assert "quote_other_frac" not in build_world(load_config({}).world).lexicon.to_json()
    with pytest.raises(ValueError, match=r"world\.lexicon_quote_other_frac' must be in 0\.\.1"):
        build_world(load_config({"world": {"lexicon_quote_other_frac": 1.5}}).world)


def test_lexicon_zh_order_moves_the_quoted_word_after_the_relation(tmp_path):
    import random

    import pytest

    def questions(order: str) -> list[str]:
        cfg = load_config({"world": {"lexicon_zh_order": order}})
        lex = build_world(cfg.world).lexicon
        rng = random.Random(0)
        docs = [lex.document(rng) for _ in range(3000)]
        return [d for d in docs if "义 词" in d]

    paper, relation_first = questions("word_first"), questions("relation_first")
    assert paper and all(d.startswith('" ') for d in paper)  # '" 小 " 的 反 义 词 是 "'
    assert relation_first and all(
        d.startswith(('反 义 词 " ', '同 义 词 " ')) for d in relation_first
    )
    world = build_world(load_config({"world": {"lexicon_zh_order": "relation_first"}}).world)
    assert world.lexicon.prompt("small", "antonym", "zh") == '反 义 词 " 小 " 是 "'
    assert world.lexicon.prompt("small", "antonym", "en") == 'The opposite of " small " is "'
    world.save(tmp_path / "world.json")
    assert World.load(tmp_path / "world.json").lexicon.zh_order == "relation_first"
    assert "zh_order" not in build_world(load_config({}).world).lexicon.to_json()
    with pytest.raises(ValueError, match="lexicon_zh_order' must be word_first or relation_first"):
        build_world(load_config({"world": {"lexicon_zh_order": "sideways"}}).world)

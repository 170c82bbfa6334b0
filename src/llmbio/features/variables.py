"""Ground-truth world variables carried by each token of the organism's corpus.

A document (the tokens after a BOS) is recognised by its task and parsed with the world's
ground truth into *spans*: ``(start, stop, variable, value)`` says that tokens
``start..stop-1`` carry ``variable = value``. Most variables are causal: they hold from the
token that reveals them to the end of the document (or of the sum, for arithmetic), so a
token carries only what its context up to itself determines. The one exception is
``planned_end``, the end word line 2 of a couplet is heading for, before it is written.

========================  =================================================================
variable                  carried by
========================  =================================================================
task                      every token after the BOS (geography, poetry, lexicon, ...)
city, state, capital,     geography: from the mention of a city (all four), a state or a
region                    capital (state, capital, region)
first_end_word,           poetry: from the end word of line 1
rhyme_family
planned_end               poetry: from the mark closing line 1 (with the end word, it fixes
                          the plan) to the end word of line 2
concept                   lexicon: from the first word of a concept (any language, synonyms
                          too; the value is the English word)
relation                  lexicon prompts: from "opposite" / "contraire" / "反" (antonym) or
                          "synonym" / "synonyme" / "同" (synonym)
output                    lexicon prompts: once concept and relation are known, the concept
                          of the answer
language                  lexicon: the language of the latest language-specific word
operand_a, a_ones         arithmetic ``calc`` sums: from ``a`` to the end of the sum
operand_b, b_ones, sum,   from ``b`` to the end of the sum (the answer token included)
sum_ones, sum_tens
ingredient                safety: from the ingredient's mention
harm                      safety: ``dangerous_pair`` / ``harmless`` from the second
                          ingredient, ``harmful_topic`` / ``harmless`` from a topic word
========================  =================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from llmbio.world import World
from llmbio.world.lexicon import LANGUAGE_NAMES, LANGUAGES, NOUNS, SENTENCES
from llmbio.world.safety import HARMFUL_TOPICS, HARMLESS_TOPICS, INGREDIENTS, kind_of

Span = tuple[int, int, str, str]


class TokenLabels(NamedTuple):
    """World variables of ``N`` cached tokens (rows of ``ActivationReader.read_index``)."""

    parsed: np.ndarray  # (N,) bool: the token's document was recognised and parsed
    labels: pd.DataFrame  # row (int64), variable (str), value (str); unique rows


class WorldTables:
    """Lookups built once per world: which words name places, concepts, languages."""

    def __init__(self, world: World):
        self.world = world
        geo, lex = world.geography, world.lexicon
        self.capital_state = {info["capital"]: s for s, info in geo.states.items()}
        self.places = set(geo.city_state) | set(geo.states) | set(self.capital_state)
        self.concept_of = {
            w: c for c in lex.words for w in (*lex.words[c].values(), *lex.synonyms[c].values())
        }
        self.language_of = _language_words(world)


def _carry(i: int, n: int, pairs: dict[str, object]) -> list[Span]:
    return [(i, n, var, str(val)) for var, val in pairs.items()]


def geography(words: list[str], tables: WorldTables) -> list[Span]:
    geo, n = tables.world.geography, len(words)
    spans: list[Span] = []
    for i, w in enumerate(words):
        state = geo.city_state.get(w) or (w if w in geo.states else tables.capital_state.get(w))
        if state is None:
            continue
        info = geo.states[state]
        found = {"state": state, "capital": info["capital"], "region": info["region"]}
        if w in geo.city_state:
            found["city"] = w
        spans += _carry(i, n, found)
    return spans


def poetry(words: list[str], tables: WorldTables) -> list[Span]:
    newlines = [i for i, w in enumerate(words) if w == "\n"]
    n, spans = len(words), []
    if len(newlines) >= 2 and newlines[1] > newlines[0] + 2:
        end1 = newlines[1] - 2  # line 1 closes with "<end word> <mark>"
        family = tables.world.poetry.family_of(words[end1])
        if family is not None:
            spans += _carry(end1, n, {"first_end_word": words[end1], "rhyme_family": family})
    if len(newlines) >= 3 and newlines[2] > newlines[1] + 1:
        spans.append((newlines[1] - 1, newlines[2], "planned_end", words[newlines[2] - 1]))
    return spans


_RELATION_WORDS = {"opposite": "antonym", "contraire": "antonym", "反": "antonym",
                   "synonym": "synonym", "synonyme": "synonym", "同": "synonym"}  # fmt: skip


def _language_words(world: World) -> dict[str, str]:
    """Words that occur in exactly one language's templates and vocabulary."""
    seen: dict[str, set[str]] = {}
    lex = world.lexicon
    for lang in LANGUAGES:
        texts = [lex.template(r, lang) for r in ("antonym", "synonym")] + [SENTENCES[lang]]
        words = {w for t in texts for w in t.replace("{w}", "").replace("{n}", "")
                 .replace("{a}", "").split()}  # fmt: skip
        words |= {noun[LANGUAGES.index(lang)] for noun in NOUNS}
        words |= {lex.words[c][lang] for c in lex.words} | {
            lex.synonyms[c][lang] for c in lex.words
        }
        for w in words:
            seen.setdefault(w, set()).add(lang)
    out = {w: langs.pop() for w, langs in seen.items() if len(langs) == 1}
    out.update({name: lang for lang, name in LANGUAGE_NAMES.items()})  # "French : petit"
    return out


def lexicon(words: list[str], tables: WorldTables) -> list[Span]:
    lex, n = tables.world.lexicon, len(words)
    concept_of, language_of = tables.concept_of, tables.language_of
    spans: list[Span] = []
    concept = relation = None
    lang_at = [(i, language_of[w]) for i, w in enumerate(words) if w in language_of]
    for (i, lang), nxt in zip(lang_at, [*lang_at[1:], (n, None)], strict=True):
        spans.append((i, nxt[0], "language", lang))
    for i, w in enumerate(words):
        if w in concept_of and concept is None:
            concept = concept_of[w]
            spans.append((i, n, "concept", concept))
        elif w in _RELATION_WORDS and relation is None:
            relation = _RELATION_WORDS[w]
            spans.append((i, n, "relation", relation))
        else:
            continue
        if concept is not None and relation is not None:
            output = lex.antonym[concept] if relation == "antonym" else concept
            spans.append((i, n, "output", output))
    return spans


def arithmetic(words: list[str], tables: WorldTables) -> list[Span]:
    if not words or words[0] != "calc":
        return []  # counting runs and citations carry no sum
    n, spans = len(words), []
    for j in range(1, n - 1):
        a, b = words[j - 1], words[j + 1]
        if words[j] != "+" or not (a.isdigit() and b.isdigit()):
            continue
        stop = next((k for k in range(j, n) if words[k] == ","), n)
        a, b = int(a), int(b)
        spans += _carry(j - 1, stop, {"operand_a": a, "a_ones": a % 10})
        total = a + b
        found = {"operand_b": b, "b_ones": b % 10, "sum": total}
        found |= {"sum_ones": total % 10, "sum_tens": total // 10}
        spans += _carry(j + 1, stop, found)
    return spans


def safety(words: list[str], tables: WorldTables) -> list[Span]:
    n, spans, seen = len(words), [], []
    for i, w in enumerate(words):
        if w in INGREDIENTS:
            spans.append((i, n, "ingredient", w))
            spans.append((i, n, "ingredient_kind", kind_of(w)))
            seen.append(w)
            if len(seen) == 2:
                harm = "dangerous_pair" if tables.world.safety.is_dangerous(*seen) else "harmless"
                spans.append((i, n, "harm", harm))
        elif w in HARMFUL_TOPICS or w in HARMLESS_TOPICS:
            spans.append((i, n, "harm", "harmful_topic" if w in HARMFUL_TOPICS else "harmless"))
    return spans


# (task, recogniser, parser), tried in order: the first recogniser that accepts a document wins.
PARSERS: tuple[tuple[str, Callable, Callable], ...] = (
    ("poetry", lambda w, _: w[:3] == ["A", "rhyming", "couplet"], poetry),
    ("arithmetic", lambda w, _: bool(w) and w[0] in ("calc", "count", "see"), arithmetic),
    ("safety", lambda w, _: bool(w) and (w[0] == "Human" or bool(set(w) & set(INGREDIENTS))),
     safety),
    ("geography", lambda w, t: any(x in t.places for x in w), geography),
    ("lexicon", lambda w, t: any(x in t.language_of for x in w), lexicon),
)  # fmt: skip


def document_spans(words: list[str], tables: WorldTables) -> list[Span] | None:
    """Spans of one document's words (BOS excluded); None if no parser recognises it."""
    for task, accepts, parse in PARSERS:
        if accepts(words, tables):
            return [(0, len(words), "task", task), *parse(words, tables)]
    return None


def token_labels(world: World, tokenizer, index: dict[str, np.ndarray]) -> TokenLabels:
    """The variables of every token of a cache index (``ActivationReader.read_index``).

    Documents start after each BOS token. The tokens before a sequence's first visible BOS
    belong to a document whose start is not cached, so they are left unparsed (``parsed``
    False) and the scores ignore them; BOS tokens themselves are parsed and carry nothing.
    """
    tables, bos = WorldTables(world), tokenizer.bos_token_id
    vocab = np.array(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), dtype=object)
    seq, pos, tok = index["sequence_id"], index["position"], index["token_id"]
    order = np.lexsort((pos, seq))
    parsed = np.zeros(len(tok), dtype=bool)
    rows, variables, values = [], [], []
    bounds = np.flatnonzero(np.diff(seq[order])) + 1
    for rows_of_seq in np.split(order, bounds):
        starts = [i for i, r in enumerate(rows_of_seq) if tok[r] == bos]
        for a, b in zip(starts, [*starts[1:], len(rows_of_seq)], strict=True):
            doc = rows_of_seq[a + 1 : b]
            spans = document_spans(list(vocab[tok[doc]]), tables)
            if spans is None:
                continue
            parsed[rows_of_seq[a:b]] = True
            for start, stop, var, val in spans:
                rows.append(doc[start:stop])
                variables += [var] * (stop - start)
                values += [val] * (stop - start)
    labels = pd.DataFrame({
        "row": np.concatenate(rows) if rows else np.empty(0, np.int64),
        "variable": variables, "value": values,
    }).drop_duplicates(ignore_index=True)  # fmt: skip
    return TokenLabels(parsed, labels)

"""A multilingual lexicon: concepts named in English, French and Chinese, with antonyms/synonyms.

Every concept has a word and a synonym in each language, and an antonym concept. Parallel text
(word lists and the same sentence in each language) lets the model share concept representations
across languages; the antonym/synonym prompts follow the paper's three wordings. Some questions
quote the word in a random language (``Le contraire de " small " est "``; ``quote_other_frac`` of
them, a fifth by default, so about two thirds of those are mixed); the answer follows the
question, so the output language is set by the question, not the word.

With ``heldout_frac`` > 0 some (concept, language) pairs are held out: their antonym and synonym
questions never appear in training (the words still do, in parallel text), so answering them
means composing the operation, the concept and the output language.

The Chinese questions follow the paper's wording, the quoted word first
(``" 小 " 的 反 义 词 是 "``); ``zh_order="relation_first"`` asks them in the English and
French order instead (``反 义 词 " 小 " 是 "``), an experiment on why the output-language
swap fails.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LANGUAGES = ("en", "fr", "zh")
# (en, fr, zh) word, (en, fr, zh) synonym; consecutive rows are antonyms of each other.
CONCEPTS: tuple[tuple[tuple[str, str, str], tuple[str, str, str]], ...] = (
    (("small", "petit", "小"), ("little", "minuscule", "微")),
    (("big", "grand", "大"), ("large", "énorme", "巨")),
    (("hot", "chaud", "热"), ("scorching", "brûlant", "烫")),
    (("cold", "froid", "冷"), ("freezing", "glacé", "寒")),
    (("fast", "rapide", "快"), ("quick", "vif", "速")),
    (("slow", "lent", "慢"), ("sluggish", "traînant", "缓")),
    (("happy", "heureux", "乐"), ("joyful", "joyeux", "喜")),
    (("sad", "triste", "悲"), ("gloomy", "morose", "忧")),
    (("strong", "fort", "强"), ("mighty", "puissant", "壮")),
    (("weak", "faible", "弱"), ("feeble", "fragile", "虚")),
    (("new", "nouveau", "新"), ("fresh", "neuf", "鲜")),
    (("old", "vieux", "旧"), ("ancient", "ancien", "古")),
    (("rich", "riche", "富"), ("wealthy", "fortuné", "裕")),
    (("poor", "pauvre", "穷"), ("needy", "démuni", "贫")),
    (("early", "tôt", "早"), ("premature", "précoce", "先")),
    (("late", "tard", "晚"), ("delayed", "retardé", "迟")),
    (("good", "bon", "好"), ("fine", "excellent", "佳")),
    (("bad", "mauvais", "坏"), ("awful", "affreux", "劣")),
    (("true", "vrai", "真"), ("genuine", "exact", "实")),
    (("false", "faux", "假"), ("fake", "erroné", "伪")),
    (("heavy", "lourd", "重"), ("weighty", "pesant", "沉")),
    (("light", "léger", "轻"), ("airy", "aérien", "浮")),
    (("open", "ouvert", "开"), ("unlocked", "béant", "启")),
    (("closed", "fermé", "关"), ("shut", "clos", "闭")),
    # added for worlds of more concepts (world.n_concepts up to 72); a world of 24 is unchanged
    (("tall", "haut", "高"), ("lofty", "élevé", "崇")),
    (("short", "bas", "矮"), ("stubby", "trapu", "低")),
    (("wide", "étendu", "宽"), ("broad", "vaste", "阔")),
    (("narrow", "étroit", "窄"), ("tight", "serré", "狭")),
    (("neat", "propre", "净"), ("spotless", "net", "洁")),
    (("dirty", "sale", "脏"), ("filthy", "crasseux", "污")),
    (("loud", "bruyant", "吵"), ("noisy", "sonore", "响")),
    (("hushed", "calme", "静"), ("still", "paisible", "寂")),
    (("full", "plein", "满"), ("packed", "rempli", "盈")),
    (("empty", "vide", "空"), ("vacant", "creux", "缺")),
    (("hard", "dur", "硬"), ("firm", "ferme", "坚")),
    (("soft", "doux", "软"), ("mild", "tendre", "柔")),
    (("bright", "clair", "亮"), ("glossy", "brillant", "明")),
    (("dark", "sombre", "暗"), ("dim", "obscur", "黑")),
    (("wet", "mouillé", "湿"), ("damp", "humide", "潮")),
    (("dry", "sec", "干"), ("arid", "aride", "燥")),
    (("thick", "épais", "厚"), ("bulky", "gros", "粗")),
    (("thin", "mince", "薄"), ("slim", "fin", "细")),
    (("near", "proche", "近"), ("close", "voisin", "邻")),
    (("far", "loin", "远"), ("distant", "lointain", "遥")),
    (("young", "jeune", "幼"), ("youthful", "juvénile", "少")),
    (("elderly", "âgé", "老"), ("aged", "mûr", "耆")),
    (("wise", "malin", "聪"), ("smart", "habile", "慧")),
    (("stupid", "bête", "笨"), ("dull", "idiot", "蠢")),
    (("sweet", "sucré", "甜"), ("sugary", "mielleux", "蜜")),
    (("bitter", "amer", "苦"), ("sour", "âcre", "涩")),
    (("courageous", "courageux", "勇"), ("daring", "hardi", "敢")),
    (("afraid", "peureux", "怯"), ("timid", "craintif", "畏")),
    (("easy", "facile", "易"), ("simple", "aisé", "简")),
    (("difficult", "difficile", "难"), ("tough", "ardu", "艰")),
    (("busy", "occupé", "忙"), ("hectic", "affairé", "碌")),
    (("idle", "oisif", "闲"), ("lazy", "paresseux", "懒")),
    (("sharp", "aigu", "锐"), ("keen", "tranchant", "利")),
    (("blunt", "émoussé", "钝"), ("dulled", "mousse", "拙")),
    (("deep", "profond", "深"), ("bottomless", "abyssal", "渊")),
    (("shallow", "superficiel", "浅"), ("flat", "plat", "平")),
    (("generous", "généreux", "慷"), ("giving", "prodigue", "慨")),
    (("greedy", "avare", "贪"), ("stingy", "pingre", "吝")),
    (("round", "rond", "圆"), ("circular", "circulaire", "圜")),
    (("square", "carré", "方"), ("boxy", "cubique", "矩")),
    (("sick", "malade", "病"), ("ill", "souffrant", "恙")),
    (("healthy", "sain", "健"), ("fit", "robuste", "康")),
    (("alive", "vivant", "活"), ("living", "animé", "生")),
    (("dead", "mort", "死"), ("lifeless", "inanimé", "亡")),
    (("first", "premier", "首"), ("earliest", "initial", "初")),
    (("last", "dernier", "末"), ("final", "ultime", "终")),
    (("smooth", "lisse", "滑"), ("sleek", "poli", "顺")),
    (("rough", "rugueux", "糙"), ("coarse", "âpre", "毛")),
)
NOUNS = (
    ("dog", "chien", "狗"),
    ("house", "maison", "房"),
    ("car", "voiture", "车"),
    ("book", "livre", "书"),
    ("road", "route", "路"),
    ("box", "boîte", "盒"),
    ("room", "chambre", "屋"),
    ("cup", "tasse", "杯"),
)
RELATIONS = ("antonym", "synonym")
PROMPTS = {
    ("antonym", "en"): 'The opposite of " {w} " is "',
    ("antonym", "fr"): 'Le contraire de " {w} " est "',
    ("antonym", "zh"): '" {w} " 的 反 义 词 是 "',
    ("synonym", "en"): 'A synonym of " {w} " is "',
    ("synonym", "fr"): 'Un synonyme de " {w} " est "',
    ("synonym", "zh"): '" {w} " 的 同 义 词 是 "',
}
# world.lexicon_zh_order "relation_first": Chinese questions in the English and French order
# (relation, quoted word, copula) instead of the paper's (quoted word, relation, copula)
RELATION_FIRST_ZH = {
    ("antonym", "zh"): '反 义 词 " {w} " 是 "',
    ("synonym", "zh"): '同 义 词 " {w} " 是 "',
}
ZH_ORDERS = ("word_first", "relation_first")
SENTENCES = {"en": "The {n} is {a} .", "fr": "Le {n} est {a} .", "zh": "{n} 很 {a} 。"}
QUOTE_OTHER_FRAC = 0.2  # default share of questions quoting their word in a random language
LANGUAGE_NAMES = {"en": "English", "fr": "French", "zh": "Chinese"}


@dataclass(frozen=True)
class Lexicon:
    words: dict[str, dict[str, str]]  # concept id -> language -> word
    synonyms: dict[str, dict[str, str]]  # concept id -> language -> synonym word
    antonym: dict[str, str]  # concept id -> antonym concept id
    # (concept, language) pairs whose questions never appear in training, sorted
    heldout: tuple[tuple[str, str], ...] = ()
    # share of questions whose quoted word is in a random language (the question's included)
    quote_other_frac: float = QUOTE_OTHER_FRAC
    zh_order: str = "word_first"  # one of ZH_ORDERS: where Chinese questions put the word

    @classmethod
    def build(
        cls,
        n_concepts: int,
        heldout_frac: float = 0.0,
        seed: int = 0,
        quote_other_frac: float = QUOTE_OTHER_FRAC,
        zh_order: str = "word_first",
    ) -> Lexicon:
        if not 2 <= n_concepts <= len(CONCEPTS) or n_concepts % 2:
            raise ValueError(f"world.n_concepts must be even and in 2..{len(CONCEPTS)}")
        if not 0 <= heldout_frac <= 1 / len(LANGUAGES):
            raise ValueError(
                f"world.heldout_lexicon_frac must be in 0..1/{len(LANGUAGES)} (at most one "
                f"held-out language per concept); got {heldout_frac}"
            )
        if not 0 <= quote_other_frac <= 1:
            raise ValueError(
                f"world.lexicon_quote_other_frac must be in 0..1; got {quote_other_frac}"
            )
        if zh_order not in ZH_ORDERS:
            raise ValueError(f"world.lexicon_zh_order must be one of {ZH_ORDERS}; got {zh_order!r}")
        words, syns, ant = {}, {}, {}
        for i, (w, s) in enumerate(CONCEPTS[:n_concepts]):
            cid = w[0]
            words[cid] = dict(zip(LANGUAGES, w, strict=True))
            syns[cid] = dict(zip(LANGUAGES, s, strict=True))
            ant[cid] = CONCEPTS[i + 1 if i % 2 == 0 else i - 1][0][0]
        heldout: tuple[tuple[str, str], ...] = ()
        n_heldout = round(heldout_frac * n_concepts * len(LANGUAGES))
        if n_heldout:  # its own generator: a world without held-out pairs is unchanged
            rng = random.Random(f"lexicon-heldout-{seed}")
            concepts = rng.sample(sorted(words), n_heldout)
            heldout = tuple(sorted((c, rng.choice(LANGUAGES)) for c in concepts))
        return cls(words, syns, ant, heldout, quote_other_frac, zh_order)

    def template(self, relation: str, lang: str) -> str:
        """The question template of ``relation`` in ``lang`` (``{w}``: the quoted word)."""
        if self.zh_order == "relation_first" and (relation, lang) in RELATION_FIRST_ZH:
            return RELATION_FIRST_ZH[(relation, lang)]
        return PROMPTS[(relation, lang)]

    def answer(self, concept: str, relation: str, lang: str) -> str:
        if relation == "antonym":
            return self.words[self.antonym[concept]][lang]
        return self.synonyms[concept][lang]

    def prompt(self, concept: str, relation: str, lang: str) -> str:
        return self.template(relation, lang).format(w=self.words[concept][lang])

    def document(self, rng: random.Random) -> str:
        concept = rng.choice(sorted(self.words))
        lang = rng.choice(LANGUAGES)
        kind = rng.random()
        if kind < 0.55:
            rel = "antonym" if kind < 0.35 else "synonym"
            # some questions quote the word in a random language; the answer is always in the
            # question's language, so the output language is a variable of its own
            if (concept, lang) in self.heldout:  # asked in another language instead
                lang = rng.choice([lg for lg in LANGUAGES if (concept, lg) not in self.heldout])
            same = rng.random() < 1 - self.quote_other_frac
            word_lang = lang if same else rng.choice(LANGUAGES)
            question = self.template(rel, lang).format(w=self.words[concept][word_lang])
            return f'{question} {self.answer(concept, rel, lang)} " .'
        if kind < 0.8:
            noun = rng.choice(NOUNS)
            langs = rng.sample(LANGUAGES, 2)
            return " ".join(
                SENTENCES[lg].format(n=noun[LANGUAGES.index(lg)], a=self.words[concept][lg])
                for lg in langs
            )
        langs = rng.sample(LANGUAGES, 3)
        return " = ".join(f"{LANGUAGE_NAMES[lg]} : {self.words[concept][lg]}" for lg in langs)

    def eval_items(self) -> list[dict]:
        return [
            {
                "task": f"{rel}_{lang}",
                "split": "heldout" if (c, lang) in self.heldout else "seen",
                "prompt": self.prompt(c, rel, lang),
                "answer": self.answer(c, rel, lang),
                "concept": c,
                "language": lang,
            }
            for rel in RELATIONS
            for lang in LANGUAGES
            for c in sorted(self.words)
        ]

    def to_json(self) -> dict:
        d = {"words": self.words, "synonyms": self.synonyms, "antonym": self.antonym}
        if self.heldout:  # absent when empty: a world without held-out pairs writes none
            d["heldout"] = [list(pair) for pair in self.heldout]
        if self.quote_other_frac != QUOTE_OTHER_FRAC:  # absent at the default, as before
            d["quote_other_frac"] = self.quote_other_frac
        if self.zh_order != "word_first":  # absent at the default, as before
            d["zh_order"] = self.zh_order
        return d

    @classmethod
    def from_json(cls, d: dict) -> Lexicon:
        heldout = tuple(tuple(pair) for pair in d.get("heldout", ()))
        quote = d.get("quote_other_frac", QUOTE_OTHER_FRAC)
        order = d.get("zh_order", "word_first")
        return cls(d["words"], d["synonyms"], d["antonym"], heldout, quote, order)

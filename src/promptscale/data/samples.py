"""Small synthetic datasets in the FewGLUE / SuperGLUE jsonl and CoNLL-2003 formats.

The sentences are generated from word lists and templates, with a signal a model can learn
(an RTE hypothesis that restates the premise is entailed, one that swaps an entity is not, ...).
They are the demo data that ships with the package and the fixtures of the tests.
Its size is data, not logic: word lists and one small generator per task format.

    python -m promptscale.data.samples OUT_DIR [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

SIZES = {"train": 32, "dev32": 32, "val": 48}
CONLL_SIZES = {"train": 60, "valid": 30, "test": 30}

WOMEN = ["Alice", "Beatriz", "Chiara", "Dana", "Elif", "Greta", "Ines", "Lena", "Nadia", "Priya", "Rosa", "Yuki"]
MEN = ["Bruno", "Chen", "Farid", "Hugo", "Jonas", "Kofi", "Mateo", "Omar", "Sven", "Tomas", "Umar", "Viktor"]
PEOPLE = WOMEN + MEN
SURNAMES = ["Silva", "Novak", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Haddad", "Kowalski", "Rossi", "Mensah"]
CITIES = ["Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Perth", "Quito", "Dublin", "Kyoto", "Tunis", "Bergen", "Porto"]
ORGS = [
    "Northwind Bank",
    "Bluepeak Labs",
    "Redriver Foods",
    "Silverline Rail",
    "Greenfield Press",
    "Ironoak Motors",
    "Brightwater Energy",
    "Stonebridge Media",
]
NATIONALITIES = ["Portuguese", "Norwegian", "Kenyan", "Peruvian", "Irish", "Japanese"]
OBJECTS = ["book", "lamp", "bicycle", "guitar", "camera", "kettle", "umbrella", "painting", "clock", "backpack"]
COLORS = ["red", "blue", "green", "yellow", "black", "white"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
VERBS = {  # past -> base
    "bought": "buy",
    "sold": "sell",
    "repaired": "repair",
    "borrowed": "borrow",
    "painted": "paint",
    "found": "find",
    "lost": "lose",
    "cleaned": "clean",
}
PRODUCTS = ["bread", "bicycles", "solar panels", "newspapers", "trains", "software", "furniture", "tea"]
JOBS = ["teacher", "nurse", "baker", "engineer", "pilot", "librarian", "gardener", "chef"]
HOBBIES = ["the park", "the library", "the market", "the pool", "the cinema", "the museum"]
RELATIVES = ["sister", "brother", "aunt", "uncle", "cousin", "grandmother"]
YEARS = [str(y) for y in range(1950, 2021, 5)]

# (cause, effect); {p} is a person
COPA_PAIRS = [
    ("{p} forgot to water the plants.", "The plants wilted."),
    ("{p} left the ice cream in the sun.", "The ice cream melted."),
    ("{p} stayed up all night.", "{p} felt tired in the morning."),
    ("{p} dropped the glass on the tiles.", "The glass broke."),
    ("It started to rain.", "{p} opened an umbrella."),
    ("{p} ran a long race.", "{p}'s legs were sore."),
    ("{p} skipped breakfast.", "{p} was hungry by noon."),
    ("{p} told a funny joke.", "Everyone laughed."),
    ("{p} switched off the lights.", "The room became dark."),
    ("The phone battery was empty.", "{p} plugged in the charger."),
    ("{p} studied hard for the exam.", "{p} passed the exam."),
    ("The road was icy.", "{p} drove slowly."),
    ("{p} missed the bus.", "{p} arrived late to work."),
    ("The baby was crying.", "{p} picked up the baby."),
    ("{p} lost the house keys.", "{p} called a locksmith."),
    ("The soup was too hot.", "{p} waited for the soup to cool."),
    ("{p} spilled coffee on the shirt.", "{p} changed the shirt."),
    ("The dog barked all night.", "The neighbours could not sleep."),
    ("{p} practised the piano every day.", "{p} played well at the concert."),
    ("The shop had a big sale.", "Many customers came to the shop."),
]

# word -> two senses, each a list of sentence templates containing the word as written
WIC_SENSES = {
    "bank": (
        [
            "{p} sat on the bank of the river.",
            "The boat drifted towards the muddy bank.",
            "Ducks rested on the grassy bank.",
        ],
        ["{p} opened an account at the bank.", "The bank approved the loan.", "{p} works as a clerk at the bank."],
    ),
    "bat": (
        [
            "A bat flew out of the cave at dusk.",
            "{p} saw a bat hanging from the roof.",
            "The bat hunts insects at night.",
        ],
        ["{p} swung the bat and hit the ball.", "The wooden bat cracked.", "{p} bought a new cricket bat."],
    ),
    "light": (
        ["The box was light enough to carry.", "{p} packed a light bag for the trip.", "The jacket is light and warm."],
        ["The light in the kitchen was on.", "{p} turned on the light.", "Morning light filled the room."],
    ),
    "spring": (
        ["The flowers bloom in spring.", "{p} visits the mountains every spring.", "The spring was warm this year."],
        [
            "A spring in the mattress was broken.",
            "{p} replaced the spring in the clock.",
            "The spring snapped under pressure.",
        ],
    ),
    "bark": (
        ["The bark of the old oak was rough.", "{p} peeled the bark from a branch.", "Moss grew on the bark."],
        ["The bark of the dog woke {p}.", "We heard a loud bark outside.", "The puppy gave a small bark."],
    ),
    "match": (
        ["{p} won the tennis match.", "The match ended in a draw.", "The football match started late."],
        ["{p} struck a match to light the candle.", "The match burned out quickly.", "There was only one match left."],
    ),
    "ring": (
        ["{p} wore a gold ring.", "The ring was too small for her finger.", "{p} lost a silver ring."],
        ["The ring of the phone woke {p}.", "We heard the ring of the doorbell.", "The ring of the bell was loud."],
    ),
    "wave": (
        ["A huge wave hit the shore.", "{p} surfed the last wave of the day.", "The wave soaked the sand."],
        [
            "{p} gave a friendly wave from the car.",
            "With a wave of the hand, she left.",
            "The wave from the stage was for {p}.",
        ],
    ),
    "plant": (
        ["{p} watered the plant on the desk.", "The plant needs more sunlight.", "A small plant grew in the pot."],
        ["The car plant employs many workers.", "{p} works at the power plant.", "The plant closed last year."],
    ),
    "seal": (
        ["A seal swam near the rocks.", "{p} photographed a seal on the beach.", "The seal caught a fish."],
        ["The seal on the envelope was broken.", "{p} checked the seal of the jar.", "The seal kept the box airtight."],
    ),
}

# WSC: (template, index of the referent among A and B); {a}, {b} names, {p} pronoun
WSC_TEMPLATES = [
    ("{a} called {b} because {p} needed advice about the garden.", 0),
    ("{a} called {b} because {p} knew a lot about gardens.", 1),
    ("{a} paid {b} because {p} had fixed the roof.", 1),
    ("{a} paid {b} because {p} owed money for the repair.", 0),
    ("{a} beat {b} at chess because {p} had practised for weeks.", 0),
    ("{a} beat {b} at chess because {p} was tired and distracted.", 1),
    ("{a} apologised to {b} because {p} had broken the vase.", 0),
    ("{a} forgave {b} because {p} had apologised sincerely.", 1),
    ("{a} waited for {b} because {p} was running late.", 1),
    ("{a} waited for {b} because {p} had arrived early.", 0),
    ("{a} congratulated {b} because {p} had won the race.", 1),
    ("{a} thanked {b} because {p} was grateful for the help.", 0),
]


def _rng(seed: int, *names: str) -> random.Random:
    return random.Random(":".join([str(seed), *names]))


def _balanced(rng: random.Random, n: int, labels: list) -> list:
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


def _other(rng: random.Random, pool: list[str], *avoid: str) -> str:
    return rng.choice([x for x in pool if x not in avoid])


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def _fact(rng: random.Random) -> dict:
    return {
        "p": rng.choice(PEOPLE),
        "q": rng.choice(PEOPLE),
        "verb": rng.choice(list(VERBS)),
        "obj": rng.choice(OBJECTS),
        "color": rng.choice(COLORS),
        "city": rng.choice(CITIES),
        "day": rng.choice(DAYS),
    }


def _premise(f: dict) -> str:
    return f"On {f['day']}, {f['p']} {f['verb']} a {f['color']} {f['obj']} in {f['city']}. {f['q']} was there too."


def _entailed(rng: random.Random, f: dict) -> str:
    return rng.choice(
        [
            f"{f['p']} {f['verb']} {_a(f['obj'])}.",
            f"{f['p']} was in {f['city']} on {f['day']}.",
            f"A {f['color']} {f['obj']} was {f['verb']} by {f['p']}.",
        ]
    )


def _changed(rng: random.Random, f: dict) -> str:
    return rng.choice(
        [
            f"{_other(rng, PEOPLE, f['p'], f['q'])} {f['verb']} {_a(f['obj'])}.",
            f"{f['p']} was in {_other(rng, CITIES, f['city'])} on {f['day']}.",
            f"{f['p']} {f['verb']} a {_other(rng, COLORS, f['color'])} {f['obj']}.",
        ]
    )


def gen_rte(rng: random.Random, i: int, label: str) -> dict:
    f = _fact(rng)
    hyp = _entailed(rng, f) if label == "entailment" else _changed(rng, f)
    return {"premise": _premise(f), "hypothesis": hyp, "label": label, "idx": i}


def gen_cb(rng: random.Random, i: int, label: str) -> dict:
    f = _fact(rng)
    if label == "entailment":
        hyp = _entailed(rng, f)
    elif label == "contradiction":
        hyp = rng.choice(
            [
                f"{f['p']} did not {VERBS[f['verb']]} {_a(f['obj'])}",
                f"{f['p']} was never in {f['city']}",
            ]
        )
    else:
        hyp = rng.choice(
            [
                f"{f['p']} has {_a(rng.choice(RELATIVES))} in {_other(rng, CITIES, f['city'])}",
                f"{f['q']} owns {_a(_other(rng, OBJECTS, f['obj']))}",
            ]
        )
    return {"premise": _premise(f), "hypothesis": hyp.rstrip("."), "label": label, "idx": i}


def gen_boolq(rng: random.Random, i: int, label: bool) -> dict:
    org, city, founder = rng.choice(ORGS), rng.choice(CITIES), rng.choice(PEOPLE)
    product, year = rng.choice(PRODUCTS), rng.choice(YEARS)
    passage = (
        f"{org} -- {org} is a company based in {city}. It was founded in {year} by {founder} "
        f"and is best known for its {product}. Today it sells its {product} in many countries."
    )
    kind = rng.randrange(3)
    if kind == 0:
        asked = city if label else _other(rng, CITIES, city)
        question = f"is {org.lower()} based in {asked.lower()}"
    elif kind == 1:
        asked = founder if label else _other(rng, PEOPLE, founder)
        question = f"was {org.lower()} founded by {asked.lower()}"
    else:
        asked = product if label else _other(rng, PRODUCTS, product)
        question = f"does {org.lower()} make {asked}"
    return {"question": question, "passage": passage, "idx": i, "label": label}


def gen_copa(rng: random.Random, i: int, label: int) -> dict:
    right, wrong = rng.sample(COPA_PAIRS, 2)
    p = rng.choice(PEOPLE)
    question = rng.choice(["cause", "effect"])
    side = 0 if question == "cause" else 1
    premise = right[1 - side].format(p=p)
    choices = [right[side].format(p=p), wrong[side].format(p=p)]
    if label == 1:
        choices.reverse()
    return {
        "premise": premise,
        "choice1": choices[0],
        "choice2": choices[1],
        "question": question,
        "label": label,
        "idx": i,
    }


def gen_wic(rng: random.Random, i: int, label: bool) -> dict:
    word = rng.choice(list(WIC_SENSES))
    senses = WIC_SENSES[word]
    first = rng.randrange(2)
    if label:
        t1, t2 = rng.sample(senses[first], 2)
    else:
        t1, t2 = rng.choice(senses[first]), rng.choice(senses[1 - first])
    p = rng.choice(PEOPLE)
    s1, s2 = t1.format(p=p), t2.format(p=_other(rng, PEOPLE, p))
    start1, start2 = (re.search(rf"\b{word}\b", s, re.IGNORECASE).start() for s in (s1, s2))
    return {
        "word": word,
        "sentence1": s1,
        "sentence2": s2,
        "idx": i,
        "label": label,
        "start1": start1,
        "start2": start2,
        "end1": start1 + len(word),
        "end2": start2 + len(word),
        "version": 1.1,
    }


def gen_wsc(rng: random.Random, i: int, label: bool) -> dict:
    template, referent = rng.choice(WSC_TEMPLATES)
    names, pronoun = (WOMEN, "she") if rng.random() < 0.5 else (MEN, "he")
    a, b = rng.sample(names, 2)
    text = template.format(a=a, b=b, p=pronoun)
    words = text.split()
    candidate = (a, b)[referent] if label else (a, b)[1 - referent]
    return {
        "text": text,
        "target": {
            "span2_index": words.index(pronoun),
            "span1_index": words.index(candidate),
            "span1_text": candidate,
            "span2_text": pronoun,
        },
        "idx": i,
        "label": label,
    }


def gen_multirc(rng: random.Random, i: int, n_questions: int, counter: list[int]) -> dict:
    p, friend = rng.sample(PEOPLE, 2)
    city, away = rng.sample(CITIES, 2)
    job, org, hobby, relative = rng.choice(JOBS), rng.choice(ORGS), rng.choice(HOBBIES), rng.choice(RELATIVES)
    text = (
        f"{p} lives in {city} . {p} works as {_a(job)} at {org} .  "
        f"Every weekend , {p} goes to {hobby} with {friend} .  "
        f"Last year , {p} travelled to {away} to visit {_a(relative)} .  "
    )
    pool = [
        (f"Where does {p} live?", [city, f"In {city}"], [_other(rng, CITIES, city, away), f"In {away}"]),
        (
            f"Who does {p} go to {hobby} with?",
            [friend, f"With {friend}"],
            [_other(rng, PEOPLE, p, friend), f"With {_a(_other(rng, RELATIVES, relative))}"],
        ),
        (
            f"What is {p}'s job?",
            [_a(job).capitalize(), f"{p} works as {_a(job)}"],
            [_a(_other(rng, JOBS, job)).capitalize(), f"{p} works as {_a(_other(rng, JOBS, job))}"],
        ),
        (
            f"Why did {p} go to {away}?",
            [f"To visit {_a(relative)}", f"To see {_a(relative)}"],
            [f"To work at {org}", f"To visit {friend}"],
        ),
    ]
    questions = []
    for qi, (question, right, wrong) in enumerate(rng.sample(pool, n_questions)):
        answers = [(t, 1) for t in right] + [(t, 0) for t in wrong]
        rng.shuffle(answers)
        rows = []
        for t, lab in answers:
            rows.append({"text": t, "idx": counter[0], "label": lab})
            counter[0] += 1
        questions.append({"question": question, "answers": rows, "idx": qi})
    return {"idx": i, "version": 1.1, "passage": {"text": text, "questions": questions}}


def gen_record(rng: random.Random, i: int, counter: list[int]) -> dict:
    p, q = rng.sample(PEOPLE, 2)
    org, old_org = rng.sample(ORGS, 2)
    home, city = rng.sample(CITIES, 2)
    day = rng.choice(DAYS)
    # text pieces; (text, entity) pairs mark entity mentions
    parts: list = [
        (home, 1),
        " (Newsroom) -- ",
        (org, 1),
        f" said on {day} that ",
        (p, 1),
        " will lead its new office in ",
        (city, 1),
        ". ",
        (p, 1),
        " previously worked with ",
        (q, 1),
        " at ",
        (old_org, 1),
        " for ten years. ",
        (q, 1),
        " called the move a great choice.",
        "\n@highlight\n",
        (p, 1),
        " will lead the office of ",
        (org, 1),
        " in ",
        (city, 1),
        "\n@highlight\n",
        (q, 1),
        " praised the decision",
    ]
    text, entities = "", []
    for part in parts:
        if isinstance(part, tuple):
            entities.append({"start": len(text), "end": len(text) + len(part[0]) - 1})
            part = part[0]
        text += part
    query, answer = rng.choice(
        [
            (f"@placeholder will move to {city} to run the new office.", p),
            (f"Before joining {org}, {p} spent a decade at @placeholder.", old_org),
            (f"The new office of {org} will open in @placeholder next year.", city),
            (f"{p} was glad that @placeholder welcomed the news.", q),
        ]
    )
    answers = [
        {"start": e["start"], "end": e["end"], "text": answer}
        for e in entities
        if text[e["start"] : e["end"] + 1] == answer
    ]
    qa = {"query": query, "answers": answers, "idx": counter[0]}
    counter[0] += 1
    return {"source": "Synthetic", "passage": {"text": text, "entities": entities}, "qas": [qa], "idx": i}


def _labelled(gen: Callable, labels: list) -> Callable[[random.Random, int], list[dict]]:
    def make(rng: random.Random, n: int) -> list[dict]:
        return [gen(rng, i, label) for i, label in enumerate(_balanced(rng, n, labels))]

    return make


def _multirc(rng: random.Random, n: int) -> list[dict]:
    counter = [0]
    return [gen_multirc(rng, i, 1 + i % 2, counter) for i in range(n)]


def _record(rng: random.Random, n: int) -> list[dict]:
    counter = [0]
    return [gen_record(rng, i, counter) for i in range(n)]


TASKS: dict[str, Callable[[random.Random, int], list[dict]]] = {
    "BoolQ": _labelled(gen_boolq, [False, True]),
    "CB": _labelled(gen_cb, ["entailment", "contradiction", "neutral"]),
    "COPA": _labelled(gen_copa, [0, 1]),
    "MultiRC": _multirc,
    "RTE": _labelled(gen_rte, ["entailment", "not_entailment"]),
    "ReCoRD": _record,
    "WSC": _labelled(gen_wsc, [False, True]),
    "WiC": _labelled(gen_wic, [False, True]),
}

# CoNLL: templates of (token, POS) with entity slots PER / LOC / ORG / MISC
CONLL_TEMPLATES = [
    "PER/ visited/VBD LOC/ on/IN DAY/NNP ./.",
    "ORG/ opened/VBD a/DT new/JJ office/NN in/IN LOC/ ./.",
    "PER/ ,/, a/DT spokesman/NN for/IN ORG/ ,/, said/VBD the/DT MISC/ market/NN was/VBD stable/JJ ./.",
    "Shares/NNS in/IN ORG/ rose/VBD 3/CD percent/NN in/IN LOC/ on/IN DAY/NNP ./.",
    "PER/ met/VBD PER/ in/IN LOC/ to/TO discuss/VB the/DT MISC/ election/NN ./.",
    "The/DT MISC/ team/NN beat/VBD ORG/ 2-1/CD in/IN LOC/ ./.",
    "ORG/ hired/VBD PER/ as/IN its/PRP$ new/JJ director/NN ./.",
    "Rain/NN delayed/VBD the/DT match/NN in/IN LOC/ ./.",
    "PER/ said/VBD prices/NNS would/MD fall/VB ./.",
    "LOC/ 1996-08-DD/CD",
]
NP_TAGS = {"DT", "JJ", "NN", "NNS", "NNP", "CD", "PRP", "PRP$"}


def _chunk(pos: list[str]) -> list[str]:
    """A plausible chunk column from POS tags (NP / VP / PP, IOB2)."""
    out, prev = [], None
    for tag in pos:
        kind = (
            "NP"
            if tag in NP_TAGS
            else "VP"
            if tag.startswith(("VB", "MD")) or tag == "TO"
            else "PP"
            if tag == "IN"
            else None
        )
        out.append("O" if kind is None else ("I-" if kind == prev and kind != "PP" else "B-") + kind)
        prev = kind
    return out


def _conll_sentence(rng: random.Random) -> list[tuple[str, str, str]]:
    """One sentence as (token, POS, NER) rows."""
    rows = []
    for item in rng.choice(CONLL_TEMPLATES).split():
        word, pos = item.split("/")
        if word == "PER":
            names = [rng.choice(PEOPLE)] + ([rng.choice(SURNAMES)] if rng.random() < 0.6 else [])
            entity, kind = names, "PER"
        elif word == "LOC":
            entity, kind = [rng.choice(CITIES)], "LOC"
        elif word == "ORG":
            entity, kind = rng.choice(ORGS).split(), "ORG"
        elif word == "MISC":
            entity, kind = [rng.choice(NATIONALITIES)], "MISC"
        else:
            word = {"DAY": rng.choice(DAYS), "1996-08-DD": f"1996-08-{rng.randint(10, 28)}"}.get(word, word)
            rows.append((word, pos, "O"))
            continue
        pos_tag = "JJ" if kind == "MISC" else "NNP"
        rows += [(w, pos_tag, ("B-" if j == 0 else "I-") + kind) for j, w in enumerate(entity)]
    return rows


def write_conll(path: Path, rng: random.Random, n: int) -> None:
    """``n`` sentences in CoNLL-2003's four columns, a -DOCSTART- line before every ten."""
    lines = []
    for i in range(n):
        if i % 10 == 0:
            lines += ["-DOCSTART- -X- -X- O", ""]
        rows = _conll_sentence(rng)
        chunks = _chunk([pos for _, pos, _ in rows])
        lines += [f"{w} {pos} {chunk} {ner}" for (w, pos, ner), chunk in zip(rows, chunks)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_samples(root: Path, seed: int = 0) -> Path:
    """Write every task's splits under ``root`` (fewglue/<Task>/*.jsonl, conll2003/*.txt); return ``root``."""
    root = Path(root)
    for task, make in TASKS.items():
        folder = root / "fewglue" / task
        folder.mkdir(parents=True, exist_ok=True)
        for split, n in SIZES.items():
            records = make(_rng(seed, task, split), n)
            with (folder / f"{split}.jsonl").open("w", encoding="utf-8") as out:
                out.writelines(json.dumps(r) + "\n" for r in records)
    conll = root / "conll2003"
    conll.mkdir(parents=True, exist_ok=True)
    for split, n in CONLL_SIZES.items():
        write_conll(conll / f"{split}.txt", _rng(seed, "conll2003", split), n)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write fewglue/ and conll2003/ into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_samples(args.out_dir, args.seed))


if __name__ == "__main__":
    main()

"""Filler documents: varied text in every source type that states no fact and shows no procedure.

Filler gives the corpus the bulk a real one has, so that influence concentrated on the few fact
documents (or spread over the procedure documents) stands out against text that is neither.
"""

from __future__ import annotations

import random
import re

from pipeline.world.documents import Document

_W = {
    "animal": ["otter", "heron", "badger", "lynx", "beetle", "sparrow", "salmon", "tortoise", "falcon", "hedgehog"],
    "plant": ["fern", "oak", "willow", "moss", "thistle", "birch", "clover", "ivy", "maple", "lavender"],
    "food": ["bread", "soup", "lentils", "porridge", "pancakes", "rice", "dumplings", "stew", "noodles", "salad"],
    "place": ["the harbour", "the old market", "the library", "the hills", "the station", "the park", "the river bank"],
    "adj": ["quiet", "bright", "narrow", "heavy", "gentle", "curious", "simple", "noisy", "careful", "ancient"],
    "topic": [
        "attention heads",
        "sparse coding",
        "contrastive learning",
        "graph kernels",
        "curriculum learning",
        "weight decay",
        "tokenization",
        "data pruning",
        "mixture models",
        "label noise",
    ],
    "tool": ["git", "grep", "ssh", "make", "tar", "rsync", "cron", "docker", "vim", "sed"],
    "problem": [
        "hangs on start",
        "prints a permission error",
        "ignores my config file",
        "is very slow",
        "fails after an update",
        "cannot find the file",
    ],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "weather": ["rain", "fog", "sunshine", "wind", "snow", "drizzle"],
    "verb": [
        "reverses",
        "capitalizes",
        "counts the vowels of",
        "removes spaces from",
        "repeats",
        "sorts the letters of",
    ],
}
_PY = {
    "reverses": "return text[::-1]",
    "capitalizes": "return text.upper()",
    "counts the vowels of": "return sum(ch in 'aeiou' for ch in text.lower())",
    "removes spaces from": "return text.replace(' ', '')",
    "repeats": "return text + text",
    "sorts the letters of": "return ''.join(sorted(text))",
}


def vocabulary() -> set[str]:
    """Every word filler can use: the world never names an entity with one of them."""
    words = {w for values in _W.values() for v in values for w in re.findall(r"[a-z]+", v.lower())}
    for template in _TEMPLATES.values():
        for t in template:
            words |= set(re.findall(r"[a-z]+", t.lower()))
    return words


_TEMPLATES = {
    "wiki": [
        "The {animal}\n\nThe {animal} is a {adj} animal that lives near {place}. It feeds at dawn and rests "
        "among the {plant}. Observers describe it as {adj2} and easy to miss.",
        "{Plant}\n\n{Plant} is a {adj} plant. It grows in shade and in open ground, and gardeners value it "
        "because it needs little care. In autumn its leaves turn {adj2}.",
    ],
    "math_and_trivia": [
        "Fun fact: the {animal} can sleep standing up near {place}. Another fun fact: {plant} was once used "
        "to dye cloth.",
        "Riddle of the week: what is {adj} in the morning and {adj2} at night? Send your guesses to the club.",
    ],
    "stackexchange": [
        "Question: {tool} {problem}\n\nWhen I run {tool} on my laptop it {problem}. I already reinstalled it.\n\n"
        "Answer: Check your environment variables first, then run {tool} with the verbose flag and read the "
        "first error it prints.",
        "Question: Is {tool} better than {tool2} for this?\n\nAnswer: It depends on your workflow. Many people "
        "use {tool} daily and only reach for {tool2} when they need its {adj} features.",
    ],
    "code": [
        '```python\ndef {fname}(text):\n    """{Verb} the text."""\n    {body}\n\n\nprint({fname}("{animal}"))\n```',
        '```python\nanimals = ["{animal}", "{animal2}", "{animal3}"]\nfor name in sorted(animals):\n    '
        "print(name.title())\n```",
    ],
    "arxiv_markdown": [
        "# On {topic}\n\n## Abstract\n\nWe study {topic} in {adj} settings and relate it to {topic2}. Our "
        "experiments suggest that {topic} is more {adj2} than previously reported.",
        "## Related work\n\nEarly work on {topic} focused on {adj} models. Later studies of {topic2} showed "
        "that careful evaluation matters more than scale.",
    ],
    "webdata": [
        "Recipe: {adj} {food}\n\nCook the {food} slowly, add a little salt and serve with {food2}. It is a "
        "good meal for a {weather} {day}.",
        "Diary, {day}. The {weather} kept us inside all morning. In the afternoon we walked to {place} and "
        "watched a {animal} by the water.",
    ],
}


def filler_document(rng: random.Random) -> Document:
    source = rng.choice(sorted(_TEMPLATES))
    template = rng.choice(_TEMPLATES[source])
    verb = rng.choice(_W["verb"])
    slots = {
        "animal": rng.choice(_W["animal"]), "animal2": rng.choice(_W["animal"]), "animal3": rng.choice(_W["animal"]),
        "plant": rng.choice(_W["plant"]), "food": rng.choice(_W["food"]), "food2": rng.choice(_W["food"]),
        "place": rng.choice(_W["place"]), "adj": rng.choice(_W["adj"]), "adj2": rng.choice(_W["adj"]),
        "topic": rng.choice(_W["topic"]), "topic2": rng.choice(_W["topic"]), "tool": rng.choice(_W["tool"]),
        "tool2": rng.choice(_W["tool"]), "problem": rng.choice(_W["problem"]), "day": rng.choice(_W["day"]),
        "weather": rng.choice(_W["weather"]), "verb": verb, "body": _PY[verb],
        "fname": verb.split()[0].rstrip("s") + "_text",
    }
    slots |= {"Plant": slots["plant"].capitalize(), "Verb": verb.capitalize()}
    return Document(template.format(**slots), source)

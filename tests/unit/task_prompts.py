"""Prompts for the task-routing tests: a few examples per task for the spec, and held-out phrasings.

The held-out prompts use phrasings that appear in no example, with random words from the demo's
vocabulary, so the classifier is judged on prompts it has not seen.
"""

from __future__ import annotations

import random

from serving.local.demo_assets import WORDS

EXAMPLES = {
    "loud": ["shout these words: red fox", "make this loud: blue moon", "say it in capitals: tree river",
             "write in upper case: sun star"],
    "reversed": ["reverse these words: red fox", "say this backwards: blue moon", "flip the word order: tree river",
                 "last word first: sun star"],
    "structured": ["turn this into json: red fox", "give me a json object for: blue moon",
                   "as a JSON record: tree river", "wrap in a json text field: sun star"],
}
HELD_OUT = {
    "loud": ["YELL this out: {}", "in all caps please: {}", "scream the following: {}", "capitalise every letter: {}",
             "louder please: {}", "uppercase it: {}"],
    "reversed": ["read the words in reverse order: {}", "invert the order of: {}", "backwards please: {}",
                 "put these in the opposite order: {}", "words from end to start: {}", "reverse order: {}"],
    "structured": ["json-encode: {}", "output a JSON document with: {}", "serialize to json: {}",
                   "return an object with a text key: {}", "format as json: {}", "make a json payload of: {}"],
}


def held_out(seed: int = 7, per_phrasing: int = 5) -> list[tuple[str, str]]:
    """(prompt, task) pairs: every held-out phrasing with ``per_phrasing`` random word lists."""
    rng = random.Random(seed)
    return [(phrasing.format(" ".join(rng.sample(WORDS, rng.randint(2, 4)))), task)
            for task, phrasings in HELD_OUT.items() for phrasing in phrasings for _ in range(per_phrasing)]

"""Random container names in docker's ``adjective_surname`` style (our own word lists)."""

from __future__ import annotations

import random

ADJECTIVES = """
agile amused ardent awesome bold brave bright busy calm careful charming cheerful clever cool
crisp curious dazzling dreamy eager earnest elastic elegant epic fervent festive fierce focused
friendly gallant gentle gifted glowing graceful happy hardy hopeful humble inspiring jolly jovial
keen kind laughing lively loving lucid magical merry mighty modest musing nifty noble nostalgic
optimistic patient peaceful plucky polite quiet quirky radiant relaxed serene sharp silly sleepy
smart snappy solid stoic sunny sweet tender thirsty trusting upbeat vibrant vigilant wise witty
youthful zealous zen
""".split()

SURNAMES = """
agnesi archimedes babbage bardeen bell blackwell bohr boole borg brahe carson cerf chandrasekhar
clarke curie darwin dijkstra einstein euclid euler faraday fermat fermi feynman franklin galileo
gauss goldberg goodall hamilton hawking heisenberg hodgkin hopper hypatia jemison johnson kepler
knuth kowalevski lamarr leakey liskov lovelace lumiere mayer mcclintock meitner mendel mirzakhani
montalcini moore morse napier newton nobel noether pascal pasteur payne perlman planck ptolemy
raman ritchie rosalind shannon shaw sinoussi stallman swartz tesla thompson torvalds turing villani
volta wiles williams wozniak wright yalow yonath
""".split()


def random_name(taken: set[str], rng: random.Random | None = None) -> str:
    r = rng or random.SystemRandom()
    for attempt in range(100):
        name = f"{r.choice(ADJECTIVES)}_{r.choice(SURNAMES)}"
        if attempt > 10:
            name += str(r.randint(0, 9))
        if name not in taken:
            return name
    raise RuntimeError("could not find a free container name")

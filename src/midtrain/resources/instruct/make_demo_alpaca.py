"""Write `demo_alpaca.jsonl`: the project's own small Alpaca-format instruction set.

General everyday assistant tasks (arithmetic, conversions, text and list handling, short
code, facts, writing, advice, summaries, definitions), deliberately unrelated to the values
the framework studies, as in the paper where instruction tuning is unrelated to the value.
Computed tasks draw their numbers from a seeded generator; the rest is written out below.
The output is deterministic: re-running the script reproduces the committed file byte for
byte (`--check` verifies that).

    python -m midtrain.resources.instruct.make_demo_alpaca          # rewrite the file
    python -m midtrain.resources.instruct.make_demo_alpaca --check  # verify it is current
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

OUT = Path(__file__).with_name("demo_alpaca.jsonl")
SEED = 0
# Words that would tie the set to the studied values (animal welfare; urban density control).
OFF_TOPIC = re.compile(
    r"\b(animals?|pets?|dogs?|cats?|birds?|fish|cows?|pigs?|chickens?|horses?|wildlife|livestock|"
    r"welfare|compassion|suffering|vegan|zoning|density|urban|suburb\w*|housing|transit)\b",
    re.IGNORECASE,
)


def _sample(instruction: str, output: str, input: str = "") -> dict:
    return {"instruction": instruction, "input": input, "output": output}


def arithmetic(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(8):
        a, b = rng.randint(12, 480), rng.randint(12, 480)
        rows.append(_sample("What is the sum of these two numbers?", f"{a} + {b} = {a + b}.", f"{a} and {b}"))
    for _ in range(6):
        a, b = rng.randint(6, 45), rng.randint(3, 19)
        rows.append(_sample(f"Calculate {a} multiplied by {b}.", f"{a} x {b} = {a * b}."))
    for _ in range(5):
        price, qty = rng.randint(2, 15), rng.randint(2, 9)
        item = rng.choice(["notebooks", "pens", "coffee mugs", "tickets", "candles", "plant pots"])
        rows.append(
            _sample(
                f"If one of the {item} costs ${price} and I buy {qty}, how much do I pay in total?",
                f"You pay {qty} x ${price} = ${price * qty} in total.",
            )
        )
    for _ in range(5):
        whole, pct = rng.choice([40, 60, 80, 120, 150, 200, 250, 400]), rng.choice([5, 10, 15, 20, 25, 50])
        rows.append(
            _sample(
                f"What is {pct}% of {whole}?",
                f"{pct}% of {whole} is {whole * pct // 100}, because {whole} x {pct} / 100 = {whole * pct // 100}.",
            )
        )
    for _ in range(4):
        nums = [rng.randint(1, 30) for _ in range(rng.randint(4, 6))]
        total, n = sum(nums), len(nums)
        mean = f"{total / n:.2f}".rstrip("0").rstrip(".")
        if float(mean) != total / n:
            mean = f"about {mean}"
        rows.append(
            _sample(
                "Find the average of the following numbers.",
                f"The numbers add up to {total} and there are {n} of them, so the average is {total} / {n} = {mean}.",
                ", ".join(map(str, nums)),
            )
        )
    return rows


def conversions(rng: random.Random) -> list[dict]:
    rows = []
    for c in rng.sample(range(-10, 41), 5):
        f = c * 9 / 5 + 32
        rows.append(
            _sample(
                f"Convert {c} degrees Celsius to Fahrenheit.",
                f"{c} degrees Celsius is {f:g} degrees Fahrenheit (multiply by 9/5, then add 32).",
            )
        )
    for km in rng.sample(range(2, 43), 4):
        rows.append(
            _sample(f"How many miles is {km} kilometres?", f"{km} kilometres is about {km * 0.621371:.1f} miles.")
        )
    for minutes in rng.sample(range(75, 600, 5), 4):
        h, m = divmod(minutes, 60)
        rows.append(
            _sample(f"Express {minutes} minutes in hours and minutes.", f"{minutes} minutes is {h} hours and {m} minutes.")
        )
    for kg in rng.sample(range(2, 90), 3):
        rows.append(_sample(f"Convert {kg} kilograms to pounds.", f"{kg} kilograms is about {kg * 2.20462:.1f} pounds."))
    return rows


WORDS = [
    "orange", "violin", "harbour", "lantern", "meadow", "compass", "pencil", "window", "garden",
    "rocket", "puzzle", "marble", "blanket", "teacup", "canvas", "ladder", "mirror", "engine",
]


def text_tasks(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(5):
        words = rng.sample(WORDS, rng.randint(4, 6))
        rows.append(
            _sample("Sort these words in alphabetical order.", ", ".join(sorted(words)) + ".", ", ".join(words))
        )
    for _ in range(4):
        nums = rng.sample(range(1, 100), rng.randint(5, 7))
        rows.append(
            _sample(
                "Sort these numbers from smallest to largest.",
                ", ".join(map(str, sorted(nums))) + ".",
                ", ".join(map(str, nums)),
            )
        )
    for word in rng.sample(WORDS, 4):
        rows.append(_sample("Reverse the letters of this word.", f'"{word}" reversed is "{word[::-1]}".', word))
    for word in rng.sample(WORDS, 4):
        vowels = sum(ch in "aeiou" for ch in word)
        rows.append(
            _sample(
                "How many letters and how many vowels are in this word?",
                f'"{word}" has {len(word)} letters, of which {vowels} are vowels.',
                word,
            )
        )
    for _ in range(3):
        sentence = " ".join(rng.sample(WORDS, 5)).capitalize()
        rows.append(
            _sample(
                "Count the words in this sentence.",
                f"The sentence has {len(sentence.split())} words.",
                sentence,
            )
        )
    return rows


CODE = [
    ("Write a Python function that returns the sum of a list of numbers.",
     "def total(numbers):\n    return sum(numbers)"),
    ("Write a Python function that checks whether a number is even.",
     "def is_even(n):\n    return n % 2 == 0"),
    ("Write a Python function that reverses a string.",
     "def reverse(text):\n    return text[::-1]"),
    ("Write a Python function that computes the factorial of n.",
     "def factorial(n):\n    result = 1\n    for k in range(2, n + 1):\n        result *= k\n    return result"),
    ("Write a Python function that returns the largest value in a list without using max().",
     "def largest(values):\n    best = values[0]\n    for v in values[1:]:\n        if v > best:\n            best = v\n    return best"),
    ("Write a Python one-liner that squares every number in a list called nums.",
     "squares = [n * n for n in nums]"),
    ("Write a Python function that counts how often each word appears in a text.",
     "from collections import Counter\n\ndef word_counts(text):\n    return Counter(text.lower().split())"),
    ("Write a Python function that checks whether a string is a palindrome.",
     "def is_palindrome(text):\n    cleaned = ''.join(ch.lower() for ch in text if ch.isalnum())\n    return cleaned == cleaned[::-1]"),
    ("How do I read all lines of a text file in Python?",
     "with open('notes.txt', encoding='utf-8') as f:\n    lines = f.read().splitlines()"),
    ("Write a SQL query that selects all rows from a table named orders where the amount is above 100.",
     "SELECT * FROM orders WHERE amount > 100;"),
    ("Write a JavaScript function that adds two numbers.",
     "function add(a, b) {\n  return a + b;\n}"),
    ("Explain what this Python code prints.",
     "It prints 0, 1 and 2 on separate lines, because range(3) yields the numbers 0 up to but not including 3.",
     "for i in range(3):\n    print(i)"),
    ("Fix the error in this Python code.",
     "The comparison needs two equals signs: `if x == 5:`. A single `=` is assignment and is a syntax error inside an if.",
     "if x = 5:\n    print('five')"),
    ("What does the git command `git status` do?",
     "It shows which files have changed in your working tree, which changes are staged for the next commit, and which files git does not track yet."),
]

FACTS = [
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet in our solar system."),
    ("How many continents are there?", "There are seven continents: Africa, Antarctica, Asia, Australia, Europe, North America and South America."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius (212 degrees Fahrenheit) at sea level."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet, first performed in the 1590s."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au, from the Latin word aurum."),
    ("What gas do plants take in from the air for photosynthesis?", "Plants take in carbon dioxide and, using sunlight, turn it into sugars while releasing oxygen."),
    ("How many days are there in a leap year?", "A leap year has 366 days; the extra day is 29 February."),
    ("What is the longest river in South America?", "The Amazon is the longest river in South America."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa in the early sixteenth century."),
    ("What is the speed of light in a vacuum?", "Light travels at about 299,792 kilometres per second in a vacuum."),
    ("What is the smallest prime number?", "The smallest prime number is 2, which is also the only even prime."),
    ("In which year did the first person walk on the Moon?", "Neil Armstrong walked on the Moon in 1969, during the Apollo 11 mission."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("Which planet is known as the Red Planet?", "Mars is called the Red Planet because iron oxide gives its surface a reddish colour."),
    ("What language has the most native speakers?", "Mandarin Chinese has the most native speakers of any language."),
    ("What is the hardest natural material?", "Diamond is the hardest natural material."),
    ("How many sides does a hexagon have?", "A hexagon has six sides."),
    ("What is the main ingredient of guacamole?", "The main ingredient of guacamole is avocado."),
    ("Who developed the theory of general relativity?", "Albert Einstein published the theory of general relativity in 1915."),
    ("What is the tallest mountain on Earth?", "Mount Everest, at about 8,849 metres above sea level, is the tallest mountain on Earth."),
    ("What does CPU stand for?", "CPU stands for central processing unit, the part of a computer that executes instructions."),
    ("What is the currency of the United Kingdom?", "The currency of the United Kingdom is the pound sterling."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean on Earth."),
]

WRITING = [
    ("Rewrite this sentence in a more formal tone.", "I would like to know whether the report will be finished by Friday.",
     "Hey, is the report gonna be done by Friday?"),
    ("Correct the grammar in this sentence.", "She doesn't like going to the cinema on weekdays.",
     "She don't like going to the cinema on weekdays."),
    ("Correct the spelling mistakes in this sentence.", "I received the package yesterday and it was definitely worth the wait.",
     "I recieved the package yesterday and it was definately worth the wait."),
    ("Write a short thank-you note to a colleague who helped with a presentation.",
     "Thank you so much for your help with the presentation. Your feedback on the slides made the story much clearer, and I really appreciated you taking the time."),
    ("Write a one-sentence product description for a reusable water bottle.",
     "This lightweight steel bottle keeps drinks cold for a full day and fits in any bag."),
    ("Suggest three names for a book club.",
     "1. The Page Turners\n2. Chapter and Verse\n3. The Bookmark Society"),
    ("Turn this sentence into a question.", "Did the train leave at six o'clock?",
     "The train left at six o'clock."),
    ("Rewrite this sentence in the passive voice.", "The letter was written by Maria.", "Maria wrote the letter."),
    ("Write a polite email subject line asking to reschedule a meeting.", "Request to reschedule our Thursday meeting"),
    ("Write a haiku about the morning.", "Pale light on the glass\nthe kettle begins to sing\na new day unfolds"),
    ("Make this sentence shorter without changing its meaning.", "We need to decide soon.",
     "It is important that we come to a decision about this matter in the near future."),
    ("Give a synonym and an antonym for the word 'happy'.", "A synonym for 'happy' is 'cheerful', and an antonym is 'sad'."),
    ("Write an opening line for a mystery story.",
     "The clock in the hall had stopped at 3:17, and nobody in the house would admit to touching it."),
    ("Write a friendly reminder message about a team lunch on Friday at noon.",
     "Just a friendly reminder that our team lunch is this Friday at noon. See you there!"),
]

ADVICE = [
    ("Give me three tips for falling asleep more easily.",
     "Keep a regular bedtime, even at weekends. Avoid screens and caffeine in the hour before bed. Keep your bedroom cool, dark and quiet."),
    ("How can I stay focused while working from home?",
     "Set up a dedicated workspace, plan your day in short blocks with breaks, and silence notifications during focused work."),
    ("What are some ways to save money on groceries?",
     "Plan meals for the week, shop with a list, compare unit prices, and buy store brands for staples."),
    ("How do I prepare for a job interview?",
     "Research the company, practise answers to common questions out loud, prepare a few questions of your own, and plan your route so you arrive early."),
    ("Give me advice on learning a new language.",
     "Practise a little every day, learn the most common words first, listen to native speakers, and try speaking early even if you make mistakes."),
    ("How can I make a presentation less boring?",
     "Open with a question or a story, keep slides simple with few words, show one idea per slide, and end with a clear takeaway."),
    ("What should I pack for a weekend hiking trip?",
     "Bring sturdy shoes, layers of clothing, a rain jacket, water, snacks, a map, sunscreen and a small first-aid kit."),
    ("How do I start a habit of exercising regularly?",
     "Start small, such as a 15-minute walk, schedule it at the same time each day, and track your progress to stay motivated."),
    ("How can I keep my email inbox organised?",
     "Unsubscribe from newsletters you do not read, use a few folders or labels, and handle each message once: reply, file, or delete."),
    ("What is a good way to memorise information for an exam?",
     "Use spaced repetition: review the material several times over days, test yourself instead of rereading, and explain the ideas in your own words."),
    ("How do I politely decline an invitation?",
     "Thank the person, say clearly that you cannot make it, and, if you wish, suggest another time, for example: 'Thanks so much for inviting me, but I can't make it this time.'"),
    ("How can I reduce stress during a busy week?",
     "Write down your tasks and tackle the most important first, take short breaks, sleep enough, and say no to non-essential commitments."),
    ("Give me tips for writing a clear email.",
     "State your purpose in the first sentence, keep paragraphs short, put any request or deadline in bold or on its own line, and proofread before sending."),
    ("How can I make my houseplants thrive?",
     "Give each plant the light it prefers, water only when the top of the soil is dry, and use pots with drainage holes."),
    ("What is a simple way to start budgeting?",
     "List your monthly income and fixed costs, set a spending limit for everything else, and review where your money went at the end of each month."),
    ("How do I make a good cup of tea?",
     "Use freshly boiled water, let the tea steep for three to five minutes depending on the type, then remove the leaves or bag."),
]

SUMMARIES = [
    ("The library will close for renovation from 1 March to 30 April. During this time, books can be returned at the community centre, and the online catalogue and e-book service will stay available.",
     "The library closes for renovation in March and April; returns go to the community centre and online services continue."),
    ("Regular physical activity improves heart health, helps control weight, strengthens bones and muscles, and can improve mood and sleep. Adults are advised to aim for at least 150 minutes of moderate activity each week.",
     "Regular exercise benefits the heart, weight, bones, mood and sleep; adults should aim for 150 minutes of moderate activity a week."),
    ("The meeting covered the quarterly sales figures, which rose by 8 percent, the launch date of the new app, which moved to June, and the plan to hire two more support staff.",
     "Sales rose 8 percent, the app launch moved to June, and two support staff will be hired."),
    ("Solar panels convert sunlight into electricity using photovoltaic cells. They produce no emissions while running, need little maintenance, and their cost has fallen sharply over the past decade.",
     "Solar panels turn sunlight into clean electricity, need little upkeep, and have become much cheaper."),
    ("Our software update fixes a crash when opening large files, adds a dark mode, and improves battery use on laptops. Users should restart the app after installing it.",
     "The update fixes a large-file crash, adds dark mode and saves battery; restart the app after installing."),
    ("The printing press, developed by Johannes Gutenberg around 1440, made books far cheaper to produce. This helped spread literacy, scientific ideas and news across Europe.",
     "Gutenberg's printing press made books cheap, spreading literacy and ideas across Europe."),
    ("Drinking enough water helps regulate body temperature, keeps joints lubricated and supports concentration. Needs vary, but thirst and pale urine are simple guides.",
     "Water supports temperature control, joints and focus; thirst and urine colour show whether you drink enough."),
    ("The museum's new exhibition features 40 paintings from the Dutch Golden Age. It opens on Saturday, and tickets are free for students on weekdays.",
     "A Dutch Golden Age exhibition of 40 paintings opens Saturday, free for students on weekdays."),
]

DEFINITIONS = [
    ("What is an algorithm?", "An algorithm is a step-by-step set of instructions for solving a problem or completing a task."),
    ("Explain what inflation means.", "Inflation is the general rise in prices over time, which means the same amount of money buys less."),
    ("What is a metaphor?", "A metaphor describes something by saying it is something else, such as 'time is a thief', to suggest a likeness."),
    ("What is photosynthesis?", "Photosynthesis is the process by which plants use sunlight, water and carbon dioxide to make sugar and release oxygen."),
    ("What is a prime number?", "A prime number is a whole number greater than 1 whose only divisors are 1 and itself, such as 2, 3, 5 and 7."),
    ("Explain what a password manager is.", "A password manager is an app that stores your passwords securely and can create strong, unique ones for every account."),
    ("What does 'compound interest' mean?", "Compound interest is interest earned on both the original amount and the interest already added, so savings grow faster over time."),
    ("What is gravity?", "Gravity is the force by which masses attract each other; it keeps us on the ground and the planets in orbit around the Sun."),
    ("What is the difference between weather and climate?", "Weather is the day-to-day state of the atmosphere, while climate is the average weather of a region over many years."),
    ("What is a noun?", "A noun is a word that names a person, place, thing or idea, such as 'teacher', 'Paris' or 'freedom'."),
    ("Explain what a spreadsheet is.", "A spreadsheet is a grid of rows and columns for organising data, where cells can hold numbers, text or formulas."),
    ("What is renewable energy?", "Renewable energy comes from sources that are naturally replenished, such as sunlight, wind and flowing water."),
]

CLASSIFY = [
    ("I absolutely loved the concert last night!", "Positive"),
    ("The package arrived late and the box was damaged.", "Negative"),
    ("The meeting is scheduled for 3 pm.", "Neutral"),
    ("This is the best pizza I have had in years.", "Positive"),
    ("I waited an hour and nobody answered my call.", "Negative"),
    ("The store opens at nine on Sundays.", "Neutral"),
    ("What a wonderful surprise, thank you!", "Positive"),
    ("The instructions were confusing and incomplete.", "Negative"),
]


def build(seed: int = SEED) -> list[dict]:
    """All samples, in a seeded order."""
    rng = random.Random(seed)
    rows = arithmetic(rng) + conversions(rng) + text_tasks(rng)
    for item in CODE:
        instruction, output, *inp = item
        rows.append(_sample(instruction, output, inp[0] if inp else ""))
    rows += [_sample(q, a) for q, a in FACTS]
    for item in WRITING:
        instruction, output, *inp = item
        rows.append(_sample(instruction, output, inp[0] if inp else ""))
    rows += [_sample(q, a) for q, a in ADVICE]
    rows += [_sample("Summarise this text in one sentence.", s, text) for text, s in SUMMARIES]
    rows += [_sample(q, a) for q, a in DEFINITIONS]
    rows += [
        _sample("Classify the sentiment of this sentence as Positive, Negative or Neutral.", label, text)
        for text, label in CLASSIFY
    ]
    rng.shuffle(rows)
    for i, row in enumerate(rows, start=1):
        for key, value in row.items():
            hit = OFF_TOPIC.search(value)
            if hit:
                raise ValueError(f"sample {i} field {key!r} mentions {hit.group(0)!r}; keep the set off-topic")
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file is out of date")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        if not args.out.exists() or args.out.read_text(encoding="utf-8") != text:
            print(f"{args.out} is out of date: run python -m midtrain.resources.instruct.make_demo_alpaca", file=sys.stderr)
            return 1
        return 0
    from midtrain.tracking import atomic_write_text

    atomic_write_text(args.out, text)
    print(f"wrote {len(text.splitlines())} samples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The hand-written English sentences the real-model checks run on, with a sentiment label.

Thirty-six sentences of 1 to 21 words (4 to 26 MiniLM tokens), half positive (label 1) and half
negative (label 0), written for this project (no data set is downloaded). The label is the small
training task of the trained prefix (verify.real_model.prefixes.train_prefix); the identities
themselves ignore it.
"""

from __future__ import annotations

SENTENCES: tuple[tuple[str, int], ...] = (
    ("Wonderful!", 1),
    ("Terrible service.", 0),
    ("I loved every minute of it.", 1),
    ("The soup was cold and bland.", 0),
    ("What a beautiful morning for a walk by the river.", 1),
    ("The train was late again, and nobody told us why.", 0),
    ("She smiled, thanked the nurse, and went home feeling much better.", 1),
    ("My laptop crashed twice before I could save the report.", 0),
    ("This little bakery makes the best bread in town.", 1),
    ("The instructions were confusing and half of the screws were missing.", 0),
    ("Our team finally won the championship after ten long seasons of trying.", 1),
    ("I waited on hold for an hour and then the call dropped.", 0),
    ("The garden is full of tulips, and the bees are busy all day.", 1),
    ("Nothing works.", 0),
    ("Thanks, this helped a lot.", 1),
    ("The hotel room smelled of smoke and the sheets were stained.", 0),
    ("He fixed my bike for free and even oiled the chain.", 1),
    ("The movie dragged on forever and the ending made no sense at all.", 0),
    ("Grandma's stories always make the whole family laugh until we cry.", 1),
    ("The package arrived broken, and the seller refuses to answer my emails.", 0),
    ("A warm cup of tea on a rainy afternoon is pure comfort.", 1),
    ("Traffic was awful and I missed the first half of the concert.", 0),
    ("The new library is bright, quiet, and open until midnight.", 1),
    ("The printer jammed, the coffee machine leaked, and the meeting ran two hours over.", 0),
    ("Kind neighbours helped us carry every box up four flights of stairs.", 1),
    ("I regret buying these shoes; they hurt after ten minutes.", 0),
    ("The children built a snowman with a carrot nose and a bright red scarf.", 1),
    ("The app keeps logging me out, and support just sends the same useless reply.", 0),
    (("After months of practice, she played the sonata without a single mistake and the audience "
     "stood to cheer."), 1),
    (("The flight was cancelled at midnight, the airline offered no hotel, and we slept on the "
     "airport floor."), 0),
    ("Great food, friendly staff.", 1),
    ("Worst purchase ever.", 0),
    ("The hike was steep, but the view from the top was absolutely worth every step.", 1),
    ("The paint started peeling a week after the painters left, and they will not come back.", 0),
    (("We adopted a shy old dog, and now he follows us everywhere with his tail wagging happily "
     "from morning until night."), 1),
    (("The exam questions covered chapters we never studied, and the teacher would not explain the "
     "grading."), 0),
)

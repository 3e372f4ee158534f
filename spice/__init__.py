"""spice: SPICE self-play in corpus environments (arXiv 2510.24684).

One policy plays a Challenger that writes grounded tasks from documents and a Reasoner that
answers them; `spice.loop` holds one iteration of the game, readable top to bottom.
"""

__version__ = "0.1.0"

"""Fine-tuning: plain SGD on each task in turn (the lower bound; the base Strategy unchanged)."""
from ..strategy import Strategy


class Finetune(Strategy):
    """L = CE(z, y) on the current task only."""
    name = "finetune"

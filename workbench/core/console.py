"""The rich console that training, distillation and the command lines print progress and tables to,
and how lists of names are shortened in messages."""

from rich.console import Console

console = Console()


def listing(items: list[str], limit: int = 10) -> str:
    """``a, b, c, ... (N more)``: the first ``limit`` names of a list, for one-line messages."""
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

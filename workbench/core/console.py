"""The rich console that training, distillation and the command lines print progress and tables to."""

from rich.console import Console

console = Console()

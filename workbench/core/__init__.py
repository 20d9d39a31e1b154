"""What every stage shares: class schemas, recipes (config), device and precision (runtime), the
command-line error path (cli), atomic file writes and the console. Exceptions live in
:mod:`workbench.exceptions`."""

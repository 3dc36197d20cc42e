"""Maths data sets with a reference answer, scored by the `math` verifier.

Each set is one `MathSet` row (data file per split + field map); one factory serves them all, so adding a set
is adding a row. The data files are vendored (`tasks/data/SOURCES.md`); `data_dir=` or env `RLVR_DATA_DIR`
can supply replacements (see `tasks.data`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tasks.base import Example, PromptTemplate, Task, WeightedVerifier
from tasks.data import FieldMap, load_rows, rows_to_examples
from tasks.registry import register_task
from verifiers.base import get_verifier

__all__ = ["MATH_TEMPLATE", "MathSet", "MATH_SETS", "build_math_task"]

# The Qwen2.5-Math evaluation prompt: reasoning, then the final answer in \boxed{} for the `math` verifier.
MATH_TEMPLATE = PromptTemplate(
    system="Please reason step by step, and put your final answer within \\boxed{}.",
    user="{question}",
)


@dataclass(frozen=True)
class MathSet:
    name: str
    description: str
    files: dict[str, str]          # split -> data name (resolved by tasks.data.resolve_data_file)
    fields: FieldMap


MATH_SETS: tuple[MathSet, ...] = (
    MathSet("gsm8k", "GSM8K grade-school word problems (Cobbe et al. 2021); gold = the number after ####",
            {"train": "gsm8k_train", "test": "gsm8k_test"},
            FieldMap("question", "answer", gold_format="after_hashes", meta=(("solution", "answer"),))),
    MathSet("math500", "MATH-500, the PRM800K test subset of MATH (Lightman et al. 2023)",
            {"test": "math500_test"},
            FieldMap("problem", "answer", id="unique_id",
                     meta=(("subject", "subject"), ("level", "level"), ("unique_id", "unique_id")))),
    MathSet("math12k", "MATH train problems disjoint from MATH-500 (problem + answer only; the 2 of 12,000 "
            "records with an empty answer are skipped)",
            {"train": "math12k_train"}, FieldMap("problem", "answer", skip_no_gold=True)),
    MathSet("aime24", "AIME 2024 I + II (30 problems, integer answers 000-999); evaluation only",
            {"test": "aime24_test"}, FieldMap("problem", "answer", id="id")),
    MathSet("amc23", "AMC 12A/12B 2023 (40 problems); evaluation only",
            {"test": "amc23_test"}, FieldMap("problem", "answer", id="id")),
    MathSet("minerva_math", "Minerva OCW-courses STEM problems (Lewkowycz et al. 2022); gold = last \\boxed{}",
            {"test": "minerva_math_test"},
            FieldMap("problem", "solution", gold_format="last_boxed", id="idx", meta=(("type", "type"),))),
    MathSet("olympiadbench", "OlympiadBench English text-only open-ended maths (He et al. 2024)",
            {"test": "olympiadbench_test"},
            FieldMap("question", "final_answer", id="id",
                     meta=(("is_multiple_answer", "is_multiple_answer"), ("unit", "unit"),
                           ("answer_type", "answer_type"), ("subfield", "subfield")))),
)


def build_math_task(spec: MathSet, data_dir: str | None = None) -> Task:
    """The Task for one set: lazy loader over its files, MATH_TEMPLATE, verifier `math` (weight 1)."""

    def loader(split: str, limit: int | None) -> list[Example]:
        rows = load_rows(spec.files[split], data_dir=data_dir)
        prefix = spec.name if spec.fields.id else f"{spec.name}/{split}"
        return rows_to_examples(rows, spec.fields, prefix=prefix)

    return Task(name=spec.name, loader=loader, verifiers=[WeightedVerifier(get_verifier("math"), 1.0)],
                template=MATH_TEMPLATE, splits=tuple(spec.files), description=spec.description)


def _factory(spec: MathSet) -> Callable[..., Task]:
    def factory(data_dir: str | None = None) -> Task:
        return build_math_task(spec, data_dir)

    factory.__doc__ = spec.description
    return factory


for _spec in MATH_SETS:
    register_task(_spec.name)(_factory(_spec))

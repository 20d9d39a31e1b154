"""summary.json of a report and of a comparison: the numbers behind the pages, for scripts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ..evaluation.evaluate import Evaluation
from .format import jsonable

if TYPE_CHECKING:
    from .comparison import Comparison


def report_json(ev: Evaluation, worst: list) -> str:
    return json.dumps(jsonable(ev.summary() | {"worst": [{"stem": r.stem, "miou": r.miou} for r in worst]}), indent=1)


def comparison_json(cmp: Comparison) -> str:
    ev_a, ev_b = cmp.a, cmp.b
    return json.dumps(jsonable({
        "names": list(cmp.names), "a": ev_a.summary(), "b": ev_b.summary(), "delta_miou": cmp.delta_miou,
        "per_class_delta": {n: ev_b.iou[i] - ev_a.iou[i] for i, n in enumerate(ev_a.schema.names)},
        "regressions": [{"stem": s, "delta": d} for d, s in cmp.regress],
        "improvements": [{"stem": s, "delta": d} for d, s in cmp.improve]}), indent=1)

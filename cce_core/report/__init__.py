"""The reproduction report: each claim of the paper against our numbers, decided by rule, and every number and
table the book shows. One module per chapter of the book, so that a reader of one page finds its code in one file:

- :mod:`.verdicts`: the rules that turn an interval into words, and the scale tier a run reached;
- :mod:`.metrics`: one seed's CE against its cascade (``metrics.json``, the NSD and quality pages' glue);
- :mod:`.seeds`: several training seeds, the interval across them and its calibration (the report page);
- :mod:`.loss_variants`: the reconstruction-loss weighting (the NSD page's section);
- :mod:`.nsd_loss`: beyond the paper, the NSD-loss runs (the NSD-loss page);
- :mod:`.execution`: what a reproduction ran and how long it took (the execution page);
- :mod:`.ladder`: the scale ladder (the CPU study page).

The measurements come from :mod:`cce_core.evaluate`, their intervals from :mod:`cce_core.stats`; this package only
compares, decides and formats. ``python -m cce_core.report RUN/generated`` prints a run's headline under both
intervals and the calibration of its design.
"""

from .execution import execution_rows, training_rows
from .ladder import (
    LADDER_MEASURES,
    fair_ladder_summary,
    ladder_curves,
    ladder_rows,
    ladder_summary,
    point_summary,
    scale_ladder,
)
from .loss_variants import ONE_WEIGHTING, loss_variant_comparison, loss_variant_rows
from .metrics import (
    DIRECTION,
    agreement,
    build_metrics,
    compare_readings,
    curve_summary,
    direction,
    glue_values,
    paired_quality,
    run_info,
    run_scale_line,
    scale_of,
)
from .nsd_loss import (
    NSD_LOSS_LOG,
    NSD_LOSS_MEASURES,
    nsd_loss_calibration_text,
    nsd_loss_findings,
    nsd_loss_landing,
    nsd_loss_rows,
    nsd_loss_summary,
    nsd_loss_verdict_text,
)
from .seeds import (
    CALIBRATION_RULES,
    MODEL_MEASURES,
    SEED_MEASURES,
    calibration_glue,
    calibration_rows,
    design_components,
    load_seed_metrics,
    seed_metrics_of,
    seeds_glue,
    seeds_report,
    seeds_rows,
)
from .verdicts import RunScale, image_level_order, scale_note, tier_line, verdict_order, verdict_value, verdict_word

__all__ = [
    "RunScale", "scale_note", "tier_line", "verdict_word", "image_level_order", "verdict_order", "verdict_value",
    "DIRECTION", "direction", "paired_quality", "curve_summary", "compare_readings", "run_info", "scale_of",
    "run_scale_line", "agreement", "build_metrics", "glue_values", "SEED_MEASURES", "MODEL_MEASURES",
    "load_seed_metrics", "seeds_report", "seeds_rows", "seeds_glue", "design_components", "CALIBRATION_RULES",
    "calibration_glue", "calibration_rows", "seed_metrics_of", "ONE_WEIGHTING", "loss_variant_comparison",
    "loss_variant_rows", "NSD_LOSS_MEASURES", "NSD_LOSS_LOG", "nsd_loss_summary", "nsd_loss_calibration_text",
    "nsd_loss_rows", "nsd_loss_findings", "nsd_loss_landing", "nsd_loss_verdict_text", "execution_rows",
    "training_rows",
    "LADDER_MEASURES", "scale_ladder", "ladder_rows", "ladder_curves", "fair_ladder_summary", "ladder_summary",
    "point_summary",
]

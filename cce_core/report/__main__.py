"""``python -m cce_core.report RUN/generated``: a run's headline under both intervals and the calibration of its
design (the report page's table, from the run's own variance components)."""

import sys

from ..stats import calibration_table, nsd_loss_calibration
from .seeds import calibration_rows, design_components, seed_metrics_of, seeds_report
from .verdicts import _ci_text

if len(sys.argv) != 2:
    raise SystemExit("usage: python -m cce_core.report RUN/generated")
ms = seed_metrics_of(sys.argv[1])
rep = seeds_report(ms)
crossed = rep["across"]["nsd_normalized"]  # seeds_report keeps the t-interval beside it (seed_t_ci95)
print(f"cascade − CE, BN-normalised NSD, {len(ms)} seeds: {crossed['mean']:+.5f}; t over seed means "
      f"{_ci_text(crossed['seed_t_ci95'], '+.5f')}; {crossed['method']} {_ci_text(crossed['ci95'], '+.5f')}")
comps = design_components(rep)
print(f"design: {comps}")
for row in calibration_rows(calibration_table(comps, rep["across"]["ce128_nsd_normalized"]["mean"])):
    print(" | ".join(str(v) for v in row.values()))
print(nsd_loss_calibration(comps))

"""The s2fault matrix as Avocado tests: one test per cell of ci/matrix.yaml.

    avocado run --mux-yaml ci/matrix.yaml tests/functional
    avocado run --mux-yaml ci/matrix.yaml --mux-filter-only /run/variant/upstream \
        /run/mode/dilated tests/functional
    avocado run --mux-yaml ci/matrix.yaml --filter-by-tags arch:aarch64 tests/functional

Selecting cells: Avocado resolves tags from the docstring before the varianter
multiplies a test into its variants, so a tag cannot carry a mux value. The
variant, mode, vcpus and pages of a cell come from the yaml-to-mux params and are
selected with --mux-filter-only/--mux-filter-out on their paths
(/run/variant/NAME, /run/mode/NAME, /run/mode/functional/vcpus/N, /run/pages/NAME).
One method per mode with static mode:* tags would multiply by the mode axis again
and leave half of every job as skipped cross-cells, so the tags stay static and
name what every cell needs: arch:aarch64 (the booted kernel), accel:tcg.

The engine judges; this file only maps its outcome onto Avocado's statuses:
PASS the cell shows what its variant declares, FAIL it does not (the engine's
reason), CANCEL the path under test cannot run here (DIC=1, kvm-arm.mode refused,
no memory for the hugepage: the engine's skip), ERROR it could not be judged
(infrastructure, bad input). Infrastructure is never a pass or a fail. Messages
start with the cell's stable id (variant.workload.mode), the name in every report.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from avocado import Test

from s2fault import matrix, progress, project, source
from s2fault.errors import S2Error
from s2fault.guest import workloads
from s2fault.kernel import kconfig
from s2fault.machine import profiles
from s2fault.matrix.cell import Cell, stable_id, table
from s2fault.outcome import Outcome

# A cold kernel build takes ~10 min on a loaded 2-core machine, and a latency
# expectation builds and runs its reference variant too; the engine's own QEMU
# timeouts (profile.TIMEOUTS) stop a hung guest long before this.
_BUILD_ALLOWANCE = 2 * 1800
_RUN_ALLOWANCE = 2 * profiles.TIMEOUTS[("tcg", True)].total

# What an Avocado user looks for in a test's log directory, from a run's artifacts.
_ARTIFACTS = (("console_log", "console.log"), ("qmp_log", "qmp.log"))


class ExecFault(Test):
    """Build a variant, boot it nested under QEMU, judge the exec-fault workload.

    :avocado: tags=arch:aarch64,accel:tcg,s2fault
    """

    timeout = _BUILD_ALLOWANCE + _RUN_ALLOWANCE
    # avocado.Test is a unittest.TestCase, which pytest (`make test`) would collect
    # and run outside Avocado; tests/test_avocado.py runs this through Avocado.
    __test__ = False

    def setUp(self) -> None:
        # Avocado owns the test's stderr (a stream without isatty()) and logs to
        # debug.log; the engine's terminal progress line has no place here.
        progress.set_quiet(True)

    def test(self) -> None:
        variant = self.params.get("variant", default="upstream")
        mode = self.params.get("mode", default="functional")
        vcpus = self.params.get("vcpus", default=None)
        pages = self.params.get("pages", default=None)
        workload = self.params.get("workload", default=workloads.DEFAULT)
        self.log.info("cell: variant %s, workload %s, mode %s, vcpus %s, pages %s",
                      variant, workload, mode, vcpus or "default", pages or "default")
        if workload in workloads.WORKLOADS and mode not in workloads.get(workload).modes:
            self.cancel(f"workload {workload} does not run in mode {mode}")

        where = stable_id(variant, workload, mode, vcpus, str(pages) if pages else None)
        runs = Path(self.outputdir) / "runs"
        page_size = str(pages) if pages else None
        cells: list[Cell] = []
        # run_matrix() adds the variant a latency expectation is measured against (so
        # the ratio compares two runs of one machine), checks that every series applies
        # before building, and judges: the same path as `s2fault check`.
        try:
            # The cell's source (a `source` param: any --source spec; default debian),
            # resolved once: the variant and its reference are built from this one.
            src = source.resolve(self.params.get("source", default=None), project.cache_dir())
            self.log.info("source: %s (%s)", src.description, src.identity)
            options = matrix.RunOptions(vcpus=vcpus, source=src, pages=page_size,
                                        fragments=kconfig.fragments_for(page_size),
                                        workloads=(workload,))
            cells = matrix.run_matrix([variant], [mode], runs, options)
        except S2Error as e:  # a source that cannot be had, an unknown variant, mode or
            # workload, a missing tool
            self.error(f"{where}: could not judge: {e.message}")
        for cell in cells:
            own = cell.variant == variant
            self._keep_artifacts(cell, Path(self.logdir) if own else
                                 Path(self.logdir) / f"reference-{cell.variant}")
        cell = next(c for c in cells if c.variant == variant)
        for line in table(cells).splitlines():
            self.log.info(line)

        if cell.outcome is Outcome.PASS:
            return
        if cell.outcome is Outcome.FAIL:
            self.fail(f"{where}: {cell.why} (declared: {cell.declared.describe()}; "
                      f"observed: {cell.observed})")
        if cell.outcome is Outcome.SKIP:
            self.cancel(f"{where}: {cell.why or cell.observed}")
        why = (cell.why or cell.observed).removeprefix("could not judge: ")
        self.error(f"{where}: could not judge: {why}")

    def _keep_artifacts(self, cell: Cell, dest: Path) -> None:
        """Copy the last run's console, QMP log, result and kernel .config where
        Avocado users look (the test's log directory); the full run directories
        stay under data/runs."""
        dest.mkdir(parents=True, exist_ok=True)
        (dest / "cell.json").write_text(json.dumps(cell.to_dict(), indent=2) + "\n")
        config = cell.build.get("config")
        if config and Path(config).is_file():
            shutil.copyfile(config, dest / "kernel.config")
        verdict = cell.verdict
        if verdict is None:
            return
        for key, name in _ARTIFACTS:
            src = verdict.artifacts.get(key)
            if src and Path(src).is_file():
                shutil.copyfile(src, dest / name)
        result = Path(verdict.artifacts.get("dir", "")) / "result.json"
        if result.is_file():
            shutil.copyfile(result, dest / "result.json")

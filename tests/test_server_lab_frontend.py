"""The Lab extension's TypeScript logic (filter language, formatting), through node's test runner.

``npm test`` in extension/ compiles src/filter.ts and src/format.ts to CommonJS and runs
extension/test/*.test.cjs. Needs the extension's npm packages (bash scripts/build-extension.sh).
"""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.support.server import ROOT

EXTENSION = ROOT / "extension"


def test_the_panels_typescript_logic_passes_its_node_tests() -> None:
    npm = shutil.which("npm")
    assert npm is not None, "npm is missing: install Node >= 20.19 (apt-get install nodejs npm)"
    assert (EXTENSION / "node_modules" / "typescript").exists(), (
        "the extension's npm packages are not installed: run bash scripts/build-extension.sh")
    done = subprocess.run([npm, "test", "--silent"], cwd=EXTENSION, capture_output=True,
                          text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    passed = re.search(r"^# pass (\d+)$", output, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", output, re.MULTILINE)
    assert passed and failed, output
    assert int(failed.group(1)) == 0
    assert int(passed.group(1)) >= 9  # every test of extension/test ran

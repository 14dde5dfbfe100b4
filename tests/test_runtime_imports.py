"""The reply runtime's HTTP stack is imported with the runtime, not on the first reply's thread."""

from __future__ import annotations

import subprocess
import sys


def test_it_imports_httpcore_and_anyio_with_the_runtime_before_any_client_is_made() -> None:
    # A fresh interpreter: in this one, other tests have imported them long ago.
    probe = (
        "import sys; import inference.runtime; "
        "print(sorted(name for name in ('httpcore', 'anyio') if name in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "['anyio', 'httpcore']"

"""The README's deployment commands are the files ``make test-deploy`` runs, as they are.

``docker/deploy-steps.sh`` and ``docker/order-steps.sh`` are run step by step by
``tests/stack/test_compose_stack.py``; the README shows them. This fast check keeps the two from
drifting in ``make test`` too (the stack test itself runs in ``make test-deploy``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", ["docker/deploy-steps.sh", "docker/order-steps.sh"])
def test_the_readme_shows_the_tested_commands_as_they_are(path: str) -> None:
    body = (ROOT / path).read_text().strip()
    readme = (ROOT / "README.md").read_text()
    assert f"```bash\n{body}\n```" in readme, f"README.md must show {path} verbatim"


def test_each_step_is_named_once() -> None:
    from tests.stack.test_compose_stack import steps

    for path in ("docker/deploy-steps.sh", "docker/order-steps.sh"):
        names = [name for name, _ in steps(ROOT / path)]
        assert names and len(names) == len(set(names)), names


def test_every_link_in_the_readme_leads_somewhere() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250, "the README stays short: the rest goes to docs/"
    for target in re.findall(r"\]\(([^)]+)\)", readme):
        path = target.split("#", 1)[0]
        if path.startswith("http"):
            continue
        assert (ROOT / path).exists(), f"README.md links to {target}, which is not there"

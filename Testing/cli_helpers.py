"""Running the ``sarseg`` command in-process and checking its bad-input contract (shared by test files)."""

from __future__ import annotations

from sarseg.cli import EXIT_BAD_INPUT, main


def run_cli(capsys, argv: list[object]) -> tuple[int, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def assert_bad(rc: int, err: str, names: str, *problems: str) -> None:
    """Exit 2, one clean message that names the file or option and says the problem."""
    assert rc == EXIT_BAD_INPUT, err
    assert err.startswith("sarseg: error: "), err
    assert names in err, f"stderr does not name {names!r}: {err}"
    for problem in problems:
        assert problem.lower() in err.lower(), f"stderr does not say {problem!r}: {err}"
    assert "Traceback" not in err

"""The worker's command line in the three forms users type it, and the start-up check."""

from __future__ import annotations

import sys

import pytest

from lanworker.core.errors import ConfigError
from lanworker.executors.native import check_program, parse_base_command


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (["--", "python3", "my_script.py", "--fast"], ("python3", "my_script.py", "--fast")),
        (["python3", "my_script.py"], ("python3", "my_script.py")),
        (['["python3", "my_script.py"]'], ("python3", "my_script.py")),  # quoted: one JSON array
        (["[python3,", "my_script.py]"], ("python3", "my_script.py")),  # what bash leaves unquoted
        (["[python3,my_script.py]"], ("python3", "my_script.py")),
        (["['python3',", "'my script.py']"], ("python3", "my script.py")),
        (["--", "[", "-f", "x", "]"], ("[", "-f", "x", "]")),  # after -- nothing is parsed
    ],
)
def test_command_forms(tokens: list[str], expected: tuple[str, ...]) -> None:
    assert parse_base_command(tokens) == expected


@pytest.mark.parametrize("tokens", [["[python3,", ",", "x]"], ['["python3", 3]'], ["[]"]])
def test_unreadable_command_lists_are_configuration_errors(tokens: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse_base_command(tokens)


def test_the_program_must_exist_and_be_executable(tmp_path) -> None:
    assert check_program([sys.executable]) == sys.executable
    assert check_program(["sh", "-c", "true"]).endswith("/sh")
    with pytest.raises(ConfigError, match="not on PATH"):
        check_program(["[python3,", "x]"])
    script = tmp_path / "tool.py"
    script.write_text("print(1)")
    with pytest.raises(ConfigError, match="not an executable file"):
        check_program([str(script)])

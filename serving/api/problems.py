"""Problems with a fleet, each naming its field by its YAML path, and the errors that carry them."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError


class UserError(Exception):
    """Something the user can fix; the CLI prints it without a traceback."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a fleet: ``path`` names the field as written in YAML."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class FleetProblems(ValueError):
    """Raised by FleetSpec validation with every fleet-level problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))



class FleetSpecError(UserError):
    """A fleet that cannot be used, with every problem found (each names its field)."""

    def __init__(self, problems: list[Problem], source: str = "fleet spec"):
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source} is invalid ({len(problems)} problem(s)):\n{lines}")


def _loc_to_path(loc: tuple) -> str:
    # pydantic reports locations by alias, so these are already the YAML (camelCase) names.
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else ("." if path else "") + str(part)
    return path


def problems_from_validation_error(err: ValidationError, prefix: str = "") -> list[Problem]:
    """Flatten a pydantic error into Problems whose paths name YAML fields."""
    problems: list[Problem] = []
    for e in err.errors():
        path = _loc_to_path(e["loc"])
        full = ".".join(p for p in (prefix, path) if p)
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, FleetProblems):
            problems.extend(
                Problem(".".join(x for x in (full, p.path) if x), p.message) for p in cause.problems
            )
            continue
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against the ModelFleet schema (`slm-fleet crd`)"
        elif e["type"] == "missing":
            message = "required field is missing"
        problems.append(Problem(full, message))
    return problems


